"""Shared by the benchmark scripts: print a result table and optionally save it."""

from __future__ import annotations

from pathlib import Path


def emit(text: str, markdown: Path | None) -> None:
    """Print ``text``; with ``markdown``, also write it there (the README quotes these files)."""
    print(text)
    if markdown:
        markdown.write_text(text)


def command_line(script: str, argv: list[str] | None) -> str:
    """The command that ran ``script`` (tools/NAME.py) with ``argv`` (default: this process's)."""
    import sys

    return " ".join(["python", script, *(sys.argv[1:] if argv is None else argv)])


def emit_with_json(text: str, data: object, markdown: Path | None, json_path: Path | None) -> None:
    """:func:`emit` ``text``; with ``json_path``, also write ``data`` there as JSON."""
    import json

    if json_path:
        json_path.write_text(json.dumps(data, indent=1) + "\n")
    emit(text, markdown)
