"""tools/compare_lossless.py: the 16-bit model it builds, nnr's bit-exact lossless round trip
against zstd on the same bytes, and a missing ZipNN reported rather than crashing."""

import json
import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto

from tools import compare_lossless as cl


@pytest.fixture(scope="module")
def mnist():
    from conformance.corpus import load_model

    model, path = load_model("mnist_cnn")
    return model, path.parent


@pytest.fixture
def no_zipnn(monkeypatch):
    monkeypatch.setitem(sys.modules, "zipnn", None)   # import zipnn raises ImportError, as in nnr's own venv


def test_rounding_to_16_bits_is_to_nearest_even_and_counts_overflows():
    halfway, above = np.float32(1 + 2 ** -8), np.float32(1 + 3 * 2 ** -8)   # bf16 keeps 7 mantissa bits
    data, over = cl.to_16bit_bytes(np.array([halfway, above, -2.0], np.float32), "bf16")
    assert np.frombuffer(data, "<u2").tolist() == [0x3F80, 0x3F82, 0xC000] and over == 0
    data, over = cl.to_16bit_bytes(np.array([1e5, np.inf, 0.5], np.float32), "fp16")
    assert np.frombuffer(data, "<f2").tolist() == [np.inf, np.inf, 0.5] and over == 1


def test_converted_model_keeps_its_types_and_runs(mnist):
    import onnxruntime as ort

    model, base = mnist
    conv = cl.convert(model, "bf16", base)
    floats = [t for t in model.graph.initializer if t.data_type == TensorProto.FLOAT]
    assert len(conv.weights) == len(floats) and conv.raw_bytes == sum(2 * int(np.prod(t.dims)) for t in floats)
    assert all(t.data_type == TensorProto.BFLOAT16 for t in conv.model.graph.initializer if t.name in conv.weights)
    onnx.checker.check_model(conv.model, full_check=True)
    x = np.random.default_rng(0).random((4, 1, 28, 28), np.float32)
    name = model.graph.input[0].name
    ref = ort.InferenceSession(model.SerializeToString()).run(None, {name: x})[0]
    out = ort.InferenceSession(conv.model.SerializeToString()).run(None, {name: x})[0]
    assert np.array_equal(ref.argmax(1), out.argmax(1)) and not np.array_equal(ref, out)


def test_nnr_round_trip_is_exact_and_beats_zstd_on_bf16(mnist, no_zipnn):
    model, base = mnist
    rows = {r["codec"]: r for r in cl.measure(model, "mnist_cnn", "bf16", base)}
    assert set(rows) == {cl.NNR_UNITS, cl.NNR_FILE, cl.ZIPNN_TENSORS, cl.ZIPNN_BUFFER, cl.ZSTD_TENSORS, cl.ZSTD_BUFFER}
    units, whole = rows[cl.NNR_UNITS], rows[cl.NNR_FILE]
    assert units["exact"] is True and whole["exact"] is True
    assert units["bytes"] < whole["bytes"] and units["ratio"] < 1
    assert units["ratio"] < rows[cl.ZSTD_TENSORS]["ratio"] and rows[cl.ZSTD_TENSORS]["exact"] is True
    for codec in (cl.ZIPNN_TENSORS, cl.ZIPNN_BUFFER):
        assert rows[codec]["bytes"] is None and rows[codec]["exact"] is None and "missing" in rows[codec]["note"]


def test_the_tool_runs_without_zipnn_and_writes_its_outputs(tmp_path, capsys, no_zipnn):
    js, md = tmp_path / "out.json", tmp_path / "out.md"
    assert cl.main(["--models", "mnist_cnn", "--formats", "fp16", "--json", str(js), "--markdown", str(md)]) == 0
    assert "ZipNN is missing" in capsys.readouterr().err
    result = json.loads(js.read_text())
    assert result["zipnn"] is None and "zipnn" in result["zipnn_missing"]
    assert {r["format"] for r in result["rows"]} == {"fp16"} and len(result["rows"]) == 6
    assert md.read_text().startswith("```sh\npython tools/compare_lossless.py --models mnist_cnn")


def test_unknown_models_and_formats_are_refused_with_a_message():
    with pytest.raises(SystemExit, match="unknown model or format fp8"):
        cl.main(["--models", "mnist_cnn", "--formats", "fp8"])


def test_a_weight_that_comes_back_different_is_caught(mnist):
    import nnr

    model, base = mnist
    conv = cl.convert(model, "fp16", base)
    decoded = nnr.decode(nnr.encode(conv.model, lossless=True))
    assert cl.mismatches(decoded, conv.weights) == []
    t = next(t for t in decoded.graph.initializer if t.name in conv.weights)
    t.raw_data = bytes([t.raw_data[0] ^ 1]) + t.raw_data[1:]
    assert cl.mismatches(decoded, conv.weights) == [t.name]
