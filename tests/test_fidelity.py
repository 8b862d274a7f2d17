"""The fidelity metrics: nnr.fidelity (what nnr reports and optimises) and conformance.metrics
(the corpus tasks)."""

import math

import numpy as np
import pytest

from conformance import metrics
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
    assert metrics.ctc_greedy_decode(logits, charset) == ["aab"]


@pytest.mark.parametrize("a,b,d", [("", "", 0), ("abc", "abc", 0), ("kitten", "sitting", 3),
                                   ("", "abc", 3), ("flaw", "lawn", 2)])
def test_edit_distance(a, b, d):
    assert metrics.edit_distance(a, b) == d == metrics.edit_distance(b, a)


def test_char_accuracy_and_exact_match():
    truth = ["hello", "world"]
    assert metrics.char_accuracy(truth, truth) == 1.0
    assert metrics.char_accuracy(truth, ["hallo", "world"]) == pytest.approx(0.9)
    assert metrics.exact_match(truth, ["hello", "word"]) == 0.5
    with pytest.raises(ValueError):
        metrics.char_accuracy(truth, ["hello"])


def test_decision_agreement_and_mask_iou():
    assert metrics.decision_agreement([0.1, 0.6, 0.9, 0.4], [0.2, 0.4, 0.8, 0.45]) == 0.75
    a = np.zeros((4, 4))
    a[:2] = 1
    b = np.zeros((4, 4))
    b[1:3] = 1
    assert metrics.mask_iou(a, b, 0.5) == pytest.approx(4 / 12)
    assert metrics.mask_iou(np.zeros(3), np.zeros(3), 0.5) == 1.0


def test_expected_accuracy_is_the_count_without_noise_and_moves_towards_chance():
    ref = np.array([[0.0, 1.0], [2.0, 0.0], [0.0, 0.1], [0.3, 0.0]])
    labels = np.array([1, 0, 0, 1])      # right, right, wrong by 0.1, wrong by 0.3
    assert fm.expected_accuracy(ref, labels, 0.0) == fm.top1_accuracy(ref, labels) == 0.5
    small, large = fm.expected_accuracy(ref, labels, 0.01), fm.expected_accuracy(ref, labels, 1e6)
    assert large == pytest.approx(0.5, abs=0.01)        # two classes: chance
    wrong_only = fm.expected_accuracy(ref[2:], labels[2:], 0.01)
    assert 0 < wrong_only < 0.5                         # noise can only help the wrong ones
    right_only = fm.expected_accuracy(ref[:2], labels[:2], 0.01)
    assert 0.5 < right_only < 1.0 and small == pytest.approx((wrong_only * 2 + right_only * 2) / 4)
    # each input: P(cross) = ½·erfc(gap / 2σ)
    sigma = 0.1
    assert fm.expected_accuracy(ref[2:3], labels[2:3], sigma ** 2) == pytest.approx(
        0.5 * math.erfc(0.1 / (2 * sigma)))


def test_expected_accuracy_counts_every_competitor():
    crowded, lonely = np.array([[1.0, 0.9, 0.9, 0.9]]), np.array([[1.0, 0.9, -5.0, -5.0]])
    label = np.array([0])
    assert fm.expected_accuracy(crowded, label, 0.01) < fm.expected_accuracy(lonely, label, 0.01) < 1.0


def test_expected_agreement_falls_with_noise():
    ref = np.array([[0.0, 1.0], [2.0, 0.0], [0.0, 0.1]])
    values = [fm.expected_agreement(ref, v) for v in (0.0, 1e-4, 0.01, 1.0, 1e6)]
    assert values[0] == 1.0 and all(a >= b for a, b in zip(values, values[1:], strict=False))
    assert values[-1] == pytest.approx(0.5, abs=0.01)


def test_fidelity_is_measured_on_the_first_floating_point_output():
    """An integer output before it (token ids or a shape passed through) does not depend on the
    weights: judged on it, rate control would take the coarsest file."""
    from onnx import TensorProto, helper

    from conformance.toy_models import mlp
    from nnr.errors import InputError
    from nnr.fidelity import run, session

    model = mlp(seed=5)
    graph = model.graph
    graph.node.append(helper.make_node("Shape", ["x"], ["x_shape"]))
    graph.output.insert(0, helper.make_tensor_value_info("x_shape", TensorProto.INT64, [2]))
    x = np.random.default_rng(0).standard_normal((6, 32)).astype(np.float32)
    out = run(session(model), {"x": x}, batch=4)
    assert out.dtype.kind == "f" and out.shape[0] == 6 and out.ndim == 2
    del graph.output[1:]
    with pytest.raises(InputError, match="no floating-point output"):
        run(session(model), {"x": x})
