"""Complex-valued weights (format version 4): coding, decoding, refusal in older versions, pruning."""

import struct

import numpy as np
import onnx
import pytest
from onnx import TensorProto, numpy_helper

import nnr
from conformance import complex_eval
from conformance.inputs import mnist_test
from conformance.toy_models import complex_linear
from conformance.vectors import VECTOR_ROOT
from nnr.cli import encode_main, info_main
from nnr.errors import CorruptionError
from nnr.pruning import prune_model
from nnr.ratecontrol import read_options
from tests.conftest import ROOT

COMPLEX_MNIST = ROOT / "conformance" / "models" / "complex_mnist.onnx"


def _arrays(model):
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}


def test_lossless_complex_round_trip_is_byte_identical():
    m = complex_linear()
    data = nnr.encode(m, lossless=True)
    assert nnr.decode(data).SerializeToString() == m.SerializeToString()
    assert {u.dtype for u in nnr.open(data).units()} == {TensorProto.COMPLEX64, TensorProto.COMPLEX128}


@pytest.mark.parametrize("options", [{}, {"quantizer": "fp16"}, {"quantizer": "mulaw:255", "step_rule": "channel"},
                                     {"quantizer": "deadzone:0.3", "qp": -24.0}])
def test_lossy_complex_keeps_types_fields_and_both_parts(options):
    m = complex_linear()
    decoded = nnr.decode(nnr.encode(m, **options))
    onnx.checker.check_model(decoded)
    before, after = _arrays(m), _arrays(decoded)
    for name, w in before.items():
        assert after[name].dtype == w.dtype and after[name].shape == w.shape
        err = np.sum(np.abs(after[name] - w) ** 2) / np.sum(np.abs(w) ** 2)
        assert err < 1e-2, name
        # the error is spread over both parts, not confined to one
        assert not np.array_equal(after[name].real, w.real) or not np.array_equal(after[name].imag, w.imag)
    typed = {t.name: t for t in decoded.graph.initializer}["cfc2.weight"]
    assert not typed.HasField("raw_data") and len(typed.double_data) == 2 * 16 * 4


def test_complex_units_in_an_older_version_are_refused():
    data = (VECTOR_ROOT / "v4" / "complex_lossy.nnr").read_bytes()
    assert struct.unpack_from("<H", data, 4)[0] == 4
    older = bytearray(data)
    struct.pack_into("<H", older, 4, 3)    # versions 3 and 4 share the container layout
    with pytest.raises(CorruptionError, match="version 3"):
        nnr.decode(bytes(older))


def test_complex_network_keeps_its_accuracy():
    x, y = mnist_test()
    model = onnx.load(COMPLEX_MNIST)
    ref = complex_eval.logits(model, x)
    decoded = nnr.decode(nnr.encode(COMPLEX_MNIST))
    out = complex_eval.logits(decoded, x)
    assert np.mean(ref.argmax(1) == y) > 0.95
    assert np.mean(out.argmax(1) == ref.argmax(1)) >= 0.999


def test_complex_pruning_criteria_rank_differently_and_modulus_keeps_accuracy_best():
    x, y = mnist_test()
    acc = {}
    masks = {}
    for criterion in ("modulus", "real", "imag", "phase"):
        m = onnx.load(COMPLEX_MNIST)
        report = prune_model(m, "magnitude:0.8", global_threshold=True, criterion=criterion)
        assert report.sparsity == pytest.approx(0.8, abs=0.001)
        masks[criterion] = _arrays(m)["fc1.weight"] != 0
        acc[criterion] = np.mean(complex_eval.logits(m, x).argmax(1) == y)
    assert len({m.tobytes() for m in masks.values()}) == 4
    assert acc["modulus"] == max(acc.values()) and acc["phase"] == min(acc.values())
    assert np.array_equal(_arrays(onnx.load(COMPLEX_MNIST))["fc1.bias"], _arrays(m)["fc1.bias"])  # biases untouched


def test_complex_evaluator_refuses_ops_it_does_not_know():
    m = complex_linear()
    m.graph.node[2].op_type = "Sigmoid"
    with pytest.raises(ValueError, match="Sigmoid"):
        complex_eval.run(m, {"x": np.zeros((1, 32), np.complex64)})


def test_cli_prunes_complex_weights_by_criterion_and_info_lists_them(tmp_path, capsys):
    out = tmp_path / "c.nnr"
    assert encode_main([str(COMPLEX_MNIST), "-o", str(out), "--prune", "magnitude:0.5", "--global",
                        "--criterion", "imag"]) == 0
    assert "to 50.0% zeros" in capsys.readouterr().err
    assert read_options(out.read_bytes()).prune_criterion == "imag"
    assert info_main([str(out)]) == 0
    assert "complex64" in capsys.readouterr().out
