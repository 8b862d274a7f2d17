"""nnr's exceptions: every user-facing failure is an NnrError (defined in the codec layer,
the one leaf every layer imports)."""

from nnr.codec.errors import (CorruptionError, FormatError, InputError, LimitError, NnrError,  # noqa: F401
                              OptionError, OutputError, UnsupportedModelError, VersionError)

__all__ = ["NnrError", "InputError", "OptionError", "FormatError", "CorruptionError", "VersionError",
           "LimitError", "UnsupportedModelError", "OutputError"]
