"""Where a whole-model gap to NNCodec comes from: coding efficiency tensor by tensor, and the
structure of the error at equal squared error.

    PYTHONPATH=. /tmp/nncv/bin/python tools/tensor_rd.py --models akiki_vad,crepe_tiny,mnist_cnn \\
        --markdown docs/tensor_rd.md --json docs/tensor_rd.json

Runs in NNCodec's side venv (tools/compare_nncodec.py says how to make it). Two measurements
per corpus model, on the tensors NNCodec codes with its qp (rank >= 2):

1. Coding efficiency. Each tensor alone is coded by NNCodec over a qp sweep and by nnr's
   tensor codec (codec.lossy_encode, the data-free encoder's coder) over steps 2^(e/4) for e
   in half steps. At every NNCodec point, nnr's bytes for the same mean squared error are
   interpolated on nnr's own curve (log bytes against log error); the table gives, per qp,
   nnr's bytes over NNCodec's summed over the tensors. Allocation plays no part: both codecs
   are compared at the error NNCodec gave each tensor.
2. Error structure. At one qp of NNCodec (--hybrid-qp), every such tensor is replaced by nnr's
   reconstruction at the step whose squared error matches NNCodec's for that tensor (1-D
   tensors keep NNCodec's values in both models), and the model runs on the task's real
   inputs. Same error per tensor, so a fidelity difference comes from how the error is laid
   out, e.g. a shrinkage every weight shares against noise that averages out. With
   --one-at-a-time, also one run per tensor with only that tensor from nnr.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import shlex
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))

import compare_nncodec as cn  # noqa: E402
from tools._emit import emit  # noqa: E402

RECONSTRUCTIONS = ("mse", "gain")
NNR_EXPONENTS = np.arange(-48.0, 8.5, 0.5)   # nnr steps 2^(e/4), past both ends of NNCodec usual sweeps


def nncodec_tensor(nnc: Any, x: np.ndarray, qp: int) -> tuple[np.ndarray, int]:
    """NNCodec's decoded values and bitstream bytes for one float32 tensor at ``qp``."""
    with tempfile.TemporaryDirectory() as results, contextlib.redirect_stdout(sys.stderr):
        bitstream = nnc.encode(x, args={"qp": int(qp), "results": results, "verbose": False, "tensor_id": "0"})
        decoded = nnc.decode(bitstream)
    decoded = np.asarray(decoded["0"] if isinstance(decoded, dict) else decoded).reshape(x.shape)
    return decoded.astype(np.float32), len(bitstream)


def nnr_tensor(x: np.ndarray, exponent: float, reconstruction: str) -> tuple[np.ndarray, int]:
    """nnr's reconstruction and body bytes for one tensor at step 2^(exponent/4)."""
    from nnr.codec.lossy_encode import encode_lossy

    res = encode_lossy(x.astype(np.float64), 2.0 ** (exponent / 4), reconstruction=reconstruction)
    return res.reconstruction.astype(np.float32), len(res.body)


def mse(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))


def nnr_curve(x: np.ndarray, reconstruction: str) -> list[tuple[float, int, float]]:
    """(exponent, bytes, mse) of nnr's sweep; steps too fine for the level range are skipped."""
    from nnr.codec.lossy_encode import LevelOverflow

    out = []
    for e in NNR_EXPONENTS:
        try:
            y, n = nnr_tensor(x, float(e), reconstruction)
        except LevelOverflow:
            continue
        out.append((float(e), n, mse(y, x)))
    return out


def bytes_at(curve: list[tuple[float, int, float]], target: float) -> float | None:
    """nnr's bytes at squared error ``target``, interpolated in log–log; None outside the sweep."""
    pts = sorted((m, n) for _, n, m in curve if m > 0)
    if target <= 0 or not pts or not pts[0][0] <= target <= pts[-1][0]:
        return None
    lm = np.log([m for m, _ in pts])
    lb = np.log([n for _, n in pts])
    return float(np.exp(np.interp(math.log(target), lm, lb)))


def step_for(x: np.ndarray, target: float, curve: list[tuple[float, int, float]], reconstruction: str) -> float:
    """The exponent whose squared error is closest to ``target`` from below, refined by bisection."""
    below = [e for e, _, m in curve if m <= target]
    above = [e for e, _, m in curve if m > target]
    if not below:
        return min(e for e, _, _ in curve)
    lo = max(below)
    hi = min([e for e in above if e > lo], default=lo)
    for _ in range(12):
        if hi - lo < 1e-3:
            break
        mid = (lo + hi) / 2
        if mse(nnr_tensor(x, mid, reconstruction)[0], x) <= target:
            lo = mid
        else:
            hi = mid
    return lo


def measure(name: str, manifest: Any, qps: list[int], hybrid_qp: int, log, one_at_a_time: bool = False) -> dict:
    from onnx import ModelProto, numpy_helper

    from conformance.corpus import load_model
    from conformance.tasks import TASKS
    from nnr.formats.onnx_io import fill_tensor, strip_tensor, tensor_slots

    nnc = cn.import_nncodec("tools/tensor_rd.py compares with NNCodec")
    task = TASKS[manifest.models[name].task]
    metric = cn.threshold_metric(task.primary)
    model, _ = load_model(name, manifest)
    ref = task.infer(model)
    slots = cn.nncodec_slots(model)
    model_slots = tensor_slots(model)
    names = {i: model_slots[i].tensor.name for i in slots}
    values = {i: numpy_helper.to_array(model_slots[i].tensor).astype(np.float32) for i in slots}
    matrices = [i for i in slots if values[i].ndim >= 2]

    coding = {r: {q: [0, 0.0] for q in qps} for r in RECONSTRUCTIONS}
    curves: dict[str, dict[int, list]] = {r: {} for r in RECONSTRUCTIONS}
    hybrid_err: dict[int, float] = {}
    for i in matrices:
        x = values[i]
        for r in RECONSTRUCTIONS:
            curves[r][i] = nnr_curve(x, r)
        for q in sorted(set(qps) | {hybrid_qp}):
            y, n = nncodec_tensor(nnc, x, q)
            err = mse(y, x)
            if q == hybrid_qp:
                hybrid_err[i] = err
            if q not in qps:
                continue
            for r in RECONSTRUCTIONS:
                b = bytes_at(curves[r][i], err)
                if b is not None:
                    coding[r][q][0] += n
                    coding[r][q][1] += b
        log(f"{name}: tensor {names[i]} {tuple(x.shape)} done")

    def run(replace) -> tuple[int, float]:
        work = ModelProto()
        work.CopyFrom(model)
        targets = tensor_slots(work)
        total = 0
        for i in slots:
            x = values[i]
            y, n = replace(i, x)
            total += n
            strip_tensor(targets[i].tensor)
            fill_tensor(targets[i].tensor, y.astype(values[i].dtype).reshape(x.shape).tobytes())
        return total, float(task.measure(ref, task.infer(work))[metric])

    nnc_coded = {i: nncodec_tensor(nnc, values[i], hybrid_qp) for i in slots}  # 1-D: NNCodec's own fixed qp
    matched = {r: {i: nnr_tensor(values[i], step_for(values[i], hybrid_err[i], curves[r][i], r), r)
                   for i in matrices} for r in RECONSTRUCTIONS}

    def with_nnr(chosen: dict[int, tuple[np.ndarray, int]]):
        return lambda i, x: chosen.get(i, nnc_coded[i])

    hybrid = {"nncodec": run(with_nnr({}))}
    for r in RECONSTRUCTIONS:
        hybrid[f"nnr_{r}"] = run(with_nnr(matched[r]))
    log(f"{name}: at NNCodec qp {hybrid_qp}: " + ", ".join(f"{k} {b:,} B {v:.4g}" for k, (b, v) in hybrid.items()))
    single = []
    if one_at_a_time:
        for i in matrices:
            row = {"tensor": names[i], "shape": list(values[i].shape)}
            row.update({r: run(with_nnr({i: matched[r][i]}))[1] for r in RECONSTRUCTIONS})
            single.append(row)
            log(f"{name}: only {row['tensor']} from nnr: " + ", ".join(f"{r} {row[r]:.4g}" for r in RECONSTRUCTIONS))
    return {"metric": metric, "tensors": len(matrices),
            "coding": {r: {str(q): (v[1] / v[0] if v[0] else None) for q, v in c.items()} for r, c in coding.items()},
            "hybrid_qp": hybrid_qp, "hybrid": {k: {"bytes": b, "metric": v} for k, (b, v) in hybrid.items()},
            "one_at_a_time": single}


def render(command: str, qps: list[int], results: dict[str, dict]) -> str:
    lines = ["```sh", command, "```", "",
             "Coding efficiency alone: nnr's bytes over NNCodec's for the same squared error in every "
             "tensor NNCodec codes with its qp (rank ≥ 2), summed over the tensors, at each NNCodec qp "
             "(reconstruction `mse` / `gain`; below 1: nnr smaller).", "",
             "| model | tensors | " + " | ".join(f"qp {q}" for q in qps) + " |",
             "|---|--:|" + "--:|" * len(qps)]
    for name, m in results.items():
        cells = []
        for q in qps:
            a, b = (m["coding"][r][str(q)] for r in RECONSTRUCTIONS)
            cells.append("–" if a is None or b is None else f"{a:.3f} / {b:.3f}")
        lines.append(f"| {name} | {m['tensors']} | " + " | ".join(cells) + " |")
    lines += ["", "Error structure: the same squared error per tensor as NNCodec's at one qp, run on the "
              "task's real inputs (1-D tensors: NNCodec's values in every model). Bytes are the coded "
              "tensors' payloads.", "",
              "| model | NNCodec qp | metric | NNCodec | nnr, reconstruction mse | nnr, reconstruction gain |",
              "|---|--:|---|--:|--:|--:|"]
    for name, m in results.items():
        h = m["hybrid"]
        fmt = (lambda v: f"{v:.4f}") if m["metric"] == "agreement" else (lambda v: f"{v:.1f} dB")
        lines.append(f"| {name} | {m['hybrid_qp']} | {m['metric']} | "
                     + " | ".join(f"{h[k]['bytes']:,} B, {fmt(h[k]['metric'])}" for k in ("nncodec", "nnr_mse", "nnr_gain"))
                     + " |")
    singles = [(name, m) for name, m in results.items() if m.get("one_at_a_time")]
    if singles:
        lines += ["", "One tensor at a time: every tensor NNCodec's at the qp above except one, nnr's at the same "
                  "squared error; which tensors the whole-model difference comes from.", "",
                  "| model | tensor | shape | NNCodec everywhere | this tensor nnr, mse | nnr, gain |",
                  "|---|---|---|--:|--:|--:|"]
        for name, m in singles:
            fmt = (lambda v: f"{v:.4f}") if m["metric"] == "agreement" else (lambda v: f"{v:.2f} dB")
            for row in m["one_at_a_time"]:
                lines.append(f"| {name} | {row['tensor']} | {tuple(row['shape'])} | {fmt(m['hybrid']['nncodec']['metric'])} | "
                             f"{fmt(row['mse'])} | {fmt(row['gain'])} |")
    return "\n".join(lines) + "\n"


def parse_hybrid(text: str, names: list[str]) -> dict[str, int]:
    """Per-model qp of the error-structure run from ``-12`` or ``a=-14,b=-20``."""
    try:
        if "=" not in text:
            return {n: int(text) for n in names}
        chosen = {k.strip(): int(v) for k, v in (item.split("=", 1) for item in text.split(","))}
    except ValueError:
        raise SystemExit(f"tensor_rd: --hybrid-qp {text!r} is not an integer or NAME=QP pairs") from None
    unknown = sorted(set(chosen) - set(names))
    if unknown:
        raise SystemExit(f"tensor_rd: --hybrid-qp names models not measured: {', '.join(unknown)}")
    return {n: chosen.get(n, -12) for n in names}


def main(argv: list[str] | None = None) -> int:
    from conformance.corpus import load_manifest

    argv = sys.argv[1:] if argv is None else argv
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--models", required=True, help="comma list of corpus models")
    ap.add_argument("--qps", default="-28,-24,-20,-16,-12", help="NNCodec qps of the coding table (integers)")
    ap.add_argument("--hybrid-qp", default="-12",
                    help="NNCodec qp of the error-structure run: one integer, or NAME=QP pairs (comma list) "
                         "with the default -12 for models not named")
    ap.add_argument("--one-at-a-time", action="store_true",
                    help="also run the error-structure model with one tensor at a time from nnr (one run per tensor)")
    ap.add_argument("--markdown", type=Path, help="write the tables here (else stdout)")
    ap.add_argument("--json", type=Path, help="write the numbers here")
    args = ap.parse_args(argv)
    manifest = load_manifest()
    names = cn.select_models(args.models, manifest)
    qps = [int(q) for q in args.qps.split(",")]
    hybrid = parse_hybrid(args.hybrid_qp, names)

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    results = {n: measure(n, manifest, qps, hybrid[n], log, args.one_at_a_time) for n in names}
    command = shlex.join(["PYTHONPATH=.", "/tmp/nncv/bin/python", "tools/tensor_rd.py", *argv])
    if args.json:
        args.json.write_text(json.dumps({"command": command, "models": results}, indent=1) + "\n")
    emit(render(command, qps, results), args.markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
