"""nnr's exceptions: every user-facing failure is an NnrError (defined in the codec layer,
the one leaf every layer imports)."""

from nnr.codec.errors import (CorruptionError, FormatError, InputError, LimitError, NnrError,  # noqa: F401
                              OptionError, OutputError, UnsupportedModelError, VersionError)

__all__ = ["NnrError", "InputError", "OptionError", "FormatError", "CorruptionError", "VersionError",
           "LimitError", "UnsupportedModelError", "OutputError"]


def first_line(exc: BaseException) -> str:
    """The first line of a foreign exception's message (onnxruntime's run to many), or its type's
    name: what a one-line error or notice quotes of it."""
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:200]
