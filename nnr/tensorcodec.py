"""Decode one tensor unit's body to storage bytes: the dispatch shared by every reader."""

from __future__ import annotations

import numpy as np
from onnx import TensorProto

from codec.floatcast import bfloat16_values, compute_dtype, to_storage
from codec.floatplanes import decode_float_planes
from codec.lossy_decode import decode_codebook, decode_lossy, decode_minifloat
from formats.container import (CODING_CODEBOOK, CODING_FLOAT_LOSSLESS, CODING_LOSSY, CODING_MINIFLOAT, CODING_RAW,
                               TensorUnit)
from formats.onnx_io import COMPONENT_DTYPE, STORAGE_DTYPES

from .errors import CorruptionError

MAX_EXPANSION_LOG2 = 20
"""A coded body may expand to at most 2**20 elements per byte (plus 64 bytes of slack)."""

FLOAT_FORMAT_OF = {
    TensorProto.FLOAT: "float32",
    TensorProto.FLOAT16: "float16",
    TensorProto.BFLOAT16: "bfloat16",
    TensorProto.DOUBLE: "float64",
}


def storage_dtype(onnx_dtype: int) -> np.dtype:
    if onnx_dtype not in STORAGE_DTYPES:
        raise CorruptionError(f"tensor unit has data type {onnx_dtype}, which nnr does not code")
    return np.dtype(STORAGE_DTYPES[onnx_dtype])


LOSSY_DECODERS = {CODING_LOSSY: decode_lossy, CODING_CODEBOOK: decode_codebook, CODING_MINIFLOAT: decode_minifloat}


def decode_unit(unit: TensorUnit) -> bytes:
    """Storage bytes (little-endian, ONNX raw_data layout) of a tensor unit."""
    dtype = storage_dtype(unit.dtype)
    nbytes = unit.numel * dtype.itemsize
    if unit.coding == CODING_RAW:
        if len(unit.body) != nbytes:
            raise CorruptionError(f"tensor {unit.name!r}: raw body has {len(unit.body)} bytes, "
                                  f"shape needs {nbytes}")
        return unit.body
    if unit.numel > (len(unit.body) + 64) << MAX_EXPANSION_LOG2:
        raise CorruptionError(f"tensor {unit.name!r}: {unit.numel} elements cannot come from "
                              f"{len(unit.body)} bytes (refusing to allocate)")
    # a complex tensor is coded as the float tensor of its parts: shape dims + [2], (real, imag)
    parts = unit.dtype in COMPONENT_DTYPE
    float_type = COMPONENT_DTYPE.get(unit.dtype, unit.dtype)
    if float_type not in FLOAT_FORMAT_OF:
        raise CorruptionError(f"tensor {unit.name!r}: coding {unit.coding} needs a float or complex type")
    count, dims = (2 * unit.numel, unit.dims + (2,)) if parts else (unit.numel, unit.dims)
    if unit.coding == CODING_FLOAT_LOSSLESS:
        out = decode_float_planes(unit.body, count)
        if len(out) != nbytes:
            raise CorruptionError(f"tensor {unit.name!r}: lossless body width disagrees with its type")
        return out
    if unit.coding in LOSSY_DECODERS:
        fmt = FLOAT_FORMAT_OF[float_type]
        values = LOSSY_DECODERS[unit.coding](unit.body, dims, compute_dtype(fmt))
        return to_storage(values, fmt).tobytes()
    raise CorruptionError(f"tensor {unit.name!r}: unknown coding {unit.coding}")


def unit_array(unit: TensorUnit) -> np.ndarray:
    """The decoded tensor as a numpy array (bfloat16 as float32 values)."""
    data = np.frombuffer(decode_unit(unit), dtype=storage_dtype(unit.dtype)).reshape(unit.dims)
    if unit.dtype == TensorProto.BFLOAT16:
        return bfloat16_values(data)
    return data.copy()
