"""The issue's headline promises, measured on the committed EfficientNet-Lite0 and photos."""

import numpy as np
import onnx
import pytest

import nnr
from nnr.formats.onnx_io import tensor_slots
from nnr.fidelity import compare_classifiers
from nnr.images import crops, labelled_photos
from tests.conftest import PHOTOS


@pytest.fixture(scope="module")
def effnet_bytes(effnet_path):
    return effnet_path.read_bytes()


@pytest.fixture(scope="module")
def default_nnr(effnet_bytes):
    return nnr.encode(effnet_bytes)


def test_default_is_transparent_at_about_a_quarter_of_the_size(effnet_bytes, default_nnr):
    assert len(default_nnr) <= 0.26 * len(effnet_bytes)  # the probe aims at 36 dB on synthetic inputs
    decoded = nnr.decode(default_nnr)
    onnx.checker.check_model(decoded)
    x, y = crops(labelled_photos(PHOTOS))
    rep = compare_classifiers(effnet_bytes, decoded, {"image": x}, y)
    assert rep.n_inputs == 160
    assert rep.agreement >= 0.99
    assert rep.accuracy_decoded >= rep.accuracy_original - 0.01


def test_graph_io_and_everything_but_weights_survive(effnet_bytes, default_nnr):
    original = onnx.load_from_string(effnet_bytes)
    decoded = nnr.decode(default_nnr)
    assert [n.SerializeToString() for n in decoded.graph.node] == \
        [n.SerializeToString() for n in original.graph.node]
    assert decoded.graph.input == original.graph.input and decoded.graph.output == original.graph.output
    assert decoded.opset_import == original.opset_import
    assert decoded.metadata_props == original.metadata_props
    for a, b in zip(tensor_slots(original), tensor_slots(decoded)):
        assert (a.tensor.name, a.tensor.data_type, list(a.tensor.dims)) == \
            (b.tensor.name, b.tensor.data_type, list(b.tensor.dims))


def test_lossless_is_bit_exact_and_beats_zstd_19(effnet_bytes):
    zstd = pytest.importorskip("zstandard")
    data = nnr.encode(effnet_bytes, lossless=True)
    assert nnr.decode(data).SerializeToString() == onnx.load_from_string(effnet_bytes).SerializeToString()
    weights = b"".join(s.tensor.raw_data for s in tensor_slots(onnx.load_from_string(effnet_bytes)))
    assert len(data) < len(zstd.ZstdCompressor(level=19).compress(weights))


def test_coarser_qp_is_smaller_and_per_tensor_snr_reported(effnet_bytes, default_nnr):
    coarse = nnr.encode(effnet_bytes, qp=-24)
    assert len(coarse) < len(default_nnr)
    info = nnr.open(default_nnr).info()
    assert all(r["snr_db"] is not None and r["snr_db"] > 20 for r in info if r["mode"] == "lossy")
    assert np.isclose(sum(r["bytes"] for r in info), len(default_nnr), rtol=0.05)
