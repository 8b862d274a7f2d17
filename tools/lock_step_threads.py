"""Whether the decoder's numpy lane lock step gains from a second thread: the measurement behind
the compiled lock step (codec.rans_jit) that large files now decode with (issue 15).

    python tools/lock_step_threads.py [--size 300MB] [--repeat 5] [--markdown out.md] [--json out.json]

Encodes a generated transformer-shaped model of SIZE (tools/bench_memory.make_model, the
data-free rule) and records the lane blocks the one-thread decode lock-steps
(codec.rans.lock_step_lane_blocks, one call per batch). Each batch's blocks are cut in two
halves of about equal symbol counts, and every batch's halves are lock-stepped three ways, in
rounds that alternate them: the whole batch in one lock step, as a one-thread decode does; the
two halves one after the other on one thread; the two halves at once on two threads. The
halves' symbols are checked against the whole batch's. A lock step makes a few dozen numpy
calls per step, each on one batch's lanes (16k lanes of 2,048 symbols in a batch of 2**25
symbols): threads gain only if those calls release the interpreter lock for long enough.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

import nnr  # noqa: E402
import nnr.codec.rans as rans  # noqa: E402
from tools._emit import command_line, emit_with_json  # noqa: E402


def recorded_batches(data: bytes) -> list[list]:
    """The lane blocks of each lock step of a one-thread decode of ``data`` with the numpy lock
    step (a large file is otherwise decoded with the compiled one, tensor by tensor), in order."""
    import nnr.decoder

    batches, lock_step, compiled = [], rans.lock_step_lane_blocks, nnr.decoder.compiled_lock_step

    def record(blocks, compiled=False, alloc=None):
        batches.append(list(blocks))
        return lock_step(blocks, compiled, alloc)
    rans.lock_step_lane_blocks = record
    nnr.decoder.compiled_lock_step = lambda file_bytes: False
    try:
        nnr.decode(data, threads=1)
    finally:
        rans.lock_step_lane_blocks = lock_step
        nnr.decoder.compiled_lock_step = compiled
    return [b for b in batches if b]


def halves(blocks: list) -> tuple[list, list]:
    """``blocks`` cut between blocks where the running symbol count passes half of the total
    (a batch of one block stays whole: its second half is empty)."""
    counts = np.cumsum([b.count for b in blocks])
    cut = int(np.searchsorted(counts, counts[-1] / 2)) + 1
    cut = min(max(cut, 1), len(blocks) - 1) if len(blocks) > 1 else len(blocks)
    return blocks[:cut], blocks[cut:]


def _lock_step(blocks: list) -> list:
    """Lock-step ``blocks`` (none: nothing), their symbols left to gather."""
    return rans.lock_step_lane_blocks(blocks) if blocks else []


def check_halves(batches: list[list]) -> None:
    """The halves decode to the whole batch's symbols (a cut changes no symbol)."""
    for blocks in batches:
        whole = [s() for s in _lock_step(blocks)]
        first, second = halves(blocks)
        parts = [s() for s in _lock_step(first)] + [s() for s in _lock_step(second)]
        if len(parts) != len(whole) or not all(np.array_equal(a, b) for a, b in zip(whole, parts)):
            raise SystemExit("lock_step_threads: the halves of a batch decode to other symbols than the batch")


def larger_half(batches: list[list]) -> float:
    """The largest share of a batch's symbols in one of its halves: 0.5 when every cut is even."""
    shares = []
    for blocks in batches:
        first, second = halves(blocks)
        counts = [sum(b.count for b in part) for part in (first, second)]
        shares.append(max(counts) / max(sum(counts), 1))
    return max(shares, default=0.5)


def measure(batches: list[list], repeat: int) -> dict:
    """Median seconds over ``repeat`` alternating rounds of each way of lock-stepping every batch."""
    cut = [halves(b) for b in batches]

    def whole():
        for blocks in batches:
            _lock_step(blocks)

    def one_after_the_other():
        for first, second in cut:
            _lock_step(first)
            _lock_step(second)

    with ThreadPoolExecutor(2, thread_name_prefix="lock-step") as pool:
        def at_once():
            for first, second in cut:
                for f in [pool.submit(_lock_step, first), pool.submit(_lock_step, second)]:
                    f.result()

        ways = {"whole batch, one thread": whole, "halves one after the other, one thread": one_after_the_other,
                "halves at once, two threads": at_once}
        times: dict[str, list[float]] = {k: [] for k in ways}
        for fn in ways.values():   # warm-up
            fn()
        for _ in range(repeat):
            for k, fn in ways.items():
                t0 = time.perf_counter()
                fn()
                times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def run(size: str, repeat: int) -> dict:
    """Encode a generated model of ``size``, record its lock steps and time them (see the module)."""
    from nnr.sizes import parse_size
    from tools.bench_memory import make_model

    with tempfile.TemporaryDirectory() as tmp:
        model = make_model(Path(tmp), parse_size(size))
        data = nnr.encode(model, probe=False)
    batches = recorded_batches(data)
    check_halves(batches)
    seconds = measure(batches, repeat)
    return {"size": size, "file_bytes": len(data), "batches": len(batches),
            "symbols": int(sum(b.count for blocks in batches for b in blocks)),
            "lanes": int(sum(b.n_lanes for blocks in batches for b in blocks)), "larger_half": larger_half(batches),
            "repeat": repeat, "seconds": seconds}


def table(result: dict, command: str) -> str:
    """The markdown report: the command, what was measured, and the three timings."""
    one = result["seconds"]["halves one after the other, one thread"]
    lines = ["```sh", command, "```", "",
             f"A generated {result['size']} model coded with the data-free rule ({result['file_bytes']:,} B): "
             f"{result['symbols']:,} symbols in {result['lanes']:,} lanes, lock-stepped in {result['batches']} "
             f"batches, each batch also cut in two halves (the larger holds at most "
             f"{100 * result['larger_half']:.0f} % of its batch's symbols). Median of {result['repeat']} alternating "
             "rounds; \"speed-up\" is the halves one after the other on one thread over each row.", "",
             "| lock steps | seconds | speed-up |", "|---|--:|--:|"]
    for way, s in result["seconds"].items():
        lines.append(f"| {way} | {s:.3f} | {one / s:.2f}× |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--size", default="300MB", help="weights of the generated model (default 300MB)")
    ap.add_argument("--repeat", type=int, default=5, help="rounds (default 5)")
    ap.add_argument("--markdown", type=Path, help="write the table here")
    ap.add_argument("--json", type=Path, help="write the numbers here")
    args = ap.parse_args(argv)
    if args.repeat < 1:
        raise SystemExit("lock_step_threads: --repeat must be at least 1")
    result = run(args.size, args.repeat)
    command = command_line("tools/lock_step_threads.py", argv)
    emit_with_json(table(result, command), result, args.markdown, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
