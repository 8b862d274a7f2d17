"""Encoder of lossy tensor bodies: dyadic steps, RDO deadzone quantization, level coding."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import exactmath
from .bytestream import ByteWriter
from .error_feedback import DEFAULT_DAMPING, feedback_levels
from .levelcode import MAX_LEVEL, encode_levels
from .lossy_decode import FLAG_NEGATIVE_THETA, FLAG_PER_CHANNEL, MAX_SHIFT, dequantize, step_values
from .quantize import bits_from_counts, laplace_bits, rdo_quantize, scaled_stats
from .quantizer_spec import RECONSTRUCTIONS


@dataclass(frozen=True)
class Feedback:
    """A layer's input second moments for data-aware rounding (codec.error_feedback).

    ``hessian`` is (G, d, d); the weight is read as rows × d with rows along axis 0, or along
    the last axis when ``transposed`` (a MatMul/Gemm weight stored inputs × outputs)."""

    hessian: np.ndarray
    transposed: bool = False
    damping: float = DEFAULT_DAMPING


def _feedback(x: np.ndarray, inv_steps: np.ndarray, theta: float, lam: float, bits: np.ndarray,
              fb: Feedback) -> np.ndarray:
    if fb.transposed:
        if inv_steps.size > 1:
            raise ValueError("error feedback on a transposed weight needs one step")
        w = x.reshape(x.shape[0], -1).T
    else:
        w = x.reshape(x.shape[0], -1)
    levels = feedback_levels(w, fb.hessian, inv_steps, theta, lam, bits, fb.damping)
    return (levels.T if fb.transposed else levels).reshape(-1)


class LevelOverflow(ValueError):
    """The step is too fine for the tensor's range: levels would not fit the stream."""


@dataclass(frozen=True)
class LossyResult:
    """A coded body and what it cost and did (for reports)."""

    body: bytes
    reconstruction: np.ndarray
    step: float
    theta: int


def dyadic_steps(steps: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """Snap positive steps to mantissa · 2**(e − 8 − shift): 8-bit mantissas (128..255 unless
    the shift saturates), one shared exponent e, a per-step shift in 0..MAX_SHIFT."""
    steps = np.asarray(steps, dtype=np.float64)
    e = exactmath.floor_log2(float(steps.max())) + 1
    shifts = np.clip(e - np.frexp(steps)[1], 0, MAX_SHIFT).astype(np.int64)
    mant = np.round(np.ldexp(steps, 8 - e + shifts))
    carry = mant > 255
    shifts = np.where(carry & (shifts > 0), shifts - 1, shifts)
    mant = np.round(np.ldexp(steps, 8 - e + shifts))
    if mant.max() > 255:
        e += 1
        mant = np.round(np.ldexp(steps, 8 - e + shifts))
    return np.clip(mant, 1, 255).astype(np.int64), shifts, e


def encode_lossy(x: np.ndarray, steps: np.ndarray | float, lam: float = 0.1,
                 iterations: int = 1, out_dtype: np.dtype = np.dtype(np.float32),
                 feedback: Feedback | None = None, reconstruction: str = "gain") -> LossyResult:
    """Quantize ``x`` with the given step (scalar, or one per axis-0 slice) and code it.

    Levels are decided by rate–distortion optimisation with Lagrangian ``lam``·step² and an
    adaptive rate model, refined ``iterations`` times together with the reconstruction offset.
    ``reconstruction`` ``gain`` writes the offset that keeps the tensor's gain
    (codec.quantize.rdo_quantize says why), ``mse`` the one of least squared error; error
    feedback keeps the squared-error offset its rounding is decided for.
    With ``feedback``, the final levels are rounded with error feedback through the layer's
    input statistics (codec.error_feedback); the body's format is the same.
    """
    if reconstruction not in RECONSTRUCTIONS:
        raise ValueError(f"reconstruction must be one of {', '.join(RECONSTRUCTIONS)}, got {reconstruction!r}")
    x = np.asarray(x, dtype=np.float64)
    shape = x.shape
    steps = np.atleast_1d(np.asarray(steps, dtype=np.float64))
    mant, shifts, exponent = dyadic_steps(steps)
    exact_steps = step_values(mant, exponent - shifts)
    inner = x.size // steps.size if steps.size > 1 else max(x.size, 1)
    inv_steps = 1.0 / exact_steps
    top, mean = scaled_stats(x, inv_steps, inner)
    if not top < MAX_LEVEL - 2:
        raise LevelOverflow(f"values reach {top:.3g} steps; levels are limited to {MAX_LEVEL}")
    bits = laplace_bits(mean if x.size else 1.0, int(min(max(top, 1.0), 4096.0)) + 1)
    theta = 0.0
    for _ in range(iterations):
        rdo = rdo_quantize(x, inv_steps, inner, theta, lam, bits)
        levels, theta = rdo.levels, rdo.mse_offset
        bits = bits_from_counts(rdo.counts)
    if feedback is None and reconstruction == "gain":
        theta = rdo.gain_offset
    theta_int = int(round(theta * 256))
    if feedback is not None and x.size:
        levels = _feedback(x, inv_steps, theta_int / 256.0, lam, bits, feedback)
    body = lossy_body(levels, theta_int, mant, shifts, exponent)
    recon = dequantize(levels, theta_int, exact_steps, shape, np.dtype(out_dtype))
    return LossyResult(body, recon, float(exact_steps.max()), theta_int)


def lossy_body(levels: np.ndarray, theta: int, mant: np.ndarray, shifts: np.ndarray, exponent: int) -> bytes:
    """A coding-2 body: flags, |θ| (negative θ sets flag bit 1), step(s), level block."""
    per_channel = mant.size > 1
    w = ByteWriter()
    w.u8((FLAG_PER_CHANNEL if per_channel else 0) | (FLAG_NEGATIVE_THETA if theta < 0 else 0))
    w.u8(abs(theta))
    w.i16(exponent)
    if per_channel:
        w.varint(int(mant.size))
        w.raw(encode_levels(shifts))
        w.raw(encode_levels(mant))
    else:
        w.u8(int(mant[0]))
    w.raw(encode_levels(levels))
    return w.getvalue()
