"""nnr: compress trained neural networks (ONNX) into small, bit-exact .nnr bitstreams.

    import nnr
    data = nnr.encode("model.onnx")           # bytes of the .nnr file
    model = nnr.decode(data)                   # onnx.ModelProto
    session = nnr.load_session("model.nnr")    # onnxruntime session, decoded in memory
    nnr.encode_to_file("model.onnx", "model.nnr")       # files, written atomically
    nnr.decode_to_file("model.nnr", "decoded.onnx")
    f = nnr.open("model.nnr")                  # memory-mapped: f.get_tensor(name) reads one unit

Importing nnr (or decoding) does not import the encoder; numba is loaded by ``nnr.encode``,
and by a decode of a file of 16 MiB or more when it is installed (a compiled lock step).
"""

from __future__ import annotations

__version__ = "0.7.1"

from .errors import (CorruptionError, FormatError, InputError, LimitError, NnrError, OptionError,  # noqa: E402
                     OutputError, UnsupportedModelError, VersionError)

__all__ = [
    "encode", "encode_to_file", "decode", "decode_to_file", "load_session", "open", "EncoderOptions", "NnrError", "InputError",
    "OptionError", "FormatError", "CorruptionError", "VersionError", "LimitError", "UnsupportedModelError",
    "OutputError", "__version__",
]


def __getattr__(name: str):
    if name in ("encode", "encode_to_file"):
        from . import encoder
        return getattr(encoder, name)
    if name == "EncoderOptions":
        from .options import EncoderOptions
        return EncoderOptions
    if name in ("decode", "decode_to_file", "load_session", "open"):
        from . import decoder
        return getattr(decoder, name)
    raise AttributeError(f"module 'nnr' has no attribute {name!r}")
