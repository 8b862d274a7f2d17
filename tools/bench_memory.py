"""Peak memory of nnr encode and nnr decode against the model's weight bytes, on generated
transformer-shaped models whose weights live in external data.

    python tools/bench_memory.py [--sizes 100MB,300MB] [--encode-flags "--data-free"] [--markdown out.md] [--json out.json]

For each size it writes a model of MatMul layers (d×d attention projections, d×4d and 4d×d
feed-forward weights, random Laplace float32 values: realistic for size and speed, not for
accuracy) with its weights in a .data file, then runs ``nnr encode`` and ``nnr decode
--external-data`` each in its own process and reads the process's peak resident set size
(getrusage). The decoded weights are checked tensor by tensor against the originals
(output SNR of each tensor), reading both files through memory maps, in a spawned process of
its own: a command's peak includes the peak of the process that starts it, so this one stays
small (its own imports and one generated tensor at a time).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import onnx  # noqa: E402
from onnx import TensorProto, helper  # noqa: E402

from nnr.formats.onnx_io import refer_external  # noqa: E402
from nnr.sizes import parse_size  # noqa: E402


def make_model(folder: Path, weight_bytes: int, d: int = 1024, seed: int = 0) -> Path:
    """A chain of MatMuls shaped like transformer blocks (four d×d projections, then d×4d and
    4d×d), ``weight_bytes`` of float32 weights in ``model.onnx.data``; returns the model's path."""
    per_block = 4 * d * d + 2 * 4 * d * d           # q, k, v, o; up and down projections
    blocks = max(1, round(weight_bytes / (4 * per_block)))
    rng = np.random.default_rng(seed)
    nodes, inits, name = [], [], "x"
    data_path = folder / "model.onnx.data"
    offset = 0
    with open(data_path, "wb") as data:
        for b in range(blocks):
            for j, (rows, cols) in enumerate([(d, d)] * 4 + [(d, 4 * d), (4 * d, d)]):
                w = rng.laplace(0.0, 0.02, (rows, cols)).astype(np.float32)
                data.write(w.tobytes())
                t = TensorProto(name=f"block{b}.w{j}", data_type=TensorProto.FLOAT, dims=[rows, cols])
                refer_external(t, data_path.name, offset, w.nbytes)
                offset += w.nbytes
                inits.append(t)
                nodes.append(helper.make_node("MatMul", [name, t.name], [f"h{b}_{j}"]))
                name = f"h{b}_{j}"
            del w
    graph = helper.make_graph(nodes, "transformer_shaped", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                                           [1, 16, d])],
                              [helper.make_tensor_value_info(name, TensorProto.FLOAT, [1, 16, d])], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    path = folder / "model.onnx"
    path.write_bytes(model.SerializeToString())
    return path


def peak_rss(argv: list[str]) -> tuple[int, float]:
    """Run ``argv``; its peak resident set size in bytes and its wall time in seconds."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise SystemExit(f"bench_memory: {shlex.join(argv)} exited {proc.returncode}")
    return usage.ru_maxrss * 1024, time.perf_counter() - t0


def _weights(model_path: Path) -> dict[str, np.ndarray]:
    """Every external float32 tensor of the model, memory-mapped from its data file."""
    model = onnx.load(model_path, load_external_data=False)
    found = {}
    for t in model.graph.initializer:
        info = {e.key: e.value for e in t.external_data}
        found[t.name] = np.memmap(model_path.parent / info["location"], dtype=np.float32, mode="r",
                                  offset=int(info.get("offset", 0)), shape=tuple(t.dims))
    return found


def worst_tensor_snr(original: Path, decoded: Path) -> float:
    """The lowest per-tensor SNR (dB) of the decoded weights against the originals."""
    a, b = _weights(original), _weights(decoded)
    worst = np.inf
    for name, w in a.items():
        err = float(np.sum((np.asarray(b[name], np.float64) - w) ** 2))
        if err:
            worst = min(worst, 10 * np.log10(float(np.sum(np.asarray(w, np.float64) ** 2)) / err))
    return worst


def checked_apart(original: Path, decoded: Path) -> float:
    """:func:`worst_tensor_snr` in a fresh spawned process: reading both models' weights would
    raise this process's peak memory, and Linux counts the peak of the process that starts a
    command in the command's own peak (ru_maxrss survives fork and exec), so every later
    measurement would report at least that much."""
    import multiprocessing

    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(worst_tensor_snr, (original, decoded))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="100MB,300MB", help="comma-separated weight sizes, e.g. 300MB,1GB,2.5GB")
    ap.add_argument("--encode-flags", default="--data-free", help="flags for nnr encode (default --data-free)")
    ap.add_argument("--decode-flags", default="", help="flags for nnr decode, e.g. --threads 1 (default none)")
    ap.add_argument("--dir", type=Path, help="work folder (default: a temporary one, removed after)")
    ap.add_argument("--markdown", type=Path)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    nnr = [sys.executable, "-m", "nnr.cli"]
    rows = []
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        for size in [s.strip() for s in args.sizes.split(",") if s.strip()]:
            folder = Path(tmp) / size
            (folder / "out").mkdir(parents=True)
            model = make_model(folder, parse_size(size))
            weights = (folder / "model.onnx.data").stat().st_size
            enc_rss, enc_s = peak_rss([*nnr, "encode", str(model), "-o", str(folder / "m.nnr"), "-q",
                                       *shlex.split(args.encode_flags)])
            dec_rss, dec_s = peak_rss([*nnr, "decode", str(folder / "m.nnr"), "-o", str(folder / "out" / "model.onnx"),
                                       "--external-data", "-q", *shlex.split(args.decode_flags)])
            snr = checked_apart(model, folder / "out" / "model.onnx")
            rows.append({"size": size, "weight_bytes": weights, "nnr_bytes": (folder / "m.nnr").stat().st_size,
                         "encode_peak_rss": enc_rss, "encode_seconds": enc_s, "decode_peak_rss": dec_rss,
                         "decode_seconds": dec_s, "worst_tensor_snr_db": snr})
            print(f"{size}: encode peak {enc_rss / weights:.2f}x the weights ({enc_s:.0f} s), decode peak "
                  f"{dec_rss / weights:.2f}x ({dec_s:.0f} s), worst tensor SNR {snr:.1f} dB", file=sys.stderr)
            for f in folder.rglob("*"):
                if f.is_file():
                    f.unlink()
    command = "python tools/bench_memory.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    if args.json:
        args.json.write_text(json.dumps({"command": command, "encode_flags": args.encode_flags,
                                         "decode_flags": args.decode_flags, "rows": rows},
                                        indent=2) + "\n")
    encode = f"`nnr encode {args.encode_flags}`" if args.encode_flags.strip() else "`nnr encode` (default options)"
    decode = " ".join(["nnr decode --external-data", *shlex.split(args.decode_flags)])
    lines = ["```sh", command, "```", "", f"{encode}, then `{decode}`:", "",
             "| weights | .nnr | encode peak RSS | ÷ weights | encode s | decode peak RSS | ÷ weights | decode s "
             "| worst tensor SNR |", "|---|--:|--:|--:|--:|--:|--:|--:|--:|"]
    for r in rows:
        w = r["weight_bytes"]
        enc, dec = r["encode_peak_rss"], r["decode_peak_rss"]
        lines.append(f"| {w / 1e6:,.0f} MB | {r['nnr_bytes'] / 1e6:,.1f} MB | {enc / 1e6:,.0f} MB | {enc / w:.2f} | "
                     f"{r['encode_seconds']:.0f} | {dec / 1e6:,.0f} MB | {dec / w:.2f} | {r['decode_seconds']:.0f} | "
                     f"{r['worst_tensor_snr_db']:.1f} dB |")
    text = "\n".join(lines) + "\n"
    if args.markdown:
        args.markdown.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
