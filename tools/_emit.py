"""Shared by the benchmark scripts: print a result table and optionally save it."""

from __future__ import annotations

from pathlib import Path


def emit(text: str, markdown: Path | None) -> None:
    """Print ``text``; with ``markdown``, also write it there (the README quotes these files)."""
    print(text)
    if markdown:
        markdown.write_text(text)
