"""What worker processes would give a decode to external data: numbers for issue 15's open
choice (its 2-thread decode stays far from 1.7×, tools/lock_step_threads.py says why).

    python tools/decode_processes.py [--sizes 300MB,1GB] [--processes 2] [--repeat 3] [--markdown out.md] [--json out.json]

For each size a generated transformer-shaped model (tools/bench_memory.make_model) is coded
with the data-free rule to a file, which is then decoded three ways, in alternating rounds:

* on one thread to an ONNX file with external data (``nnr.decode_to_file``, as ``nnr decode``);
* by N fresh worker processes (spawn): each takes a share of the tensors of about equal bytes,
  decodes them in file order, as the decoder does, in lock steps of up to
  ``nnr.decoder.BATCH_ELEMENTS`` symbols, and writes each at its offset into one preallocated
  data file, which the parent then flushes to disk as nnr's atomic writes do. The time counts
  starting the processes (an interpreter importing numpy and nnr's decoder each), not the
  graph, which the parent would write as it does now;
* N processes started that only import the decoder: the start-up alone.

The processes' data file is checked tensor by tensor against ``NnrFile.get_bytes``.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import nnr  # noqa: E402
from nnr.decoder import BATCH_ELEMENTS, NnrFile  # noqa: E402
from nnr.tensorcodec import storage_dtype  # noqa: E402
from tools._emit import command_line, emit_with_json  # noqa: E402


def layout(path: Path, processes: int) -> tuple[list[list[tuple[str, int]]], int]:
    """Each process's (tensor name, byte offset) pairs, in file order, the shares of about equal
    bytes (largest tensors placed first, each on the least loaded process); and the data's size."""
    units = [(u.name, u.numel * storage_dtype(u.dtype).itemsize) for u in NnrFile(path).units()]
    offsets, at = {}, 0
    for name, size in units:
        offsets[name] = at
        at += size
    loads, shares = [0] * processes, [set() for _ in range(processes)]
    for name, size in sorted(units, key=lambda u: -u[1]):
        k = loads.index(min(loads))
        loads[k] += size
        shares[k].add(name)
    return [[(name, offsets[name]) for name, _ in units if name in share] for share in shares], at


def decode_share(path: str, share: list[tuple[str, int]], data_path: str) -> None:
    """Decode the tensors of ``share`` in lock steps of up to BATCH_ELEMENTS symbols and write
    each at its offset into ``data_path`` (run in a worker process)."""
    from nnr.codec.bytestream import Budget
    from nnr.codec.rans import run_all
    from nnr.tensorcodec import unit_decoder

    f = NnrFile(path)
    offsets = dict(share)
    units = [u for u in f.units() if u.name in offsets]
    fd = os.open(data_path, os.O_WRONLY)
    try:
        batch: list = []
        for i, unit in enumerate(units):
            batch.append(unit)
            if sum(u.numel for u in batch) >= BATCH_ELEMENTS or i == len(units) - 1:
                budget = Budget(f.max_memory)
                for u, data in zip(batch, run_all([unit_decoder(u, f.version, budget) for u in batch])):
                    os.pwrite(fd, data, offsets[u.name])
                batch = []
    finally:
        os.close(fd)


def import_only() -> None:
    """What a worker process costs before it decodes anything: its interpreter and imports."""
    import importlib

    importlib.import_module("nnr.decoder")


def run_processes(target, args_list: list[tuple]) -> None:
    """Start one spawned process per argument tuple and wait for all; a failed one is an error."""
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=target, args=args) for args in args_list]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    failed = [p.exitcode for p in procs if p.exitcode != 0]
    if failed:
        raise SystemExit(f"decode_processes: a worker process failed (exit codes {failed})")


def decode_with_processes(path: Path, shares: list, size: int, data_path: Path) -> None:
    """The data file preallocated, the shares decoded into it, and the file flushed to disk (as
    nnr's atomic writes do)."""
    with open(data_path, "wb") as fh:
        fh.truncate(size)
    run_processes(decode_share, [(str(path), share, str(data_path)) for share in shares])
    fd = os.open(data_path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def check(path: Path, shares: list, data_path: Path) -> None:
    """Every tensor's bytes in the processes' data file are the decoder's."""
    f = NnrFile(path)
    with open(data_path, "rb") as fh:
        for share in shares:
            for name, offset in share:
                want = f.get_bytes(name)
                fh.seek(offset)
                if fh.read(len(want)) != want:
                    raise SystemExit(f"decode_processes: tensor {name!r} differs in the processes' data file")


def measure(size: str, processes: int, repeat: int) -> dict:
    """One size's timings (median of ``repeat`` alternating rounds) and its model's numbers."""
    from nnr.sizes import parse_size
    from tools.bench_memory import make_model

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        model = make_model(folder, parse_size(size))
        weights = (folder / "model.onnx.data").stat().st_size
        path = folder / "m.nnr"
        nnr.encode_to_file(model, path, probe=False)
        (folder / "model.onnx.data").unlink()
        shares, total = layout(path, processes)
        data_path = folder / "workers.data"
        ways = {"one thread": lambda: nnr.decode_to_file(path, folder / "out.onnx", external_data=True, threads=1),
                "processes": lambda: decode_with_processes(path, shares, total, data_path),
                "start-up": lambda: run_processes(import_only, [()] * processes)}
        times: dict[str, list[float]] = {k: [] for k in ways}
        for fn in ways.values():   # warm-up, and the processes' output checked once
            fn()
        check(path, shares, data_path)
        for _ in range(repeat):
            for k, fn in ways.items():
                t0 = time.perf_counter()
                fn()
                times[k].append(time.perf_counter() - t0)
    return {"size": size, "weight_bytes": weights, "processes": processes, "repeat": repeat,
            "seconds": {k: statistics.median(v) for k, v in times.items()}}


def table(rows: list[dict], command: str) -> str:
    """The markdown report: the command and one row per size."""
    n = rows[0]["processes"]
    lines = ["```sh", command, "```", "",
             f"Decoding a generated model's file (data-free rule) to external data: on one thread with "
             f"`nnr.decode_to_file`, and by {n} spawned worker processes, each decoding a share of the tensors "
             f"into one data file, their start-up included; median of {rows[0]['repeat']} alternating rounds.", "",
             f"| weights | one thread s | {n} processes s | speed-up | start-up of {n} processes s |",
             "|--:|--:|--:|--:|--:|"]
    for r in rows:
        s = r["seconds"]
        lines.append(f"| {r['weight_bytes'] / 1e6:,.0f} MB | {s['one thread']:.2f} | {s['processes']:.2f} | "
                     f"{s['one thread'] / s['processes']:.2f}× | {s['start-up']:.2f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--sizes", default="300MB,1GB", help="weights of the generated models (default 300MB,1GB)")
    ap.add_argument("--processes", type=int, default=2, help="worker processes (default 2)")
    ap.add_argument("--repeat", type=int, default=3, help="rounds (default 3)")
    ap.add_argument("--markdown", type=Path, help="write the table here")
    ap.add_argument("--json", type=Path, help="write the numbers here")
    args = ap.parse_args(argv)
    if args.repeat < 1 or args.processes < 1:
        raise SystemExit("decode_processes: --repeat and --processes must be at least 1")
    rows = [measure(size.strip(), args.processes, args.repeat) for size in args.sizes.split(",") if size.strip()]
    command = command_line("tools/decode_processes.py", argv)
    emit_with_json(table(rows, command), rows, args.markdown, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
