"""How every nnr command talks to its user: the flags they share, a JSON document on stdout,
progress on stderr, and names from files made safe to print."""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from typing import Callable

from . import __version__
from .errors import FormatError, InputError


def progress_bar(stream=sys.stderr) -> Callable[[int, int, str], None]:
    """A one-line progress display on a terminal; silent when stderr is not a TTY."""
    if not stream.isatty():
        return lambda done, total, name: None

    def show(done: int, total: int, name: str) -> None:
        width = 30
        filled = width * done // max(total, 1)
        stream.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total} {printable(name)[:40]:<40}")
        if done >= total:
            stream.write("\r" + " " * (width + 60) + "\r")
        stream.flush()

    return show


_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
_CONTROL_BUT_NEWLINE = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\ud800-\udfff]")


def printable(text: object, keep_newlines: bool = False) -> str:
    """``text`` with C0/C1 control characters, DEL and lone surrogates shown as \\xNN or \\uNNNN,
    so names and strings taken from a file cannot drive the terminal or break the line."""
    pattern = _CONTROL_BUT_NEWLINE if keep_newlines else _CONTROL
    return pattern.sub(lambda m: f"\\x{ord(m[0]):02x}" if ord(m[0]) < 0x100 else f"\\u{ord(m[0]):04x}", str(text))


def common_flags(p: argparse.ArgumentParser, json_help: str) -> None:
    """Add the flags every command shares: --json (``json_help`` says what the document holds),
    -q and --version."""
    p.add_argument("--json", action="store_true",
                   help=f"print {json_help} on stdout as one JSON document (ASCII; NaN and infinite "
                        "values are null) instead of text")
    p.add_argument("-q", "--quiet", action="store_true",
                   help="print no progress, notice or summary on stderr (errors and warnings still print)")
    p.add_argument("--version", action="version", version=f"nnr {__version__}")


def print_json(doc: object) -> None:
    """One JSON document on stdout: the --json output of every command."""
    print(metadata_json(doc, indent=2))


def require_encoder() -> None:
    """Encoding needs the ``encode`` extra (numba, onnxruntime); a decode-only install says so."""
    import importlib.util

    missing = [m for m in ("numba", "onnxruntime") if importlib.util.find_spec(m) is None]
    if missing:
        raise InputError(f"encoding needs {' and '.join(missing)}, which this decode-only install lacks: "
                         "pip install 'nnr[encode]'")


def json_safe(value: object) -> object:
    """``value`` with NaN and infinite floats as None, which strict JSON can carry (the SNR of
    a lossless tensor is +inf; its row's mode already says lossless)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def metadata_json(value: object, **kwargs) -> str:
    """json.dumps for output holding file metadata, which a hostile file can nest too deeply to print."""
    try:
        return json.dumps(json_safe(value), allow_nan=False, ensure_ascii=True, default=str, **kwargs)
    except RecursionError:
        raise FormatError("metadata is nested too deeply to print") from None
