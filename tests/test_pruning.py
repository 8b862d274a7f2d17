"""Pruning: the numerical decisions, which tensors, the ONNX surgery, the encoder and CLI options."""

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import nnr
from nnr.codec import pruning as cp
from conformance.inputs import mnist_test
from conformance.toy_models import mlp
from nnr.cli import encode_main
from nnr.errors import OptionError
from nnr.fidelity import run, session, top1_agreement
from nnr.options import EncoderOptions
from nnr.pruning import parse_spec, prune_model, targets
from nnr.ratecontrol import read_options
from tests.conftest import ROOT, exit_code

MNIST = ROOT / "conformance" / "models" / "mnist_cnn.onnx"


def _arrays(model):
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}


# --- codec/pruning.py -------------------------------------------------------------------------

def test_smallest_mask_drops_exactly_the_fraction_with_ties_by_position():
    score = np.array([3.0, 1.0, 1.0, 1.0, 5.0, 0.5])
    keep = cp.smallest_mask(score, 0.5)
    assert keep.tolist() == [True, False, False, True, True, False]
    assert cp.smallest_mask(score, 0.0).all()
    for bad in (1.0, -0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match=r"\[0, 1\)"):
            cp.smallest_mask(score, bad)


def test_global_threshold_prunes_small_tensors_more():
    rng = np.random.default_rng(0)
    small, large = rng.normal(0, 0.01, 1000), rng.normal(0, 1.0, 1000)
    t = cp.global_threshold([np.abs(small), np.abs(large)], 0.5)
    dropped_small, dropped_large = np.mean(np.abs(small) <= t), np.mean(np.abs(large) <= t)
    assert dropped_small + dropped_large == pytest.approx(1.0, abs=0.002)
    assert dropped_small > 0.95 and dropped_large < 0.05


def test_std_mask_is_the_gamma_sigma_threshold():
    x = np.random.default_rng(1).laplace(size=(50, 40))
    keep = cp.std_mask(x, 0.7)
    assert np.array_equal(keep, np.abs(x) >= 0.7 * x.std())
    with pytest.raises(ValueError, match="γ"):
        cp.std_mask(x, -1.0)


def test_channel_scores_and_masks():
    w = np.random.default_rng(2).normal(size=(4, 3, 2, 2))
    assert np.allclose(cp.channel_scores(w, 0, "l1"), np.abs(w).reshape(4, -1).sum(1))
    assert np.allclose(cp.channel_scores(w, 1, "l2"), np.sqrt((w ** 2).sum(axis=(0, 2, 3))))
    mask = cp.channel_mask(w.shape, 0, np.array([True, False, True, True]))
    assert mask.shape == w.shape and not mask[1].any() and mask[[0, 2, 3]].all()
    a, b = cp.random_channel_scores(8, 3, "conv1"), cp.random_channel_scores(8, 3, "conv1")
    assert np.array_equal(a, b)
    assert not np.array_equal(a, cp.random_channel_scores(8, 4, "conv1"))
    assert not np.array_equal(a, cp.random_channel_scores(8, 3, "conv2"))
    with pytest.raises(ValueError, match="norm"):
        cp.channel_scores(w, 0, "l3")


def test_complex_weights_are_ranked_by_the_criterion():
    z = np.array([3 + 0j, 0.1 + 2j, -1 - 1j, 0.5j])
    assert np.allclose(cp.scores(z, "modulus"), np.abs(z))
    assert np.allclose(cp.scores(z, "real"), [3, 0.1, 1, 0])
    assert np.allclose(cp.scores(z, "imag"), [0, 2, 1, 0.5])
    # phase ranks as |arg z| does (the score is a monotone function of it, free of atan2)
    assert list(np.argsort(cp.scores(z, "phase"), kind="stable")) == \
        list(np.argsort(np.abs(np.angle(z)), kind="stable"))
    ring = np.exp(1j * np.linspace(-np.pi, np.pi, 101))
    assert np.all(np.diff(cp.scores(ring[50:], "phase")) > 0)
    assert np.allclose(cp.scores(np.array([-2.0, 1.0]), "phase"), [2.0, 1.0])  # real weights: |w|
    with pytest.raises(ValueError, match="criterion"):
        cp.scores(z, "angle")


# --- nnr/pruning.py ---------------------------------------------------------------------------

def _zoo() -> onnx.ModelProto:
    """Conv → BatchNormalization → Relu → Flatten → Gemm(transB=0) → LayerNorm, plus an embedding."""
    rng = np.random.default_rng(3)
    inits = [numpy_helper.from_array(rng.normal(size=a[1]).astype(np.float32), a[0]) for a in [
        ("conv.w", (8, 2, 3, 3)), ("conv.b", (8,)), ("bn.scale", (8,)), ("bn.bias", (8,)), ("bn.mean", (8,)),
        ("fc.w", (8 * 4 * 4, 5)), ("fc.b", (5,)), ("ln.scale", (5,)), ("ln.bias", (5,)), ("embed.table", (10, 5))]]
    inits[4] = numpy_helper.from_array(np.zeros(8, np.float32), "bn.mean")
    inits.append(numpy_helper.from_array(np.ones(8, np.float32), "bn.var"))
    inits.append(numpy_helper.from_array(np.array([1, 2], np.int64), "ids"))
    nodes = [
        helper.make_node("Conv", ["x", "conv.w", "conv.b"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["c", "bn.scale", "bn.bias", "bn.mean", "bn.var"], ["n"]),
        helper.make_node("Relu", ["n"], ["r"]),
        helper.make_node("Flatten", ["r"], ["f"]),
        helper.make_node("Gemm", ["f", "fc.w", "fc.b"], ["g"]),
        helper.make_node("LayerNormalization", ["g", "ln.scale", "ln.bias"], ["y"], axis=-1),
        helper.make_node("Gather", ["embed.table", "ids"], ["e"]),
    ]
    graph = helper.make_graph(nodes, "zoo", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2, 4, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 5]),
                               helper.make_tensor_value_info("e", TensorProto.FLOAT, [2, 5])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_only_layer_weights_are_prunable_unless_patterns_say_otherwise():
    m = _zoo()
    assert [t.name for t in targets(m)] == ["conv.w", "fc.w"]
    assert [t.name for t in targets(m, include=("embed.*",))] == ["conv.w", "fc.w", "embed.table"]
    assert [t.name for t in targets(m, include=("embed.*",), exclude=("conv.*",))] == ["fc.w", "embed.table"]


def test_magnitude_per_layer_global_and_std():
    m = _zoo()
    before = _arrays(m)
    report = prune_model(m, "magnitude:0.25")
    after = _arrays(m)
    for name in ("conv.w", "fc.w"):
        assert np.count_nonzero(after[name] == 0) == int(0.25 * after[name].size)
        kept = after[name] != 0
        assert np.abs(before[name][kept]).min() >= np.abs(before[name][~kept]).max()
    for name in ("conv.b", "bn.scale", "ln.scale", "embed.table"):
        assert np.array_equal(before[name], after[name])
    assert report.sparsity == pytest.approx(0.25, abs=0.01)

    g = _zoo()
    prune_model(g, "magnitude:0.5", global_threshold=True)
    w = _arrays(g)
    assert (np.count_nonzero(w["conv.w"] == 0) + np.count_nonzero(w["fc.w"] == 0)) == \
        int(0.5 * (w["conv.w"].size + w["fc.w"].size))

    s = _zoo()
    prune_model(s, "std:1.0")
    assert np.array_equal(_arrays(s)["fc.w"] == 0, np.abs(before["fc.w"]) < before["fc.w"].std())


def test_filters_zero_whole_output_channels_and_leave_model_outputs_alone():
    m = _zoo()
    before = _arrays(m)
    report = prune_model(m, "filters:l1:0.25")
    w = _arrays(m)["conv.w"]
    gone = np.flatnonzero(~w.reshape(8, -1).any(axis=1))
    assert set(gone) == set(np.argsort(np.abs(before["conv.w"]).reshape(8, -1).sum(1))[:2])
    assert np.array_equal(_arrays(m)["fc.w"], before["fc.w"])  # its 5 columns are the model's outputs
    notes = {t.name: t.note for t in report.tensors}
    assert notes["fc.w"] == "its channels are model outputs" and notes["conv.w"] == ""


def test_gemm_output_axis_follows_trans_b():
    m = mlp()
    m.graph.output[0].name = "y"  # fc2 feeds the output; fc1 does not
    report = prune_model(m, "filters:l2:0.5")
    w = _arrays(m)["fc1.weight"]  # transB=1: rows are outputs
    assert np.count_nonzero(~w.any(axis=1)) == 32 and w.any(axis=0).all()
    assert {t.name for t in report.tensors if t.note} == {"fc2.weight"}


def test_iterative_norm_ranking_equals_one_shot_without_retraining():
    a, b = _zoo(), _zoo()
    prune_model(a, "filters:l1:0.5")
    prune_model(b, "filters:l1:0.5", steps=3)
    assert np.array_equal(_arrays(a)["conv.w"], _arrays(b)["conv.w"])


def test_activation_ranking_needs_and_uses_calibration():
    with pytest.raises(OptionError, match="calibration"):
        prune_model(_zoo(), "filters:activation:0.25")
    x = np.random.default_rng(4).normal(size=(6, 2, 4, 4)).astype(np.float32)
    m = _zoo()
    report = prune_model(m, "filters:activation:0.25", calibration={"x": x}, steps=2)
    assert sum(t.channels_pruned for t in report.tensors) == 2


@pytest.mark.parametrize("bad", ["magnitude:1", "magnitude:-0.2", "magnitude:abc", "filters:l3:0.2",
                                 "filters:random:0.2", "std:-1", "prune:0.5", "filters:l1"])
def test_nonsense_specs_are_refused(bad):
    with pytest.raises(OptionError):
        parse_spec(bad)


def test_global_threshold_is_refused_for_per_layer_methods():
    with pytest.raises(OptionError, match="global"):
        EncoderOptions(prune="std:1", prune_global=True)
    with pytest.raises(OptionError, match="need a pruning spec"):
        EncoderOptions(prune_steps=3)


# --- encoder and CLI --------------------------------------------------------------------------

def test_pruned_encoding_is_smaller_and_keeps_the_zeros():
    plain, pruned = nnr.encode(MNIST, probe=False), nnr.encode(MNIST, prune="magnitude:0.5")
    assert len(pruned) < 0.85 * len(plain)
    decoded = nnr.decode(pruned)
    onnx.checker.check_model(decoded)
    w = _arrays(decoded)["3.weight"]
    assert np.mean(w == 0) >= 0.5
    opts = nnr.EncoderOptions.from_json(nnr.EncoderOptions(prune="magnitude:0.5").to_json())
    assert opts.prune == "magnitude:0.5"
    x, _ = mnist_test()
    ref = run(session(str(MNIST)), {"image": x[:300]})
    assert top1_agreement(ref, run(session(decoded), {"image": x[:300]})) > 0.9


def test_lossless_pruning_keeps_the_storage_field():
    m = mlp(typed=True)
    decoded = nnr.decode(nnr.encode(m, lossless=True, prune="magnitude:0.5"))
    t = {t.name: t for t in decoded.graph.initializer}["fc1.weight"]
    assert not t.HasField("raw_data") and len(t.float_data) == 64 * 32
    assert np.count_nonzero(numpy_helper.to_array(t) == 0) == 1024


def test_cli_prunes_and_reports(tmp_path, capsys):
    out = tmp_path / "m.nnr"
    assert encode_main([str(MNIST), "-o", str(out), "--prune", "magnitude:0.6", "--global"]) == 0
    assert "to 60.0% zeros" in capsys.readouterr().err


def test_rate_control_searches_pruning_levels(tmp_path, capsys):
    x, _ = mnist_test()
    npz = tmp_path / "cal.npz"
    np.savez(npz, image=x[:200])
    out, report = tmp_path / "m.nnr", tmp_path / "r.json"
    assert encode_main([str(MNIST), "-o", str(out), "--calibration", str(npz), "--min-snr", "20",
                        "--prune-levels", "magnitude:0.5", "--global", "--budget-seconds", "600",
                        "--report", str(report)]) == 0
    err = capsys.readouterr().err
    assert "no pruning:" in err and "prune magnitude:0.5:" in err
    import json
    trials = json.loads(report.read_text())["trials"]
    assert {t["allocation"].split(", ")[-1] for t in trials} == {"no pruning", "prune magnitude:0.5"}


@pytest.mark.parametrize("argv,message", [
    (["--prune", "magnitude:1.0"], "[0, 1)"),
    (["--prune-levels", "magnitude:0.5", "--target-size", "50KB"], "fidelity goal"),
    (["--prune-levels", "magnitude:0.5", "--prune", "std:1", "--min-snr", "20"], "levels are searched"),
    (["--prune", "std:0.5", "--global"], "global threshold"),
    (["--prune", "filters:activation:0.2"], "--calibration"),
    (["--global"], "need a pruning spec (--prune)"),
])
def test_cli_refuses_nonsense_and_writes_nothing(tmp_path, capsys, argv, message):
    out = tmp_path / "m.nnr"
    code = exit_code(encode_main, [str(MNIST), "-o", str(out), *argv])
    assert code == 2
    assert message in capsys.readouterr().err and not out.exists()


def test_cli_patterns_steps_and_random_seed_reach_the_file(tmp_path):
    out = tmp_path / "m.nnr"
    assert encode_main([str(MNIST), "-o", str(out), "-q", "--lossless", "--prune", "magnitude:0.5",
                        "--prune-exclude", "0.*", "--prune-include", "*.bias", "--prune-exclude", "9.bias"]) == 0
    decoded, original = _arrays(nnr.decode(out.read_bytes())), _arrays(onnx.load(MNIST))
    assert np.array_equal(decoded["0.weight"], original["0.weight"])            # excluded
    assert np.mean(decoded["3.weight"] == 0) == pytest.approx(0.5, abs=0.001)  # a layer weight
    assert np.mean(decoded["7.bias"] == 0) == pytest.approx(0.5, abs=0.02)     # included by pattern
    assert np.array_equal(decoded["9.bias"], original["9.bias"])                # excluded again
    opts = read_options(out.read_bytes())
    assert opts.prune_exclude == ("0.*", "9.bias") and opts.prune_include == ("*.bias",)

    a, b = tmp_path / "a.nnr", tmp_path / "b.nnr"
    for path, seed in ((a, "3"), (b, "4")):
        assert encode_main([str(MNIST), "-o", str(path), "-q", "--lossless", "--prune", f"filters:random:{seed}:0.25",
                            "--prune-steps", "2"]) == 0
    wa, wb = _arrays(nnr.decode(a.read_bytes()))["3.weight"], _arrays(nnr.decode(b.read_bytes()))["3.weight"]
    gone_a, gone_b = ~wa.reshape(32, -1).any(1), ~wb.reshape(32, -1).any(1)
    assert gone_a.sum() == gone_b.sum() == 8 and not np.array_equal(gone_a, gone_b)
    assert read_options(a.read_bytes()).prune_steps == 2
