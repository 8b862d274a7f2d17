"""Rate control: constraint-driven search, target sizes, calibration files, bias correction."""

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import nnr
from conformance.inputs import mnist_test
from conformance.toy_models import fixed_size_image, mlp
from nnr import biascorrect
from nnr import ratecontrol as rc
from nnr.calibration import Calibration, load_calibration
from nnr.evaluation import Constraint
from nnr.sizes import parse_size
from nnr.cli import encode_main
from nnr.errors import InputError, OptionError
from nnr.fidelity import run, session
from nnr.options import EncoderOptions
from tests.conftest import ROOT, exit_code

MNIST = ROOT / "conformance" / "models" / "mnist_cnn.onnx"


@pytest.fixture(scope="module")
def digits():
    x, y = mnist_test()
    return Calibration({"image": x[:200]}, y[:200])


@pytest.fixture(scope="module")
def agreement_result(digits):
    cal, held = digits.split(0.25)
    return rc.search(MNIST, EncoderOptions(), constraint=Constraint("agreement", 0.99), cal=cal, held=held)


def test_min_agreement_is_met_on_calibration_and_beats_the_default(agreement_result):
    res = agreement_result
    assert Constraint("agreement", 0.99).met(res.metrics)
    assert res.metrics["agreement"] >= 0.99 and res.metrics["agreement_expected"] >= 0.99
    assert len(res.data) < len(nnr.encode(MNIST))
    assert res.held_out is not None and "agreement" in res.held_out
    onnx.checker.check_model(nnr.decode(res.data))


def test_search_is_reported_and_its_options_are_in_the_file(agreement_result):
    doc = rc.report(agreement_result)
    assert doc["bytes"] == len(agreement_result.data) and len(doc["trials"]) >= 3
    assert doc["options"] == nnr.open(agreement_result.data).metadata()["options"]
    assert doc["options"].get("tensor_qp") or doc["options"]["qp"] != EncoderOptions().qp


def test_accuracy_drop_is_judged_in_expectation_and_as_counted():
    c = Constraint("accuracy_drop_pct", 0.5)
    assert c.met_smooth({"accuracy_drop_pct": 2.0, "accuracy_drop_expected_pct": 0.4})
    assert not c.met({"accuracy_drop_pct": 2.0, "accuracy_drop_expected_pct": 0.4})
    assert not c.met({"accuracy_drop_pct": 0.0, "accuracy_drop_expected_pct": 0.7})
    assert c.met({"accuracy_drop_pct": -0.5, "accuracy_drop_expected_pct": 0.5})


def test_min_snr_and_max_accuracy_drop(digits):
    res = rc.search(MNIST, EncoderOptions(), constraint=Constraint("snr_db", 30.0), cal=digits)
    assert res.metrics["snr_db"] >= 30.0
    res = rc.search(MNIST, EncoderOptions(), constraint=Constraint("accuracy_drop_pct", 1.0), cal=digits,
                    bias_correction=False)
    # exactly one point of drop is 100·(a − b) in floats, a hair above 1.0: met within 1e-9
    assert res.metrics["accuracy_drop_pct"] <= 1.0 + 1e-9
    with pytest.raises(OptionError, match="labels"):
        rc.search(MNIST, EncoderOptions(), constraint=Constraint("accuracy_drop_pct", 1.0),
                  cal=Calibration(digits.inputs))


@pytest.mark.parametrize("target", [30_000, 60_000, 120_000])
def test_target_size_within_two_percent(target):
    res = rc.search(MNIST, EncoderOptions(), target_bytes=target)
    assert abs(len(res.data) / target - 1) <= 0.02


def test_target_size_with_calibration_uses_sensitivity(digits):
    res = rc.search(MNIST, EncoderOptions(), target_bytes=40_000, cal=digits)
    assert abs(len(res.data) / 40_000 - 1) <= 0.02
    assert {t.allocation for t in res.trials} == {"sensitivity", "data-free"}
    # both allocations' best candidates are measured; within 2 % of the target the better one wins
    measured = [t for t in res.trials if t.metrics and abs(t.size / 40_000 - 1) <= rc.SIZE_TOLERANCE]
    assert res.metrics and res.metrics["snr_db"] == max(t.metrics["snr_db"] for t in measured)


def test_target_mode_prefers_fidelity_only_within_tolerance():
    near_worse = rc.Trial("data-free", -30, 10_100, {"snr_db": 20.0})
    near_better = rc.Trial("sensitivity", -1, 9_900, {"snr_db": 25.0})
    far_better = rc.Trial("sensitivity", -1, 10_500, {"snr_db": 40.0})
    assert rc._better(near_better, near_worse, 10_000) and not rc._better(near_worse, near_better, 10_000)
    assert rc._better(near_worse, far_better, 10_000) and not rc._better(far_better, near_worse, 10_000)
    assert rc._better(rc.Trial("data-free", 0, 10_050), rc.Trial("data-free", 0, 9_900), 10_000)


def test_budget_returns_the_best_file_so_far(digits):
    res = rc.search(MNIST, EncoderOptions(), constraint=Constraint("agreement", 0.99), cal=digits,
                    budget_seconds=0.001)
    assert res.out_of_time and len(res.data) > 0
    nnr.decode(res.data)


def test_goal_is_exactly_one_and_constraints_need_calibration():
    with pytest.raises(OptionError):
        rc.search(MNIST, EncoderOptions())
    with pytest.raises(OptionError, match="calibration"):
        rc.search(MNIST, EncoderOptions(), constraint=Constraint("agreement", 0.9))



@pytest.mark.parametrize("metric,bound", [("agreement", 0.0), ("agreement", 99), ("accuracy_drop_pct", -1),
                                          ("accuracy_drop_pct", 101), ("snr_db", float("nan")), ("snr_db", True),
                                          ("top5", 0.9)])
def test_goals_refuse_bounds_out_of_range(metric, bound):
    with pytest.raises(OptionError):
        Constraint(metric, bound)


def test_search_rules_hold_for_library_callers_too(digits):
    """The rules nnr encode enforces are the API's, so a library caller meets the same ones."""
    goal = Constraint("agreement", 0.99)
    for kwargs, message in ((dict(budget_seconds=0), "budget"), (dict(budget_seconds=float("nan")), "budget")):
        with pytest.raises(OptionError, match=message):
            rc.search(MNIST, EncoderOptions(), constraint=goal, cal=digits, **kwargs)
    for target in (0, -5, 1.5, True):
        with pytest.raises(OptionError, match="target size"):
            rc.search(MNIST, EncoderOptions(), target_bytes=target)
    with pytest.raises(OptionError, match="lossless"):
        rc.search(MNIST, EncoderOptions(lossless=True), target_bytes=10_000)
    with pytest.raises(OptionError, match="levels are searched"):
        rc.search_pruning(MNIST, EncoderOptions(prune="magnitude:0.3"), ["magnitude:0.5"], constraint=goal, cal=digits)
    with pytest.raises(OptionError, match=r"\[0, 1\)"):
        rc.search_pruning(MNIST, EncoderOptions(), ["magnitude:1.5"], constraint=goal, cal=digits)
    with pytest.raises(OptionError, match="held-out"):
        digits.split(1.0)
    model = onnx.load(MNIST)
    for bad in (0, 65, float("inf")):
        with pytest.raises(OptionError, match="bits-per-weight"):
            rc.bits_target(model, EncoderOptions(), bad)
    assert rc.bits_target(model, EncoderOptions(), 8.0) == rc.coded_float_params(model, EncoderOptions())

def test_calibration_files_are_checked(tmp_path):
    model = onnx.load(MNIST)
    x, y = mnist_test()
    good = tmp_path / "good.npz"
    np.savez(good, image=x[:10], labels=y[:10])
    cal = load_calibration(good, model)
    assert len(cal) == 10 and cal.labels is not None
    cases = {"missing": dict(other=x[:10]), "extra": dict(image=x[:10], other=x[:10]),
             "labels": dict(image=x[:10], labels=y[:3]), "float_labels": dict(image=x[:10], labels=x[:10, 0, 0, 0])}
    for name, arrays in cases.items():
        np.savez(tmp_path / f"{name}.npz", **arrays)
        with pytest.raises(InputError):
            load_calibration(tmp_path / f"{name}.npz", model)
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(InputError, match="npz"):
        load_calibration(tmp_path / "junk.npz", model)
    with pytest.raises(InputError, match="not found"):
        load_calibration(tmp_path / "absent.npz", model)


def test_calibration_arrays_follow_the_input_signature(tmp_path):
    import re

    from nnr.evaluation import Evaluator

    model = onnx.load(MNIST)
    x, _ = mnist_test()
    np.savez(tmp_path / "f64.npz", image=x[:6].astype(np.float64))
    assert load_calibration(tmp_path / "f64.npz", model).inputs["image"].dtype == np.float32   # NumPy's default
    for name, array, message in (("rank", x[:6, 0], "is 6 x 28 x 28; the model's input 'image' is ? x 1 x 28 x 28"),
                                 ("size", x[:6, :, :14], "is 6 x 1 x 14 x 28"),
                                 ("ints", x[:6].astype(np.int64), "holds int64 values; the model's input is float")):
        np.savez(tmp_path / f"{name}.npz", image=array)
        with pytest.raises(InputError, match=re.escape(message)):
            load_calibration(tmp_path / f"{name}.npz", model)

    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "fixed",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])],
                              [numpy_helper.from_array(np.ones((4, 3), np.float32), "w")])
    fixed = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    x5 = np.arange(20.0).reshape(5, 4)
    np.savez(tmp_path / "five.npz", x=x5)
    reference = Evaluator(fixed, load_calibration(tmp_path / "five.npz", fixed)).reference   # 2 a call, 1 + a copy
    assert reference.shape == (5, 3) and np.allclose(reference, x5 @ np.ones((4, 3)))
    ids = helper.make_model(helper.make_graph([helper.make_node("Identity", ["t"], ["u"])], "ids",
                                              [helper.make_tensor_value_info("t", TensorProto.INT32, ["n", 2])],
                                              [helper.make_tensor_value_info("u", TensorProto.INT32, ["n", 2])]))
    np.savez(tmp_path / "wide.npz", t=np.array([[1, 2**33]]))
    with pytest.raises(InputError, match="outside int32's range"):
        load_calibration(tmp_path / "wide.npz", ids)
    np.savez(tmp_path / "narrow.npz", t=np.array([[1, 2]], dtype=np.uint8))
    assert load_calibration(tmp_path / "narrow.npz", ids).inputs["t"].dtype == np.int32
    for elem, dims, message in ((TensorProto.COMPLEX64, ["n", 2], "is complex64; nnr cannot run"),
                                (TensorProto.FLOAT, [], "is a scalar"),
                                (TensorProto.FLOAT16, ["n", 2], "too large for float16")):
        one = helper.make_model(helper.make_graph([helper.make_node("Identity", ["a"], ["b"])], "one",
                                                  [helper.make_tensor_value_info("a", elem, dims)],
                                                  [helper.make_tensor_value_info("b", elem, dims)]))
        np.savez(tmp_path / "one.npz", a=np.full((3, 2), 1e6))
        with pytest.raises(InputError, match=message):
            load_calibration(tmp_path / "one.npz", one)

    odd = fixed_size_image(64)   # declared ? x 3 x ? x ?, runs only on 64 x 64 images
    np.savez(tmp_path / "small.npz", x=np.zeros((4, 3, 32, 32), np.float32))
    with pytest.raises(InputError, match="onnxruntime cannot run the model on the calibration inputs"):
        Evaluator(odd, load_calibration(tmp_path / "small.npz", odd))


def test_holdout_split_is_deterministic_and_disjoint():
    cal = Calibration({"a": np.arange(20)[:, None]}, np.arange(20))
    search, held = cal.split(0.25)
    assert len(held) == 5 and len(search) == 15
    assert set(held.labels) | set(search.labels) == set(range(20)) and not set(held.labels) & set(search.labels)
    assert cal.split(0) == (cal, None)


@pytest.mark.parametrize("text,value", [("1.5MB", 1_500_000), ("800 KB", 800_000), ("1200", 1200),
                                        ("2MiB", 2 * 1024 ** 2)])
def test_parse_size(text, value):
    assert parse_size(text) == value


@pytest.mark.parametrize("text", ["", "MB", "-3MB", "1.5XB", "nan"])
def test_parse_size_refuses_nonsense(text):
    with pytest.raises(OptionError):
        parse_size(text)


def test_bias_correction_removes_the_mean_output_shift():
    model = mlp(seed=11)
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((256, 32)) + 1.5).astype(np.float32)  # inputs with a non-zero mean
    coarse = nnr.decode(nnr.encode(model, qp=-8))
    means = biascorrect.input_means(model, {"x": x})
    assert len(means) == 2
    fixed = nnr.decode(nnr.encode(biascorrect.corrected(model, coarse, means), qp=-8))
    ref = run(session(model), {"x": x})
    shift_plain = np.abs((run(session(coarse), {"x": x}) - ref).mean(axis=0)).mean()
    shift_fixed = np.abs((run(session(fixed), {"x": x}) - ref).mean(axis=0)).mean()
    assert shift_fixed < 0.5 * shift_plain


def test_tensor_qp_option_is_validated_and_omitted_when_empty():
    assert "tensor_qp" not in EncoderOptions().to_json()
    assert EncoderOptions(tensor_qp={"w": 4.0}).qp_of("w") == EncoderOptions().qp + 4
    for bad in ({"w": "x"}, {"w": 1e9}, ["w"], {"w": True}):
        with pytest.raises(OptionError):
            EncoderOptions(tensor_qp=bad)


def test_cli_rate_control(tmp_path, capsys):
    x, y = mnist_test()
    npz = tmp_path / "cal.npz"
    np.savez(npz, image=x[:120], labels=y[:120])
    out, report = tmp_path / "m.nnr", tmp_path / "r.json"
    assert encode_main([str(MNIST), "-o", str(out), "--bits-per-weight", "3", "-q"]) == 0
    params = rc.coded_float_params(onnx.load(MNIST), EncoderOptions())
    assert abs(out.stat().st_size * 8 / params / 3 - 1) <= 0.02
    assert encode_main([str(MNIST), "-o", str(out), "-f", "--calibration", str(npz), "--min-agreement", "0.98",
                        "--report", str(report)]) == 0
    err = capsys.readouterr().err
    assert "calibration (90 inputs)" in err and "held-out (30 inputs)" in err and report.exists()


@pytest.mark.parametrize("argv,message", [
    (["--target-size", "50KB", "--qp", "-20"], "chosen by the search"),
    (["--calibration", "x.npz"], "needs a goal"),
    (["--min-agreement", "0.99"], "calibration"),
    (["--target-size", "lots"], "cannot read size"),
    (["--min-agreement", "0.99", "--calibration", "absent.npz"], "not found"),
    (["--min-agreement", "99", "--calibration", "x.npz"], "fraction"),
    (["--max-accuracy-drop", "-1", "--calibration", "x.npz"], "percentage points"),
    (["--bits-per-weight", "0"], "bits-per-weight"),
])
def test_cli_rate_control_errors(tmp_path, capsys, argv, message):
    out = tmp_path / "m.nnr"
    code = exit_code(encode_main, [str(MNIST), "-o", str(out)] + argv)
    assert code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and not out.exists()


def test_the_search_decodes_its_own_files_whatever_the_default_memory_limit(monkeypatch):
    """A coarse trial file is tiny, and may need more than 1024 × its size to decode: the search
    made it, so it decodes it without the limit meant for files from elsewhere."""
    import nnr.decoder
    from nnr.errors import LimitError

    monkeypatch.setattr(nnr.decoder, "DEFAULT_MEMORY_FLOOR", 1 << 10)
    monkeypatch.setattr(nnr.decoder, "MEMORY_PER_FILE_BYTE", 1)
    model = mlp(seed=3)
    x = np.random.default_rng(1).standard_normal((40, 32)).astype(np.float32)
    res = rc.search(model, EncoderOptions(), constraint=Constraint("snr_db", 20.0), cal=Calibration({"x": x}),
                    budget_seconds=60)
    assert res.metrics["snr_db"] >= 20.0 and len(res.trials) >= 3
    with pytest.raises(LimitError, match="max-memory"):
        nnr.decode(res.data)
