"""nnr-analyze: which distribution fits a model's weights, tensor by tensor and overall.

Fits Laplace, Gaussian, logistic, Cauchy, uniform and generalized Gaussian densities to
every float weight tensor (codec.distributions) and ranks them by KL divergence from the
weights' histogram (SSE is reported too). nnr's encoder models weights as Laplacian; this
shows where that holds.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path
from typing import Callable

import numpy as np

from nnr.codec.distributions import FAMILIES, Fit, fit_all, histogram, pdf
from nnr.codec.floatcast import to_float64
from nnr.formats.onnx_io import FLOAT_TYPES, STORAGE_DTYPES, read_model, tensor_bytes, tensor_slots

from .console import common_flags, print_json, progress_bar, require_encoder
from .errors import InputError, NnrError
from .plotting import require_matplotlib
from .tensorcodec import FLOAT_FORMAT_OF

SHORT = {"laplace": "laplace", "gaussian": "gauss", "logistic": "logistic", "cauchy": "cauchy",
         "uniform": "uniform", "generalized_gaussian": "gen.gauss"}


Tensors = list[tuple[str, tuple[int, ...], np.ndarray]]  # (name, shape, float64 values)


def weight_tensors(path: str | Path, min_elements: int) -> Tensors:
    """(name, shape, float64 values) of every float tensor with at least ``min_elements`` values."""
    model, base_dir = read_model(path)
    found = []
    for slot in tensor_slots(model):
        t = slot.tensor
        numel = int(np.prod(t.dims, dtype=np.int64)) if t.dims else 1
        if t.data_type not in FLOAT_TYPES or numel < min_elements:
            continue
        storage = np.frombuffer(tensor_bytes(t, base_dir), dtype=STORAGE_DTYPES[t.data_type])
        values = to_float64(storage, FLOAT_FORMAT_OF[t.data_type])
        values = values[np.isfinite(values)]
        if values.size >= min_elements and np.ptp(values) > 0:
            found.append((slot.name, tuple(int(d) for d in t.dims), values))
    if not found:
        raise InputError(f"{path}: no float tensor with at least {min_elements} weights to analyse")
    return found


def analyze(path: str | Path, tensors: Tensors, bins: int = 200) -> dict:
    """Fits per tensor (from weight_tensors) and for all weights pooled, as a JSON-able dict."""
    rows = []
    for name, shape, values in tensors:
        fits = fit_all(values, bins)
        rows.append({"name": name, "shape": list(shape), "weights": int(values.size), "best": fits[0].family,
                     "fits": [_fit_json(f) for f in fits]})
    pooled = np.concatenate([v for _, _, v in tensors])
    overall = fit_all(pooled, bins)
    return {"model": str(path), "tensors": rows, "weights": int(pooled.size),
            "overall": [_fit_json(f) for f in overall],
            "best_counts": dict(Counter(r["best"] for r in rows).most_common())}


CURVE_QUANTIZERS = ("ecsq", "midtread", "midrise", "deadzone:0.25", "deadzone:0.7", "mulaw:255")
CURVE_QPS = (-40, -32, -24, -16, -12, -8, -4, 0, 8)
CURVE_MINIFLOATS = ("E4M0", "E4M1", "E4M2", "E4M3", "E4M5", "E5M2", "E5M7", "E5M10")


def quantizer_curves(tensors: Tensors, progress: Callable[[int, int, str], None] | None = None
                     ) -> dict[str, list[dict]]:
    """Entropy against fidelity for each quantizer: per setting, the coded bits per weight and
    the weight SNR (size-weighted mean of each tensor's SNR in dB), over the tensors analysed.
    Steps sweep --qp; minifloats sweep their exponent/mantissa split."""
    from nnr.codec.floatcast import snr_db

    from .encoder import code_float
    from .options import EncoderOptions

    total = sum(v.size for _, _, v in tensors)
    settings = [(q, qp) for q in CURVE_QUANTIZERS for qp in CURVE_QPS]
    settings += [(f"minifloat:{m}", None) for m in CURVE_MINIFLOATS]
    curves: dict[str, list[dict]] = {}
    for i, (quantizer, qp) in enumerate(settings):
        if progress is not None:
            progress(i, len(settings), quantizer if qp is None else f"{quantizer} qp {qp}")
        opts = EncoderOptions(quantizer=quantizer, qp=-32.0 if qp is None else float(qp))
        bits = weighted_snr = 0.0
        for name, _, values in tensors:
            storage = values.astype(np.float64)
            _, body, _, rebuilt = code_float(name, storage, "float64", opts)
            bits += 8 * len(body)
            weighted_snr += min(snr_db(values, rebuilt), 200.0) * values.size
        label = quantizer.split(":")[0] if quantizer.startswith("minifloat") else quantizer
        curves.setdefault(label, []).append({"setting": quantizer if qp is None else f"qp {qp}",
                                             "bits_per_weight": bits / total, "snr_db": weighted_snr / total})
    if progress is not None:
        progress(len(settings), len(settings), "")
    return curves


def plot_curves(curves: dict[str, list[dict]], target: Path) -> None:
    """bits per weight (x) against weight SNR (y), one line per quantizer."""
    from .plotting import save_png, subplots

    fig, ax = subplots(figsize=(6.5, 4.2))
    for name, points in curves.items():
        pts = sorted(points, key=lambda p: p["bits_per_weight"])
        ax.plot([p["bits_per_weight"] for p in pts], [p["snr_db"] for p in pts], "o-", ms=3, label=name)
    ax.set_xlabel("coded bits per weight (entropy-coded)")
    ax.set_ylabel("weight SNR, dB (size-weighted mean over tensors)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_png(fig, target)


def curves_table(curves: dict[str, list[dict]]) -> str:
    """Each quantizer's weight SNR at 2, 4 and 6 bits per weight (interpolated)."""
    lines = ["weight SNR (dB) at a given rate, interpolated along each quantizer's curve",
             f"{'quantizer':<16} {'2 bits':>8} {'4 bits':>8} {'6 bits':>8}"]
    for name, points in curves.items():
        pts = sorted(points, key=lambda p: p["bits_per_weight"])
        xs, ys = [p["bits_per_weight"] for p in pts], [p["snr_db"] for p in pts]
        cells = [f"{np.interp(b, xs, ys):8.1f}" if xs[0] <= b <= xs[-1] else f"{'–':>8}" for b in (2, 4, 6)]
        lines.append(f"{name:<16} " + " ".join(cells))
    return "\n".join(lines)


def _fit_json(f: Fit) -> dict:
    return {"family": f.family, "kl_bits": f.kl, "sse": f.sse, "params": f.params}


def table(result: dict) -> str:
    head = f"{'tensor':<40} {'shape':<18} {'weights':>9}  {'best':<9}  " + "  ".join(
        f"{SHORT[f]:>9}" for f in FAMILIES)
    lines = ["KL divergence (bits) of each fit from the weights' histogram; lower is better", head,
             "-" * len(head)]

    def line(name: str, shape: str, n: int, fits: list[dict]) -> str:
        kl = {f["family"]: f["kl_bits"] for f in fits}
        return (f"{name[:40]:<40} {shape[:18]:<18} {n:>9,}  {SHORT[fits[0]['family']]:<9}  "
                + "  ".join(f"{kl[f]:>9.4f}" for f in FAMILIES))

    for r in result["tensors"]:
        lines.append(line(r["name"], "×".join(map(str, r["shape"])), r["weights"], r["fits"]))
    lines.append("-" * len(head))
    lines.append(line("all weights pooled", "", result["weights"], result["overall"]))
    gg = next(f for f in result["overall"] if f["family"] == "generalized_gaussian")
    counts = ", ".join(f"{SHORT[k]} {v}" for k, v in result["best_counts"].items())
    lines.append(f"best fit per tensor: {counts}; pooled generalized-Gaussian shape β = "
                 f"{gg['params']['shape']:.2f} (1 = Laplace, 2 = Gaussian)")
    return "\n".join(lines)


def plot(tensors: Tensors, result: dict, out_dir: Path, count: int, bins: int) -> list[Path]:
    """Histogram-with-fits PNGs: all weights pooled, and the ``count`` largest tensors."""
    from .plotting import save_png, subplots
    tensors = {name: v for name, _, v in tensors}
    largest = sorted(result["tensors"], key=lambda r: -r["weights"])[:count]
    jobs = [("all weights pooled", np.concatenate(list(tensors.values())), result["overall"])]
    jobs += [(r["name"], tensors[r["name"]], r["fits"]) for r in largest]
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for i, (name, values, fits) in enumerate(jobs):
        counts, edges = histogram(values, bins)
        width = np.diff(edges)
        density = counts / (counts.sum() * width)
        t = np.linspace(edges[0], edges[-1], 600)
        fig, axes = subplots(1, 2, figsize=(11, 3.8))
        for ax, log in zip(axes, (False, True), strict=True):
            ax.bar(edges[:-1], density, width=width, align="edge", color="0.8", label="weights")
            for f in fits:
                ax.plot(t, pdf(f["family"], f["params"], t), lw=1.2,
                        label=f"{SHORT[f['family']]} (KL {f['kl_bits']:.3f})")
            if log:
                ax.set_yscale("log")
                ax.set_ylim(max(density[density > 0].min() / 10, 1e-6), density.max() * 3)
            ax.set_xlabel("weight value")
        axes[0].set_ylabel("density")
        axes[1].legend(fontsize=7, loc="lower center")
        fig.suptitle(f"{name} ({values.size:,} weights)", fontsize=10)
        fig.tight_layout()
        target = out_dir / f"{i:02d}_{''.join(c if c.isalnum() else '_' for c in name)[:60]}.png"
        save_png(fig, target, dpi=100)
        written.append(target)
    return written


def main(argv: list[str] | None = None, prog: str = "nnr-analyze") -> int:
    ap = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    ap.add_argument("model", help="ONNX model (.onnx)")
    ap.add_argument("--plot", type=Path, metavar="DIR",
                    help='write histogram-with-fits PNGs into DIR (needs pip install -e ".[plot]")')
    ap.add_argument("--plot-tensors", type=int, default=6, metavar="N",
                    help="with --plot: the N largest tensors besides the pooled weights (default 6)")
    ap.add_argument("--curves", action="store_true",
                    help="also code the weights with every quantizer over a range of steps and report "
                         "entropy against weight SNR (with --plot, as quantizer_curves.png)")
    ap.add_argument("--bins", type=int, default=200, help="histogram bins (default 200)")
    ap.add_argument("--min-elements", type=int, default=256,
                    help="skip tensors with fewer weights: too few for a histogram (default 256)")
    common_flags(ap, "every fit with its parameters (and with --curves every quantizer's curve)")
    args = ap.parse_args(argv)
    if args.bins < 10:
        ap.error("--bins must be at least 10")
    if args.min_elements < 2:
        ap.error("--min-elements must be at least 2")
    if args.plot:
        require_matplotlib(ap)
    try:
        require_encoder()
        tensors = weight_tensors(args.model, args.min_elements)
        result = analyze(args.model, tensors, args.bins)
        if args.curves:
            result["quantizer_curves"] = quantizer_curves(tensors, None if args.quiet else progress_bar())
        if args.json:
            print_json(result)
        else:
            print(table(result))
            if args.curves:
                print()
                print(curves_table(result["quantizer_curves"]))
        if args.plot:
            files = plot(tensors, result, args.plot, args.plot_tensors, args.bins)
            if args.curves:
                plot_curves(result["quantizer_curves"], args.plot / "quantizer_curves.png")
                files.append(args.plot / "quantizer_curves.png")
            if not args.quiet:
                print(f"wrote {len(files)} plots to {args.plot}", file=sys.stderr)
    except NnrError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except BrokenPipeError:
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
