"""Decoder of lossy (quantized) tensor bodies: integer levels back to floats, bit-exactly.

Body layout (little-endian):

    u8   flags        bit 0: one step mantissa per slice along axis 0 (per channel)
    u8   theta        reconstruction offset in 1/256 of a step
    i16  exponent e   step = mantissa · 2**(e − 8)
    mantissa          u8 (1..255); or, when bit 0 is set: varint C, then a level block of
                      C shifts (0..64) and a level block of C mantissas (1..255); channel c
                      has step mantissa_c · 2**(e − 8 − shift_c)
    level block       codec.levelcode

Reconstruction of level q: sign(q) · (|q|·256 − theta) · step / 256, with
q = 0 mapping to 0. Every factor is an exactly representable float64 (dyadic step,
integer numerator), the product is one correctly rounded float64 multiplication, and the
cast to the output dtype rounds to nearest even: the same bits on every IEEE platform.
"""

from __future__ import annotations

import numpy as np

from nnr.errors import CorruptionError

from .bytestream import ByteReader
from .levelcode import decode_levels

FLAG_PER_CHANNEL = 1
MIN_EXPONENT = -200
MAX_EXPONENT = 200
MAX_SHIFT = 64


def step_values(mantissas: np.ndarray, exponent: int | np.ndarray) -> np.ndarray:
    """Exact float64 step(s) mantissa · 2**(exponent − 8)."""
    return np.ldexp(np.asarray(mantissas, dtype=np.float64), exponent - 8)


def _reconstruct(q: np.ndarray, theta: int, steps: np.ndarray) -> np.ndarray:
    """The normative formula, elementwise, in float64 (``steps`` already divided by 256)."""
    num = np.abs(q).astype(np.float64) * 256.0
    num -= np.where(q != 0, float(theta), 0.0)
    np.copysign(num, q.astype(np.float64), out=num)
    return num * steps


def dequantize(levels: np.ndarray, theta: int, steps: np.ndarray, shape: tuple[int, ...],
               out_dtype: np.dtype) -> np.ndarray:
    """Reconstruct floats from levels; ``steps`` is a scalar or one value per axis-0 slice.

    With one step, the formula is evaluated once per distinct level and gathered (the same
    bits as evaluating it per element, much faster)."""
    q = levels.reshape(-1)
    steps = np.ldexp(np.asarray(steps, dtype=np.float64), -8)
    if steps.size > 1:
        per = steps.reshape((-1,) + (1,) * (len(shape) - 1))
        return _reconstruct(q.reshape(shape), theta, per).astype(out_dtype)
    step = steps.reshape(())
    if q.size:
        lo, hi = int(q.min()), int(q.max())
        if hi - lo < (1 << 20) and hi - lo < q.size:
            table = _reconstruct(np.arange(lo, hi + 1, dtype=np.int64), theta, step).astype(out_dtype)
            return table[q - lo].reshape(shape)
    return _reconstruct(q, theta, step).astype(out_dtype).reshape(shape)


def decode_lossy(body: bytes | memoryview, shape: tuple[int, ...], out_dtype: np.dtype) -> np.ndarray:
    """Decode a lossy body into an array of ``shape`` and float ``out_dtype``."""
    r = ByteReader(body, "lossy tensor body")
    flags = r.u8()
    if flags & ~FLAG_PER_CHANNEL:
        raise CorruptionError(f"lossy body has unknown flags {flags:#x}")
    theta = r.u8()
    exponent = r.i16()
    if not MIN_EXPONENT <= exponent <= MAX_EXPONENT:
        raise CorruptionError(f"step exponent {exponent} out of range")
    if flags & FLAG_PER_CHANNEL:
        channels = r.varint()
        if not shape or channels != shape[0]:
            raise CorruptionError(f"per-channel steps for {channels} channels, tensor shape {shape}")
        shifts = decode_levels(r, channels)
        mantissas = decode_levels(r, channels)
        if np.any((shifts < 0) | (shifts > MAX_SHIFT)):
            raise CorruptionError("per-channel step shift out of range")
    else:
        shifts = np.zeros(1, dtype=np.int64)
        mantissas = r.array("u1", 1).astype(np.int64)
    if np.any((mantissas < 1) | (mantissas > 255)):
        raise CorruptionError("step mantissa out of range 1..255")
    count = int(np.prod(shape, dtype=np.int64)) if shape else 1
    levels = decode_levels(r, count)
    r.expect_end()
    return dequantize(levels, theta, step_values(mantissas, exponent - shifts), tuple(shape), out_dtype)


def lossy_step(body: bytes | memoryview) -> float | None:
    """The step of a per-tensor lossy body, read from its header; None for per-channel steps."""
    r = ByteReader(body, "lossy tensor body")
    flags, _theta, exponent = r.u8(), r.u8(), r.i16()
    if flags & FLAG_PER_CHANNEL:
        return None
    return float(step_values(np.array([r.u8()]), exponent)[0])
