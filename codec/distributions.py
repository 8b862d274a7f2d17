"""Fit candidate distributions to weights and score each fit against the histogram.

Encoder-side analysis (never on the decode path). Each family is fitted by maximum
likelihood or, where that has no closed form, by robust moments; the score compares the
weights' histogram with the fitted density in two ways, as in the research nnr builds on:
SSE between histogram density and pdf at the bin centres, and the KL divergence
KL(histogram ‖ model) between the bin probabilities.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

FAMILIES = ("laplace", "gaussian", "logistic", "cauchy", "uniform", "generalized_gaussian")
_SUBSAMPLES = 8  # pdf evaluations per bin to integrate bin probabilities
_FLOOR = 1e-12


@dataclass(frozen=True)
class Fit:
    family: str
    params: dict[str, float]
    sse: float     # Σ (histogram density − pdf)² over bin centres, times the bin width
    kl: float      # KL(histogram ‖ fitted) in bits, over the histogram's bins


def _gg_shape(x: np.ndarray) -> float:
    """Shape β of the generalized Gaussian by matching E|x|² / (E|x|)² on a grid (β=1 Laplace, 2 Gauss)."""
    r = float(np.mean(x * x) / max(np.mean(np.abs(x)) ** 2, 1e-300))
    betas = np.linspace(0.2, 4.0, 381)
    ratios = np.array([math.gamma(1 / b) * math.gamma(3 / b) / math.gamma(2 / b) ** 2 for b in betas])
    return float(betas[np.argmin(np.abs(ratios - r))])


def fit_params(family: str, x: np.ndarray) -> dict[str, float]:
    """Parameters of ``family`` fitted to the samples ``x``."""
    x = np.asarray(x, dtype=np.float64).ravel()
    if family == "laplace":
        mu = float(np.median(x))
        return {"loc": mu, "scale": max(float(np.mean(np.abs(x - mu))), 1e-300)}
    if family == "gaussian":
        return {"loc": float(np.mean(x)), "scale": max(float(np.std(x)), 1e-300)}
    if family == "logistic":
        return {"loc": float(np.mean(x)), "scale": max(float(np.std(x)) * math.sqrt(3) / math.pi, 1e-300)}
    if family == "cauchy":
        q1, med, q3 = np.quantile(x, [0.25, 0.5, 0.75])
        return {"loc": float(med), "scale": max(float(q3 - q1) / 2, 1e-300)}
    if family == "uniform":
        return {"low": float(x.min()), "high": float(max(x.max(), x.min() + 1e-300))}
    if family == "generalized_gaussian":
        mu = float(np.median(x))
        beta = _gg_shape(x - mu)
        alpha = (beta * float(np.mean(np.abs(x - mu) ** beta))) ** (1 / beta)
        return {"loc": mu, "scale": max(alpha, 1e-300), "shape": beta}
    raise ValueError(f"unknown family {family!r}; known: {', '.join(FAMILIES)}")


def pdf(family: str, params: dict[str, float], t: np.ndarray) -> np.ndarray:
    """Density of the fitted family at points ``t``."""
    t = np.asarray(t, dtype=np.float64)
    if family == "uniform":
        lo, hi = params["low"], params["high"]
        return np.where((t >= lo) & (t <= hi), 1.0 / (hi - lo), 0.0)
    z = (t - params["loc"]) / params["scale"]
    s = params["scale"]
    if family == "laplace":
        return np.exp(-np.abs(z)) / (2 * s)
    if family == "gaussian":
        return np.exp(-0.5 * z * z) / (s * math.sqrt(2 * math.pi))
    if family == "logistic":
        e = np.exp(-np.abs(z))
        return e / (s * (1 + e) ** 2)
    if family == "cauchy":
        return 1.0 / (math.pi * s * (1 + z * z))
    if family == "generalized_gaussian":
        b = params["shape"]
        return b / (2 * s * math.gamma(1 / b)) * np.exp(-np.abs(z) ** b)
    raise ValueError(f"unknown family {family!r}")


def histogram(x: np.ndarray, bins: int = 200, clip: float = 0.001) -> tuple[np.ndarray, np.ndarray]:
    """Counts and edges over the central 1 − 2·clip of the samples (tails would flatten the
    bins); at most ``bins`` bins and about √n, so a small tensor's histogram is not mostly noise."""
    x = np.asarray(x, dtype=np.float64).ravel()
    bins = int(min(bins, max(10, math.isqrt(x.size))))
    lo, hi = np.quantile(x, [clip, 1 - clip]) if x.size > 10 else (x.min(), x.max())
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    return np.histogram(x, bins=bins, range=(float(lo), float(hi)))


def score(family: str, params: dict[str, float], counts: np.ndarray, edges: np.ndarray) -> Fit:
    """SSE and KL of a fitted family against a histogram."""
    width = np.diff(edges)
    total = counts.sum()
    density = counts / (total * width)
    centres = (edges[:-1] + edges[1:]) / 2
    sse = float(np.sum((density - pdf(family, params, centres)) ** 2 * width))
    offsets = (np.arange(_SUBSAMPLES) + 0.5) / _SUBSAMPLES
    points = edges[:-1, None] + width[:, None] * offsets[None, :]
    mass = pdf(family, params, points).mean(axis=1) * width
    mass = np.maximum(mass / max(mass.sum(), _FLOOR), _FLOOR)  # the model restricted to the histogram range
    p = counts / total
    keep = p > 0
    kl = float(np.sum(p[keep] * np.log2(p[keep] / mass[keep])))
    return Fit(family, params, sse, kl)


def fit_all(x: np.ndarray, bins: int = 200) -> list[Fit]:
    """Every family fitted to ``x`` and scored, best (lowest KL) first."""
    counts, edges = histogram(x, bins)
    fits = [score(f, fit_params(f, x), counts, edges) for f in FAMILIES]
    return sorted(fits, key=lambda f: f.kl)
