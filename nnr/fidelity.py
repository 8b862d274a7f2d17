"""Fidelity metrics of a decoded model against the original, on real inputs.

The measures nnr itself reports and optimises: top-1 agreement and accuracy (also in
expectation under output noise) for classifiers, and output SNR as the generic one. Pure
functions of model outputs (numpy in, float out), plus a small onnxruntime helper. Task
metrics that only the conformance suite uses (OCR text, masks, decisions) live in
conformance/metrics.py.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from onnx import ModelProto

from nnr.codec.floatcast import snr_db


def session(model: ModelProto | bytes | str, quiet: bool = False, threads: int | None = None):
    """A CPU onnxruntime session for a ModelProto, serialised model or path; ``quiet``: not even
    onnxruntime's own error lines (the caller reports the failure). ``threads``: onnxruntime's
    intra-op threads (default: its own, every core)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 4 if quiet else 3
    if threads is not None:
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
    if isinstance(model, ModelProto):
        model = model.SerializeToString()
    return ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])


def first_float_output(sess) -> str:
    """Name of the first floating-point output of ``sess``, the one fidelity is measured on: an
    integer output (token ids or a shape passed through) does not depend on the weights."""
    for o in sess.get_outputs():
        if "float" in o.type or o.type == "tensor(double)":
            return o.name
    from .errors import InputError

    raise InputError("the model has no floating-point output to measure fidelity on")


def fixed_batch(sess) -> int | None:
    """The batch of ``sess`` if every input fixes its first axis to the same size (a model that
    runs one chunk at a time takes exactly that many samples a call), else None."""
    firsts = {i.shape[0] if i.shape and isinstance(i.shape[0], int) and i.shape[0] > 0 else None
              for i in sess.get_inputs()}
    return firsts.pop() if len(firsts) == 1 and None not in firsts else None


def _batches(sess, inputs: dict[str, np.ndarray], batch: int) -> Iterator[tuple[dict[str, np.ndarray], int | None]]:
    """Feeds of ``batch`` samples along axis 0, or of the model's fixed batch: a last one
    short of it is filled with copies of its last sample, and the count to keep comes with it
    (None: keep all)."""
    fixed = fixed_batch(sess)
    step = fixed or batch
    n = len(next(iter(inputs.values())))
    for start in range(0, n, step):
        feed = {k: v[start:start + step] for k, v in inputs.items()}
        kept = len(next(iter(feed.values())))
        if fixed and kept < fixed:
            feed = {k: np.concatenate([v, np.repeat(v[-1:], fixed - kept, axis=0)]) for k, v in feed.items()}
            yield feed, kept
        else:
            yield feed, None


def run(sess, inputs: dict[str, np.ndarray], batch: int = 16) -> np.ndarray:
    """First floating-point output of ``sess`` on inputs batched along axis 0, concatenated."""
    name = first_float_output(sess)
    return np.concatenate([sess.run([name], feed)[0][:kept] for feed, kept in _batches(sess, inputs, batch)])


def intermediates(model: ModelProto, names: list[str], inputs: dict[str, np.ndarray],
                  batch: int = 8) -> Iterator[dict[str, np.ndarray]]:
    """Values of the graph's tensors ``names`` on ``inputs``, one dict per batch along axis 0
    (the model is run with those tensors exposed as extra outputs; of a filled-up last batch of
    a fixed-batch model, values whose first axis is the batch keep only the real samples)."""
    from onnx import helper

    probe = ModelProto()
    probe.CopyFrom(model)
    known = {o.name for o in probe.graph.output}
    probe.graph.output.extend(helper.make_empty_tensor_value_info(n) for n in names if n not in known)
    sess = session(probe)
    fixed = fixed_batch(sess)
    for feed, kept in _batches(sess, inputs, batch):
        values = sess.run(names, feed)
        if kept is not None:
            values = [v[:kept] if v.ndim and v.shape[0] == fixed else v for v in values]
        yield dict(zip(names, values, strict=True))


def onnxruntime_errors() -> tuple[type[Exception], ...]:
    """The exceptions onnxruntime raises for a model or inputs it refuses."""
    from onnxruntime.capi import onnxruntime_pybind11_state as state

    return tuple(c for c in vars(state).values() if isinstance(c, type) and issubclass(c, Exception)
                 and c.__module__ == state.__name__)


def top1_agreement(reference: np.ndarray, test: np.ndarray) -> float:
    """Fraction of inputs whose arg-max class is the same in both outputs."""
    return float(np.mean(reference.argmax(axis=-1) == test.argmax(axis=-1)))


def expected_agreement(reference: np.ndarray, noise_variance: float) -> float:
    """Top-1 agreement expected when independent Gaussian noise of ``noise_variance`` is
    added to every score: each input keeps its class unless the noise closes the gap between
    its two best scores, P(flip) = ½·erfc(gap / (2σ)). Smooth in the noise, unlike a count
    over a few inputs, so it predicts agreement on unseen inputs better."""
    if noise_variance <= 0:
        return 1.0
    top2 = np.sort(np.asarray(reference, dtype=np.float64), axis=-1)[..., -2:]
    gaps = (top2[..., 1] - top2[..., 0]).ravel()
    sigma = math.sqrt(noise_variance)
    return 1.0 - float(np.mean([0.5 * math.erfc(g / (2.0 * sigma)) for g in gaps]))


def expected_accuracy(reference: np.ndarray, labels: np.ndarray, noise_variance: float) -> float:
    """Top-1 accuracy expected when independent Gaussian noise of ``noise_variance`` is added
    to every score of ``reference``: each input is right when its label's score beats every
    other class's, P ≈ Π_k ½·erfc((s_k − s_label) / (2σ)) (the pairwise events taken as
    independent). Right inputs can turn wrong and wrong ones right; the smooth counterpart of
    a count, as expected_agreement is for agreement."""
    scores = np.asarray(reference, dtype=np.float64).reshape(len(labels), -1)
    labels = np.asarray(labels).reshape(-1)
    if noise_variance <= 0:
        return top1_accuracy(scores, labels)
    ahead = scores - scores[np.arange(len(labels)), labels][:, None]   # s_k − s_label
    ahead[np.arange(len(labels)), labels] = -np.inf                     # the label itself
    wins = 0.5 * _erfc(ahead / (2.0 * math.sqrt(noise_variance)))
    return float(np.mean(np.exp(np.sum(np.log(np.maximum(wins, 1e-300)), axis=1))))


_erfc = np.vectorize(math.erfc, otypes=[np.float64])


def top1_accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of inputs whose arg-max class is the label."""
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
