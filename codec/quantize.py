"""Encoder-side quantizer (numba): rate–distortion optimised deadzone levels.

Levels index reconstruction points r_0 = 0 and r_k = k − theta (in units of the step)
for k ≥ 1, mirrored for negative k; codec.lossy_decode holds the exact reconstruction.
"""

from __future__ import annotations

from typing import NamedTuple

import numba
import numpy as np

from . import exactmath

MAX_GAIN_OFFSET = 0.5  # |θ| ≤ ½: a reconstruction stays inside the rounding cell of its level


@numba.njit(cache=True, nogil=True)
def _scaled_stats(x: np.ndarray, inv_steps: np.ndarray, inner: int):
    top = 0.0
    total = 0.0
    for c in range(inv_steps.size):
        inv = inv_steps[c]
        for i in range(c * inner, min((c + 1) * inner, x.size)):
            v = abs(x[i]) * inv
            total += v
            top = max(top, v)
    return top, total / max(x.size, 1)


def scaled_stats(x: np.ndarray, inv_steps: np.ndarray, inner: int) -> tuple[float, float]:
    """(max, mean) of |x|/step, where element i uses inv_steps[i // inner]."""
    return _scaled_stats(np.ascontiguousarray(x, dtype=np.float64).ravel(),
                         np.ascontiguousarray(inv_steps, dtype=np.float64), int(max(inner, 1)))


@numba.njit(cache=True, nogil=True)
def _rdo(x: np.ndarray, inv_steps: np.ndarray, inner: int, theta: float, lam: float, bits: np.ndarray):
    kmax = bits.size - 1
    out = np.empty(x.size, dtype=np.int64)
    counts = np.zeros(kmax + 1, dtype=np.int64)
    excess = 0.0
    moments = np.zeros(3)  # sums weighted by relative step²: a·k and a over nonzero levels, a² over all
    lam_zero = lam * bits[0]
    finest = inv_steps.max() if inv_steps.size else 1.0
    for c in range(inv_steps.size):
        inv = inv_steps[c]
        ratio = finest / inv
        weight = ratio * ratio  # (step / finest step)²: exactly 1 with one step
        for i in range(c * inner, min((c + 1) * inner, x.size)):
            xi = x[i]
            v = abs(xi) * inv
            k = np.int64(v + theta)
            lo = max(k, 1)
            hi = k + 1
            e_lo = v - (lo - theta)
            e_hi = v - (hi - theta)
            c_lo = e_lo * e_lo + lam * bits[min(lo, kmax)]
            c_hi = e_hi * e_hi + lam * bits[min(hi, kmax)]
            best_k = lo if c_lo < c_hi else hi
            best_c = min(c_lo, c_hi)
            best_k = 0 if v * v + lam_zero <= best_c else best_k
            out[i] = -best_k if xi < 0 else best_k
            counts[min(best_k, kmax)] += 1
            if best_k > 0:
                excess += best_k - v
                moments[0] += weight * v * best_k
                moments[1] += weight * v
            moments[2] += weight * v * v
    return out, counts, excess, moments


class RdoLevels(NamedTuple):
    """Levels of codec.quantize.rdo_quantize and what the encoder needs of them next."""

    levels: np.ndarray
    counts: np.ndarray     # count of each magnitude, clipped to the last entry of ``bits``
    mse_offset: float      # θ minimising the squared error of these levels (in [0, ½])
    gain_offset: float     # θ keeping the reconstruction's projection on x equal to |x|² (in [−½, ½])


def rdo_quantize(x: np.ndarray, inv_steps: np.ndarray, inner: int, theta: float, lam: float,
                 bits: np.ndarray) -> RdoLevels:
    """Signed levels minimising (a − r_k)² + lam·bits[k] over k ∈ {0, ⌊a+θ⌋, ⌊a+θ⌋+1}.

    a = |x_i|·inv_steps[i // inner] is the magnitude in step units; ``bits[k]`` the code
    length of magnitude k (the last entry serves every larger k, i.e. escapes); ``lam`` the
    Lagrangian in step² units. Also returns the count of each magnitude (clipped to the last
    entry) for the next rate model, and two reconstruction offsets for these levels.

    The gain offset solves Σ Δ²·a·(k − θ) = Σ Δ²·a² (Δ each weight's step, so that x̂·x =
    x·x; nonzero levels on the left): the reconstruction's projection on the tensor keeps
    its energy, where the MSE offset shrinks every nonzero weight towards zero. Shrinkage is an error
    correlated with the weights themselves; layer after layer (and step after step in a
    recurrent cell) it compounds into a gain error of the model's output.
    """
    levels, counts, excess, (ak, a_nonzero, aa) = _rdo(
        np.ascontiguousarray(x, dtype=np.float64).ravel(), np.ascontiguousarray(inv_steps, dtype=np.float64),
        int(max(inner, 1)), float(theta), float(lam), np.ascontiguousarray(bits, dtype=np.float64))
    n_nonzero = levels.size - int(counts[0])
    mse = min(max(excess / n_nonzero, 0.0), 0.5) if n_nonzero else 0.0
    gain = min(max((ak - aa) / a_nonzero, -MAX_GAIN_OFFSET), MAX_GAIN_OFFSET) if a_nonzero > 0 else 0.0
    return RdoLevels(levels, counts, mse, gain)


def bits_from_counts(counts: np.ndarray) -> np.ndarray:
    """Code length estimate (bits, sign included) of each magnitude from its count."""
    c = counts.astype(np.float64) + 0.5
    bits = -exactmath.log2(c / c.sum())
    bits[1:] += 1.0
    return bits


def laplace_bits(scale: float, kmax: int) -> np.ndarray:
    """Code length (bits, sign included) of magnitudes 0..kmax under a Laplace source of
    ``scale`` (in step units) quantized by rounding: the rate model before any counts exist."""
    b = max(scale, 1e-3)
    k = np.arange(kmax + 1, dtype=np.float64)
    e = exactmath.exp(np.append(-k / b, [0.5 / b, -0.5 / b]))   # one call: its cost is mostly per call
    p = e[:-2] * (e[-2] - e[-1])
    p[0] = 1.0 - e[-1]
    bits = -exactmath.log2(np.maximum(p, 1e-300))
    bits[1:] += 1.0
    return np.minimum(bits, 64.0)
