"""Data-free step-size rules: how coarse each tensor (or channel) may be quantized.

One quality knob, ``qp``, sets a base step 2**(qp/4) (as in NNC: +4 doubles the step).
A rule turns it into per-tensor or per-channel steps:

* ``uniform``: the same absolute step for every tensor (NNC-style global QP).
* ``scale``: step = base · b, with b = mean |w| the tensor's Laplace scale, so every
  tensor gets the same relative precision (signal-to-noise ratio).
* ``channel``: step = base · b_c per output channel (axis 0), for tensors whose
  channels differ in scale, e.g. convolutions with folded batch normalisation.

With ``size_exponent`` α > 0 the relative rules multiply the step of a tensor of n weights
by max((n/4096)**α, 1/8): minimising total output distortion at a given rate, when each
layer's relative noise counts equally, gives step² ∝ n, i.e. α = 1/2. Vectors (biases,
normalisation parameters) are few but sensitive: they skip the size factor and use qp +
``vector_qp`` instead (see :func:`steps_for`).
"""

from __future__ import annotations

import numpy as np

from . import exactmath

RULES = ("uniform", "scale", "channel")
REFERENCE_SIZE = 4096
MIN_SIZE_FACTOR = 0.125
_TINY = 1e-30


def laplace_scale(x: np.ndarray) -> float:
    """Maximum-likelihood Laplace scale about zero: mean |x| (zero-centred, as quantized)."""
    return float(np.mean(np.abs(x))) if x.size else 0.0


def base_step(qp: float) -> float:
    return exactmath.exp2(qp / 4.0)


def size_factor(n: int, exponent: float) -> float:
    """(n / REFERENCE_SIZE)**exponent, at least 1/8: larger tensors get coarser steps."""
    return max(exactmath.power(max(n, 1) / REFERENCE_SIZE, float(exponent)), MIN_SIZE_FACTOR)


def steps_for(x: np.ndarray, qp: float, rule: str, vector_qp: float = -20.0,
              size_exponent: float = 0.0) -> np.ndarray:
    """Step (shape (1,)) or per-channel steps (shape (C,)) for tensor ``x``."""
    if rule not in RULES:
        raise ValueError(f"unknown step rule {rule!r}; choose one of {', '.join(RULES)}")
    if x.ndim <= 1:
        qp = qp + vector_qp
    step = base_step(qp)
    if rule != "uniform" and x.ndim > 1:
        step *= size_factor(x.size, size_exponent)
    if rule == "uniform":
        return np.array([step])
    if rule == "channel" and x.ndim >= 2 and x.shape[0] > 1:
        b = np.mean(np.abs(x.reshape(x.shape[0], -1)), axis=1)
        overall = laplace_scale(x)
        b = np.where(b > 0, b, overall if overall > 0 else 1.0)
        return np.maximum(step * b, _TINY)
    b = laplace_scale(x)
    return np.array([max(step * (b if b > 0 else 1.0), _TINY)])
