"""The quantizer family besides the default RDO deadzone (ECSQ): encoders of their bodies.

Every quantizer decodes bit-exactly with integer and dyadic arithmetic only:

* ``deadzone:δ`` (δ in [0, 1)): ``q = 0`` if ``|x| < δΔ``, else ``sign(x)·⌈|x|/Δ − δ⌉``;
  reconstruction ``sign(q)·Δ·(|q| + δ − ½)``. ``midtread`` is δ = ½ (rounding, x̂ = qΔ),
  ``midrise`` is δ = 0 (x̂ = ±Δ/2, ±3Δ/2, …; exact zeros stay zero). Coded as a lossy body
  (coding 2) whose offset θ = (½ − δ)·256 may be negative (flag bit 1).
* ``mulaw:μ``: companding ``y = ln(1 + μ|x|/A) / ln(1 + μ)`` with A = max|x|, y quantized
  uniformly in K levels; the decoder gets the K reconstruction magnitudes
  ``A/μ·((1+μ)^((k−½)/K·…) − 1)`` as a table (coding 3), so it evaluates no logarithm.
* ``minifloat:EeMm``: each weight rounded to the nearest value of a sign/E-bit exponent/
  M-bit mantissa float (bias 2^(E−1) − 1, subnormals, no infinities or NaN) times a
  power-of-two scale 2^s chosen so the largest magnitude fits (coding 4). ``fp16`` is
  E5M10, fp8 ``e4m3`` E4M3 and ``e5m2`` E5M2.
"""

from __future__ import annotations

import math

import numpy as np

from . import exactmath
from .bytestream import ByteWriter
from .levelcode import encode_levels
from .lossy_decode import (MAX_CODEBOOK, MAX_SCALE_EXPONENT, codebook_values, dequantize, minifloat_magnitudes,
                           step_values)
from .lossy_encode import LevelOverflow, LossyResult, dyadic_steps, lossy_body


def encode_deadzone(x: np.ndarray, steps: np.ndarray, delta: float, out_dtype: np.dtype) -> LossyResult:
    """Plain deadzone quantization (no RDO) at the given steps, as a coding-2 body."""
    x = np.asarray(x, dtype=np.float64)
    steps = np.atleast_1d(np.asarray(steps, dtype=np.float64))
    per_channel = steps.size > 1
    mant, shifts, exponent = dyadic_steps(steps)
    exact = step_values(mant, exponent - shifts)
    per = exact.reshape((-1,) + (1,) * (x.ndim - 1)) if per_channel else exact.reshape(())
    a = np.abs(x) / per
    if a.size and not float(a.max()) < 2 ** 30:
        raise LevelOverflow(f"values reach {float(a.max()):.3g} steps")
    q = np.where(a < delta, 0, np.ceil(a - delta)).astype(np.int64)
    q = np.where(x < 0, -q, q)
    theta = int(round((0.5 - delta) * 256))
    recon = dequantize(q, theta, exact, x.shape, np.dtype(out_dtype))
    return LossyResult(lossy_body(q, theta, mant, shifts, exponent), recon, float(exact.max()), theta)


def encode_mulaw(x: np.ndarray, step: float, mu: float, out_dtype: np.dtype) -> tuple[bytes, np.ndarray]:
    """μ-law companding quantizer as a codebook body (coding 3). ``step`` is the effective
    step near zero: the companded domain gets K = ⌈A·ln(1+μ)/(μ·step)⌉ levels."""
    x = np.asarray(x, dtype=np.float64)
    amax = float(np.max(np.abs(x))) if x.size else 0.0
    if amax == 0.0:
        raise LevelOverflow("an all-zero tensor has no μ-law range")
    log1mu = exactmath.log1p(float(mu))
    k = int(min(max(math.ceil(amax * log1mu / (mu * step)), 1), MAX_CODEBOOK))
    y = exactmath.log1p(mu * np.abs(x) / amax) / log1mu                # in [0, 1]
    q = np.minimum(np.floor(y * k + 0.5), k).astype(np.int64)          # 0..K, 0 ↔ y < 1/(2K)
    centres = np.arange(1, k + 1, dtype=np.float64) / k                 # level k ↔ y = k/K
    table = amax / mu * exactmath.expm1(centres * log1mu)
    table = np.maximum.accumulate(np.maximum(table, np.finfo(np.float64).tiny))
    q = np.where(x < 0, -q, q)
    w = ByteWriter()
    w.u8(0)
    w.varint(k)
    w.raw(table.astype("<f8").tobytes())
    w.raw(encode_levels(q))
    recon = codebook_values(q, table).astype(np.dtype(out_dtype)).reshape(x.shape)
    return w.getvalue(), recon


def _fitting_scale(amax: float, top: float) -> int:
    """Smallest s with amax ≤ top·2**s, decided by exact comparisons (no logarithm)."""
    s = exactmath.floor_log2(amax) - exactmath.floor_log2(top) - 1
    while math.ldexp(top, s) < amax:
        s += 1
    return s


def encode_minifloat(x: np.ndarray, exponent_bits: int, mantissa_bits: int,
                     out_dtype: np.dtype) -> tuple[bytes, np.ndarray]:
    """Round every weight to the nearest minifloat × 2^s (ties to the even code), coding 4."""
    x = np.asarray(x, dtype=np.float64)
    mags = minifloat_magnitudes(exponent_bits, mantissa_bits, 0)
    amax = float(np.max(np.abs(x))) if x.size else 0.0
    scale = 0 if amax == 0.0 else _fitting_scale(amax, float(mags[-1]))
    scale = max(-MAX_SCALE_EXPONENT, min(MAX_SCALE_EXPONENT, scale))
    grid = np.ldexp(mags, scale)
    a = np.abs(x).ravel()
    hi = np.clip(np.searchsorted(grid, a), 1, grid.size - 1)
    lo = hi - 1
    pick_hi = (grid[hi] - a < a - grid[lo]) | ((grid[hi] - a == a - grid[lo]) & (hi % 2 == 0))
    codes = np.where(pick_hi, hi, lo)
    codes = np.where(a >= grid[-1], grid.size - 1, codes).astype(np.int64)
    q = np.where(x.ravel() < 0, -codes, codes)
    w = ByteWriter()
    w.u8(exponent_bits)
    w.u8(mantissa_bits)
    w.i16(scale)
    w.raw(encode_levels(q))
    recon = codebook_values(q, grid[1:]).astype(np.dtype(out_dtype)).reshape(x.shape)
    return w.getvalue(), recon
