"""Data-aware rounding: error feedback through layer input statistics, and their measurement."""

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import nnr
from nnr.codec.error_feedback import feedback_levels
from nnr.codec.lossy_decode import decode_lossy
from nnr.codec.lossy_encode import Feedback, encode_lossy
from nnr.codec.quantize import bits_from_counts, rdo_quantize
from conformance.inputs import mnist_test
from nnr import ratecontrol as rc
from nnr.calibration import Calibration
from nnr.evaluation import Constraint
from nnr.cli import encode_main
from nnr.errors import OptionError
from nnr.fidelity import output_snr_db, run, session
from nnr.hessians import layer_hessians
from nnr.options import EncoderOptions
from tests.conftest import ROOT, exit_code

MNIST = ROOT / "conformance" / "models" / "mnist_cnn.onnx"


def _correlated(rng, n, d):
    """Inputs whose features are strongly correlated, as neighbouring pixels are."""
    base = rng.standard_normal((n, d)).cumsum(axis=1)
    return base / np.sqrt(np.arange(1, d + 1))


def _plain(w, inv, theta, lam, bits):
    levels = rdo_quantize(w, np.array([inv]), w.size, theta, lam, bits).levels
    return levels.reshape(w.shape)


def test_diagonal_statistics_give_plain_rdo_levels():
    rng = np.random.default_rng(1)
    w = rng.laplace(size=(24, 40))
    bits = bits_from_counts(np.array([500, 300, 100, 40, 10, 5]))
    h = np.diag(rng.uniform(0.5, 2.0, 40))[None]
    got = feedback_levels(w, h, np.array([4.0]), 0.1, 0.1, bits)
    assert np.array_equal(got, _plain(w, 4.0, 0.1, 0.1, bits))


def test_feedback_moves_the_layer_output_less_at_about_the_same_rate():
    rng = np.random.default_rng(2)
    x = _correlated(rng, 4000, 32)
    w = rng.laplace(scale=0.1, size=(16, 32))
    h = (x.T @ x / len(x))[None]
    inv = 1 / 0.05
    bits = bits_from_counts(np.bincount(np.abs(np.round(w * inv)).astype(int).ravel()))
    plain = _plain(w, inv, 0.0, 0.1, bits)
    fed = feedback_levels(w, h, np.array([inv]), 0.0, 0.1, bits)
    err_plain = np.mean((x @ (w - plain / inv).T) ** 2)
    err_fed = np.mean((x @ (w - fed / inv).T) ** 2)
    assert err_fed < 0.5 * err_plain
    assert np.abs(fed).sum() <= 1.25 * np.abs(plain).sum()


def test_groups_are_independent_layers():
    rng = np.random.default_rng(3)
    w = rng.laplace(size=(6, 9))
    hs = np.stack([(lambda x: x.T @ x / 500)(_correlated(rng, 500, 9)) for _ in range(3)])
    bits = bits_from_counts(np.array([50, 30, 10, 4, 1]))
    together = feedback_levels(w, hs, np.array([2.0]), 0.0, 0.1, bits)
    apart = np.concatenate([feedback_levels(w[2 * g:2 * g + 2], hs[g:g + 1], np.array([2.0]), 0.0, 0.1, bits)
                            for g in range(3)])
    assert np.array_equal(together, apart)


def test_statistics_that_do_not_fit_are_refused():
    with pytest.raises(ValueError, match="does not fit"):
        feedback_levels(np.zeros((4, 5)), np.zeros((1, 4, 4)), np.array([1.0]), 0.0, 0.1, np.ones(3))
    with pytest.raises(ValueError, match="does not fit"):
        feedback_levels(np.zeros((5, 4)), np.zeros((2, 4, 4)), np.array([1.0]), 0.0, 0.1, np.ones(3))


@pytest.mark.parametrize("transposed", [False, True])
def test_fed_bodies_decode_to_what_the_encoder_reports(transposed):
    rng = np.random.default_rng(4)
    w = rng.laplace(scale=0.2, size=(12, 20))
    d = w.shape[0] if transposed else w.shape[1]
    x = _correlated(rng, 1000, d)
    fb = Feedback((x.T @ x / len(x))[None], transposed)
    res = encode_lossy(w, np.array([0.05]), feedback=fb)
    plain = encode_lossy(w, np.array([0.05]), reconstruction="mse")  # the offset error feedback keeps
    assert np.array_equal(decode_lossy(res.body, w.shape, np.dtype(np.float32)), res.reconstruction)
    assert not np.array_equal(res.reconstruction, plain.reconstruction)


def _conv_model(group: int, stride: int, pads: list[int]) -> onnx.ModelProto:
    rng = np.random.default_rng(5)
    w = rng.standard_normal((4, 4 // group, 3, 3)).astype(np.float32)
    node = helper.make_node("Conv", ["x", "w"], ["y"], group=group, strides=[stride, stride], pads=pads)
    graph = helper.make_graph([node], "conv", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 4, 7, 7])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(w, "w")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


@pytest.mark.parametrize("group,stride,pads", [(1, 1, [1, 1, 1, 1]), (2, 2, [0, 1, 2, 0]), (4, 1, [0, 0, 0, 0])])
def test_conv_statistics_match_explicit_patches(group, stride, pads):
    x = np.random.default_rng(6).standard_normal((3, 4, 7, 7)).astype(np.float32)
    fb = layer_hessians(_conv_model(group, stride, pads), {"x": x})["w"]
    padded = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (pads[0], pads[2]), (pads[1], pads[3])))
    cg = 4 // group
    rows = [[] for _ in range(group)]
    for n in range(3):
        for i in range(0, padded.shape[2] - 2, stride):
            for j in range(0, padded.shape[3] - 2, stride):
                for g in range(group):
                    rows[g].append(padded[n, g * cg:(g + 1) * cg, i:i + 3, j:j + 3].ravel())
    expected = np.stack([np.array(r).T @ np.array(r) / len(r) for r in rows])
    assert fb.hessian.shape == expected.shape and not fb.transposed
    assert np.allclose(fb.hessian, expected, rtol=1e-5, atol=1e-6)


@pytest.fixture(scope="module")
def digits():
    x, _ = mnist_test()
    return x[:300]


def test_error_feedback_encodes_a_real_model_with_better_unseen_fidelity(digits):
    fit, unseen = {"image": digits[:150]}, {"image": digits[150:]}
    reference = run(session(str(MNIST)), unseen)
    plain = nnr.encode(MNIST, EncoderOptions(qp=-12))
    fed = nnr.encode(MNIST, EncoderOptions(qp=-12, error_feedback=True), calibration=fit)
    decoded = nnr.decode(fed)
    onnx.checker.check_model(decoded)
    assert rc.read_options(fed).error_feedback
    snr_plain = output_snr_db(reference, run(session(nnr.decode(plain)), unseen))
    snr_fed = output_snr_db(reference, run(session(decoded), unseen))
    assert snr_fed > snr_plain + 1.0
    assert len(fed) < 1.05 * len(plain)
    assert nnr.encode(MNIST, EncoderOptions(qp=-12, error_feedback=True), calibration=fit) == fed


def test_error_feedback_needs_calibration_and_ecsq():
    with pytest.raises(OptionError, match="calibration"):
        nnr.encode(MNIST, EncoderOptions(error_feedback=True))
    with pytest.raises(OptionError, match="ecsq"):
        EncoderOptions(error_feedback=True, quantizer="mulaw:255")
    with pytest.raises(OptionError, match="ecsq"):
        EncoderOptions(error_feedback=True, lossless=True)
    assert "error_feedback" not in EncoderOptions().to_json()
    assert EncoderOptions.from_json(EncoderOptions(error_feedback=True).to_json()).error_feedback


def test_cli_refuses_error_feedback_without_calibration(tmp_path, capsys):
    out = tmp_path / "m.nnr"
    assert exit_code(encode_main, [str(MNIST), "-o", str(out), "--error-feedback"]) == 2
    assert "--calibration" in capsys.readouterr().err and not out.exists()


def test_cli_replays_a_searched_error_feedback_file(tmp_path, digits):
    npz = tmp_path / "cal.npz"
    np.savez(npz, image=digits[:120])
    first, report, again = tmp_path / "a.nnr", tmp_path / "a.json", tmp_path / "b.nnr"
    assert encode_main([str(MNIST), "-o", str(first), "-q", "--calibration", str(npz), "--error-feedback",
                        "--min-snr", "30", "--no-bias-correction", "--budget-seconds", "5",
                        "--report", str(report)]) == 0
    assert rc.read_options(first.read_bytes()).error_feedback
    assert encode_main([str(MNIST), "-o", str(again), "-q", "--calibration", str(npz),
                        "--options", str(report)]) == 0
    assert again.read_bytes() == first.read_bytes()


def test_search_judges_on_inputs_the_statistics_did_not_see(digits):
    cal = Calibration({"image": digits[:80]})
    res = rc.search(MNIST, EncoderOptions(error_feedback=True), constraint=Constraint("snr_db", 30), cal=cal,
                    bias_correction=False, budget_seconds=5)
    fit, judge = cal.halves()
    assert len(fit) == 40 and len(judge) == 40
    reference = run(session(str(MNIST)), judge.inputs)
    judged = output_snr_db(reference, run(session(nnr.decode(res.data)), judge.inputs))
    assert abs(judged - res.metrics["snr_db"]) < 1e-6
