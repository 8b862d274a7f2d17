"""What pruning saves at equal fidelity: the smallest file meeting top-1 agreement ≥ 0.99, per pruning level.

    python tools/bench_pruning_size.py [--models mnist_cnn,ppocr_cls,efficientnet_lite0]
                                       [--levels magnitude:0.2,magnitude:0.3,magnitude:0.5]
                                       [--markdown docs/pruning_size.md]

For each corpus classifier, rate control (nnr-encode --min-agreement) searches the smallest
real file whose decoded model keeps top-1 agreement with the original on calibration inputs,
without pruning and with each pruning level (global magnitude by default; bias correction on,
as nnr-encode does), and verifies it on held-out inputs. This is what
`nnr-encode --prune-levels` chooses from.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tools._emit import emit  # noqa: E402


def _calibration(name: str):
    """(calibration, held-out) for a corpus classifier; the held-out part never reaches the search."""
    import numpy as np

    from conformance import inputs
    from nnr.calibration import Calibration

    if name == "mnist_cnn":  # digits the model never trained on (training digits have wide margins)
        x, y = inputs.mnist_test()
        return (Calibration({"image": x[0::2]}, y[0::2]), Calibration({"image": x[1::2]}, y[1::2]))
    if name == "ppocr_cls":
        x, y = inputs.text_orientation()
        return Calibration({"x": x[:24]}, y[:24]), Calibration({"x": x[24:]}, y[24:])
    if name == "efficientnet_lite0":
        x, y = inputs.imagenet()
        photo = np.repeat(np.arange(len(x) // 8), 8)
        return (Calibration({"image": x[photo < 10]}, y[photo < 10]),
                Calibration({"image": x[photo >= 10]}, y[photo >= 10]))
    raise SystemExit(f"bench_pruning_size: no inputs for {name!r}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="mnist_cnn,ppocr_cls,efficientnet_lite0")
    ap.add_argument("--levels", default="magnitude:0.2,magnitude:0.3,magnitude:0.5",
                    help="comma-separated --prune specs (magnitude levels use one global threshold)")
    ap.add_argument("--min-agreement", type=float, default=0.99)
    ap.add_argument("--budget-seconds", type=float, default=600.0, help="per search")
    ap.add_argument("--markdown", type=Path)
    args = ap.parse_args(argv)

    from conformance.corpus import model_path
    from nnr import ratecontrol as rc
    from nnr.evaluation import Constraint
    from nnr.options import EncoderOptions

    levels = [""] + [lv for lv in args.levels.split(",") if lv]
    constraint = Constraint("agreement", args.min_agreement)
    lines = [f"Smallest file with top-1 agreement ≥ {args.min_agreement} on the calibration inputs (rate control, "
             "bias correction on), per pruning level; agreement re-measured on held-out inputs. "
             f"Made by `python tools/bench_pruning_size.py --models {args.models} --levels {args.levels}`.", "",
             "| model | pruning | bytes | vs no pruning | calibration agreement | held-out agreement | "
             "held-out SNR | search |", "|---|---|---|---|---|---|---|---|"]
    for name in args.models.split(","):
        cal, held = _calibration(name)
        baseline = None
        for level in levels:
            opts = EncoderOptions(prune=level, prune_global=level.startswith("magnitude"))
            t0 = time.perf_counter()
            res = rc.search(model_path(name), opts, constraint=constraint, cal=cal, held=held,
                            budget_seconds=args.budget_seconds)
            seconds = time.perf_counter() - t0
            size = len(res.data)
            baseline = baseline or size
            label = f"{level} (global)" if level.startswith("magnitude") else (level or "none")
            met = "" if constraint.met(res.metrics) else " (not met: lossless)"
            lines.append(f"| {name} | {label} | {size:,}{met} | {size / baseline - 1:+.1%} | "
                         f"{res.metrics['agreement']:.4f} | {res.held_out['agreement']:.4f} | "
                         f"{res.held_out['snr_db']:.1f} dB | {seconds:.0f} s |")
            print(lines[-1], file=sys.stderr)
    emit("\n".join(lines) + "\n", args.markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
