"""The one exception hierarchy of nnr: every user-facing failure is an NnrError.

It lives in the lowest layer, imports nothing, and every layer raises from it; users import
it as ``nnr.errors`` (or from ``nnr``)."""

from __future__ import annotations


class NnrError(Exception):
    """Base class: something the user can act on (bad input, bad file, bad option)."""

    exit_code = 1


class InputError(NnrError):
    """An input file is missing, unreadable, or not what it should be (e.g. not ONNX)."""

    exit_code = 2


class OptionError(NnrError, ValueError):
    """An encoder option or command-line value is out of range or unknown."""

    exit_code = 2


class FormatError(NnrError):
    """The bytes are not an .nnr container, or break the container's rules."""

    exit_code = 3


class CorruptionError(FormatError):
    """The container is truncated or a unit fails its CRC32 check."""


class VersionError(FormatError):
    """The container declares a format version this decoder does not know."""


class LimitError(FormatError):
    """Decoding the file would take more memory than allowed (a hostile or unusual file);
    the message says how to raise the limit."""


class UnsupportedModelError(NnrError):
    """The model holds something nnr refuses to code (e.g. NaN weights with --no-lossless-fallback)."""

    exit_code = 4


class OutputError(NnrError):
    """The output path cannot be written."""

    exit_code = 5
