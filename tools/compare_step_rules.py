"""Compare data-free step rules on EfficientNet-Lite0: size vs fidelity on real photos.

    python tools/compare_step_rules.py [--out docs/step_rules.md]

For each rule (one global absolute step as in NNC; per-tensor relative step; per-channel
relative step; either with the size exponent, per tensor being nnr's default) it sweeps the qp and
prints file size ratio, top-1 agreement with the original and output SNR on 8 crops of
each of the 20 committed ImageNet photos.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import nnr  # noqa: E402
from nnr.fidelity import output_snr_db, run, session, top1_agreement  # noqa: E402
from nnr.images import crops, labelled_photos  # noqa: E402

MODEL = ROOT / "conformance/models/efficientnet_lite0.onnx"
CONFIGS = [
    ("uniform (global step, NNC-like)", dict(step_rule="uniform", size_exponent=0.0), (-40, -36, -32, -28)),
    ("scale (per tensor)", dict(step_rule="scale", size_exponent=0.0), (-28, -24, -20, -16)),
    ("channel (per channel)", dict(step_rule="channel", size_exponent=0.0), (-28, -24, -20, -16)),
    ("channel + size^0.5", dict(step_rule="channel", size_exponent=0.5), (-32, -28, -24)),
    ("scale + size^0.5 (default)", dict(step_rule="scale", size_exponent=0.5), (-34, -32, -30, -28, -24)),
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, help="also write the table as markdown here")
    args = ap.parse_args()
    x, _ = crops(labelled_photos(ROOT / "conformance/data/imagenet"))
    feed = {"image": x}
    ref = run(session(str(MODEL)), feed)
    size0 = os.path.getsize(MODEL)
    lines = ["| rule | qp | size ratio | top-1 agreement | output SNR dB |", "|---|---|---|---|---|"]
    print(lines[0])
    for label, kw, qps in CONFIGS:
        for qp in qps:
            data = nnr.encode(str(MODEL), qp=float(qp), **kw)
            out = run(session(nnr.decode(data)), feed)
            row = (f"| {label} | {qp} | {len(data) / size0:.4f} | {top1_agreement(ref, out):.4f} | "
                   f"{output_snr_db(ref, out):.2f} |")
            lines.append(row)
            print(row, flush=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(
            f"Made by `python tools/compare_step_rules.py --out {args.out}` on {len(ref)} inputs "
            "(8 crops of 20 photos).\n\n" + "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
