"""Encoder-side quantizers (numba): deadzone rounding and rate–distortion optimised levels.

Levels index reconstruction points r_0 = 0 and r_k = k − theta (in units of the step)
for k ≥ 1, mirrored for negative k; codec.lossy_decode holds the exact reconstruction.
"""

from __future__ import annotations

import numba
import numpy as np


@numba.njit(cache=True, nogil=True)
def _deadzone(a: np.ndarray, delta: float) -> np.ndarray:
    out = np.empty(a.size, dtype=np.int64)
    for i in range(a.size):
        v = a[i]
        if v < delta:
            out[i] = 0
        else:
            out[i] = np.int64(np.ceil(v - delta))
    return out


def deadzone_quantize(a: np.ndarray, delta: float = 0.5) -> np.ndarray:
    """Magnitude levels of scaled magnitudes ``a = |x|/step``: 0 inside the deadzone
    |a| < delta, else ceil(a − delta). delta = 0.5 is midtread rounding."""
    return _deadzone(np.ascontiguousarray(a, dtype=np.float64), float(delta))


@numba.njit(cache=True, nogil=True)
def _rdo(a: np.ndarray, theta: float, lam: float, bits: np.ndarray):
    kmax = bits.size - 1
    out = np.empty(a.size, dtype=np.int64)
    counts = np.zeros(kmax + 1, dtype=np.int64)
    excess = 0.0
    lam_zero = lam * bits[0]
    for i in range(a.size):
        v = a[i]
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
        out[i] = best_k
        counts[min(best_k, kmax)] += 1
        excess += (best_k - v) if best_k > 0 else 0.0
    return out, counts, excess


def rdo_quantize(a: np.ndarray, theta: float, lam: float, bits: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray, float]:
    """Magnitude levels minimising (a − r_k)² + lam·bits[k] over k ∈ {0, ⌊a+θ⌋, ⌊a+θ⌋+1}.

    ``a`` are magnitudes in step units (≥ 0), ``bits[k]`` the code length of magnitude k (the
    last entry is used for every larger k, i.e. escapes), ``lam`` the Lagrangian in step²
    units. Also returns the counts of each magnitude (clipped to the last entry) and the sum
    of (k − a) over nonzero levels, from which the next rate model and offset follow.
    """
    return _rdo(np.ascontiguousarray(a, dtype=np.float64), float(theta), float(lam),
                np.ascontiguousarray(bits, dtype=np.float64))


def bits_from_counts(counts: np.ndarray) -> np.ndarray:
    """Code length estimate (bits, sign included) of each magnitude from its count."""
    c = counts.astype(np.float64) + 0.5
    bits = -np.log2(c / c.sum())
    bits[1:] += 1.0
    return bits


def magnitude_bits(mags: np.ndarray, kmax: int) -> np.ndarray:
    """Code length estimate (bits, sign included) of each magnitude 0..kmax from levels."""
    return bits_from_counts(np.bincount(np.minimum(mags, kmax), minlength=kmax + 1))
