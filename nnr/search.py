"""nnr-search: the Pareto front of file size against fidelity over quantizers, steps and pruning.

Encodes the model with every quantizer over a range of --qp values (minifloats over their
formats), each at every pruning level of --prunes, measures each decoded model on
calibration inputs, and keeps the settings no other setting beats on both size and
fidelity. Every point carries its full encoder options, so ``nnr-encode --options`` replays
it exactly.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

from .console import common_flags, print_json, progress_bar, require_encoder
from .errors import InputError, NnrError, OptionError
from .plotting import require_matplotlib

DEFAULT_QUANTIZERS = ("ecsq", "midtread", "midrise", "deadzone:0.25", "deadzone:0.7", "mulaw:255")
DEFAULT_QPS = (-36.0, -32.0, -28.0, -24.0, -20.0, -16.0, -12.0)
DEFAULT_MINIFLOATS = ("minifloat:E4M3", "minifloat:E5M2", "minifloat:E4M5", "minifloat:E5M10")
METRICS = ("agreement", "agreement_expected", "accuracy", "snr_db")


def pareto_front(points: list[dict], metric: str) -> list[dict]:
    """Points not dominated by another: none is at most as large and at least as faithful
    while better in one of the two. Sorted by size."""
    front, best = [], float("-inf")
    for p in sorted(points, key=lambda p: (p["bytes"], -p["metrics"][metric])):
        if p["metrics"][metric] > best:
            front.append(p)
            best = p["metrics"][metric]
    return front


def settings(quantizers: list[str], qps: list[float], prunes: tuple[str, ...] = ("",),
             prune_global: bool = False) -> list[dict]:
    """Encoder option overrides to try: fixed-precision quantizers once, the others per qp,
    each at every pruning level ("" = none; ``prune_global`` for magnitude levels)."""
    from nnr.codec.quantizer_spec import parse

    out = []
    for prune in prunes:
        extra = {"prune": prune, "prune_global": prune_global and prune.startswith("magnitude")} if prune else {}
        for q in quantizers:
            if parse(q).follows_step:
                out += [{"quantizer": q, "qp": qp, **extra} for qp in qps]
            else:
                out.append({"quantizer": q, **extra})
    return out


def sweep(model_path: str | Path, cal, todo: list[dict], budget_seconds: float = 600.0,
          progress=None) -> tuple[list[dict], bool]:
    """Encode, decode and measure every setting; returns the points and whether time ran out."""
    import onnx

    from .decoder import OWN_OUTPUT_MEMORY, decode
    from .encoder import encode
    from .options import EncoderOptions
    from .evaluation import Evaluator

    evaluator = Evaluator(onnx.load(str(model_path)), cal)
    base = EncoderOptions()
    deadline = time.monotonic() + budget_seconds
    points = []
    for i, override in enumerate(todo):
        if time.monotonic() > deadline:
            return points, True
        if progress:
            progress(i, len(todo), ", ".join(f"{k} {v}" for k, v in override.items()))
        opts = dataclasses.replace(base, **override)
        data = encode(model_path, opts, calibration=cal.inputs)
        metrics = evaluator.measure(decode(data, max_memory=OWN_OUTPUT_MEMORY))
        points.append({"options": opts.to_json(), "bytes": len(data), "metrics": metrics})
    if progress:
        progress(len(todo), len(todo), "done")
    return points, False


def front_table(doc: dict) -> str:
    """The Pareto front of a search document as text: bytes, ratio to the ONNX file, the metric."""
    metric, onnx_bytes = doc["metric"], doc["onnx_bytes"]
    lines = [f"{len(doc['points'])} settings measured{' (budget reached)' if doc['out_of_time'] else ''}; "
             f"Pareto front by size and {metric}:", f"{'bytes':>12} {'x ONNX':>8} {metric:>12}  options"]
    for p in doc["front"]:
        opts = {k: v for k, v in p["options"].items() if k in ("quantizer", "qp", "prune", "prune_global")}
        lines.append(f"{p['bytes']:>12,} {p['bytes'] / onnx_bytes:>8.4f} {p['metrics'][metric]:>12.4f}  "
                     f"{json.dumps(opts)}")
    return "\n".join(lines)


def plot(points: list[dict], front: list[dict], metric: str, onnx_bytes: int, target: Path) -> None:
    """Every setting as a point coloured by quantizer, and the front as a line."""
    from .plotting import save_png, subplots

    fig, ax = subplots(figsize=(7, 4.5))
    by_q: dict[str, list[dict]] = {}
    for p in points:
        label = p["options"].get("quantizer", "ecsq")
        if p["options"].get("prune"):
            label += f", prune {p['options']['prune']}"
        by_q.setdefault(label, []).append(p)
    for name, pts in by_q.items():
        ax.scatter([p["bytes"] / onnx_bytes for p in pts], [p["metrics"][metric] for p in pts], s=18, label=name)
    ax.plot([p["bytes"] / onnx_bytes for p in front], [p["metrics"][metric] for p in front], "k-", lw=1,
            label="Pareto front")
    ax.set_xlabel(".nnr size / ONNX size")
    ax.set_ylabel(metric)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    save_png(fig, target)


def main(argv: list[str] | None = None, prog: str = "nnr-search") -> int:
    ap = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    ap.add_argument("model", help="ONNX model (.onnx)")
    ap.add_argument("--calibration", required=True, metavar="NPZ",
                    help="model inputs (one array per graph input, batch on axis 0), optional 'labels'")
    ap.add_argument("--metric", choices=METRICS, default=None,
                    help="fidelity axis (default: agreement_expected for class scores, else snr_db; accuracy "
                         "needs labels). agreement_expected is top-1 agreement in expectation over the "
                         "measured output noise: a count over a few dozen inputs jumps by chance")
    ap.add_argument("--quantizers", default=",".join(DEFAULT_QUANTIZERS + DEFAULT_MINIFLOATS),
                    help="comma-separated --quantizer values to sweep")
    ap.add_argument("--qps", default=",".join(f"{q:g}" for q in DEFAULT_QPS),
                    help="comma-separated --qp values for quantizers whose step follows qp; write "
                         "--qps=-36,-28 (with =) since the values start with a minus sign")
    ap.add_argument("--prunes", default="none",
                    help="comma-separated pruning levels to cross with every setting: none or --prune specs, e.g. "
                         "none,magnitude:0.3,magnitude:0.5 (default none)")
    ap.add_argument("--global", dest="prune_global", action="store_true",
                    help="magnitude levels use one threshold across all layers")
    ap.add_argument("--plot", type=Path, metavar="DIR", help="write pareto.png into DIR (needs matplotlib)")
    ap.add_argument("--budget-seconds", type=float, default=600.0, help="stop after this long (default 600)")
    common_flags(ap, "every point measured and the Pareto front (a point's 'options' replay with "
                     "nnr encode --options)")
    args = ap.parse_args(argv)
    try:
        qps = [float(q) for q in args.qps.split(",") if q.strip()]
    except ValueError:
        ap.error(f"--qps must be numbers separated by commas, got {args.qps!r}")
    quantizers = [q.strip() for q in args.quantizers.split(",") if q.strip()]
    if not quantizers or not qps:
        ap.error("--quantizers and --qps need at least one value each")
    prunes = tuple("" if p.strip() == "none" else p.strip() for p in args.prunes.split(",") if p.strip())
    if not prunes:
        ap.error("--prunes needs at least one value (none for no pruning)")
    if args.plot:
        require_matplotlib(ap)
    try:
        require_encoder()
        from .options import EncoderOptions

        for prune in prunes:  # refuse a bad level before any work
            if prune:
                EncoderOptions(prune=prune, prune_global=args.prune_global and prune.startswith("magnitude"))
        return _run(args, quantizers, qps, prunes)
    except NnrError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except ValueError as exc:  # a quantizer spec the parser refused
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace, quantizers: list[str], qps: list[float], prunes: tuple[str, ...]) -> int:
    from nnr.formats.onnx_io import read_model

    from .calibration import load_calibration

    model, _ = read_model(args.model)
    cal = load_calibration(args.calibration, model)
    todo = settings(quantizers, qps, prunes, args.prune_global)
    points, out_of_time = sweep(args.model, cal, todo, args.budget_seconds,
                                None if args.quiet else progress_bar())
    if not points:
        raise InputError("the budget ran out before the first setting was measured")
    metric = args.metric or ("agreement_expected" if "agreement" in points[0]["metrics"] else "snr_db")
    if metric not in points[0]["metrics"]:
        raise OptionError(f"metric {metric} cannot be measured on this model or calibration set")
    front = pareto_front(points, metric)
    onnx_bytes = Path(args.model).stat().st_size
    doc = {"model": str(args.model), "metric": metric, "onnx_bytes": onnx_bytes, "out_of_time": out_of_time,
           "points": points, "front": front}
    if args.json:
        print_json(doc)
    else:
        print(front_table(doc))
    if args.plot:
        args.plot.mkdir(parents=True, exist_ok=True)
        plot(points, front, metric, onnx_bytes, args.plot / "pareto.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
