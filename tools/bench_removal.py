"""What --remove buys: parameters and onnxruntime inference time after removing pruned channels.

    python tools/bench_removal.py [--models mnist_cnn,ppocr_cls,efficientnet_lite0]
                                  [--levels 0.1,0.3,0.5] [--multiples 1,8] [--markdown docs/removal.md]

For each corpus model, filters:l1 level and --remove-multiple, the model is pruned and
encoded with --remove (lossless, so only pruning and removal change it), decoded, and
compared with the original: float parameters, median onnxruntime time of one run (batch 1,
and batch 32 with a fifth as many runs; after warm-up, single-threaded) and top-1 agreement
on the model's labelled inputs. The speed-up is the
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


def _paired_ms(a, b, feed: dict, runs: int) -> tuple[float, float]:
    """Median ms of one run of model ``a`` and of ``b``, timed alternately so that drift in the
    machine's speed hits both alike."""
    import time

    import numpy as np
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.log_severity_level = 3
    sessions = [ort.InferenceSession(m.SerializeToString(), opts, providers=["CPUExecutionProvider"]) for m in (a, b)]
    times: list[list[float]] = [[], []]
    for sess in sessions:
        sess.run(None, feed)
    for _ in range(runs):
        for i, sess in enumerate(sessions):
            t0 = time.perf_counter()
            sess.run(None, feed)
            times[i].append(time.perf_counter() - t0)
    return 1000.0 * float(np.median(times[0])), 1000.0 * float(np.median(times[1]))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="mnist_cnn,ppocr_cls,efficientnet_lite0")
    ap.add_argument("--levels", default="0.1,0.3,0.5")
    ap.add_argument("--multiples", default="1,8", help="--remove-multiple values to compare (default 1,8)")
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
             f"of {args.runs} runs (batch 32: {max(5, args.runs // 5)}), original and pruned timed alternately. "
             f"Made by `python tools/bench_removal.py --models {args.models} "
             f"--levels {args.levels}`.",
             "", "| model | level | multiple | channels removed | zeroed instead | float parameters | batch 1 | "
             "batch 32 | agreement |", "|---|---|---|---|---|---|---|---|---|"]
    for name in args.models.split(","):
        original = onnx.load(model_path(name))
        input_name, data = INPUTS[name]
        x, _ = getattr(inputs, data)()
        feeds = {b: {input_name: x[:b]} for b in (1, 32)}
        runs = {1: args.runs, 32: max(5, args.runs // 5)}
        reference = fidelity.run(fidelity.session(original), {input_name: x})
        lines.append(f"| {name} | – | – | – | – | {float_params(original):,} | unpruned | unpruned | 1.0000 |")
        for level, multiple in ((lv, int(m)) for lv in args.levels.split(",") for m in args.multiples.split(",")):
            reports = []
            try:
                data_ = nnr.encode(original, lossless=True, prune=f"filters:l1:{level}", prune_remove=True,
                                   prune_remove_multiple=multiple, on_pruned=reports.append)
            except UnsupportedModelError as exc:
                lines.append(f"| {name} | {float(level):.0%} | {multiple} | 0 | all | – | – | – | "
                             f"– ({str(exc)[:80]}…) |")
                continue
            removal = reports[0].removal
            decoded = nnr.decode(data_)
            paired = {b: _paired_ms(original, decoded, f, runs[b]) for b, f in feeds.items()}
            base, times = {b: p[0] for b, p in paired.items()}, {b: p[1] for b, p in paired.items()}
            agreement = fidelity.top1_agreement(reference, fidelity.run(fidelity.session(decoded), {input_name: x}))
            zeroed = sum(n for n, _ in removal.zeroed.values())
            lines.append(f"| {name} | {float(level):.0%} | {multiple} | {removal.channels_removed} | {zeroed} | "
                         f"{removal.params_after:,} ({removal.params_after / removal.params_before - 1:+.1%}) | "
                         f"{base[1]:.3f} → {times[1]:.3f} ms ({base[1] / times[1]:.2f}×) | {base[32]:.2f} → "
                         f"{times[32]:.2f} ms ({base[32] / times[32]:.2f}×) | {agreement:.4f} |")
            print(lines[-1], file=sys.stderr)
    emit("\n".join(lines) + "\n", args.markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
