"""Benchmark of constraint-driven encoding on EfficientNet-Lite0 with real photos.

    python tools/bench_ratecontrol.py [--min-agreement 0.99] [--markdown docs/ratecontrol.md]

Calibrates on 8 crops of each of the first 10 committed ImageNet photos and verifies on
the crops of the other 10 (never seen by the search). The targets of issue 4: a file at
least 30 % smaller than the default preset, at most 0.16× the ONNX file, meeting the
agreement constraint on the held-out photos. Every number is measured in this run.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main(argv: list[str] | None = None) -> int:
    import numpy as np
    import onnx

    import nnr
    from conformance.inputs import imagenet
    from nnr import ratecontrol as rc
    from nnr.options import EncoderOptions

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--min-agreement", type=float, default=0.99)
    ap.add_argument("--budget-seconds", type=float, default=600.0)
    ap.add_argument("--quantizer", default="ecsq", help="quantizer the search uses (default ecsq)")
    ap.add_argument("--error-feedback", action="store_true",
                    help="round with error feedback (layer statistics from half the calibration photos)")
    ap.add_argument("--markdown", type=Path, help="write the result table here")
    ap.add_argument("--json", type=Path, help="write the result and every trial here")
    args = ap.parse_args(argv)

    model = ROOT / "conformance" / "models" / "efficientnet_lite0.onnx"
    x, y = imagenet()
    photo = np.repeat(np.arange(len(x) // 8), 8)
    cal = rc.Calibration({"image": x[photo < 10]}, y[photo < 10])
    held = rc.Calibration({"image": x[photo >= 10]}, y[photo >= 10])
    onnx_bytes = model.stat().st_size
    default = nnr.encode(model)
    held_eval = rc.Evaluator(onnx.load(model), held)
    default_held = held_eval.measure(nnr.decode(default))

    t0 = time.perf_counter()
    res = rc.search(model, EncoderOptions(quantizer=args.quantizer, error_feedback=args.error_feedback),
                    constraint=rc.Constraint("agreement", args.min_agreement), cal=cal, held=held,
                    budget_seconds=args.budget_seconds,
                    log=lambda m: print(m, file=sys.stderr))
    seconds = time.perf_counter() - t0
    size = len(res.data)
    checks = {
        f"≥ 30 % smaller than the default ({len(default):,} B)": size <= 0.7 * len(default),
        f"≤ 0.16 × the ONNX file ({onnx_bytes:,} B)": size <= 0.16 * onnx_bytes,
        f"held-out top-1 agreement ≥ {args.min_agreement}": res.held_out["agreement"] >= args.min_agreement,
    }
    rows = [
        ("default preset", len(default), None, default_held),
        (f"--min-agreement {args.min_agreement}"
         + ("" if args.quantizer == "ecsq" else f" --quantizer {args.quantizer}")
         + (" --error-feedback" if args.error_feedback else ""), size, res.metrics, res.held_out),
    ]
    lines = [f"EfficientNet-Lite0, calibration: {len(cal)} crops of 10 photos; held out: {len(held)} crops of "
             f"10 other photos; search {seconds:.0f} s, {len(res.trials)} settings tried.", "",
             "| encoding | bytes | × ONNX | vs default | calibration agreement (expected) | held-out agreement "
             "(expected) | held-out SNR |", "|---|---|---|---|---|---|---|"]
    for label, n, cal_m, held_m in rows:
        cal_text = "–" if cal_m is None else f"{cal_m['agreement']:.4f} ({cal_m['agreement_expected']:.4f})"
        lines.append(f"| {label} | {n:,} | {n / onnx_bytes:.4f} | {n / len(default) - 1:+.1%} | {cal_text} | "
                     f"{held_m['agreement']:.4f} ({held_m['agreement_expected']:.4f}) | {held_m['snr_db']:.1f} dB |")
    lines += [""] + [f"- {'met' if ok else 'NOT met'}: {what}" for what, ok in checks.items()]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.markdown:
        args.markdown.write_text(text)
    if args.json:
        args.json.write_text(json.dumps({"checks": checks, "seconds": seconds, "default_bytes": len(default),
                                         "onnx_bytes": onnx_bytes, **rc.report(res)}, indent=2) + "\n")
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
