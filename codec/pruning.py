"""Pruning decisions without retraining: which weights (or whole output channels) become zero.

Pure functions on numpy arrays; they return boolean *keep* masks and never touch a model.
A pruned weight is an exact zero, which the quantizer maps to level 0 and the entropy
coder then stores in a small fraction of a bit.

* Unstructured: rank weights by a score and drop the ``fraction`` with the smallest, per
  tensor or over all tensors at once (one global threshold); or drop |w| < γ·σ per tensor
  (the per-layer threshold β = γ·σ).
* Structured: rank the output channels of a weight (a Conv's filters, a Gemm's output rows)
  by the L1 or L2 norm of their weights, by a seeded random draw, or by an importance
  measured elsewhere (e.g. mean activation), and drop the lowest ``fraction`` of them.
* Complex weights are ranked by a ``criterion``: modulus |z|, phase |arg z| (weights whose
  phase is nearest zero go first), real part |Re z| or imaginary part |Im z|. Modulus and
  phase are computed with exactly rounded operations only (√(x² + y²), and the "diamond
  angle" 1 − x/(|x| + |y|) in place of |arg z|: it orders weights as |arg z| does), so the same weights are pruned on every machine.
"""

from __future__ import annotations

import numpy as np

CRITERIA = ("modulus", "phase", "real", "imag")
NORMS = ("l1", "l2")


def scores(x: np.ndarray, criterion: str = "modulus") -> np.ndarray:
    """Non-negative importance of each weight; real weights are ranked by |x| whatever the criterion."""
    if criterion not in CRITERIA:
        raise ValueError(f"unknown criterion {criterion!r}; choose one of {', '.join(CRITERIA)}")
    if not np.iscomplexobj(x):
        return np.abs(np.asarray(x, dtype=np.float64))
    re, im = x.real.astype(np.float64), x.imag.astype(np.float64)
    if criterion == "modulus":
        return np.sqrt(re * re + im * im)
    if criterion == "phase":
        norm1 = np.abs(re) + np.abs(im)
        return np.where(norm1 > 0, 1.0 - re / np.where(norm1 > 0, norm1, 1.0), 0.0)
    return np.abs(x.real if criterion == "real" else x.imag).astype(np.float64)


def _check_fraction(fraction: float) -> None:
    if not 0 <= fraction < 1:
        raise ValueError(f"a pruning fraction must be in [0, 1), got {fraction!r}")


def smallest_mask(score: np.ndarray, fraction: float) -> np.ndarray:
    """Keep mask dropping exactly ⌊fraction·n⌋ entries with the smallest scores (ties broken
    by position, so the result does not depend on the sort algorithm)."""
    _check_fraction(fraction)
    flat = np.asarray(score, dtype=np.float64).ravel()
    drop = int(np.floor(fraction * flat.size))
    keep = np.ones(flat.size, dtype=bool)
    if drop:
        keep[np.argsort(flat, kind="stable")[:drop]] = False
    return keep.reshape(np.shape(score))


def global_threshold(all_scores: list[np.ndarray], fraction: float) -> float:
    """One threshold t for several tensors: dropping every score < t drops about ``fraction``
    of all of them (exactly, unless scores tie at t)."""
    _check_fraction(fraction)
    flat = np.concatenate([np.asarray(s, dtype=np.float64).ravel() for s in all_scores]) if all_scores \
        else np.zeros(0)
    drop = int(np.floor(fraction * flat.size))
    if drop == 0:
        return -np.inf
    return float(np.partition(flat, drop - 1)[drop - 1]) if drop < flat.size else np.inf


def std_mask(x: np.ndarray, gamma: float, criterion: str = "modulus") -> np.ndarray:
    """Keep mask of |w| ≥ γ·σ, σ the tensor's standard deviation (per-layer threshold β = γσ)."""
    if not np.isfinite(gamma) or gamma < 0:
        raise ValueError(f"γ must be a finite number ≥ 0, got {gamma!r}")
    s = scores(x, criterion)
    return s >= gamma * float(np.std(x)) if x.size else np.ones(x.shape, dtype=bool)


def channel_scores(w: np.ndarray, axis: int, norm: str) -> np.ndarray:
    """L1 or L2 norm of each slice of ``w`` along ``axis`` (the output channels)."""
    if norm not in NORMS:
        raise ValueError(f"unknown channel norm {norm!r}; choose one of {', '.join(NORMS)}")
    moved = np.moveaxis(np.abs(np.asarray(w)).astype(np.float64), axis, 0).reshape(w.shape[axis], -1)
    return moved.sum(axis=1) if norm == "l1" else np.sqrt((moved ** 2).sum(axis=1))


def random_channel_scores(n: int, seed: int, salt: str) -> np.ndarray:
    """Seeded random ranks for ``n`` channels; ``salt`` (e.g. the tensor name) gives each tensor its own draw."""
    mix = np.frombuffer(salt.encode(), dtype=np.uint8).astype(np.uint64)
    return np.random.default_rng([seed, *mix.tolist()]).random(n)


def channel_mask(shape: tuple[int, ...], axis: int, keep_channels: np.ndarray) -> np.ndarray:
    """Element keep mask of a weight whose channels along ``axis`` are kept per ``keep_channels``."""
    view = [1] * len(shape)
    view[axis] = shape[axis]
    return np.broadcast_to(np.asarray(keep_channels, dtype=bool).reshape(view), shape)
