"""Rate control: the smallest file that meets a fidelity constraint, or a file of a given size.

Precision follows measured sensitivity (nnr.allocation): per-tensor qp offsets at the same
marginal price, ``Δ_i ∝ 1/√s_i``, scaled by one Lagrangian. The search bisects that
Lagrangian, and the global qp of the data-free rule, for the smallest file that meets the
constraint on the calibration inputs (nnr.evaluation), or for the requested size; the smaller
of the two results wins, so a misleading sensitivity never costs size.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
from onnx import ModelProto

from nnr.codec.quantizer_spec import parse as parse_quantizer
from nnr.formats.onnx_io import FLOAT_TYPES, is_external, read_model, tensor_slots, with_inline_data

from . import biascorrect
from .allocation import Progress, allocate, lambda_range, rd_curves, sensitivities
from .calibration import Calibration
from .encoder import encode
from .errors import OptionError
from .evaluation import Constraint, Evaluator, describe_metrics
from .hessians import layer_hessians
from .options import EncoderOptions
from .probe import float_weights

QP_RANGE = (-60.0, 8.0)       # searched global qp; below it the answer is --lossless
QP_RESOLUTION = 0.25
SENSITIVITY_SAMPLES = 16      # calibration samples used to measure sensitivities
REFINE_STEPS = 16             # finer steps tried when the count misses an agreement met in expectation
SIZE_TOLERANCE = 0.02         # target-size mode: files this close to the target compete on fidelity


@dataclass
class Trial:
    allocation: str            # "sensitivity" (knob = log2 λ) or "data-free" (knob = qp)
    knob: float
    size: int
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass
class SearchResult:
    data: bytes
    options: EncoderOptions
    metrics: dict[str, float]           # on the calibration (search) inputs
    held_out: dict[str, float] | None   # on held-out inputs, when there are any
    trials: list[Trial]
    out_of_time: bool


def _bisect(lo: float, hi: float, good: Callable[[float], bool], resolution: float,
            deadline: float) -> float | None:
    """Largest knob in [lo, hi] with good(knob), good holding below some threshold (a larger
    knob makes a smaller file). None when good(lo) fails."""
    if not good(lo):
        return None
    if good(hi):
        return hi
    while hi - lo > resolution and time.monotonic() < deadline:
        mid = round((lo + hi) / 2 / resolution) * resolution
        if mid in (lo, hi):
            break
        if good(mid):
            lo = mid
        else:
            hi = mid
    return lo


def _decode(data: bytes) -> ModelProto:
    from .decoder import OWN_OUTPUT_MEMORY, decode

    return decode(data, max_memory=OWN_OUTPUT_MEMORY)


def search(model_src: str | Path | ModelProto, base: EncoderOptions, *, constraint: Constraint | None = None,
           target_bytes: int | None = None, cal: Calibration | None = None, held: Calibration | None = None,
           bias_correction: bool = True, budget_seconds: float = 600.0, progress: Progress | None = None,
           log: Callable[[str], None] = lambda msg: None) -> SearchResult:
    """Find the smallest file meeting ``constraint`` on ``cal``, or the file closest to
    ``target_bytes``. With calibration inputs, precision follows measured sensitivity and
    (``bias_correction``) biases absorb the mean shift quantization causes (nnr.biascorrect).
    Returns the best file found within the budget."""
    if (constraint is None) == (target_bytes is None):
        raise OptionError("give exactly one of a fidelity constraint or a target size")
    if target_bytes is not None and (isinstance(target_bytes, bool) or not isinstance(target_bytes, int)
                                     or target_bytes <= 0):
        raise OptionError(f"the target size must be a positive number of bytes, got {target_bytes!r}")
    if not budget_seconds > 0:
        raise OptionError(f"the time budget must be positive, got {budget_seconds!r} s")
    if base.lossless:
        raise OptionError("rate control chooses the precision; lossless coding has none to choose "
                          "(drop --lossless or the rate-control goal)")
    if constraint is not None and cal is None:
        raise OptionError("a fidelity constraint needs calibration inputs (--calibration)")
    if constraint is not None and constraint.metric == "accuracy_drop_pct" and cal.labels is None:
        raise OptionError("--max-accuracy-drop needs labels: add an integer array 'labels' to the .npz")
    if not parse_quantizer(base.quantizer).follows_step:
        raise OptionError(f"quantizer {base.quantizer} has a fixed precision; rate control needs one "
                          "whose step follows --qp (ecsq, midtread, midrise, deadzone, mulaw)")
    start = time.monotonic()
    deadline = start + budget_seconds
    model, base_dir = read_model(model_src)
    source = model_src if not isinstance(model_src, ModelProto) else model
    feedback = fit_inputs = None
    if base.error_feedback or base.prune.startswith("filters:activation"):
        if cal is None:
            raise OptionError("error feedback and activation-ranked pruning need calibration inputs (--calibration)")
        fit, judge = cal.halves()
        fit_inputs = fit.inputs
    if base.error_feedback:
        cal = judge
        feedback = layer_hessians(with_inline_data(model, base_dir), fit.inputs)
        log(f"layer statistics of {len(feedback)} layers from {len(fit)} inputs; judging on {len(cal)} others")
    evaluator = Evaluator(model, cal) if cal is not None else None
    if constraint is not None and constraint.metric not in evaluator.measurable():
        raise OptionError(f"{constraint} cannot be measured: the model's first floating-point output "
                          "is not class scores")

    means = None
    if evaluator is not None and bias_correction:
        if any(is_external(slot.tensor) for slot in tensor_slots(model)):
            log("bias correction skipped: the model keeps weights in external data")
        else:
            means = biascorrect.input_means(model, cal.take(np.arange(min(len(cal), SENSITIVITY_SAMPLES * 2))).inputs)

    knobs: dict[str, tuple[float, float, float, Callable[[float], EncoderOptions]]] = {}
    if evaluator is not None:
        sens_eval = Evaluator(model, cal.take(np.arange(min(len(cal), SENSITIVITY_SAMPLES))))
        weights = float_weights(model, base_dir, base)
        sens = sensitivities(model, weights, base, sens_eval, progress, start + 0.4 * budget_seconds, means)
        curves = rd_curves(weights, sens, base, progress)
        log(f"sensitivities and R-D curves of {len(sens)} tensors in {time.monotonic() - start:.0f} s")
        lo, hi = lambda_range(curves)
        knobs["sensitivity"] = (lo, hi, 0.125, lambda t: dataclasses.replace(
            base, lossless=False, tensor_qp=allocate(curves, 2.0 ** t, base.qp)))
    knobs["data-free"] = (QP_RANGE[0], QP_RANGE[1], QP_RESOLUTION,
                          lambda q: dataclasses.replace(base, qp=q, lossless=False, tensor_qp={}))

    trials: list[Trial] = []
    cache: dict[tuple[str, float], tuple[bytes, Trial]] = {}

    def attempt(kind: str, knob: float) -> tuple[bytes, Trial]:
        if (kind, knob) not in cache:
            opts = knobs[kind][3](knob)
            data = encode(source, opts, feedback=feedback, calibration=fit_inputs)
            if means:
                data = encode(biascorrect.corrected(model, _decode(data), means), opts, feedback=feedback,
                              calibration=fit_inputs)
            trial = Trial(kind, knob, len(data))
            if constraint is not None:
                trial.metrics = evaluator.measure(_decode(data))
            trials.append(trial)
            cache[(kind, knob)] = (data, trial)
            if progress:
                progress(len(trials), len(trials) + 1, f"{kind} {knob:g}: {len(data):,} bytes")
        return cache[(kind, knob)]

    best: tuple[bytes, Trial] | None = None
    for kind, (lo, hi, resolution, _) in knobs.items():
        if time.monotonic() > deadline and best is not None:
            break
        if constraint is not None:
            knob = _bisect(lo, hi, lambda v, k=kind: constraint.met_smooth(attempt(k, v)[1].metrics), resolution,
                           deadline)
            # the count on the calibration inputs must hold too: step finer until it does
            for _ in range(REFINE_STEPS):
                if knob is None or constraint.met(attempt(kind, knob)[1].metrics) or time.monotonic() > deadline:
                    break
                knob = max(lo, knob - 2 * resolution)
            if knob is not None and not constraint.met(attempt(kind, knob)[1].metrics):
                knob = None
        else:
            knob = _bisect(lo, hi, lambda v, k=kind: attempt(k, v)[1].size >= target_bytes, resolution, deadline)
            if knob is not None:  # the largest knob still at or above the target; a smaller file may be closer
                knob = min((t for t in trials if t.allocation == kind),
                           key=lambda t: abs(t.size - target_bytes)).knob
        if knob is None:
            continue
        found = cache[(kind, knob)]
        if evaluator is not None and not found[1].metrics:
            found[1].metrics = evaluator.measure(_decode(found[0]))
        if best is None or _better(found[1], best[1], target_bytes):
            best = found

    if best is None:
        if constraint is None:
            best = attempt("data-free", QP_RANGE[0])
        else:
            log(f"no quantized file meets {constraint}; the answer is lossless")
            data = encode(source, dataclasses.replace(base, lossless=True, error_feedback=False))
            best = (data, Trial("lossless", math.nan, len(data), evaluator.measure(_decode(data))))
    data, trial = best
    held_metrics = Evaluator(model, held).measure(_decode(data)) if held is not None else None
    if progress:
        progress(1, 1, "done")
    return SearchResult(data, read_options(data), trial.metrics, held_metrics, trials,
                        time.monotonic() > deadline)


def search_pruning(model_src: str | Path | ModelProto, base: EncoderOptions, levels: list[str], *,
                   constraint: Constraint, prune_options: dict | None = None, budget_seconds: float = 600.0,
                   log: Callable[[str], None] = lambda msg: None, **kwargs) -> SearchResult:
    """Rate control with the pruning level as one more dimension: the constraint search runs
    without pruning and with each pruning spec of ``levels``, sharing one time budget, and the
    smallest file meeting the constraint on the calibration inputs wins. Every level's trials
    are kept, tagged with the level. ``prune_options`` (prune_global, prune_criterion, …)
    go with every level."""
    if constraint is None:
        raise OptionError("searching pruning levels needs a fidelity goal (--min-agreement, "
                          "--max-accuracy-drop or --min-snr): a size target alone cannot say which level is better")
    if not budget_seconds > 0:
        raise OptionError(f"the time budget must be positive, got {budget_seconds!r} s")
    if base.prune:
        raise OptionError(f"the pruning levels are searched; the base options prune already ({base.prune!r})")
    for level in levels:  # refuse a bad level before any work
        dataclasses.replace(base, prune=level, **(prune_options or {}))
    start = time.monotonic()
    best: SearchResult | None = None
    trials: list[Trial] = []
    out_of_time = False
    runs = [""] + [lv for lv in levels if lv]
    for i, level in enumerate(runs):
        left = budget_seconds - (time.monotonic() - start)
        if left <= 0 and best is not None:
            out_of_time = True
            break
        opts = dataclasses.replace(base, prune=level, **(prune_options or {})) if level else dataclasses.replace(
            base, prune="", prune_global=False, prune_criterion="modulus", prune_steps=1, prune_include=(),
            prune_exclude=())
        res = search(model_src, opts, constraint=constraint, budget_seconds=max(left / (len(runs) - i), 1.0),
                     log=log, **kwargs)
        tag = f"prune {level}" if level else "no pruning"
        log(f"{tag}: {len(res.data):,} bytes, {describe_metrics(res.metrics)}")
        trials += [dataclasses.replace(t, allocation=f"{t.allocation}, {tag}") for t in res.trials]
        out_of_time = out_of_time or res.out_of_time
        if constraint.met(res.metrics) and (best is None or len(res.data) < len(best.data)
                                            or not constraint.met(best.metrics)):
            best = res
        elif best is None:
            best = res
    return dataclasses.replace(best, trials=trials, out_of_time=out_of_time)


def _better(a: Trial, b: Trial, target: int | None) -> bool:
    """Constraint mode: the smaller file. Target mode: of two files within SIZE_TOLERANCE of the
    target, the one with the higher measured output SNR (when measured); else the closer one."""
    if target is None:
        return a.size < b.size
    close = [abs(t.size / target - 1) <= SIZE_TOLERANCE for t in (a, b)]
    if all(close) and "snr_db" in a.metrics and "snr_db" in b.metrics:
        return a.metrics["snr_db"] > b.metrics["snr_db"]
    if close[0] != close[1]:
        return close[0]
    return abs(a.size - target) < abs(b.size - target)


def bits_target(model: ModelProto, opts: EncoderOptions, bits_per_weight: float) -> int:
    """The file size, in bytes, of ``bits_per_weight`` bits per coded float weight."""
    if isinstance(bits_per_weight, bool) or not isinstance(bits_per_weight, (int, float)) \
            or not 0 < bits_per_weight <= 64:
        raise OptionError(f"bits per weight (--bits-per-weight) must be in (0, 64], got {bits_per_weight!r}")
    return max(1, round(bits_per_weight * coded_float_params(model, opts) / 8))


def coded_float_params(model: ModelProto, opts: EncoderOptions) -> int:
    """Float weights the encoder codes (the denominator of bits per weight)."""
    n = 0
    for slot in tensor_slots(model):
        t = slot.tensor
        numel = int(np.prod(t.dims, dtype=np.int64)) if t.dims else 1
        if t.data_type in FLOAT_TYPES and (numel >= opts.min_elements or is_external(t)):
            n += numel
    return n


def report(res: SearchResult) -> dict:
    """The search as JSON: the options to replay, the metrics, every trial."""
    def clean(d):
        return {k: (v if math.isfinite(v) else str(v)) if isinstance(v, float) else v for k, v in d.items()}

    return {"bytes": len(res.data), "options": res.options.to_json(), "calibration": clean(res.metrics),
            "held_out": clean(res.held_out) if res.held_out else None, "out_of_time": res.out_of_time,
            "trials": [{"allocation": t.allocation, "knob": t.knob, "bytes": t.size, **clean(t.metrics)}
                       for t in res.trials]}


def read_options(data: bytes) -> EncoderOptions:
    """The encoder options a file was made with (stored in its metadata)."""
    from .decoder import open as open_nnr

    return EncoderOptions.from_json(open_nnr(data).metadata()["options"])
