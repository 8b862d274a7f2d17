"""Benchmark nnr against the alternatives a user would pick, all measured in one run.

    python tools/bench.py [--repeat 3] [--baseline REF] [--json out.json] [--markdown out.md]
    python tools/bench.py --scaling 300MB [--threads 1,2] [--no-corpus] ...

Per corpus model: size, bits per float weight, fidelity on real inputs (top-1 agreement
and output SNR against the original), encode and decode throughput in MB/s of float32
weights on one thread, for nnr (default and lossless), zstd -19 on the ONNX file, and
onnxruntime's dynamic int8 quantization. Throughput is the median of --repeat runs after
a warm-up (numba compiles once and caches). ``--baseline REF`` also measures nnr's
encode and decode at a git commit or tag (e.g. the previous release) in the same run, from a
temporary git worktree (its own nnr, codec and formats; this checkout's installed
dependencies), in rounds that alternate with this checkout, and prints the ratios.
``--scaling SIZE`` also encodes a generated transformer-shaped model of SIZE (external data;
tools/bench_memory.make_model) at each ``--threads`` count, checks the files are identical,
and reports MB/s of weights and the speed-up over one thread, measured in the same run, next
to the machine's ceiling for it: n one-thread decodes of the same file run at once in n
processes (no shared interpreter lock, no shared work), and n × one's time ÷ their time is
about the most an n-thread decode doing the same work could reach on this machine.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import queue
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("NUMBA_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import onnx  # noqa: E402

import nnr  # noqa: E402
from nnr.formats.onnx_io import FLOAT_TYPES, tensor_slots  # noqa: E402
from nnr.fidelity import output_snr_db, run, session, top1_agreement  # noqa: E402
from nnr.images import crops, labelled_photos  # noqa: E402


def corpus() -> list[dict]:
    x, _ = crops(labelled_photos(ROOT / "conformance/data/imagenet"))
    return [{"name": "efficientnet_lite0", "path": ROOT / "conformance/models/efficientnet_lite0.onnx",
             "inputs": {"image": x}}]


def float_weights(model: onnx.ModelProto) -> tuple[int, int]:
    """(count, bytes as float32) of float weights in the model."""
    n = 0
    for s in tensor_slots(model):
        if s.tensor.data_type in FLOAT_TYPES:
            n += int(np.prod(s.tensor.dims, dtype=np.int64)) if s.tensor.dims else 1
    return n, 4 * n


def timed(fn, repeat: int) -> tuple[float, object]:
    fn()
    times, out = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def bench_model(item: dict, repeat: int) -> list[dict]:
    import zstandard
    from onnxruntime.quantization import QuantType, quantize_dynamic

    logging.getLogger().setLevel(logging.ERROR)  # quantize_dynamic logs per-tensor warnings
    path = item["path"]
    model = onnx.load(path)
    n_weights, f32_bytes = float_weights(model)
    original = path.read_bytes()
    ref = run(session(original), item["inputs"])
    rows = []

    def fidelity(serialized: bytes) -> tuple[float, float]:
        out = run(session(serialized), item["inputs"])
        return top1_agreement(ref, out), output_snr_db(ref, out)

    def row(method: str, size: int, agree: float, snr: float, enc: float | None, dec: float | None) -> None:
        rows.append({
            "model": item["name"], "method": method, "bytes": size, "ratio": size / len(original),
            "bits_per_weight": 8 * size / n_weights, "top1_agreement": agree, "output_snr_db": snr,
            "encode_MBps": None if enc is None else f32_bytes / enc / 1e6,
            "decode_MBps": None if dec is None else f32_bytes / dec / 1e6,
        })

    row("onnx (original)", len(original), 1.0, float("inf"), None, None)
    for label, opts in (("nnr default", {}), ("nnr --data-free (0.4's default rule)", {"probe": False}),
                        ("nnr --lossless", {"lossless": True})):
        t_enc, data = timed(lambda: nnr.encode(original, threads=1, **opts), repeat)
        t_dec, decoded = timed(lambda: nnr.decode(data, threads=1), repeat)
        agree, snr = fidelity(decoded.SerializeToString())
        row(label, len(data), agree, snr, t_enc, t_dec)
    cctx, dctx = zstandard.ZstdCompressor(level=19), zstandard.ZstdDecompressor()
    t_enc, z = timed(lambda: cctx.compress(original), 1)
    t_dec, _ = timed(lambda: dctx.decompress(z), repeat)
    row("zstd -19 (ONNX file)", len(z), 1.0, float("inf"), t_enc, t_dec)
    with tempfile.TemporaryDirectory() as tmp:
        q = Path(tmp) / "int8.onnx"
        t0 = time.perf_counter()
        quantize_dynamic(str(path), str(q), weight_type=QuantType.QInt8)
        t_enc = time.perf_counter() - t0
        qbytes = q.read_bytes()
        agree, snr = fidelity(qbytes)
        row("onnxruntime dynamic int8", len(qbytes), agree, snr, t_enc, None)
    return rows


TREE_IMPORTS = r"""
import importlib.util, sys
sys.path.insert(0, sys.argv[1])   # trees before nnr.codec had top-level codec and formats packages
class _Tree:   # nnr and its codec and formats layers from the tree in argv[1], not the installed ones
    folders = {"nnr": "nnr", "nnr.codec": "codec", "nnr.formats": "formats"}
    @classmethod
    def find_spec(cls, name, path=None, target=None):
        if name not in cls.folders:
            return None
        folder = f"{sys.argv[1]}/{cls.folders[name]}"
        return importlib.util.spec_from_file_location(name, f"{folder}/__init__.py", submodule_search_locations=[folder])
sys.meta_path.insert(0, _Tree)
"""
"""Makes the interpreter import nnr from a checkout: its package folders map to three
subpackages (pyproject.toml), so a path on sys.path alone would leave nnr.codec and
nnr.formats to the installed copy."""

BASELINE_RUN = TREE_IMPORTS + r"""
import inspect, json, statistics, time
import nnr
source, repeat, out = open(sys.argv[2], "rb").read(), int(sys.argv[3]), {}
one = lambda fn: {"threads": 1} if "threads" in inspect.signature(fn).parameters else {}  # older: one thread
enc_kw, dec_kw = one(nnr.encode), one(nnr.decode)
for label, opts in (("nnr default", {}), ("nnr --data-free (0.4's default rule)", {"probe": False}),
                    ("nnr --lossless", {"lossless": True})):
    data = nnr.encode(source, **opts, **enc_kw)
    times = {"encode": [], "decode": []}
    nnr.decode(data, **dec_kw)
    for _ in range(repeat):
        t0 = time.perf_counter(); data = nnr.encode(source, **opts, **enc_kw); times["encode"].append(time.perf_counter() - t0)
        t0 = time.perf_counter(); nnr.decode(data, **dec_kw); times["decode"].append(time.perf_counter() - t0)
    out[label] = {"bytes": len(data), **{k: statistics.median(v) for k, v in times.items()}}
print(json.dumps(out))
"""


THIS_CHECKOUT = "this checkout"


def bench_baseline(item: dict, ref: str, repeat: int) -> list[dict]:
    """nnr's own rows measured at git ``ref`` and in this checkout by the same harness, each
    in a fresh subprocess (the baseline on a temporary worktree), so the two compare fairly:
    ``repeat`` rounds, each timing the baseline once and then this checkout once, so a slow
    spell of the machine falls on both; the median of the rounds is kept."""
    n_weights, f32_bytes = float_weights(onnx.load(item["path"]))

    def measure(tree: Path) -> dict:
        res = subprocess.run([sys.executable, "-c", BASELINE_RUN, str(tree), str(item["path"]), "1"],
                             cwd=tree, capture_output=True, text=True, check=True)
        return json.loads(res.stdout.strip().splitlines()[-1])

    def median_of(rounds: list[dict]) -> dict:
        return {method: {"bytes": m["bytes"], **{k: statistics.median(r[method][k] for r in rounds)
                                                   for k in ("encode", "decode")}}
                for method, m in rounds[0].items()}

    with tempfile.TemporaryDirectory() as tmp:
        tree = Path(tmp) / "tree"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q", str(tree), ref], check=True)
        try:
            rounds: dict = {ref: [], THIS_CHECKOUT: []}
            for _ in range(repeat):
                for where, path in ((ref, tree), (THIS_CHECKOUT, ROOT)):
                    rounds[where].append(measure(path))
            measured = {where: median_of(r) for where, r in rounds.items()}
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)], check=True)
    rows = []
    for where, methods in measured.items():
        for method, m in methods.items():
            rows.append(_baseline_row(item, f"{method} at {where}", m, n_weights, f32_bytes, ref))
    return rows


def _baseline_row(item: dict, method: str, m: dict, n_weights: int, f32_bytes: int, ref: str) -> dict:
    return {"model": item["name"], "method": method, "bytes": m["bytes"],
            "ratio": m["bytes"] / item["path"].stat().st_size, "bits_per_weight": 8 * m["bytes"] / n_weights,
            "top1_agreement": None, "output_snr_db": None, "encode_MBps": f32_bytes / m["encode"] / 1e6,
            "decode_MBps": f32_bytes / m["decode"] / 1e6, "baseline": ref}


def baseline_ratios(rows: list[dict], ref: str) -> str:
    """This checkout's encode and decode speed and size over the baseline's, per nnr method,
    both measured by the baseline harness."""
    lines = []
    for r in rows:
        if not r["method"].endswith(f" at {THIS_CHECKOUT}"):
            continue
        method = r["method"][:-len(f" at {THIS_CHECKOUT}")]
        base = next((b for b in rows if b["model"] == r["model"] and b["method"] == f"{method} at {ref}"), None)
        if base is None:
            continue
        lines.append(f"- {r['model']}, {method}: decode {r['decode_MBps'] / base['decode_MBps']:.2f}×, "
                     f"encode {r['encode_MBps'] / base['encode_MBps']:.2f}× the speed at {ref}; "
                     f"file {r['bytes'] / base['bytes']:.4f}× its size")
    return "\n".join(lines)


def markdown(rows: list[dict]) -> str:
    head = ("| model | method | bytes | ratio | bits/weight | top-1 agreement | output SNR dB | "
            "encode MB/s | decode MB/s |\n|---|---|---|---|---|---|---|---|---|")

    def f(v, fmt):
        return "-" if v is None else ("exact" if isinstance(v, float) and np.isinf(v) else format(v, fmt))

    lines = [head] + [
        f"| {r['model']} | {r['method']} | {r['bytes']:,} | {r['ratio']:.4f} | {r['bits_per_weight']:.2f} | "
        f"{f(r['top1_agreement'], '.4f')} | {f(r['output_snr_db'], '.1f')} | {f(r['encode_MBps'], '.1f')} | "
        f"{f(r['decode_MBps'], '.1f')} |" for r in rows]
    return "\n".join(lines)


def encode_time_ratios(rows: list[dict]) -> str:
    """The default's encode time over the data-free rule's (the previous release's default:
    the same work, with 1-D tensors now finer), per model, measured in this run; the issue
    allows 3×."""
    lines = []
    for model in dict.fromkeys(r["model"] for r in rows):
        speed = {r["method"].split(" (")[0]: r["encode_MBps"] for r in rows
                 if r["model"] == model and not r.get("baseline")}
        ratio = speed["nnr --data-free"] / speed["nnr default"]
        lines.append(f"- {model}: the default encode takes {ratio:.2f}× the time of `--data-free` "
                     f"(the 0.4 default) in this run")
    return "\n".join(lines)


def cpu_ticks(stat: Path = Path("/proc/stat")) -> tuple[int, int] | None:
    """(wanted, stolen) CPU ticks of this machine so far, from /proc/stat (None where there is
    none): ticks its CPUs ran or wanted to run (user, nice, system, irq, softirq, steal; not
    idle or iowait), and the stolen ones, which a hypervisor gave another guest meanwhile."""
    try:
        fields = [int(v) for v in stat.read_text().split("\n", 1)[0].split()[1:9]]
    except (OSError, ValueError):
        return None
    if len(fields) < 8:
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    return user + nice + system + irq + softirq + steal, steal


def timed_steal(fn, repeat: int) -> tuple[float, float | None]:
    """(median seconds of ``fn`` as :func:`timed`, the share of the CPU time this guest wanted
    meanwhile that its hypervisor gave to others, or None): a speed-up measured while the host
    takes the guest's cores is not the code's. Idle time is left out, so runs on one thread and
    on all compare."""
    return timed_rounds({0: fn}, repeat)[0]


def timed_rounds(fns: dict, repeat: int) -> dict:
    """{key: (median seconds, stolen share as :func:`timed_steal`)} of each function, after a
    warm-up each, timed in ``repeat`` rounds that run every function once in turn: a slow spell
    of the machine then falls on all of them, not on one."""
    for fn in fns.values():
        fn()
    times: dict = {k: [] for k in fns}
    ticks: dict = {k: [0, 0] for k in fns}
    for _ in range(repeat):
        for k, fn in fns.items():
            before = cpu_ticks()
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
            after = cpu_ticks()
            if before is not None and after is not None:
                ticks[k][0] += after[0] - before[0]
                ticks[k][1] += after[1] - before[1]
    return {k: (statistics.median(times[k]), ticks[k][1] / ticks[k][0] if ticks[k][0] > 0 else None) for k in fns}


BARRIER_SECONDS = 3600
"""How long a concurrent-decode worker waits for the others before giving up."""


def _decode_at_barrier(path: str, worker: int, repeat: int, barrier, results) -> None:
    """Worker of :func:`concurrent_decodes`: a warm-up decode, then per round a one-thread
    decode by worker 0 alone and one by every worker at once, reporting (kind, round, seconds)."""
    nnr.decode(path, threads=1)
    for i in range(repeat):
        barrier.wait(BARRIER_SECONDS)
        if worker == 0:
            t0 = time.perf_counter()
            nnr.decode(path, threads=1)
            results.put(("alone", i, time.perf_counter() - t0))
        barrier.wait(BARRIER_SECONDS)
        t0 = time.perf_counter()
        nnr.decode(path, threads=1)
        results.put(("at once", i, time.perf_counter() - t0))


def concurrent_decodes(path: Path, processes: int, repeat: int,
                       paths: list[Path] | None = None) -> tuple[float, float]:
    """(median seconds of a one-thread decode of ``path`` alone, median seconds of
    ``processes`` of them run at once in separate processes), from ``repeat`` rounds that do
    both; a round of simultaneous decodes lasts as long as its slowest. ``paths`` gives each
    process its own file instead (the first one decodes alone). If one fails, all stop."""
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")   # a fresh interpreter: safe from any caller's threads
    barrier, results = ctx.Barrier(processes), ctx.Queue()
    files = [str(p) for p in paths] if paths is not None else [str(path)] * processes
    workers = [ctx.Process(target=_decode_at_barrier, args=(files[i], i, repeat, barrier, results), daemon=True)
               for i in range(processes)]
    rounds: dict = {"alone": {}, "at once": {}}
    failed = True
    try:
        for w in workers:
            w.start()
        for _ in range((processes + 1) * repeat):
            while True:
                try:
                    kind, i, seconds = results.get(timeout=1)
                    break
                except queue.Empty:
                    if any(w.exitcode not in (None, 0) for w in workers):   # the others wait at the barrier
                        raise SystemExit(f"bench: a concurrent decode of {path} failed") from None
            rounds[kind][i] = max(rounds[kind].get(i, 0.0), seconds)
        failed = False
    finally:
        if failed:
            barrier.abort()   # the others stop waiting for the one that failed
        for w in workers:
            if w.pid is None:
                continue
            w.join(timeout=1 if failed else 60)
            if w.is_alive():
                w.kill()
                w.join()
    return statistics.median(rounds["alone"].values()), statistics.median(rounds["at once"].values())


def bench_threads(size: str, counts: list[int], repeat: int) -> list[dict]:
    """Encode and decode throughput of a generated model at each thread count (the default and
    the data-free rule), with the files and the decoded weights checked identical across counts;
    the decodes of all counts are timed in alternation (:func:`timed_rounds`)."""
    from nnr.sizes import parse_size
    from tools.bench_memory import make_model

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        model = make_model(Path(tmp), parse_size(size))
        weights = (Path(tmp) / "model.onnx.data").stat().st_size
        for method, options in (("nnr --data-free", {"probe": False}), ("nnr default", {})):
            files, decoded, encoded = {}, {}, {}
            for n in counts:
                out = Path(tmp) / f"m{n}.nnr"
                encoded[n] = timed_steal(lambda: nnr.encode_to_file(model, out, threads=n, **options), repeat)
                files[n] = out.read_bytes()
                back = Path(tmp) / f"d{n}.onnx"
                nnr.decode_to_file(out, back, external_data=True, threads=n)
                decoded[n] = hashlib.sha256(Path(f"{back}.data").read_bytes()).hexdigest()
            if len(set(files.values())) != 1 or len(set(decoded.values())) != 1:
                raise SystemExit(f"bench: {method} made different files at thread counts {counts}")
            out = Path(tmp) / f"m{counts[0]}.nnr"
            # CPU work, no disk writes
            decodes = timed_rounds({n: (lambda n=n: nnr.decode(out, threads=n)) for n in counts}, repeat)
            # what `nnr decode big.nnr -o out/big.onnx` does with a large model: weights streamed to external data
            back = Path(tmp) / "to_file.onnx"
            to_file = timed_rounds({n: (lambda n=n: nnr.decode_to_file(out, back, external_data=True, threads=n))
                                    for n in counts}, repeat)
            for n in counts:
                (seconds, steal), (dec_seconds, dec_steal) = encoded[n], decodes[n]
                row = {"method": method, "threads": n, "weight_bytes": weights, "seconds": seconds,
                       "encode_MBps": weights / 1e6 / seconds, "encode_steal": steal,
                       "decode_seconds": dec_seconds, "decode_MBps": weights / 1e6 / dec_seconds,
                       "decode_steal": dec_steal, "to_file_seconds": to_file[n][0], "to_file_steal": to_file[n][1]}
                if n > 1:
                    row["decode_alone_seconds"], row["concurrent_decode_seconds"] = concurrent_decodes(out, n, repeat)
                rows.append(row)
    return rows


def threads_table(rows: list[dict], size: str) -> str:
    lines = [f"Encoding a generated {size} transformer-shaped model (weights in external data) to a file, then "
             "decoding that file in memory (`nnr.decode`), same run, the decodes at each thread count in turn; the "
             "files, and the weights decoded to external data, are identical at every thread count:", "",
             "| method | threads | encode s | encode MB/s | speed-up | stolen | decode s | decode MB/s | speed-up "
             "| stolen | alone s | at once s | ceiling | to file s | speed-up |",
             "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|"]
    for r in rows:
        one = next(x for x in rows if x["method"] == r["method"] and x["threads"] == 1)
        lines.append(f"| {r['method']} | {r['threads']} | {r['seconds']:.1f} | {r['encode_MBps']:.1f} | "
                     f"{one['seconds'] / r['seconds']:.2f}× | {_share(r.get('encode_steal'))} | "
                     f"{r['decode_seconds']:.1f} | {r['decode_MBps']:.1f} | "
                     f"{one['decode_seconds'] / r['decode_seconds']:.2f}× | {_share(r.get('decode_steal'))} | "
                     f"{_seconds(r.get('decode_alone_seconds'))} | {_seconds(r.get('concurrent_decode_seconds'))} | "
                     f"{_ceiling(r)} | {_seconds(r.get('to_file_seconds'))} | {_to_file_speedup(r, one)} |")
    lines += ["", "\"stolen\": of the CPU time this machine's cores ran or wanted to run during those runs, the "
              "share its hypervisor gave to other guests (/proc/stat steal); a speed-up measured while it is high "
              "says more about the host than the code. Contention from other processes on the machine itself "
              "does not show here.",
              "", "\"ceiling\": the same file decoded on one thread by as many processes as the row has threads, all "
              "at once (\"at once s\", the slowest), alternating with one such decode alone (\"alone s\"): threads × "
              "the time alone ÷ the time at once. A decode of the same work on that many threads can hardly beat it "
              "on this machine: the processes share no interpreter lock and no work, only the cores, caches and "
              "memory bandwidth. It is measured after the thread rows, in other processes: compare its \"alone\" "
              "time with the one-thread decode row to see how far the machine drifted in between.",
              "", "\"to file\": the same file decoded to an ONNX file with its weights in external data "
              "(`nnr.decode_to_file(..., external_data=True)`, what `nnr decode` does with a large model), timed "
              "like the decodes in memory. The calling thread writes the weights while the pool decodes, so with "
              "threads the writing overlaps the decoding; in memory, the calling thread's copying into protobuf "
              "fields is what the threads share."]
    return "\n".join(lines)


def _to_file_speedup(row: dict, one: dict) -> str:
    if row.get("to_file_seconds") is None or one.get("to_file_seconds") is None:
        return "–"
    return f"{one['to_file_seconds'] / row['to_file_seconds']:.2f}×"


def ceiling(row: dict) -> float | None:
    """The decode speed-up ``row``'s thread count could reach at most here (see threads_table)."""
    if row["threads"] == 1:
        return 1.0
    if "concurrent_decode_seconds" not in row:
        return None
    return row["threads"] * row["decode_alone_seconds"] / row["concurrent_decode_seconds"]


def _ceiling(row: dict) -> str:
    c = ceiling(row)
    return "–" if c is None else f"{c:.2f}×"


def _seconds(x: float | None) -> str:
    return "–" if x is None else f"{x:.2f}"


def _share(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.0f} %"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--markdown", type=Path)
    ap.add_argument("--baseline", metavar="REF", help="also measure nnr at this git commit or tag (e.g. v0.4.0)")
    ap.add_argument("--scaling", metavar="SIZE", help="also time encoding a generated model of SIZE (e.g. 300MB) "
                                                      "at each --threads count")
    ap.add_argument("--threads", default="1,2", help="thread counts for --scaling (default 1,2)")
    ap.add_argument("--no-corpus", action="store_true", help="skip the corpus models (with --scaling)")
    args = ap.parse_args()
    rows = []
    for item in [] if args.no_corpus else corpus():
        rows.extend(bench_model(item, args.repeat))
        if args.baseline:
            rows.extend(bench_baseline(item, args.baseline, args.repeat))
    table = ""
    if rows:
        table = markdown(rows) + "\n\n" + encode_time_ratios(rows)
    if args.baseline:
        table += "\n" + baseline_ratios(rows, args.baseline)
    if args.scaling:
        scaling = bench_threads(args.scaling, [int(n) for n in args.threads.split(",")], args.repeat)
        rows.extend(scaling)
        table += ("\n\n" if table else "") + threads_table(scaling, args.scaling)
    print(table)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2, default=str) + "\n")
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        command = "python " + " ".join(["tools/bench.py"] + [a for a in sys.argv[1:] if a not in ("--markdown",
                                                                                                str(args.markdown))])
        args.markdown.write_text(f"Made by `{command} --markdown {args.markdown}`.\n\n{table}\n")


if __name__ == "__main__":
    main()
