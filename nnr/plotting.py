"""Figures for the tools (matplotlib, an optional extra): a headless pyplot and atomic PNGs."""

from __future__ import annotations

import io
from pathlib import Path


def require_matplotlib(parser) -> None:
    """Stop with a usage error (exit 2) before any work when --plot cannot be honoured."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        parser.error('--plot needs matplotlib: pip install -e ".[plot]"')


def pyplot():
    """matplotlib.pyplot on the non-interactive Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_png(fig, path: str | Path, dpi: int = 110) -> None:
    """Write the figure as a PNG atomically (no partial file on failure) and close it."""
    from nnr.formats.fileio import write_bytes_atomic

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    pyplot().close(fig)
    write_bytes_atomic(path, buf.getvalue())
