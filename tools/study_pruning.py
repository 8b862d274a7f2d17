"""Pruning without retraining on the corpus classifiers: fidelity against sparsity per criterion.

    python tools/study_pruning.py [--models mnist_cnn,complex_mnist,ppocr_cls,efficientnet_lite0]
                                  [--markdown docs/pruning.md] [--plot docs/pruning.png] [--json docs/pruning.json]
    python tools/study_pruning.py --from-json docs/pruning.json --markdown docs/pruning.md   # re-render only

For each classifier, every criterion nnr offers is applied at a range of levels to the
float model (no quantization), and the pruned model's top-1 agreement with the original and
top-1 accuracy are measured on labelled inputs the ranking never saw:

* unstructured: magnitude per layer, magnitude with one global threshold, |w| < γ·σ per layer;
* structured (output channels of Conv/Gemm/MatMul): L1, L2, seeded random, and mean
  activation on calibration inputs, one shot and iterative (4 steps, importance re-measured);
* "+ bias correction": the same pruning, then each Conv/Gemm bias absorbs the mean output
  shift the pruning causes, measured on the ranking inputs (nnr/biascorrect.py) — the one
  data-driven repair nnr makes without retraining;
* for the complex-valued network: global magnitude pruning ranked by modulus, real part,
  imaginary part and phase (the criteria of the complex-network study).

Each row also gives the size of the .nnr file at the default qp with that pruning, so the
table shows what the zeros save. The research this re-makes (DESIGN §2) found magnitude and
data-driven criteria best and random worst, with retraining that nnr does not do.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tools._emit import emit  # noqa: E402

UNSTRUCTURED = (0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.9)
STRUCTURED = (0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5)
GAMMAS = (0.25, 0.5, 0.75, 1.0, 1.5)
ITERATIVE_STEPS = 4


def _data(name: str):
    """(input name, ranking inputs, measuring inputs, labels of the measuring inputs)."""
    import numpy as np

    from conformance import inputs

    if name in ("mnist_cnn", "complex_mnist"):
        x, y = inputs.mnist()
        held = inputs.mnist_held_out(y)
        return "image", x[~held][:200], x[held], y[held]
    if name == "ppocr_cls":
        x, y = inputs.text_orientation()
        half = len(x) // 2
        return "x", x[:half], x[half:], y[half:]
    if name == "efficientnet_lite0":
        x, y = inputs.imagenet()
        photo = np.repeat(np.arange(len(x) // 8), 8)
        return "image", x[photo < 10], x[photo >= 10], y[photo >= 10]
    raise SystemExit(f"study_pruning: no labelled inputs for {name!r}")


def _variants(complex_valued: bool):
    """(criterion label, family, level, encoder options, bias correction) for every point of the study."""
    out = []
    if complex_valued:
        for f in UNSTRUCTURED:
            for criterion in ("modulus", "real", "imag", "phase"):
                out.append((f"global, by {criterion}", "complex", f,
                            {"prune": f"magnitude:{f}", "prune_global": True, "prune_criterion": criterion}))
        return [v + (False,) for v in out]
    for f in UNSTRUCTURED:
        out.append(("magnitude, per layer", "unstructured", f, {"prune": f"magnitude:{f}"}))
        out.append(("magnitude, global", "unstructured", f, {"prune": f"magnitude:{f}", "prune_global": True}))
    for g in GAMMAS:
        out.append(("|w| < γσ, per layer", "unstructured", g, {"prune": f"std:{g}"}))
    for f in STRUCTURED:
        for ranking, label in (("l1", "filters L1"), ("l2", "filters L2"), ("random:0", "filters random"),
                               ("activation", "filters activation")):
            out.append((label, "structured", f, {"prune": f"filters:{ranking}:{f}"}))
        out.append(("filters activation, iterative", "structured", f,
                    {"prune": f"filters:activation:{f}", "prune_steps": ITERATIVE_STEPS}))
        out.append(("filters L1, iterative", "structured", f,
                    {"prune": f"filters:l1:{f}", "prune_steps": ITERATIVE_STEPS}))
    out = [v + (False,) for v in out]
    for f in UNSTRUCTURED:
        out.append(("magnitude, global + bias correction", "unstructured", f,
                    {"prune": f"magnitude:{f}", "prune_global": True}, True))
    for f in STRUCTURED:
        out.append(("filters L1 + bias correction", "structured", f, {"prune": f"filters:l1:{f}"}, True))
        out.append(("filters activation + bias correction", "structured", f, {"prune": f"filters:activation:{f}"},
                    True))
    return out


def _bias_corrected(original, pruned, report, rank_inputs):
    """``pruned`` with each Conv/Gemm bias moved by the mean output shift its pruning caused."""
    from nnr import biascorrect
    from nnr.graph import graph_constants

    fixed = biascorrect.corrected(original, pruned, biascorrect.input_means(original, rank_inputs))
    pruned_weights = graph_constants(pruned)   # initializers and Constant nodes alike
    for name, tensor in graph_constants(fixed).items():
        if name in {t.name for t in report.tensors if not t.note}:
            tensor.CopyFrom(pruned_weights[name])
    return fixed


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="mnist_cnn,complex_mnist,ppocr_cls,efficientnet_lite0")
    ap.add_argument("--markdown", type=Path)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--plot", type=Path, help="PNG of agreement against sparsity, one panel per model")
    ap.add_argument("--from-json", type=Path, metavar="JSON",
                    help="do not measure: render the tables and plot from a --json file of an earlier run")
    args = ap.parse_args(argv)
    if args.plot:
        from nnr.plotting import require_matplotlib

        require_matplotlib(ap)
    if args.from_json:
        doc = json.loads(args.from_json.read_text())
        _render(doc["results"], doc["command"], args)
        return 0
    results = _measure(args.models)
    command = f"python tools/study_pruning.py --models {args.models}"
    if args.json:
        args.json.write_text(json.dumps({"command": command, "results": results}, indent=2) + "\n")
    _render(results, command, args)
    return 0


def _measure(models: str) -> list[dict]:
    """Prune, measure and encode every variant on every model; one dict per point."""
    import onnx

    import nnr
    from conformance import complex_eval
    from conformance.corpus import model_path
    from nnr import fidelity
    from nnr.options import EncoderOptions
    from nnr.pruning import prune_model

    results = []
    for name in models.split(","):
        path = model_path(name)
        original = onnx.load(path)
        input_name, rank_x, x, y = _data(name)
        complex_valued = name == "complex_mnist"

        def infer(model, data, complex_valued=complex_valued, input_name=input_name):
            if complex_valued:  # onnxruntime has no complex kernels
                return complex_eval.logits(model, data)
            return fidelity.run(fidelity.session(model), {input_name: data})

        reference = infer(original, x)
        base_acc = fidelity.top1_accuracy(reference, y)
        default_bytes = len(nnr.encode(original, probe=False))
        for criterion, family, level, kw, fix_bias in _variants(complex_valued):
            t0 = time.perf_counter()
            opts = EncoderOptions(**kw)
            pruned = onnx.ModelProto()
            pruned.CopyFrom(original)
            report = prune_model(pruned, opts.prune, global_threshold=opts.prune_global,
                                 criterion=opts.prune_criterion, calibration={input_name: rank_x},
                                 steps=opts.prune_steps)
            if fix_bias:
                pruned = _bias_corrected(original, pruned, report, {input_name: rank_x})
                size = len(nnr.encode(pruned))  # the zeros are in place; the coder keeps them
            else:
                size = len(nnr.encode(original, opts, calibration={input_name: rank_x}))
            out = infer(pruned, x)
            row = {"model": name, "criterion": criterion, "family": family, "level": level,
                   "sparsity": report.sparsity, "agreement": fidelity.top1_agreement(reference, out),
                   "accuracy": fidelity.top1_accuracy(out, y), "accuracy_original": base_acc,
                   "bytes": size, "default_bytes": default_bytes, "inputs": len(y),
                   "seconds": time.perf_counter() - t0}
            results.append(row)
            print(f"{name} {criterion} {level}: sparsity {row['sparsity']:.3f} agreement {row['agreement']:.3f} "
                  f"accuracy {row['accuracy']:.3f} {size:,} B", file=sys.stderr)

    return results


def _cell(text: str) -> str:
    """Text for a markdown table cell (a literal | would end the cell)."""
    return text.replace("|", "\\|")


def summary(results: list[dict], floor: float) -> list[str]:
    """Markdown table: per model and criterion, the highest sparsity whose agreement stays ≥ ``floor``."""
    models = list(dict.fromkeys(r["model"] for r in results))
    criteria = list(dict.fromkeys(r["criterion"] for r in results))
    lines = [f"| criterion | {' | '.join(models)} |", "|---|" + "---|" * len(models)]
    for c in criteria:
        cells = []
        for m in models:
            rows = [r for r in results if r["model"] == m and r["criterion"] == c]
            ok = [r["sparsity"] for r in rows if r["agreement"] >= floor]
            cells.append("" if not rows else (f"{max(ok):.1%}" if ok else f"< {min(r['sparsity'] for r in rows):.1%}"))
        lines.append(f"| {_cell(c)} | {' | '.join(cells)} |")
    return lines


def _render(results: list[dict], command: str, args: argparse.Namespace) -> None:
    lines = ["Pruning without retraining (float model, no quantization): top-1 agreement with the original and "
             "top-1 accuracy on labelled inputs the ranking never saw; bytes of the .nnr file at the default qp "
             f"with that pruning. Made by `{command}`.", "",
             "Highest sparsity of the pruned tensors that keeps top-1 agreement ≥ 99 % (empty: not tried on "
             "that model):", ""] + summary(results, 0.99) + [
             "", "The same at ≥ 90 %:", ""] + summary(results, 0.90) + [""]
    for name in dict.fromkeys(r["model"] for r in results):
        rows = [r for r in results if r["model"] == name]
        order = list(dict.fromkeys(r["criterion"] for r in rows))
        rows.sort(key=lambda r: (order.index(r["criterion"]), r["level"]))
        lines += [f"**{name}** ({rows[0]['inputs']} inputs; accuracy {rows[0]['accuracy_original']:.1%}; "
                  f"default file {rows[0]['default_bytes']:,} bytes)", "",
                  "| criterion | level | sparsity | agreement | accuracy | .nnr bytes | vs unpruned |",
                  "|---|---|---|---|---|---|---|"]
        for r in rows:
            level = f"γ = {r['level']:g}" if "γ" in r["criterion"] else f"{r['level']:.0%}"
            lines.append(f"| {_cell(r['criterion'])} | {level} | {r['sparsity']:.1%} | {r['agreement']:.1%} | "
                         f"{r['accuracy']:.1%} | {r['bytes']:,} | {r['bytes'] / r['default_bytes'] - 1:+.1%} |")
        lines.append("")
    emit("\n".join(lines), args.markdown)
    if args.plot:
        _plot(results, args.plot)


def _plot(results: list[dict], path: Path) -> None:
    from nnr.plotting import save_png, subplots
    models = list(dict.fromkeys(r["model"] for r in results))
    fig, axes = subplots(2, len(models), figsize=(5 * len(models), 8), squeeze=False)
    for col, name in enumerate(models):
        families = sorted({r["family"] for r in results if r["model"] == name}, reverse=True)
        for row in range(2):
            ax = axes[row][col]
            if row >= len(families):
                ax.axis("off")
                continue
            family = families[row]
            rows = [r for r in results if r["model"] == name and r["family"] == family]
            for criterion in dict.fromkeys(r["criterion"] for r in rows):
                pts = sorted((r["sparsity"], r["agreement"]) for r in rows if r["criterion"] == criterion)
                style = "--" if "iterative" in criterion else (":" if "bias" in criterion else "-")
                ax.plot([p[0] for p in pts], [p[1] for p in pts], style, marker="o", label=criterion)
            ax.set_title(f"{name}: {family}")
            ax.set_xlabel("sparsity of the pruned tensors")
            ax.set_ylabel("top-1 agreement with the original")
            ax.set_ylim(-0.02, 1.02)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
    fig.tight_layout()
    save_png(fig, path)


if __name__ == "__main__":
    sys.exit(main())
