"""Rate control: the smallest file that meets a fidelity constraint, or a file of a given size.

Precision is allocated across tensors by measured sensitivity. Each tensor alone is
quantized at a probe step and the change of the model's output on calibration inputs is
measured: ``s_i = output MSE / squared weight error``. With output distortion ≈ Σ s_i·E_i
and rate ≈ Σ n_i·log2(1/Δ_i), the Lagrangian optimum gives every tensor the same marginal
price: ``Δ_i ∝ 1/√s_i``. Those steps become per-tensor qp offsets (``tensor_qp``), and one
global qp is then searched (bisection) for the smallest file that meets the constraint on
the calibration inputs, or for the requested size. The data-free rule is searched too, and
the smaller of the two results wins, so a misleading sensitivity never costs size.
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

from nnr.codec.floatcast import to_float64
from nnr.codec.quantizer_spec import parse as parse_quantizer
from nnr.formats.onnx_io import FLOAT_TYPES, fill_tensor, is_external, read_model, strip_tensor, tensor_slots

from . import biascorrect, fidelity
from .encoder import with_inline_data, code_float, encode
from .hessians import layer_hessians
from .errors import InputError, OptionError
from .options import EncoderOptions
from .probe import Weight, float_weights
from .sizes import parse_size  # noqa: F401 - rc.parse_size reads --target-size

Progress = Callable[[int, int, str], None]
QP_RANGE = (-60.0, 8.0)       # searched global qp; below it the answer is --lossless
QP_RESOLUTION = 0.25
PROBE_OFFSET = 8.0            # sensitivity probe: 4× the tensor's default step
SENSITIVITY_SAMPLES = 16      # calibration samples used to measure sensitivities
REFINE_STEPS = 16             # finer steps tried when the count misses an agreement met in expectation
SIZE_TOLERANCE = 0.02         # target-size mode: files this close to the target compete on fidelity


@dataclass(frozen=True)
class Calibration:
    """Model inputs (batch axis 0, one array per graph input) and optional integer labels."""

    inputs: dict[str, np.ndarray]
    labels: np.ndarray | None = None

    def __len__(self) -> int:
        return len(next(iter(self.inputs.values())))

    def take(self, idx: np.ndarray) -> "Calibration":
        return Calibration({k: v[idx] for k, v in self.inputs.items()},
                           None if self.labels is None else self.labels[idx])

    def split(self, holdout: float) -> tuple["Calibration", "Calibration | None"]:
        """(search part, held-out part): every k-th sample is held out, k ≈ 1/holdout."""
        if holdout <= 0:
            return self, None
        n = len(self)
        held = np.zeros(n, dtype=bool)
        held[np.round(np.arange(0, n, 1 / holdout)).astype(int)[: max(1, round(n * holdout))]] = True
        if held.all() or not held.any():
            raise InputError(f"--holdout {holdout} leaves no calibration or no held-out samples of {n}")
        return self.take(np.flatnonzero(~held)), self.take(np.flatnonzero(held))

    def halves(self) -> tuple["Calibration", "Calibration"]:
        """(first half, second half), contiguous: error feedback fits its layer statistics on
        the first and the search judges on the second, since a file rounded for some inputs
        looks better on those inputs than it is."""
        n = len(self)
        if n < 2:
            raise InputError("error feedback needs at least 2 calibration samples")
        cut = (n + 1) // 2
        return self.take(np.arange(cut)), self.take(np.arange(cut, n))


def model_inputs(model: ModelProto) -> list[str]:
    """Graph inputs a caller must feed (initializers listed as inputs are excluded)."""
    inits = {t.name for t in model.graph.initializer}
    return [i.name for i in model.graph.input if i.name not in inits]


def load_calibration(path: str | Path, model: ModelProto) -> Calibration:
    """Read an .npz with one array per model input (batch axis 0) and optionally ``labels``."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except FileNotFoundError:
        raise InputError(f"{path}: calibration file not found") from None
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: not a readable .npz file ({exc})") from exc
    labels = arrays.pop("labels", None)
    names = model_inputs(model)
    missing = [n for n in names if n not in arrays]
    if missing:
        raise InputError(f"{path}: no array for model input(s) {', '.join(missing)}; the .npz needs "
                         f"one array per input ({', '.join(names)}) and optionally 'labels'")
    extra = sorted(set(arrays) - set(names))
    if extra:
        raise InputError(f"{path}: arrays {', '.join(extra)} match no model input ({', '.join(names)})")
    sizes = {len(arrays[n]) if arrays[n].ndim else 0 for n in names}
    if len(sizes) != 1 or 0 in sizes:
        raise InputError(f"{path}: every input array needs the same number of samples along axis 0")
    if labels is not None and (labels.ndim != 1 or len(labels) != sizes.pop() or labels.dtype.kind not in "iu"):
        raise InputError(f"{path}: 'labels' must be one integer per sample")
    return Calibration({n: arrays[n] for n in names}, labels)


@dataclass(frozen=True)
class Constraint:
    """A fidelity requirement on the decoded model, measured on calibration inputs."""

    metric: str    # "agreement", "accuracy_drop_pct" or "snr_db"
    bound: float

    def met_smooth(self, m: dict[str, float]) -> bool:
        """The search's test: agreement and accuracy judged only in expectation, which, unlike
        a count over a few dozen inputs, change steadily as steps grow (so bisection is sound)."""
        if self.metric == "agreement":
            return m["agreement_expected"] >= self.bound - 1e-12
        if self.metric == "accuracy_drop_pct":
            return m["accuracy_drop_expected_pct"] <= self.bound + 1e-9
        return self.met(m)

    def met(self, m: dict[str, float]) -> bool:
        """Whether the measured metrics meet the bound. Agreement and accuracy must hold both as
        counted on the inputs and in expectation over the measured output noise: a count over a
        few inputs misses flips that unseen inputs near a tie will show."""
        if self.metric == "accuracy_drop_pct":
            return max(m[self.metric], m["accuracy_drop_expected_pct"]) <= self.bound + 1e-9
        if self.metric == "agreement":
            return min(m["agreement"], m["agreement_expected"]) >= self.bound - 1e-12
        return m[self.metric] >= self.bound - 1e-12

    def __str__(self) -> str:
        return {"agreement": f"top-1 agreement ≥ {self.bound:g}",
                "accuracy_drop_pct": f"top-1 accuracy drop ≤ {self.bound:g} points",
                "snr_db": f"output SNR ≥ {self.bound:g} dB"}[self.metric]


class Evaluator:
    """Runs the original model once on the inputs; measures candidates against it."""

    def __init__(self, model: ModelProto, cal: Calibration, batch: int = 16):
        self.cal, self.batch = cal, batch
        self.reference = self._outputs(model)

    def _outputs(self, model: ModelProto | bytes) -> np.ndarray:
        return fidelity.run(fidelity.session(model), self.cal.inputs, self.batch).astype(np.float64)

    def scores_classes(self) -> bool:
        """Whether the first output looks like class scores (top-1 metrics make sense)."""
        return self.reference.ndim >= 2 and self.reference.shape[-1] > 1

    def measurable(self) -> set[str]:
        """The metrics measure() reports for these inputs and this model."""
        found = {"snr_db", "output_mse"}
        if self.scores_classes():
            found |= {"agreement", "agreement_expected"}
        if self.cal.labels is not None:
            found |= {"accuracy", "accuracy_original", "accuracy_drop_pct", "accuracy_drop_expected_pct"}
        return found

    def measure(self, candidate: ModelProto | bytes) -> dict[str, float]:
        out = self._outputs(candidate)
        m = {"snr_db": fidelity.output_snr_db(self.reference, out),
             "output_mse": float(np.mean((out - self.reference) ** 2))}
        if self.scores_classes():
            m["agreement"] = fidelity.top1_agreement(self.reference, out)
            m["agreement_expected"] = fidelity.expected_agreement(self.reference, m["output_mse"])
        if self.cal.labels is not None:
            ref_acc = fidelity.top1_accuracy(self.reference, self.cal.labels)
            acc = fidelity.top1_accuracy(out, self.cal.labels)
            expected = fidelity.expected_accuracy(self.reference, self.cal.labels, m["output_mse"])
            m.update(accuracy_original=ref_acc, accuracy=acc, accuracy_drop_pct=100.0 * (ref_acc - acc),
                     accuracy_drop_expected_pct=100.0 * (ref_acc - expected))
        return m


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


def _lambda_range(curves: RDCurves) -> tuple[float, float]:
    """log2 λ from where every tensor takes its finest grid step to where all take the coarsest."""
    dd = np.diff(curves.distortion, axis=1)
    dr = -np.diff(curves.rate, axis=1)
    slopes = dd[(dr > 0) & (dd > 0)] / dr[(dr > 0) & (dd > 0)]
    if slopes.size == 0:
        return 0.0, 1.0
    return math.floor(math.log2(slopes.min())) - 1.0, math.ceil(math.log2(slopes.max())) + 1.0


def _decode(data: bytes) -> ModelProto:
    from .decoder import decode

    return decode(data)


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
        raise OptionError(f"{constraint} cannot be measured: the model's first output is not class scores")

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
        lo, hi = _lambda_range(curves)
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
            base, prune="", prune_global=False, prune_steps=1, prune_include=(), prune_exclude=())
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


def coded_float_params(model: ModelProto, opts: EncoderOptions) -> int:
    """Float weights the encoder codes (the denominator of bits per weight)."""
    n = 0
    for slot in tensor_slots(model):
        t = slot.tensor
        numel = int(np.prod(t.dims, dtype=np.int64)) if t.dims else 1
        if t.data_type in FLOAT_TYPES and (numel >= opts.min_elements or is_external(t)):
            n += numel
    return n


def describe_metrics(m: dict[str, float]) -> str:
    """One line: agreement (and its expectation), accuracy, output SNR."""
    parts = []
    if "agreement" in m:
        parts.append(f"top-1 agreement {m['agreement']:.1%} (expected {m['agreement_expected']:.1%})")
    if "accuracy" in m:
        parts.append(f"accuracy {m['accuracy_original']:.1%} → {m['accuracy']:.1%}")
    parts.append(f"output SNR {m['snr_db']:.1f} dB")
    return ", ".join(parts)


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
