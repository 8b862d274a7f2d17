"""What --remove buys: parameters and onnxruntime inference time after removing pruned channels.

    python tools/bench_removal.py [--models mnist_cnn,ppocr_cls,efficientnet_lite0]
                                  [--levels 0.1,0.3,0.5] [--markdown docs/removal.md]

For each corpus model and filters:l1 level, the model is pruned and encoded with --remove
(lossless, so only pruning and removal change it), decoded, and compared with the original:
float parameters, median onnxruntime time of one run (batch 1 and batch 32, after warm-up,
single-threaded) and top-1 agreement on the model's labelled inputs. The speed-up is the
original's time over the pruned model's, measured in the same run; timing needs an idle machine.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tools._emit import emit  # noqa: E402

INPUTS = {"mnist_cnn": ("image", "mnist_test"), "ppocr_cls": ("x", "text_orientation"),
          "efficientnet_lite0": ("image", "imagenet")}


def _ms(model, feed: dict, runs: int) -> float:
    import time

    import numpy as np
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.log_severity_level = 3
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    sess.run(None, feed)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        sess.run(None, feed)
        times.append(time.perf_counter() - t0)
    return 1000.0 * float(np.median(times))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="mnist_cnn,ppocr_cls,efficientnet_lite0")
    ap.add_argument("--levels", default="0.1,0.3,0.5")
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--markdown", type=Path)
    args = ap.parse_args(argv)

    import onnx

    import nnr
    from conformance import inputs
    from conformance.corpus import model_path
    from nnr import fidelity
    from nnr.errors import UnsupportedModelError
    from nnr.removal import float_params

    lines = ["Structured pruning (filters:l1) with --remove, lossless otherwise; onnxruntime, one thread, median "
             f"of {args.runs} runs. Made by `python tools/bench_removal.py --models {args.models} "
             f"--levels {args.levels}`.",
             "", "| model | level | channels removed | zeroed instead | float parameters | batch 1 | batch 32 | "
             "agreement |", "|---|---|---|---|---|---|---|---|"]
    for name in args.models.split(","):
        original = onnx.load(model_path(name))
        input_name, data = INPUTS[name]
        x, _ = getattr(inputs, data)()
        feeds = {b: {input_name: x[:b]} for b in (1, 32)}
        base = {b: _ms(original, f, args.runs) for b, f in feeds.items()}
        reference = fidelity.run(fidelity.session(original), {input_name: x})
        lines.append(f"| {name} | – | – | – | {float_params(original):,} | {base[1]:.3f} ms | {base[32]:.2f} ms | "
                     "1.0000 |")
        for level in args.levels.split(","):
            reports = []
            try:
                data_ = nnr.encode(original, lossless=True, prune=f"filters:l1:{level}", prune_remove=True,
                                   on_pruned=reports.append)
            except UnsupportedModelError as exc:
                lines.append(f"| {name} | {float(level):.0%} | 0 | all | – | – | – | – ({str(exc)[:80]}…) |")
                continue
            removal = reports[0].removal
            decoded = nnr.decode(data_)
            times = {b: _ms(decoded, f, args.runs) for b, f in feeds.items()}
            agreement = fidelity.top1_agreement(reference, fidelity.run(fidelity.session(decoded), {input_name: x}))
            zeroed = sum(n for n, _ in removal.zeroed.values())
            lines.append(f"| {name} | {float(level):.0%} | {removal.channels_removed} | {zeroed} | "
                         f"{removal.params_after:,} ({removal.params_after / removal.params_before - 1:+.1%}) | "
                         f"{times[1]:.3f} ms ({base[1] / times[1]:.2f}×) | {times[32]:.2f} ms "
                         f"({base[32] / times[32]:.2f}×) | {agreement:.4f} |")
            print(lines[-1], file=sys.stderr)
    emit("\n".join(lines) + "\n", args.markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
