"""The conformance report: a text table, JSON, markdown, and a size-vs-fidelity PNG."""

from __future__ import annotations

import math
from pathlib import Path


from .suite import Result
from .vectors import VectorCheck

COLUMNS = ("model", "point", "params", "ONNX bytes", ".nnr bytes", "ratio", "bits/weight", "fidelity", "result")


def _fidelity(r: Result) -> str:
    m = r.metrics
    parts = [f"{r.primary} {m[r.primary]:.4g}"]
    for key, label in (("accuracy", "top-1"), ("char_accuracy", "chars")):
        if key in m:
            parts.append(f"{label} {m[key + '_original']:.1%} → {m[key]:.1%}")
    snr = m.get("snr_db", math.nan)
    parts.append("SNR exact" if math.isinf(snr) else f"SNR {snr:.1f} dB")
    return ", ".join(parts)


def rows(results: list[Result]) -> list[tuple[str, ...]]:
    return [(r.model, r.point, f"{r.params:,}", f"{r.original_bytes:,}", f"{r.nnr_bytes:,}", f"{r.ratio:.4f}",
             f"{r.bits_per_weight:.2f}", _fidelity(r), "pass" if r.passed else "FAIL") for r in results]


def text_table(results: list[Result]) -> str:
    body = [COLUMNS, *rows(results)]
    widths = [max(len(row[i]) for row in body) for i in range(len(COLUMNS))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in body]
    lines.insert(1, "  ".join("-" * w for w in widths))
    for r in results:
        lines += [f"  {r.model} @ {r.point}: {v}" for v in r.violations]
    return "\n".join(lines)


def vector_summary(checks: list[VectorCheck]) -> str:
    counts = {k: sum(1 for c in checks if c.kind == k) for k in ("decode", "encode", "refuse")}
    failed = [c for c in checks if not c.ok]
    head = (f"vectors: {counts['decode']} decoded to their golden hashes, {counts['encode']} re-encoded "
            f"byte for byte, {counts['refuse']} damaged files refused with the documented error")
    if not failed:
        return head + " — all pass"
    return "\n".join([head + f" — {len(failed)} FAIL"] + [f"  {c.name} ({c.kind}): {c.detail}" for c in failed])


def markdown(results: list[Result], checks: list[VectorCheck], tier: str) -> str:
    vectors = f"{sum(c.ok for c in checks)}/{len(checks)} vector checks pass" if checks else "vectors not checked"
    out = [f"Conformance, {tier} tier: {sum(r.passed for r in results)}/{len(results)} model checks pass; "
           f"{vectors}.", "",
           "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    out += ["| " + " | ".join(row) + " |" for row in rows(results)]
    for r in results:
        out += [f"- **{r.model} @ {r.point}**: {v}" for v in r.violations]
    return "\n".join(out) + "\n"


def to_doc(results: list[Result], checks: list[VectorCheck], tier: str, swept: list[Result] = ()) -> dict:
    """The report as one JSON-able document (``nnr conformance --json``; an infinite SNR, which
    means bit-exact output, prints as null like every non-finite value)."""
    return {"tier": tier, "results": [r.to_json() for r in results], "sweep": [r.to_json() for r in swept],
            "vectors": [{"name": c.name, "kind": c.kind, "ok": c.ok, "detail": c.detail} for c in checks]}


def plot(results: list[Result], swept: list[Result], path: Path) -> None:
    """One panel per model: headline fidelity against bits per weight (log scale), the
    operating points labelled, the --qp sweep as the curve through them, and the output SNR
    of the lossy points on a second axis."""
    from nnr.plotting import save_png, subplots
    models = list(dict.fromkeys(r.model for r in results))
    cols = min(3, len(models))
    nrows = math.ceil(len(models) / cols)
    fig, axes = subplots(nrows, cols, figsize=(4.4 * cols, 3.5 * nrows), squeeze=False)
    for ax, name in zip(axes.flat, models, strict=False):
        mine = [r for r in results if r.model == name]
        curve = sorted([r for r in mine + [r for r in swept if r.model == name]
                        if math.isfinite(r.metrics.get("snr_db", math.inf))], key=lambda r: r.bits_per_weight)
        ax.plot([r.bits_per_weight for r in curve], [r.metrics[r.primary] for r in curve], ".-", color="0.6",
                zorder=1, label="--qp sweep")
        for k, r in enumerate(sorted(mine, key=lambda r: r.bits_per_weight)):
            ax.scatter(r.bits_per_weight, r.metrics[r.primary], s=40, zorder=2,
                       color="tab:blue" if r.passed else "tab:red")
            ax.annotate(r.point, (r.bits_per_weight, r.metrics[r.primary]), textcoords="offset points",
                        xytext=(4, -12 if k % 2 else 5), fontsize=8)
        snr_ax = ax.twinx()
        snr_ax.plot([r.bits_per_weight for r in curve], [r.metrics["snr_db"] for r in curve], ":",
                    color="tab:orange", zorder=0)
        snr_ax.set_ylabel("output SNR, dB (dotted)", fontsize=8, color="tab:orange")
        snr_ax.tick_params(axis="y", labelsize=7, colors="tab:orange")
        ax.set_xscale("log", base=2)
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("bits per weight")
        ax.set_ylabel(mine[0].primary)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(models):]:
        ax.axis("off")
    fig.tight_layout()
    save_png(fig, path)
