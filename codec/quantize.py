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
def _rdo(a: np.ndarray, theta: float, lam: float, bits: np.ndarray) -> np.ndarray:
    kmax = bits.size - 1
    out = np.empty(a.size, dtype=np.int64)
    for i in range(a.size):
        v = a[i]
        best_k = 0
        best_cost = v * v + lam * bits[0]
        kf = np.int64(np.floor(v + theta))
        for k in (kf, kf + 1):
            if k >= 1:
                e = v - (k - theta)
                cost = e * e + lam * bits[min(k, kmax)]
                if cost < best_cost:
                    best_cost = cost
                    best_k = k
        out[i] = best_k
    return out


def rdo_quantize(a: np.ndarray, theta: float, lam: float, bits: np.ndarray) -> np.ndarray:
    """Magnitude levels minimising (a − r_k)² + lam·bits[k] over k ∈ {0, ⌊a+θ⌋, ⌊a+θ⌋+1}.

    ``a`` are magnitudes in step units, ``bits[k]`` the code length of magnitude k (the last
    entry is used for every larger k, i.e. escapes), ``lam`` the Lagrangian in step² units.
    """
    return _rdo(np.ascontiguousarray(a, dtype=np.float64), float(theta), float(lam),
                np.ascontiguousarray(bits, dtype=np.float64))


def magnitude_bits(mags: np.ndarray, kmax: int) -> np.ndarray:
    """Code length estimate (bits, sign included) of each magnitude 0..kmax from counts."""
    counts = np.bincount(np.minimum(mags, kmax), minlength=kmax + 1).astype(np.float64) + 0.5
    p = counts / counts.sum()
    bits = -np.log2(p)
    bits[1:] += 1.0
    return bits


def centroid_offset(a: np.ndarray, mags: np.ndarray) -> float:
    """Reconstruction offset theta in [0, 0.5] putting nonzero levels at their bins' centroid."""
    nz = mags > 0
    if not np.any(nz):
        return 0.0
    return float(np.clip(np.mean(mags[nz] - a[nz]), 0.0, 0.5))
