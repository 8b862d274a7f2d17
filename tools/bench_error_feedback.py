"""Error feedback against plain rounding on EfficientNet-Lite0, at equal qp, on unseen photos.

    python tools/bench_error_feedback.py [--qps=-28,-24,-20] [--markdown docs/error_feedback.md]

Layer statistics come from 8 crops of each of the first 10 committed ImageNet photos; every
fidelity number is measured on the crops of the other 10 photos, which the statistics never
saw. For each qp the table gives the real file size and the decoded model's output SNR and
top-1 agreement (count and expectation) with and without --error-feedback, and the encode
times. It also lists the smallest top-1 gaps of the unseen crops: a crop whose two best
logits are closer than the output noise flips whatever the coder does.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tools._emit import emit  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    import numpy as np
    import onnx

    import nnr
    from conformance.inputs import imagenet
    from nnr import fidelity
    from nnr.hessians import layer_hessians
    from nnr.options import EncoderOptions

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--qps", default="-28,-24,-20", help="comma-separated qps (default -28,-24,-20)")
    ap.add_argument("--markdown", type=Path, help="write the table here")
    args = ap.parse_args(argv)
    qps = [float(q) for q in args.qps.split(",")]

    path = ROOT / "conformance" / "models" / "efficientnet_lite0.onnx"
    model = onnx.load(path)
    x, _ = imagenet()
    photo = np.repeat(np.arange(len(x) // 8), 8)
    fit, unseen = {"image": x[photo < 10]}, {"image": x[photo >= 10]}
    t0 = time.perf_counter()
    feedback = layer_hessians(model, fit)
    stats_seconds = time.perf_counter() - t0
    reference = fidelity.run(fidelity.session(model), unseen).astype(np.float64)
    ranked = np.sort(reference, axis=1)
    gaps = np.sort(ranked[:, -1] - ranked[:, -2])
    onnx_bytes = path.stat().st_size

    lines = [f"EfficientNet-Lite0; layer statistics of {len(feedback)} layers from {len(photo[photo < 10])} crops "
             f"of 10 photos in {stats_seconds:.0f} s; fidelity on {len(gaps)} crops of 10 other photos.", "",
             "| qp | rounding | bytes | × ONNX | output SNR | agreement (expected) | encode s |",
             "|---|---|---|---|---|---|---|"]
    for qp in qps:
        for fed in (False, True):
            t0 = time.perf_counter()
            data = nnr.encode(model, EncoderOptions(qp=qp, error_feedback=fed), feedback=feedback)
            seconds = time.perf_counter() - t0
            out = fidelity.run(fidelity.session(nnr.decode(data)), unseen).astype(np.float64)
            mse = float(np.mean((out - reference) ** 2))
            lines.append(f"| {qp:g} | {'error feedback' if fed else 'plain RDO'} | {len(data):,} | "
                         f"{len(data) / onnx_bytes:.4f} | {fidelity.output_snr_db(reference, out):.2f} dB | "
                         f"{fidelity.top1_agreement(reference, out):.4f} "
                         f"({fidelity.expected_agreement(reference, mse):.4f}) | {seconds:.1f} |")
            print(lines[-1], file=sys.stderr)
    lines += ["", f"Smallest top-1 logit gaps of the unseen crops: {', '.join(f'{g:.3f}' for g in gaps[:5])} "
              f"(logit standard deviation {reference.std():.2f})."]
    emit("\n".join(lines) + "\n", args.markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
