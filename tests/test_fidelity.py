"""The fidelity metrics shared by the conformance suite and (later) rate control."""

import numpy as np
import pytest

from nnr import fidelity as fm


def test_classifier_metrics():
    ref = np.array([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7], [0.6, 0.4]])
    out = np.array([[0.2, 0.8], [0.4, 0.6], [0.3, 0.7], [0.6, 0.4]])
    assert fm.top1_agreement(ref, out) == 0.75
    assert fm.top1_accuracy(out, np.array([1, 0, 1, 1])) == 0.5


def test_snr_is_infinite_when_identical_and_20db_for_a_tenth():
    x = np.random.default_rng(0).standard_normal(1000)
    assert fm.output_snr_db(x, x) == float("inf")
    assert fm.output_snr_db(x, 1.1 * x) == pytest.approx(20.0)


def test_ctc_greedy_decode_merges_repeats_and_drops_blanks():
    charset = ["", "a", "b", " "]
    steps = [1, 1, 0, 1, 2, 2, 3, 0, 0]  # a a _ a b b ␠ _ _  →  "aab" (repeats merged, blank splits)
    logits = np.eye(4)[steps][None]
    assert fm.ctc_greedy_decode(logits, charset) == ["aab"]


@pytest.mark.parametrize("a,b,d", [("", "", 0), ("abc", "abc", 0), ("kitten", "sitting", 3),
                                   ("", "abc", 3), ("flaw", "lawn", 2)])
def test_edit_distance(a, b, d):
    assert fm.edit_distance(a, b) == d == fm.edit_distance(b, a)


def test_char_accuracy_and_exact_match():
    truth = ["hello", "world"]
    assert fm.char_accuracy(truth, truth) == 1.0
    assert fm.char_accuracy(truth, ["hallo", "world"]) == pytest.approx(0.9)
    assert fm.exact_match(truth, ["hello", "word"]) == 0.5
    with pytest.raises(ValueError):
        fm.char_accuracy(truth, ["hello"])


def test_decision_agreement_and_mask_iou():
    assert fm.decision_agreement([0.1, 0.6, 0.9, 0.4], [0.2, 0.4, 0.8, 0.45]) == 0.75
    a = np.zeros((4, 4))
    a[:2] = 1
    b = np.zeros((4, 4))
    b[1:3] = 1
    assert fm.mask_iou(a, b, 0.5) == pytest.approx(4 / 12)
    assert fm.mask_iou(np.zeros(3), np.zeros(3), 0.5) == 1.0


def test_expected_agreement_falls_with_noise():
    ref = np.array([[0.0, 1.0], [2.0, 0.0], [0.0, 0.1]])
    values = [fm.expected_agreement(ref, v) for v in (0.0, 1e-4, 0.01, 1.0, 1e6)]
    assert values[0] == 1.0 and all(a >= b for a, b in zip(values, values[1:], strict=False))
    assert values[-1] == pytest.approx(0.5, abs=0.01)
