"""Fuzz the .nnr decoder for hours: structure-aware mutations of the vectors, each decoded in a
memory- and time-limited child process (conformance/fuzzing.py).

    python tools/fuzz.py --count 1000000 --workers 2 --seed 1 --out /tmp/fuzz-out
    python tools/fuzz.py --hours 8 --workers 2 --seed 2 --out /tmp/fuzz-out
    python tools/fuzz.py --reproduce 4242 --seed 1 --out /tmp/fuzz-out   # one input, in this process
    python tools/fuzz.py --replay /tmp/fuzz-out/*.nnr --out /tmp/replay  # re-check saved inputs

Input i of seed s is the same on every run, so a failure is reproduced by (s, i) alone. The
run prints inputs/s and the counts per outcome on stderr every --progress seconds, and at the
end a table of outcomes and the failure classes (outcome, stage, innermost nnr frame) with the
mutations behind them. OUT receives failures.jsonl (every failure; the message for the first
--per-class of a class), summary.json, and the bytes of the first --per-class failures of each
class as <outcome>-<seed>-<index>.nnr.
Exit status 1 if any input failed: an outcome other than ok or refused:<NnrError>.
"""

from __future__ import annotations

import argparse
import itertools
import json
import resource
import sys
import time
from pathlib import Path
from typing import Callable, Iterator

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from conformance.fuzzing import (DEFAULT_MEMORY, DEFAULT_TIMEOUT, Fuzzer, Result, Stats,  # noqa: E402
                                 check_decoder, default_seed_files, is_failure, replay)


def _size(text: str) -> int:
    """Bytes from '3G', '512M', '100K' or a plain number."""
    scale = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1:].upper(), 1)
    return int(float(text[:-1] if scale > 1 else text) * scale)


def _indices(start: int, count: int | None, hours: float | None) -> Iterator[int]:
    """Input indices from ``start`` until ``count`` are given or ``hours`` have passed."""
    deadline = time.monotonic() + 3600 * hours if hours else None
    for i in itertools.count(start) if count is None else range(start, start + count):
        if deadline and time.monotonic() > deadline:
            return
        yield i


def _progress(every: float) -> Callable[[Result, Stats], None]:
    """A result callback that prints rate and counts on stderr at most every ``every`` seconds."""
    last = [time.monotonic()]

    def show(result: Result, stats: Stats) -> None:
        now = time.monotonic()
        if now - last[0] < every:
            return
        last[0] = now
        rate = stats.total / max(now - stats.started, 1e-9)
        counts = ", ".join(f"{o} {n}" for o, n in stats.counts.most_common())
        print(f"[{time.strftime('%H:%M:%S')}] {stats.total} inputs, {rate:.0f}/s, {stats.failures} failures: "
              f"{counts}", file=sys.stderr, flush=True)

    return show


def _report(stats: Stats, out: Path) -> None:
    """Print the outcome table and the failure classes; write OUT/summary.json."""
    summary = stats.summary()
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(stats.table())
    print(f"\n{summary['inputs_per_second']} inputs/s over {summary['seconds']} s")
    for key, c in sorted(summary["classes"].items(), key=lambda kv: -kv[1]["count"]):
        example = c["example"]
        seeds = ", ".join(f"{s} {n}" for s, n in list(c["seeds"].items())[:3])
        first = (example["detail"].splitlines() or [""])[0][:160]
        triggers = ", ".join(c["triggers"]) or "no mutation in particular"
        print(f"\n{c['count']:>8}  {key}\n          triggered by: {triggers}\n          seeds: {seeds}"
              f"\n          e.g. input {example['index']} {example['path'] or '(not saved)'}: {first}")
    print(f"\nsummary: {out / 'summary.json'}, failures: {out / 'failures.jsonl'}")


def _reproduce(fuzzer: Fuzzer, index: int, out: Path, memory: int) -> int:
    """Write input ``index`` and run the checks on it here, under the memory limit."""
    sample = fuzzer.sample(index)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"input-{fuzzer.master_seed}-{index}.nnr"
    path.write_bytes(sample.data)
    print(f"{path}: from {sample.seed}, mutations {sample.mutations}, rules broken {sample.violations}")
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    verdict = check_decoder(sample, str(path))
    print(f"{verdict.outcome} {verdict.stage}\n{verdict.detail}")
    return 1 if is_failure(verdict.outcome) else 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="Outcomes and the checks behind them: conformance/fuzzing.py.")
    ap.add_argument("--count", type=int, help="number of inputs (default: unlimited with --hours, else 10000)")
    ap.add_argument("--hours", type=float, help="stop after this many hours")
    ap.add_argument("--seed", type=int, default=0, help="master seed (default 0)")
    ap.add_argument("--start", type=int, default=0, help="first input index (default 0)")
    ap.add_argument("--workers", type=int, default=2, help="parallel worker processes (default 2)")
    ap.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT,
                    help=f"seconds per input before the worker is killed (default {DEFAULT_TIMEOUT:g})")
    ap.add_argument("--memory", type=_size, default=DEFAULT_MEMORY,
                    help="address-space limit per worker, e.g. 3G (default 3G)")
    ap.add_argument("--seeds", type=Path, action="append", default=[], metavar="DIR",
                    help="also mutate the .nnr files of DIR (repeatable; changes what each index means)")
    ap.add_argument("--per-class", type=int, default=20,
                    help="save the bytes of at most this many failures per failure class (default 20)")
    ap.add_argument("--progress", type=float, default=30.0, help="seconds between progress lines (default 30)")
    ap.add_argument("--out", type=Path, required=True, help="directory for reproducers and the summary")
    ap.add_argument("--reproduce", type=int, metavar="INDEX", help="write input INDEX and check it in-process")
    ap.add_argument("--replay", type=Path, nargs="+", metavar="FILE", help="check these files, unmutated")
    args = ap.parse_args(argv)
    if args.workers < 1 or args.timeout <= 0:
        ap.error("--workers must be at least 1 and --timeout positive")
    show = _progress(args.progress)
    if args.replay:
        stats = replay(args.replay, args.out, args.workers, args.timeout, args.memory, on_result=show)
        _report(stats, args.out)
        return 1 if stats.failures else 0
    fuzzer = Fuzzer(args.seed, default_seed_files(args.seeds))
    if args.reproduce is not None:
        return _reproduce(fuzzer, args.reproduce, args.out, args.memory)
    count = args.count if args.count is not None or args.hours else 10000
    stats = Stats()
    try:
        stats = fuzzer.run(_indices(args.start, count, args.hours), args.out, args.workers, args.timeout,
                           args.memory, per_class=args.per_class, on_result=show, stats=stats)
    except KeyboardInterrupt:
        print("interrupted: summary of the inputs run so far", file=sys.stderr)
    _report(stats, args.out)
    return 1 if stats.failures else 0


if __name__ == "__main__":
    sys.exit(main())
