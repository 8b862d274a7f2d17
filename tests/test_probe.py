"""The data-free probe: synthetic inputs from the signature, per-tensor steps from output
sensitivity, the fidelity check, and the fallback to the data-free rule."""

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import nnr
from conformance.toy_models import fixed_size_image, mlp
from nnr.cli import encode_main
from nnr.errors import OptionError
from nnr.options import EncoderOptions
from nnr.probe import CHECK_TOLERANCE_DB, DEFAULT_SNR_DB, FALLBACK_QP_OFFSET, Probe
from nnr.synthetic import SamplingError, synthetic_batches, synthetic_inputs
from tests.conftest import exit_code
from nnr.formats.onnx_io import tensor_slots


def _value(name, elem, dims):
    return helper.make_tensor_value_info(name, elem, dims)


def text_encoder(vocab: int = 50, width: int = 16, seed: int = 0) -> onnx.ModelProto:
    """Token ids → embedding table → masked mean → tanh projection: dynamic batch and length."""
    rng = np.random.default_rng(seed)
    inits = [numpy_helper.from_array(rng.normal(0, 0.5, (vocab, width)).astype(np.float32), "embed"),
             numpy_helper.from_array(rng.laplace(0, 0.2, (width, width)).astype(np.float32), "proj"),
             numpy_helper.from_array(np.array([1], dtype=np.int64), "axis1")]
    nodes = [helper.make_node("Gather", ["embed", "ids"], ["e"]),
             helper.make_node("Cast", ["mask"], ["mf"], to=TensorProto.FLOAT),
             helper.make_node("Unsqueeze", ["mf", "axis1"], ["m3"]),
             helper.make_node("Transpose", ["m3"], ["mt"], perm=[0, 2, 1]),
             helper.make_node("Mul", ["e", "mt"], ["em"]),
             helper.make_node("ReduceMean", ["em", "axis1"], ["pooled"], keepdims=0),
             helper.make_node("MatMul", ["pooled", "proj"], ["z"]),
             helper.make_node("Tanh", ["z"], ["out"])]
    graph = helper.make_graph(nodes, "text", [_value("ids", TensorProto.INT64, ["batch", "sequence"]),
                                              _value("mask", TensorProto.INT64, ["batch", "sequence"])],
                              [_value("out", TensorProto.FLOAT, ["batch", width])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def test_synthetic_inputs_follow_the_signature():
    feed = synthetic_inputs(mlp())
    assert feed["x"].dtype == np.float32 and feed["x"].shape == (8, 32)
    stds = feed["x"].std(axis=1)
    assert stds.max() / stds.min() > 5  # the batch spans a decade of amplitude
    text = synthetic_inputs(text_encoder(vocab=50))
    assert text["ids"].shape == (8, 64) and text["ids"].dtype == np.int64
    assert 0 <= text["ids"].min() and text["ids"].max() < 50 and len(np.unique(text["ids"])) > 25
    assert np.all(text["mask"] == 1)
    assert synthetic_inputs(mlp(), seed=1)["x"].tolist() != feed["x"].tolist()
    assert synthetic_inputs(mlp())["x"].tolist() == feed["x"].tolist()


def _one_input_model(elem, dims):
    graph = helper.make_graph([helper.make_node("Identity", ["a"], ["b"])], "g", [_value("a", elem, dims)],
                              [_value("b", elem, dims)])
    return helper.make_model(graph)


@pytest.mark.parametrize("elem, dims, message", [
    (TensorProto.FLOAT, [1, "width"], "no hint"),
    (TensorProto.STRING, [1], "cannot be sampled"),
    (TensorProto.INT64, [1, 4], "meaning is unknown"),
])
def test_inputs_that_cannot_be_made_up_are_refused(elem, dims, message):
    with pytest.raises(SamplingError, match=message):
        synthetic_inputs(_one_input_model(elem, dims))


def test_state_inputs_start_at_zero_and_fixed_batches_are_drawn_repeatedly():
    graph = helper.make_graph([helper.make_node("Add", ["x", "h"], ["h_out"])], "rnn",
                              [_value("x", TensorProto.FLOAT, [1, 4]), _value("h", TensorProto.FLOAT, [1, 4])],
                              [_value("h_out", TensorProto.FLOAT, [1, 4])])
    feeds = synthetic_batches(helper.make_model(graph))
    assert len(feeds) == 8
    assert all(np.all(f["h"] == 0) for f in feeds)
    assert len({f["x"].tobytes() for f in feeds}) == 8


def _rnn(width: int = 4) -> onnx.ModelProto:
    """h_out = tanh(h·R + x·W), the state carried from call to call and the only output."""
    rng = np.random.default_rng(5)
    inits = [numpy_helper.from_array((0.9 * np.eye(width) + rng.normal(0, 0.05, (width, width))).astype(np.float32), "R"),
             numpy_helper.from_array(rng.normal(0, 0.5, (width, width)).astype(np.float32), "W")]
    nodes = [helper.make_node("MatMul", ["h", "R"], ["hr"]), helper.make_node("MatMul", ["x", "W"], ["xw"]),
             helper.make_node("Add", ["hr", "xw"], ["pre"]), helper.make_node("Tanh", ["pre"], ["h_out"])]
    graph = helper.make_graph(nodes, "rnn", [_value("x", TensorProto.FLOAT, [1, width]),
                                             _value("h", TensorProto.FLOAT, [1, width])],
                              [_value("h_out", TensorProto.FLOAT, [1, width])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def test_a_recurrent_model_is_measured_over_a_stream(monkeypatch):
    import nnr.probe

    def distortion():
        probe = Probe(_rnn(), synthetic_batches(_rnn()))
        [slot] = [i for i, name in probe.feedable.items() if name == "R"]
        recurrent = numpy_helper.to_array(next(t for t in _rnn().graph.initializer if t.name == "R"))
        assert probe.distortion({slot: recurrent}) < 1e-12   # the same weights: the same stream
        return probe, probe.distortion({slot: recurrent + np.float32(0.02)})

    probe, streamed = distortion()
    assert probe.outputs == ["h_out"]   # a state output is measured as it is fed back, not before its Tanh
    assert probe.reference[False][0].size == 8 * nnr.probe.STREAM_STEPS * 4   # 8 streams of 8 calls
    monkeypatch.setattr(nnr.probe, "STREAM_STEPS", 1)
    _, one_call = distortion()
    assert streamed > 3 * one_call   # the error builds up through the state


def test_image_inputs_of_unknown_size_get_a_plausible_one():
    assert synthetic_inputs(_one_input_model(TensorProto.FLOAT, ["n", 3, 48, "w"]))["a"].shape[1:] == (3, 48, 224)
    assert synthetic_inputs(_one_input_model(TensorProto.FLOAT, ["n", 3, "h", 320]))["a"].shape[1:] == (3, 320, 320)


def test_an_image_size_the_model_refuses_is_followed_by_smaller_ones():
    reports = []
    nnr.encode(fixed_size_image(64), on_probe=reports.append)
    assert not reports[0].notice and reports[0].inputs["x"][2:] == (64, 64)
    reports.clear()
    data = nnr.encode(fixed_size_image(50), on_probe=reports.append)  # no side tried fits
    assert "cannot run the model on synthetic inputs (image sides tried: 224, 128, 64, 32)" in reports[0].notice
    assert data == nnr.encode(fixed_size_image(50), qp=EncoderOptions().qp + FALLBACK_QP_OFFSET)


def test_default_encode_probes_and_meets_its_target():
    reports = []
    data = nnr.encode(mlp(), on_probe=reports.append)
    [report] = reports
    assert not report.notice and report.tensors == 2
    assert report.expected_snr_db >= DEFAULT_SNR_DB - CHECK_TOLERANCE_DB
    options = nnr.open(data).metadata()["options"]
    assert options["qp"] != EncoderOptions().qp  # the level came from the probe, not the default qp
    assert nnr.encode(mlp(), EncoderOptions.from_json(options)) == data  # replaying needs no probe


def test_a_higher_target_gives_a_finer_larger_file():
    low, high = [], []
    small = nnr.encode(text_encoder(), target_snr_db=24, on_probe=low.append)
    large = nnr.encode(text_encoder(), target_snr_db=44, on_probe=high.append)
    assert len(large) > len(small)
    assert high[0].expected_snr_db > low[0].expected_snr_db + 10


def test_measured_snr_matches_an_independent_run():
    reports = []
    data = nnr.encode(text_encoder(), on_probe=reports.append)
    from nnr.fidelity import output_snr_db, session

    feed = synthetic_inputs(text_encoder())
    ref = session(text_encoder()).run(None, feed)[0]
    out = session(nnr.decode(data)).run(None, feed)[0]
    pre = np.arctanh(np.clip(ref, -0.999999, 0.999999)), np.arctanh(np.clip(out, -0.999999, 0.999999))
    centred = (pre[0] - pre[0].mean(), pre[1] - pre[0].mean())
    assert output_snr_db(*centred) == pytest.approx(reports[0].expected_snr_db, abs=0.5)


def test_outputs_are_measured_before_a_final_squashing_op():
    model = text_encoder()
    probe = Probe(model, synthetic_batches(model))
    assert probe.outputs == ["z"]


@pytest.mark.parametrize("model", [_one_input_model(TensorProto.FLOAT, [1, "width"]),
                                   _one_input_model(TensorProto.STRING, [1])])
def test_unsampleable_models_fall_back_to_the_data_free_rule(model):
    reports = []
    data = nnr.encode(model, on_probe=reports.append)
    assert reports[0].notice and "data-free" in reports[0].summary()
    assert data == nnr.encode(model, qp=EncoderOptions().qp + FALLBACK_QP_OFFSET)


def test_the_probe_stays_off_when_a_level_or_method_is_given():
    for kw in ({"qp": -20}, {"lossless": True}, {"quantizer": "midtread"}):
        reports = []
        nnr.encode(mlp(), on_probe=reports.append, **kw)
        assert reports == []
    assert nnr.encode(mlp(), qp=-32.0) == nnr.encode(mlp(), probe=False)


def test_probe_refuses_what_it_cannot_steer():
    with pytest.raises(OptionError, match="probe"):
        nnr.encode(mlp(), probe=True, lossless=True)
    with pytest.raises(OptionError, match="SNR"):
        nnr.encode(mlp(), target_snr_db=float("nan"))


def test_cli_prints_the_expected_fidelity_and_data_free_skips_it(tmp_path, capsys):
    src = tmp_path / "m.onnx"
    onnx.save(text_encoder(), src)
    assert encode_main([str(src), "-o", str(tmp_path / "a.nnr")]) == 0
    err = capsys.readouterr().err
    assert "expected output SNR" in err and "synthetic inputs" in err
    assert encode_main([str(src), "-o", str(tmp_path / "b.nnr"), "--data-free", "-q"]) == 0
    assert (tmp_path / "b.nnr").read_bytes() == nnr.encode(src, probe=False)
    assert encode_main([str(src), "-o", str(tmp_path / "c.nnr"), "--synthetic-snr", "44", "-q"]) == 0
    assert (tmp_path / "c.nnr").stat().st_size > (tmp_path / "a.nnr").stat().st_size
    assert exit_code(encode_main, [str(src), "-o", str(tmp_path / "d.nnr"), "--qp", "-20", "--synthetic-snr", "40"]) == 2
    assert "does not combine" in capsys.readouterr().err and not (tmp_path / "d.nnr").exists()


def test_an_onnxruntime_failure_while_probing_falls_back_too(monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("kernel refused\nsecond line")

    monkeypatch.setattr(Probe, "distortion", broken)
    reports = []
    data = nnr.encode(mlp(), on_probe=reports.append)
    assert "kernel refused" in reports[0].notice and "\n" not in reports[0].summary()
    assert data == nnr.encode(mlp(), qp=EncoderOptions().qp + FALLBACK_QP_OFFSET)


def test_a_probe_target_without_the_probe_is_refused():
    with pytest.raises(OptionError, match="does not combine"):
        nnr.encode(mlp(), probe=False, target_snr_db=40)
    with pytest.raises(OptionError, match="does not combine"):
        nnr.encode(mlp(), qp=-20, target_snr_db=40)   # a level given: the probe stays off


def test_the_probe_keeps_one_session_and_shares_the_weights(monkeypatch):
    """Each onnxruntime session pre-packs its own weights: the probe visits its groups one after
    another, so it keeps only the current group's session, and every session reads the weights
    from the probe's one copy instead of its own."""
    import nnr.probe

    monkeypatch.setattr(nnr.probe, "SHARED_BYTES", 1)   # the toy model's weights are small
    model = mlp()
    probe = Probe(model, synthetic_batches(model))
    weights = {s.index: np.frombuffer(s.tensor.raw_data, np.float32).reshape(tuple(s.tensor.dims))
               for s in tensor_slots(model) if len(s.tensor.dims) == 2}
    assert len(weights) >= 2
    for slot, w in weights.items():
        assert probe.distortion({slot: w}, small=True, group=[slot]) == 0.0   # unchanged weights: no distortion
        assert len(probe._sessions) == 1
    assert probe.arrays and not any(t.HasField("raw_data") for t in probe.fed.graph.initializer
                                    if t.name in probe.arrays)
    probe.release()
    assert not probe._sessions


def rescaled_pair(width: int = 24, seed: int = 1) -> onnx.ModelProto:
    """x → A → B, with A's hidden features of very different scales and B's rows scaled by
    the inverse: B's small rows meet large activations, so its error matters row by row."""
    rng = np.random.default_rng(seed)
    scales = 2.0 ** np.linspace(-4, 4, width)
    a = rng.laplace(0, 0.2, (width, width)) * scales[None, :]
    b = rng.laplace(0, 0.2, (width, width)) / scales[:, None]
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "A"], ["h"]), helper.make_node("MatMul", ["h", "B"], ["y"])], "pair",
        [_value("x", TensorProto.FLOAT, [8, width])], [_value("y", TensorProto.FLOAT, [8, width])],
        [numpy_helper.from_array(a.astype(np.float32), "A"), numpy_helper.from_array(b.astype(np.float32), "B")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def test_the_probe_gives_per_channel_steps_where_rows_differ_in_what_they_drive():
    from nnr.probe import plan

    opts, _, report = plan(rescaled_pair(), EncoderOptions(probe_channels=True))
    assert opts.channel_steps == ("B",) and report.channel_steps == 1   # A's rows are alike
    assert plan(rescaled_pair(), EncoderOptions())[0].channel_steps == ()   # only when asked
    assert plan(rescaled_pair(), EncoderOptions(channel_steps=("A",)))[0].channel_steps == ("A",)   # given: kept
    data = nnr.encode(rescaled_pair(), probe_channels=True)
    recorded = EncoderOptions.from_json(nnr.open(data).metadata()["options"])
    assert recorded.channel_steps == ("B",)
    assert nnr.encode(rescaled_pair(), recorded) == data    # the choice replays from the file


def test_channel_steps_code_the_named_tensors_per_channel():
    from nnr.formats.container import read_container, read_tensor_unit

    data = nnr.encode(rescaled_pair(), EncoderOptions(qp=-24, channel_steps=("B",)))
    container = read_container(data, 1 << 30)
    flags = {e.name: read_tensor_unit(data, e).body[0] & 1 for e in container.index}
    assert flags == {"A": 0, "B": 1}
    # per-row steps on B cut the output error a per-tensor step leaves, at the same size
    plain = nnr.encode(rescaled_pair(), EncoderOptions(qp=-24))
    from nnr.fidelity import output_snr_db, session

    feed = synthetic_inputs(rescaled_pair())
    ref = session(rescaled_pair()).run(None, feed)[0]
    snr = {k: output_snr_db(ref, session(nnr.decode(d)).run(None, feed)[0])
           for k, d in (("channel", data), ("plain", plain))}
    assert snr["channel"] > snr["plain"] + 2 and len(data) < 1.02 * len(plain)


@pytest.mark.parametrize("value, message", [("B", "list of tensor names"), ([3], "list of tensor names")])
def test_channel_steps_must_be_names(value, message):
    with pytest.raises(OptionError, match=message):
        EncoderOptions(channel_steps=value)


def test_channel_steps_belong_to_the_scale_rule():
    with pytest.raises(OptionError, match="no meaning"):
        EncoderOptions(step_rule="uniform", channel_steps=("B",))
    with pytest.raises(OptionError, match="no meaning"):
        EncoderOptions(step_rule="channel", probe_channels=True)
    assert "probe_channels" not in EncoderOptions(probe_channels=True).to_json()   # steers; channel_steps records
    opts = EncoderOptions(channel_steps=["B"])
    assert opts.rule_of("B") == "channel" and opts.rule_of("A") == "scale"
    assert EncoderOptions.from_json(opts.to_json()) == opts
    assert not {"channel_steps", "probe_channels"} & set(EncoderOptions().to_json())   # older options text kept


def test_cli_probe_channels_needs_the_probe(tmp_path, capsys):
    src = tmp_path / "pair.onnx"
    onnx.save(rescaled_pair(), src)
    for other in (["--data-free"], ["--lossless"], ["--qp", "-20"]):
        assert exit_code(encode_main, [str(src), "-o", str(tmp_path / "a.nnr"), "--probe-channels", *other]) == 2
        assert "steers the probe" in capsys.readouterr().err and not (tmp_path / "a.nnr").exists()
    assert encode_main([str(src), "-o", str(tmp_path / "b.nnr"), "--probe-channels"]) == 0
    assert "per-channel steps on 1 of them" in capsys.readouterr().err


def test_a_per_channel_rounding_that_moves_nothing_is_not_chosen(monkeypatch):
    """Outputs that do not move at all (quantized activations downstream, say) give no
    sensitivity to allocate by: the tensor stays per-tensor and the probe does not fail."""
    from nnr.probe import Probe, plan

    calls = {}
    original = Probe.distortion

    def second_is_zero(self, replaced, *args, **kwargs):
        key = tuple(replaced)
        calls[key] = calls.get(key, 0) + 1
        return 0.0 if calls[key] == 2 else original(self, replaced, *args, **kwargs)

    monkeypatch.setattr(Probe, "distortion", second_is_zero)
    opts, _, report = plan(rescaled_pair(), EncoderOptions(probe_channels=True))
    assert opts.channel_steps == () and report.channel_steps == 0 and report.tensors == 2


def test_equal_rate_channel_steps_spend_the_per_tensor_entropy():
    from nnr.probe import CHANNEL_SIDE_BITS, Weight, _equal_rate_channel_steps, _level_bits

    rng = np.random.default_rng(3)
    values = rng.laplace(0, 1, (16, 64)) * 2.0 ** np.linspace(-3, 3, 16)[:, None]
    values[5] = 0.0                                   # an all-zero channel takes the tensor's scale
    w = Weight("w", 0, values.size, "float64", values, 1.0)
    steps, scale = _equal_rate_channel_steps(w, 0.5)
    assert steps.shape == (16, 1) and np.all(steps > 0)
    bits = _level_bits(values, steps) + CHANNEL_SIDE_BITS * 16
    assert _level_bits(values, 0.5) * 0.99 <= bits <= _level_bits(values, 0.5)
    one = Weight("v", 0, 64, "float64", values[:1], 1.0)
    assert _equal_rate_channel_steps(one, 0.5) is None                  # one channel: nothing to choose
    tiny = Weight("t", 0, 32, "float64", values[:16, :2], 1.0)
    assert _equal_rate_channel_steps(tiny, 0.5) is None                 # the step fields alone cost more
