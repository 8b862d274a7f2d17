"""Fidelity of a candidate model against the original on calibration inputs: the metrics
rate control measures and the constraints it must meet."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from onnx import ModelProto

from . import fidelity
from .calibration import Calibration
from .errors import InputError, OptionError, first_line


@dataclass(frozen=True)
class Constraint:
    """A fidelity requirement on the decoded model, measured on calibration inputs."""

    metric: str    # "agreement", "accuracy_drop_pct" or "snr_db"
    bound: float

    def __post_init__(self) -> None:
        bound = self.bound
        if not isinstance(bound, (int, float)) or isinstance(bound, bool) or not math.isfinite(bound):
            raise OptionError(f"the bound of a fidelity goal must be a finite number, got {bound!r}")
        if self.metric == "agreement" and not 0 < bound <= 1:
            raise OptionError(f"top-1 agreement is a fraction in (0, 1], e.g. 0.99; got {bound:g}")
        elif self.metric == "accuracy_drop_pct" and not 0 <= bound <= 100:
            raise OptionError(f"an accuracy drop is in percentage points, 0 to 100; got {bound:g}")
        elif self.metric not in ("agreement", "accuracy_drop_pct", "snr_db"):
            raise OptionError(f"unknown fidelity metric {self.metric!r}: agreement, accuracy_drop_pct or snr_db")

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
        try:
            self.reference = self._outputs(model)
        except fidelity.onnxruntime_errors() as exc:  # inputs that pass the signature's checks, refused
            raise InputError(f"onnxruntime cannot run the model on the calibration inputs: {first_line(exc)}") \
                from None

    def _outputs(self, model: ModelProto | bytes) -> np.ndarray:
        return fidelity.run(fidelity.session(model), self.cal.inputs, self.batch).astype(np.float64)

    def scores_classes(self) -> bool:
        """Whether the first float output looks like class scores (top-1 metrics make sense)."""
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



def describe_metrics(m: dict[str, float]) -> str:
    """One line: agreement (and its expectation), accuracy, output SNR."""
    parts = []
    if "agreement" in m:
        parts.append(f"top-1 agreement {m['agreement']:.1%} (expected {m['agreement_expected']:.1%})")
    if "accuracy" in m:
        parts.append(f"accuracy {m['accuracy_original']:.1%} → {m['accuracy']:.1%}")
    parts.append(f"output SNR {m['snr_db']:.1f} dB")
    return ", ".join(parts)
