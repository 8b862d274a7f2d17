"""Fidelity metrics of a decoded model against the original, on real inputs.

One place for every measure nnr reports (and later optimises): top-1 agreement and
accuracy for classifiers, output SNR as the generic fallback.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from onnx import ModelProto

from codec.floatcast import snr_db


def session(model: ModelProto | bytes | str):
    """A CPU onnxruntime session for a ModelProto, serialised model or path."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if isinstance(model, ModelProto):
        model = model.SerializeToString()
    return ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])


def run(sess, inputs: dict[str, np.ndarray], batch: int = 16) -> np.ndarray:
    """First output of ``sess`` on inputs batched along axis 0, concatenated."""
    n = len(next(iter(inputs.values())))
    outs = []
    for i in range(0, n, batch):
        feed = {k: v[i:i + batch] for k, v in inputs.items()}
        outs.append(sess.run(None, feed)[0])
    return np.concatenate(outs)


def top1_agreement(reference: np.ndarray, test: np.ndarray) -> float:
    """Fraction of inputs whose arg-max class is the same in both outputs."""
    return float(np.mean(reference.argmax(axis=-1) == test.argmax(axis=-1)))


def top1_accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(logits.argmax(axis=-1) == labels))


def output_snr_db(reference: np.ndarray, test: np.ndarray) -> float:
    """10·log10(‖ref‖² / ‖ref − test‖²) over all outputs; inf when identical."""
    return snr_db(reference, test)


@dataclass(frozen=True)
class ClassifierReport:
    """How a decoded classifier compares with the original on labelled inputs."""

    n_inputs: int
    agreement: float
    accuracy_original: float
    accuracy_decoded: float
    output_snr_db: float


def compare_classifiers(original: ModelProto | bytes | str, decoded: ModelProto | bytes | str,
                        inputs: dict[str, np.ndarray], labels: np.ndarray) -> ClassifierReport:
    """Run both models on the same inputs and report agreement, accuracy and output SNR."""
    ref = run(session(original), inputs)
    out = run(session(decoded), inputs)
    return ClassifierReport(len(labels), top1_agreement(ref, out), top1_accuracy(ref, labels),
                            top1_accuracy(out, labels), output_snr_db(ref, out))
