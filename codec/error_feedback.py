"""Data-aware rounding: quantize a layer column by column, feeding each column's error forward.

A layer computes y = W·x. Rounding every weight independently ignores that errors in weights
that see correlated inputs add up in y. Given the second moment H = E[x·xᵀ] of the layer's
input over real data, the rows of W can instead be quantized one input column at a time:
after column j is rounded, its error is spread over the columns not yet rounded so that
the change of W·x is as small as possible in expectation (optimal brain quantization, as
in GPTQ: Frantar et al., "GPTQ: Accurate Post-Training Quantization for Generative
Pre-trained Transformers", 2022). Columns go in order of decreasing input energy.

Only the encoder changes: the levels are coded and rebuilt exactly as plain ones, so any
decoder reads the result. H is regularised by ``damping`` times its mean diagonal; with few
calibration inputs a larger damping keeps the rounding from fitting those inputs alone.
"""

from __future__ import annotations

import numpy as np

DEFAULT_DAMPING = 1.0
BLOCK = 64
"""Columns whose feedback is applied within the block first, to the rest in one matmul."""


def _rdo_column(v: np.ndarray, theta: float, lam: float, bits: np.ndarray) -> np.ndarray:
    """Levels minimising (a − r_k)² + lam·bits[k] for magnitudes a = |v| in step units, as
    codec.quantize.rdo_quantize decides them (k ∈ {0, ⌊a+θ⌋, ⌊a+θ⌋+1}, r_k = k − θ)."""
    a = np.abs(v)
    kmax = bits.size - 1
    k = np.floor(a + theta)
    lo = np.maximum(k, 1.0)
    hi = k + 1.0
    c_lo = (a - (lo - theta)) ** 2 + lam * bits[np.minimum(lo, kmax).astype(np.int64)]
    c_hi = (a - (hi - theta)) ** 2 + lam * bits[np.minimum(hi, kmax).astype(np.int64)]
    best = np.where(c_lo < c_hi, lo, hi)
    best = np.where(a * a + lam * bits[0] <= np.minimum(c_lo, c_hi), 0.0, best)
    return np.copysign(best, v)


def feedback_levels(w: np.ndarray, hessian: np.ndarray, inv_steps: np.ndarray, theta: float,
                    lam: float, bits: np.ndarray, damping: float = DEFAULT_DAMPING) -> np.ndarray:
    """Signed int64 levels of ``w`` (rows × d) rounded with error feedback.

    ``hessian`` is (G, d, d): rows are split into G equal consecutive groups (grouped
    convolutions), group g seeing inputs of second moment hessian[g]. ``inv_steps`` is one
    value or one per row; ``theta`` (step units) and ``bits`` (code length per magnitude)
    are the reconstruction offset and rate model of codec.quantize.rdo_quantize. Weights
    that are exactly zero (pruned) stay zero; their share of the error flows on like any other.
    """
    w = np.asarray(w, dtype=np.float64)
    h = np.array(hessian, dtype=np.float64)
    rows, d = w.shape
    groups = h.shape[0]
    if h.shape != (groups, d, d) or rows % groups:
        raise ValueError(f"hessian of shape {h.shape} does not fit a {rows}×{d} weight")
    per = rows // groups
    inv = np.broadcast_to(np.asarray(inv_steps, dtype=np.float64).reshape(-1, 1), (rows, 1))
    # in step units: the feedback then works on levels directly
    u = (w * inv).reshape(groups, per, d)
    diag = np.diagonal(h, axis1=1, axis2=2).copy()
    dead = diag <= 0
    gi, ci = np.nonzero(dead)
    h[gi, ci, ci] = 1.0
    diag[dead] = 1.0
    h += damping * diag.mean(axis=1)[:, None, None] * np.eye(d)
    order = np.argsort(-diag, axis=1, kind="stable")
    u = np.take_along_axis(u, order[:, None, :], axis=2)
    pruned = u == 0
    h = np.take_along_axis(np.take_along_axis(h, order[:, :, None], axis=1), order[:, None, :], axis=2)
    # upper Cholesky factor of H⁻¹: row j holds how column j's error moves later columns
    upper = np.swapaxes(np.linalg.cholesky(np.linalg.inv(h)), 1, 2)
    levels = np.empty_like(u)
    for b0 in range(0, d, BLOCK):
        b1 = min(b0 + BLOCK, d)
        block = u[:, :, b0:b1].copy()
        errors = np.empty_like(block)
        for j in range(b1 - b0):
            c = b0 + j
            q = np.where(pruned[:, :, c], 0.0, _rdo_column(block[:, :, j], theta, lam, bits))
            levels[:, :, c] = q
            recon = np.where(q != 0, q - np.copysign(theta, q), 0.0)
            err = (block[:, :, j] - recon) / upper[:, c, c][:, None]
            errors[:, :, j] = err
            block[:, :, j + 1:] -= err[:, :, None] * upper[:, None, c, c + 1:b1]
        if b1 < d:  # the block's errors reach the later columns in one product
            u[:, :, b1:] -= np.matmul(errors, upper[:, b0:b1, b1:])
    out = np.empty_like(levels)
    np.put_along_axis(out, np.broadcast_to(order[:, None, :], levels.shape), levels, axis=2)
    return out.reshape(rows, d).astype(np.int64)
