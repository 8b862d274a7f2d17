"""Precision allocation on measured sensitivity: how much each tensor's quantization error
moves the model's output on calibration inputs, each tensor's rate–distortion curve, and the
per-tensor qp offsets that minimise output distortion plus λ × bytes (the data-free step
rules are nnr.codec.allocation's)."""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
from onnx import ModelProto

from nnr.codec.floatcast import to_float64
from nnr.formats.onnx_io import fill_tensor, strip_tensor, tensor_slots

from . import biascorrect
from .encoder import code_float
from .evaluation import Evaluator
from .options import EncoderOptions
from .probe import Weight

Progress = Callable[[int, int, str], None]
PROBE_OFFSET = 8.0            # sensitivity probe: 4× the tensor's default step


def sensitivities(model: ModelProto, weights: list[Weight], opts: EncoderOptions, evaluator: Evaluator,
                  progress: Progress | None = None, deadline: float = math.inf,
                  means: dict[str, np.ndarray] | None = None) -> dict[str, float]:
    """Output MSE per unit of squared weight error, tensor by tensor (each quantized alone at
    a probe step 4× its default; with ``means``, after bias correction, as it will be coded).
    Tensors not reached before ``deadline`` are left out."""
    work = ModelProto()
    work.CopyFrom(model)
    slots = tensor_slots(work)
    probe = dataclasses.replace(opts, qp=opts.qp + PROBE_OFFSET, lossless=False)
    result = {}
    for i, w in enumerate(weights):
        if time.monotonic() > deadline:
            break
        if progress:
            progress(i, len(weights), f"sensitivity {w.name}")
        coding, _, _, rebuilt = code_float(w.name, w.storage, w.fmt, probe)
        error = float(np.sum((to_float64(rebuilt, w.fmt) - to_float64(w.storage, w.fmt)) ** 2))
        if error == 0.0:
            continue
        tensor = slots[w.slot].tensor
        saved = tensor.SerializeToString()
        strip_tensor(tensor)
        fill_tensor(tensor, rebuilt.tobytes())
        probe_model = work
        if means:
            probe_model = biascorrect.corrected(model, work, means)
            target = tensor_slots(probe_model)[w.slot].tensor
            strip_tensor(target)
            fill_tensor(target, rebuilt.tobytes())
        result[w.name] = evaluator.measure(probe_model)["output_mse"] / error
        tensor.ParseFromString(saved)
    if progress:
        progress(len(weights), len(weights), "sensitivities measured")
    return result


GRID = tuple(float(q) for q in range(-56, 1, 2))  # qp values each tensor's R–D curve is sampled at


@dataclass(frozen=True)
class RDCurves:
    """Per tensor, bytes and predicted output distortion (s_i × squared weight error) at each
    qp of GRID, measured with the real quantizer and coder."""

    names: list[str]
    rate: np.ndarray         # (tensors, len(GRID)) body bytes
    distortion: np.ndarray   # (tensors, len(GRID))


def rd_curves(weights: list[Weight], sens: dict[str, float], opts: EncoderOptions,
              progress: Progress | None = None) -> RDCurves:
    known = [w for w in weights if w.name in sens]
    rate = np.zeros((len(known), len(GRID)))
    dist = np.zeros_like(rate)
    for i, w in enumerate(known):
        if progress:
            progress(i, len(known), f"R-D curve {w.name}")
        exact = to_float64(w.storage, w.fmt)
        for k, qp in enumerate(GRID):
            _, body, _, rebuilt = code_float(w.name, w.storage, w.fmt,
                                             dataclasses.replace(opts, qp=qp, tensor_qp={}, lossless=False))
            rate[i, k] = len(body)
            dist[i, k] = sens[w.name] * float(np.sum((to_float64(rebuilt, w.fmt) - exact) ** 2))
    return RDCurves([w.name for w in known], rate, dist)


def allocate(curves: RDCurves, lam: float, base_qp: float) -> dict[str, float]:
    """Per-tensor qp offsets (from ``base_qp``) minimising distortion + lam × bytes."""
    pick = np.argmin(curves.distortion + lam * curves.rate, axis=1)
    return {n: GRID[k] - base_qp for n, k in zip(curves.names, pick, strict=True)}


def lambda_range(curves: RDCurves) -> tuple[float, float]:
    """log2 λ from where every tensor takes its finest grid step to where all take the coarsest."""
    dd = np.diff(curves.distortion, axis=1)
    dr = -np.diff(curves.rate, axis=1)
    slopes = dd[(dr > 0) & (dd > 0)] / dr[(dr > 0) & (dd > 0)]
    if slopes.size == 0:
        return 0.0, 1.0
    return math.floor(math.log2(slopes.min())) - 1.0, math.ceil(math.log2(slopes.max())) + 1.0
