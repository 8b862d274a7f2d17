"""Task metrics of the conformance corpus: recognised text for OCR (CTC decoding, edit distance),
frame decisions for detectors and VAD, mask overlap for segmentation-like maps. Pure functions
of model outputs; the library's own measures are in nnr/fidelity.py."""

from __future__ import annotations

import numpy as np


def decision_agreement(reference: np.ndarray, test: np.ndarray, threshold: float = 0.5) -> float:
    """Fraction of scores on the same side of ``threshold`` in both (e.g. VAD speech frames)."""
    return float(np.mean((np.asarray(reference) > threshold) == (np.asarray(test) > threshold)))


def mask_iou(reference: np.ndarray, test: np.ndarray, threshold: float) -> float:
    """Intersection over union of the two maps binarised at ``threshold``; 1 when both are empty."""
    a, b = np.asarray(reference) > threshold, np.asarray(test) > threshold
    union = np.count_nonzero(a | b)
    return 1.0 if union == 0 else float(np.count_nonzero(a & b) / union)


def ctc_greedy_decode(logits: np.ndarray, charset: list[str], blank: int = 0) -> list[str]:
    """Best-path CTC decoding of (batch, time, classes) scores: arg-max per step, merge
    repeats, drop blanks; ``charset[i]`` is the text of class i."""
    texts = []
    for best in np.asarray(logits).argmax(axis=-1):
        keep = np.ones(best.size, dtype=bool)
        keep[1:] = best[1:] != best[:-1]
        keep &= best != blank
        texts.append("".join(charset[i] for i in best[keep]).strip())
    return texts


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance: insertions, deletions and substitutions of characters."""
    prev = np.arange(len(b) + 1)
    for i, ca in enumerate(a, 1):
        cur = np.empty_like(prev)
        cur[0] = i
        for j, cb in enumerate(b, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb))
        prev = cur
    return int(prev[-1])


def char_accuracy(truth: list[str], texts: list[str]) -> float:
    """1 − (total edit distance / total characters of ``truth``): 1 is a perfect read."""
    total = sum(len(t) for t in truth)
    errors = sum(edit_distance(t, s) for t, s in zip(truth, texts, strict=True))
    return 1.0 - errors / max(total, 1)


def exact_match(reference: list[str], test: list[str]) -> float:
    """Fraction of items that are identical in both lists."""
    return float(np.mean([a == b for a, b in zip(reference, test, strict=True)]))
