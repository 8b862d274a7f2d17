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

from .errors import CorruptionError

from .bytestream import Budget, ByteReader
from .levelcode import CONTEXT_LANES, LevelJob, read_levels
from .rans import Steps, run

FLAG_PER_CHANNEL = 1
FLAG_NEGATIVE_THETA = 2   # format version 3: theta is subtracted with the opposite sign
MAX_CODEBOOK = 1 << 16
MAX_SCALE_EXPONENT = 200
MAX_MINIFLOAT_BITS = 16   # exponent + mantissa bits (fp16 is 15, bfloat16 15, fp8 7)
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
            return _looked_up(table, q, lo).reshape(shape)
    return _reconstruct(q, theta, step).astype(out_dtype).reshape(shape)


LOOKUP_ELEMENTS = 1 << 16
"""Levels looked up at a time: numpy widens an index array to intp, which for a whole tensor
would be a fresh temporary of 8 bytes a weight."""


def _looked_up(table: np.ndarray, q: np.ndarray, lo: int) -> np.ndarray:
    """table[q − lo] for every level of ``q`` (lo ≤ q ≤ lo + table.size − 1), in pieces."""
    if lo <= 0 < lo + table.size:   # levels 0..hi, then lo..−1: a negative level indexes from the end
        table, lo = np.concatenate((table[-lo:], table[:-lo])), 0
    out = np.empty(q.size, dtype=table.dtype)
    for i in range(0, q.size, LOOKUP_ELEMENTS):
        piece = q[i:i + LOOKUP_ELEMENTS]
        out[i:i + piece.size] = table[piece - lo if lo else piece]
    return out


def decode_lossy(body: bytes | memoryview, shape: tuple[int, ...], out_dtype: np.dtype,
                 budget: Budget | None = None, negative_theta: bool = True, lanes: int = CONTEXT_LANES) -> np.ndarray:
    """Decode a lossy body into an array of ``shape`` and float ``out_dtype``; flag bit 1
    (negative θ) is refused unless ``negative_theta`` (format version ≥ 3); ``lanes``: the
    level blocks' dialect (codec.levelcode; the current format's by default)."""
    return run(lossy_decoder(body, shape, out_dtype, budget, negative_theta, lanes))


def lossy_decoder(body: bytes | memoryview, shape: tuple[int, ...], out_dtype: np.dtype,
                  budget: Budget | None = None, negative_theta: bool = True, lanes: int = CONTEXT_LANES,
                  compiled: bool = False) -> Steps[np.ndarray]:
    """:func:`decode_lossy` as a decoder generator (codec.rans.run_all); ``compiled``
    reconstructs a one-step tensor with codec.lossy_jit (import it first): the same values."""
    r = ByteReader(body, "lossy tensor body", budget)
    flags = r.u8()
    known = FLAG_PER_CHANNEL | (FLAG_NEGATIVE_THETA if negative_theta else 0)
    if flags & ~known:
        raise CorruptionError(f"lossy body has flags {flags:#x} its format version does not define")
    theta = r.u8()
    if flags & FLAG_NEGATIVE_THETA:
        theta = -theta
    exponent = r.i16()
    if not MIN_EXPONENT <= exponent <= MAX_EXPONENT:
        raise CorruptionError(f"step exponent {exponent} out of range")
    count = int(np.prod(shape, dtype=np.int64)) if shape else 1
    if flags & FLAG_PER_CHANNEL:
        channels = r.varint()
        if not shape or channels != shape[0] or not 1 <= channels <= count:
            raise CorruptionError(f"per-channel steps for {channels} channels, tensor shape {shape}")
        jobs = [read_levels(r, channels, lanes), read_levels(r, channels, lanes)]
    else:
        jobs = []
        mantissas = r.array("u1", 1).astype(np.int64)
    jobs.append(read_levels(r, count, lanes))
    r.expect_end()
    symbols = yield [j.ans for j in jobs]
    if flags & FLAG_PER_CHANNEL:
        shifts, mantissas = jobs[0].finish(symbols[0]), jobs[1].finish(symbols[1])
        if np.any((shifts < 0) | (shifts > MAX_SHIFT)):
            raise CorruptionError("per-channel step shift out of range")
    else:
        shifts = np.zeros(1, dtype=np.int64)
    if np.any((mantissas < 1) | (mantissas > 255)):
        raise CorruptionError("step mantissa out of range 1..255")
    steps = step_values(mantissas, exponent - shifts)
    with np.errstate(over="ignore"):  # beyond the output type's range is ±inf, as IEEE 754 says
        if compiled and steps.size == 1:
            values = _compiled_dequantize(jobs[-1], symbols[-1], theta, steps, out_dtype)
            if values is not None:
                return values.reshape(shape)
        return dequantize(jobs[-1].finish(symbols[-1]), theta, steps, tuple(shape), out_dtype)


compiled_values = None
"""codec.lossy_jit.values, set when that module is imported (this one never imports numba)."""
_NO_PLANES = np.frombuffer(b"", dtype=np.uint8).reshape(0, 0)
"""The fine-bit planes of s = 0: read-only like a file's, so the kernel is compiled for one kind."""


def _compiled_dequantize(job: LevelJob, symbols: np.ndarray, theta: int, steps: np.ndarray,
                         out_dtype: np.dtype) -> np.ndarray | None:
    """``dequantize(job.finish(symbols), ...)`` for one step in one compiled pass from a table of
    every plain level (codec.lossy_jit; float32 values overwrite the symbols), with finish's
    checks and messages; None when the table would be larger than the tensor (or the symbols
    are not int32): decode with numpy."""
    if compiled_values is None:
        raise RuntimeError("compiled reconstruction needs nnr.codec.lossy_jit imported first")
    escape = job.n_sym - 1
    if symbols.dtype != np.int32 or (escape << job.s) > symbols.size:
        return None
    step = np.ldexp(steps.reshape(()), -8)
    first = job.lo << job.s
    table = _reconstruct(np.arange(first, first + (escape << job.s), dtype=np.int64), theta, step).astype(out_dtype)
    escaped = _reconstruct(job.escape_levels(), theta, step).astype(out_dtype)
    planes = job.fine_planes() if job.s else _NO_PLANES
    values, seen = compiled_values(symbols, escape, job.s, planes, job.n_plain, table, escaped)
    if seen != job.escapes.size:
        raise CorruptionError(f"level block has {seen} escape symbols but {job.escapes.size} escape values")
    if seen:
        job.check_escapes()
    return values


def main_block_offset(body: bytes | memoryview, lanes: int = CONTEXT_LANES) -> tuple[int, int]:
    """(flags, offset of the main level block) of a lossy body, its step fields read but not
    decoded: for tools that look inside a body."""
    r = ByteReader(body, "lossy tensor body")
    flags = r.u8()
    r.u8()
    r.i16()
    if flags & FLAG_PER_CHANNEL:
        channels = r.varint()
        read_levels(r, channels, lanes)
        read_levels(r, channels, lanes)
    else:
        r.u8()
    return flags, len(body) - r.remaining


def lossy_step(body: bytes | memoryview) -> float | None:
    """The step of a per-tensor lossy body, read from its header; None for per-channel steps."""
    r = ByteReader(body, "lossy tensor body")
    flags, _theta, exponent = r.u8(), r.u8(), r.i16()
    if not MIN_EXPONENT <= exponent <= MAX_EXPONENT:
        raise CorruptionError(f"step exponent {exponent} out of range")
    if flags & FLAG_PER_CHANNEL:
        return None
    return float(step_values(np.array([r.u8()]), exponent)[0])


def codebook_values(levels: np.ndarray, magnitudes: np.ndarray) -> np.ndarray:
    """float64 reconstruction: 0 for level 0, else sign(q) · magnitudes[|q| − 1] (a gather)."""
    q = np.asarray(levels, dtype=np.int64).ravel()
    table = np.concatenate([[0.0], np.asarray(magnitudes, dtype=np.float64)])
    return np.copysign(table[np.abs(q)], q.astype(np.float64))


def decode_codebook(body: bytes | memoryview, shape: tuple[int, ...], out_dtype: np.dtype,
                    budget: Budget | None = None, lanes: int = CONTEXT_LANES) -> np.ndarray:
    """Coding 3: u8 flags (0), varint K, K float64 magnitudes, level block with |q| ≤ K."""
    return run(codebook_decoder(body, shape, out_dtype, budget, lanes))


def codebook_decoder(body: bytes | memoryview, shape: tuple[int, ...], out_dtype: np.dtype,
                     budget: Budget | None = None, lanes: int = CONTEXT_LANES) -> Steps[np.ndarray]:
    """:func:`decode_codebook` as a decoder generator."""
    r = ByteReader(body, "codebook tensor body", budget)
    if r.u8() != 0:
        raise CorruptionError("codebook body has unknown flags")
    k = r.varint(MAX_CODEBOOK)
    if k < 1:
        raise CorruptionError("codebook body declares no levels")
    table = r.array("<f8", k).astype(np.float64)
    if not np.all(np.isfinite(table)) or np.any(table <= 0) or np.any(np.diff(table) < 0):
        raise CorruptionError("codebook magnitudes must be positive, finite and non-decreasing")
    count = int(np.prod(shape, dtype=np.int64)) if shape else 1
    job = read_levels(r, count, lanes)
    r.expect_end()
    levels = job.finish((yield [job.ans])[0])
    if levels.size and int(np.abs(levels).max()) > k:
        raise CorruptionError(f"codebook level beyond its {k} entries")
    with np.errstate(over="ignore"):
        return codebook_values(levels, table).astype(out_dtype).reshape(shape)


def minifloat_magnitudes(exponent_bits: int, mantissa_bits: int, scale: int, count: int | None = None) -> np.ndarray:
    """Every non-negative value of the minifloat, by code, times 2**scale: code c has
    e = c >> M, m = c mod 2^M, bias = 2^(E−1) − 1, value m·2^(1−bias−M) when e = 0, else
    (2^M + m)·2^(e−bias−M). Integer mantissas and ldexp: exact, no transcendental."""
    codes = np.arange(1 << (exponent_bits + mantissa_bits) if count is None else count, dtype=np.int64)
    e, m = codes >> mantissa_bits, codes & ((1 << mantissa_bits) - 1)
    bias = (1 << (exponent_bits - 1)) - 1
    mant = np.where(e == 0, m, m + (1 << mantissa_bits)).astype(np.float64)
    return np.ldexp(mant, np.maximum(e, 1) - bias - mantissa_bits + scale)


def decode_minifloat(body: bytes | memoryview, shape: tuple[int, ...], out_dtype: np.dtype,
                     budget: Budget | None = None, lanes: int = CONTEXT_LANES) -> np.ndarray:
    """Coding 4: u8 E (1..8), u8 M (E + M ≤ 16), i16 scale s, level block of codes."""
    return run(minifloat_decoder(body, shape, out_dtype, budget, lanes))


def minifloat_decoder(body: bytes | memoryview, shape: tuple[int, ...], out_dtype: np.dtype,
                      budget: Budget | None = None, lanes: int = CONTEXT_LANES) -> Steps[np.ndarray]:
    """:func:`decode_minifloat` as a decoder generator."""
    r = ByteReader(body, "minifloat tensor body", budget)
    ebits, mbits, scale = r.u8(), r.u8(), r.i16()
    if not (1 <= ebits <= 8 and ebits + mbits <= MAX_MINIFLOAT_BITS):
        raise CorruptionError(f"minifloat E{ebits}M{mbits} is not supported")
    if abs(scale) > MAX_SCALE_EXPONENT:
        raise CorruptionError(f"minifloat scale exponent {scale} out of range")
    count = int(np.prod(shape, dtype=np.int64)) if shape else 1
    job = read_levels(r, count, lanes)
    r.expect_end()
    levels = job.finish((yield [job.ans])[0])
    top = 1 << (ebits + mbits)
    if levels.size and int(np.abs(levels).max()) >= top:
        raise CorruptionError("minifloat code out of range")
    if levels.size == 0:
        return np.zeros(shape, dtype=out_dtype)
    hi = int(np.abs(levels).max())
    with np.errstate(over="ignore"):
        table = minifloat_magnitudes(ebits, mbits, scale, hi + 1)[1:]
        return codebook_values(levels, table).astype(out_dtype).reshape(shape)
