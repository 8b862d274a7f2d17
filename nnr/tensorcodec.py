"""Decode one tensor unit's body to storage bytes: the dispatch shared by every reader."""

from __future__ import annotations

import numpy as np
from onnx import TensorProto

from nnr.codec.bytestream import Budget
from nnr.codec.floatcast import bfloat16_values, compute_dtype, to_storage
from nnr.codec.floatplanes import float_fields_decoder, float_planes_decoder
from nnr.codec.levelcode import CONTEXT_LANES, LANES, STACK
from nnr.codec.lossy_decode import codebook_decoder, lossy_decoder, minifloat_decoder
from nnr.codec.rans import Steps, run
from nnr.formats.container import (CODING_CODEBOOK, CODING_FLOAT_LOSSLESS, CODING_LOSSY, CODING_MINIFLOAT, CODING_RAW,
                               COMPACT_SINCE, COMPLEX_SINCE, CONTEXTS_SINCE, FLOAT_FIELDS_SINCE, FORMAT_VERSION,
                               QUANTIZERS_SINCE, TensorUnit)
from nnr.formats.onnx_io import COMPLEX_TYPES, COMPONENT_DTYPE, STORAGE_DTYPES

from .errors import CorruptionError, FormatError

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


LOSSY_DECODERS = {CODING_CODEBOOK: codebook_decoder, CODING_MINIFLOAT: minifloat_decoder}


def _coded_shape(dims: tuple[int, ...], parts: bool) -> tuple[int, ...]:
    """The shape a codec body is decoded in: axis 0 (per-channel steps) and everything else
    flattened, the complex parts axis included; the row-major bytes are the tensor's."""
    if parts:
        dims = dims + (2,)
    if len(dims) <= 2:
        return dims
    return (dims[0], int(np.prod(dims[1:], dtype=np.int64)))


def level_dialect(version: int) -> int:
    """How a file of format ``version`` codes its level blocks (codec.levelcode dialects)."""
    if version >= CONTEXTS_SINCE:
        return CONTEXT_LANES
    return LANES if version >= COMPACT_SINCE else STACK


def decode_unit(unit: TensorUnit, version: int = FORMAT_VERSION, budget: Budget | None = None) -> bytes:
    """Storage bytes (little-endian, ONNX raw_data layout) of a tensor unit of a file of
    format ``version``; ``budget`` is charged for every allocation the unit declares."""
    data = run(unit_decoder(unit, version, budget))
    return data if isinstance(data, bytes) else bytes(data)


def unit_decoder(unit: TensorUnit, version: int = FORMAT_VERSION, budget: Budget | None = None,
                 compiled: bool = False) -> Steps[bytes | memoryview]:
    """:func:`decode_unit` as a decoder generator, so that a model's units decode their
    entropy-coded blocks together (codec.rans.run_all); ``compiled`` reconstructs with
    codec.lossy_jit where it applies (the same bytes)."""
    lanes = level_dialect(version)
    dtype = storage_dtype(unit.dtype)
    nbytes = unit.numel * dtype.itemsize
    if budget is not None:
        budget.charge(nbytes, f"tensor {unit.name!r}")
    if unit.dtype in COMPLEX_TYPES and version < COMPLEX_SINCE:
        raise CorruptionError(f"tensor {unit.name!r} is complex, which format version {version} cannot hold "
                              f"(complex tensors came with version {COMPLEX_SINCE})")
    if unit.coding in (CODING_CODEBOOK, CODING_MINIFLOAT) and version < QUANTIZERS_SINCE:
        raise CorruptionError(f"tensor {unit.name!r} uses coding {unit.coding}, which format version {version} "
                              f"does not define (it came with version {QUANTIZERS_SINCE})")
    if unit.coding == CODING_RAW:
        if len(unit.body) != nbytes:
            raise CorruptionError(f"tensor {unit.name!r}: raw body has {len(unit.body)} bytes, "
                                  f"shape needs {nbytes}")
        return bytes(unit.body)
    if unit.numel > (len(unit.body) + 64) << MAX_EXPANSION_LOG2:
        raise CorruptionError(f"tensor {unit.name!r}: {unit.numel} elements cannot come from "
                              f"{len(unit.body)} bytes (refusing to allocate)")
    # a complex tensor is coded as the float tensor of its parts: shape dims + [2], (real, imag)
    parts = unit.dtype in COMPONENT_DTYPE
    float_type = COMPONENT_DTYPE.get(unit.dtype, unit.dtype)
    if float_type not in FLOAT_FORMAT_OF:
        raise CorruptionError(f"tensor {unit.name!r}: coding {unit.coding} needs a float or complex type")
    count = 2 * unit.numel if parts else unit.numel
    if unit.coding == CODING_FLOAT_LOSSLESS:
        width = np.dtype(STORAGE_DTYPES[float_type]).itemsize
        if unit.body[:1] != bytes([width]):
            raise CorruptionError(f"tensor {unit.name!r}: lossless body width disagrees with its type")
        if version >= FLOAT_FIELDS_SINCE:
            return (yield from float_fields_decoder(unit.body, count, budget))
        return (yield from float_planes_decoder(unit.body, count, budget, lanes))
    if unit.coding == CODING_LOSSY or unit.coding in LOSSY_DECODERS:
        fmt = FLOAT_FORMAT_OF[float_type]
        if budget is not None:
            budget.charge(16 * count, f"tensor {unit.name!r}: reconstruction")
        shape = _coded_shape(unit.dims, parts)
        if unit.coding == CODING_LOSSY:
            steps = lossy_decoder(unit.body, shape, compute_dtype(fmt), budget,
                                  negative_theta=version >= QUANTIZERS_SINCE, lanes=lanes, compiled=compiled)
        else:
            steps = LOSSY_DECODERS[unit.coding](unit.body, shape, compute_dtype(fmt), budget, lanes)
        values = yield from steps
        with np.errstate(over="ignore"):  # a value beyond the storage type's range is ±inf, as IEEE 754 says
            return memoryview(np.ascontiguousarray(to_storage(values, fmt)).reshape(-1).view(np.uint8))
    raise CorruptionError(f"tensor {unit.name!r}: unknown coding {unit.coding}")


def unit_array(unit: TensorUnit, version: int = FORMAT_VERSION, budget: Budget | None = None) -> np.ndarray:
    """The decoded tensor as a numpy array (bfloat16 as float32 values)."""
    flat = np.frombuffer(decode_unit(unit, version, budget), dtype=storage_dtype(unit.dtype))
    try:
        data = flat.reshape(unit.dims)
    except ValueError as exc:  # numpy < 2 holds at most 32 dimensions
        raise FormatError(f"tensor {unit.name!r} has {len(unit.dims)} dimensions, more than this numpy "
                          f"supports ({exc})") from exc
    if unit.dtype == TensorProto.BFLOAT16:
        return bfloat16_values(data)
    return data.copy()
