"""Physical removal of pruned channels: exact where allowed, zeroed (with a reason) elsewhere."""

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import nnr
from conformance.inputs import mnist_test
from conformance.toy_models import fixed_size_image, mlp
from nnr.cli import encode_main
from nnr.errors import OptionError, UnsupportedModelError
from nnr.fidelity import run, session
from nnr.options import EncoderOptions
from nnr.removal import inference_ms, synthetic_inputs
from tests.conftest import ROOT, exit_code

MNIST = ROOT / "conformance" / "models" / "mnist_cnn.onnx"


def _dims(model):
    return {t.name: list(t.dims) for t in model.graph.initializer}


def _zeroed_and_removed(model, spec, multiple=1):
    zeroed = nnr.decode(nnr.encode(model, prune=spec, lossless=True))
    reports = []
    removed = nnr.decode(nnr.encode(model, prune=spec, prune_remove=True, prune_remove_multiple=multiple,
                                    lossless=True, on_pruned=reports.append))
    return zeroed, removed, reports[0].removal


def test_mnist_cnn_channels_are_removed_exactly():
    zeroed, removed, report = _zeroed_and_removed(onnx.load(MNIST), "filters:l1:0.3")
    onnx.checker.check_model(removed, full_check=True)
    x, _ = mnist_test()
    a, b = run(session(zeroed), {"image": x[:200]}), run(session(removed), {"image": x[:200]})
    assert np.abs(a - b).max() < 1e-4
    dims = _dims(removed)
    kept = dims["3.weight"][0]
    assert dims["3.weight"][1] == dims["0.weight"][0] and dims["7.weight"][1] == kept * 7 * 7
    assert report.params_after < report.params_before
    assert report.params_after == sum(int(np.prod(d)) for d in dims.values())


def _conv_bn_flatten_gemm(pads):
    rng = np.random.default_rng(7)
    arrays = {"c1.w": rng.normal(size=(8, 3, 3, 3)), "c1.b": rng.normal(size=8),
              "bn.s": rng.uniform(0.5, 2, 8), "bn.b": rng.normal(size=8), "bn.m": rng.normal(size=8),
              "bn.v": rng.uniform(0.5, 2, 8), "c2.w": rng.normal(size=(6, 8, 3, 3)), "c2.b": rng.normal(size=6),
              "fc.w": rng.normal(size=(6 * 2 * 2, 4)), "fc.b": rng.normal(size=4)}
    inits = [numpy_helper.from_array(v.astype(np.float32), k) for k, v in arrays.items()]
    inits += [numpy_helper.from_array(np.array(v, np.float32), k) for k, v in (("lo", 0.0), ("hi", 6.0))]
    nodes = [helper.make_node("Conv", ["x", "c1.w", "c1.b"], ["c1"]),
             helper.make_node("BatchNormalization", ["c1", "bn.s", "bn.b", "bn.m", "bn.v"], ["n1"]),
             helper.make_node("Clip", ["n1", "lo", "hi"], ["r1"]),
             helper.make_node("Conv", ["r1", "c2.w", "c2.b"], ["c2"], pads=pads),
             helper.make_node("Relu", ["c2"], ["r2"]),
             helper.make_node("MaxPool", ["r2"], ["p2"], kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("Flatten", ["p2"], ["f"]),
             helper.make_node("Gemm", ["f", "fc.w", "fc.b"], ["y"])]
    graph = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


@pytest.mark.parametrize("pads", [[0, 0, 0, 0], [1, 1, 1, 1]])
def test_removal_follows_batchnorm_activation_pool_and_flatten(pads):
    model = _conv_bn_flatten_gemm(pads)
    if pads[0]:  # keep the 4×4 → 2×2 geometry with padding: 8×8 input, 3×3 kernel, pad 1 → 8×8, pool → 4×4
        model.graph.initializer[8].CopyFrom(numpy_helper.from_array(
            np.random.default_rng(8).normal(size=(6 * 3 * 3, 4)).astype(np.float32), "fc.w"))
    zeroed, removed, report = _zeroed_and_removed(model, "filters:l2:0.5")
    x = np.random.default_rng(9).normal(size=(1, 3, 8, 8)).astype(np.float32)
    assert np.allclose(run(session(zeroed), {"x": x}), run(session(removed), {"x": x}), atol=1e-4)
    assert "c2.w" in report.removed
    removed_c1 = report.removed.get("c1.w", (0, 8))[0]
    zeroed_c1, why = report.zeroed.get("c1.w", (0, ""))
    assert removed_c1 + zeroed_c1 == 4
    if pads[0]:  # c2 pads: a channel whose constant clip(BN(bias)) is not 0 would change the borders
        assert zeroed_c1 > 0 and why.startswith("a padded convolution")
    else:
        assert removed_c1 == 4


def test_gemm_chains_and_transposes():
    m = mlp()  # fc1 (transB=1) feeds fc2; fc2 feeds the output through Reshape and is left alone
    zeroed, removed, report = _zeroed_and_removed(m, "filters:l1:0.5")
    assert _dims(removed)["fc1.weight"] == [32, 32] and _dims(removed)["fc2.weight"] == [10, 32]
    x = np.random.default_rng(1).normal(size=(5, 32)).astype(np.float32)
    assert np.allclose(run(session(zeroed), {"x": x}), run(session(removed), {"x": x}), atol=1e-5)


def test_nothing_removable_is_refused_with_the_reasons(tmp_path, capsys):
    rng = np.random.default_rng(2)
    w = numpy_helper.from_array(rng.normal(size=(4, 1, 3, 3)).astype(np.float32), "dw")
    w2 = numpy_helper.from_array(rng.normal(size=(4, 4, 1, 1)).astype(np.float32), "pw")
    nodes = [helper.make_node("Conv", ["x", "dw"], ["d"], group=4),
             helper.make_node("Conv", ["d", "pw"], ["p"]),
             helper.make_node("Add", ["p", "x"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 5, 5])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 5, 5])], [w, w2])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    with pytest.raises(UnsupportedModelError, match="grouped convolution"):
        nnr.encode(model, prune="filters:l1:0.5", prune_remove=True)
    src, out = tmp_path / "g.onnx", tmp_path / "g.nnr"
    onnx.save(model, src)
    assert encode_main([str(src), "-o", str(out), "--prune", "filters:l1:0.5", "--remove"]) == 4
    assert "--remove" in capsys.readouterr().err and not out.exists()


def test_channel_counts_stay_multiples_of_eight_by_default():
    zeroed, removed, report = _zeroed_and_removed(onnx.load(MNIST), "filters:l1:0.3", multiple=8)
    dims = _dims(removed)
    assert dims["0.weight"][0] == 16 and dims["3.weight"][0] == 24 and dims["7.weight"][0] == 48
    assert "multiple of 8" in report.zeroed["3.weight"][1]
    x, _ = mnist_test()
    assert np.abs(run(session(zeroed), {"image": x[:50]}) - run(session(removed), {"image": x[:50]})).max() < 1e-4
    assert EncoderOptions().to_json().get("prune_remove_multiple") is None
    with pytest.raises(OptionError, match="--remove only"):
        EncoderOptions(prune="filters:l1:0.3", prune_remove_multiple=4)


def test_remove_needs_structured_pruning():
    with pytest.raises(OptionError, match="structured"):
        EncoderOptions(prune="magnitude:0.5", prune_remove=True)
    with pytest.raises(OptionError, match="need a pruning spec"):
        EncoderOptions(prune_remove=True)


def test_cli_reports_parameters_and_speed(tmp_path, capsys):
    out = tmp_path / "m.nnr"
    assert encode_main([str(MNIST), "-o", str(out), "--prune", "filters:l1:0.5", "--remove"]) == 0
    err = capsys.readouterr().err
    assert "removed" in err and "float parameters 114,314 ->" in err and "inference (image 1x1x28x28" in err


def test_a_speed_report_that_cannot_run_says_so_and_keeps_the_file(tmp_path, capsys, monkeypatch):
    def refused(model, feed, runs=30):
        raise RuntimeError("[ONNXRuntimeError] : 2 : INVALID_ARGUMENT : shapes\nsecond line")

    monkeypatch.setattr("nnr.removal.inference_ms", refused)
    out = tmp_path / "m.nnr"
    assert encode_main([str(MNIST), "-o", str(out), "--prune", "filters:l1:0.5", "--remove"]) == 0
    err = capsys.readouterr().err
    assert "inference speed not measured: [ONNXRuntimeError] : 2 : INVALID_ARGUMENT : shapes\n" in err
    assert "Traceback" not in err and out.stat().st_size > 0


def test_synthetic_inputs_and_timing():
    model = onnx.load(MNIST)
    feed = synthetic_inputs(model)
    assert list(feed) == ["image"] and feed["image"].shape == (1, 1, 28, 28)
    assert inference_ms(model, feed, runs=3) > 0
    assert synthetic_inputs(fixed_size_image(64))["x"].shape == (1, 3, 64, 64)   # 224, 128 refused
    assert synthetic_inputs(fixed_size_image(50)) is None                       # no size tried runs


@pytest.mark.parametrize("argv,message", [
    (["--prune", "filters:l1:0.3", "--remove", "--remove-multiple", "0"], "[1, 1024]"),
    (["--prune", "filters:l1:0.3", "--remove-multiple", "4"], "--remove only"),
    (["--remove"], "need a pruning spec (--prune)"),
    (["--prune", "magnitude:0.3", "--remove"], "structured"),
])
def test_cli_refuses_removal_nonsense(tmp_path, capsys, argv, message):
    out = tmp_path / "m.nnr"
    code = exit_code(encode_main, [str(MNIST), "-o", str(out), *argv])
    assert code == 2 and message in capsys.readouterr().err and not out.exists()


def test_cli_remove_multiple_one_removes_every_removable_channel(tmp_path):
    out = tmp_path / "m.nnr"
    assert encode_main([str(MNIST), "-o", str(out), "-q", "--lossless", "--prune", "filters:l1:0.3", "--remove",
                        "--remove-multiple", "1"]) == 0
    assert _dims(nnr.decode(out.read_bytes()))["3.weight"][0] == 23
