"""Figures for the tools (matplotlib, an optional extra) and atomic PNGs.

Figures are made with matplotlib's object API, never pyplot: the caller's backend, open
figures and rcParams stay as they were (nnr may run inside a notebook or a GUI)."""

from __future__ import annotations

import io
from pathlib import Path


def require_matplotlib(parser) -> None:
    """Stop with a usage error (exit 2) before any work when --plot cannot be honoured."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        parser.error('--plot needs matplotlib: pip install -e ".[plot]"')


def subplots(nrows: int = 1, ncols: int = 1, figsize: tuple[float, float] = (6.4, 4.8), **kwargs):
    """(figure, axes) like pyplot.subplots, on a Figure of its own that no global state knows."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize)
    return fig, fig.subplots(nrows, ncols, **kwargs)


def save_png(fig, path: str | Path, dpi: int = 110) -> None:
    """Write the figure as a PNG atomically (no partial file on failure)."""
    from nnr.formats.fileio import write_bytes_atomic

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    write_bytes_atomic(path, buf.getvalue())
