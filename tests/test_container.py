"""The container refuses every damaged or foreign input with the documented error."""

import struct

import numpy as np
import pytest

import nnr
from conformance.toy_models import mlp
from formats.container import (FORMAT_VERSION, HEADER, TensorUnit, read_container, write_container)
from nnr.errors import CorruptionError, FormatError, VersionError


@pytest.fixture(scope="module")
def small_nnr() -> bytes:
    return nnr.encode(mlp())


def test_container_round_trip_keeps_units():
    units = [TensorUnit(3, "a", 1, (2, 2), 0, b"\0" * 16, 12.5), TensorUnit(7, "b", 7, (), 0, b"\1" * 8)]
    data = write_container({"x": 1}, b"graph", units)
    c = read_container(data)
    assert c.version == FORMAT_VERSION and c.meta == {"x": 1} and c.graph == b"graph"
    assert [(e.slot, e.name) for e in c.index] == [(3, "a"), (7, "b")]


def test_every_truncation_is_refused(small_nnr):
    for cut in range(0, len(small_nnr), max(1, len(small_nnr) // 300)):
        with pytest.raises(FormatError):
            nnr.decode(small_nnr[:cut])


def test_every_single_bit_flip_is_detected(small_nnr):
    rng = np.random.default_rng(0)
    for pos in rng.choice(len(small_nnr), size=200, replace=False):
        damaged = bytearray(small_nnr)
        damaged[pos] ^= 1 << int(rng.integers(8))
        with pytest.raises(FormatError):
            nnr.decode(bytes(damaged))


def test_unknown_newer_version_is_refused_with_upgrade_hint(small_nnr):
    bumped = bytearray(small_nnr)
    struct.pack_into("<H", bumped, 4, FORMAT_VERSION + 1)
    with pytest.raises(VersionError, match="Upgrade nnr"):
        nnr.decode(bytes(bumped))


def test_not_an_nnr_file_is_refused():
    with pytest.raises(FormatError, match="not an .nnr file"):
        nnr.decode(b"PK\x03\x04 definitely a zip file")


def test_appended_garbage_is_refused(small_nnr):
    with pytest.raises(CorruptionError):
        nnr.decode(small_nnr + b"\0" * 7)


def test_header_is_sixteen_bytes_with_magic(small_nnr):
    assert HEADER.size == 16
    assert small_nnr[:4] == b"\x89NNR"


def test_random_access_reader(small_nnr):
    f = nnr.open(small_nnr)
    assert f.keys() == ["fc1.weight", "fc1.bias", "fc2.weight"]
    assert f.get_tensor("fc2.weight").shape == (10, 64)
    replayed = nnr.EncoderOptions.from_json(f.metadata()["options"])
    assert nnr.encode(mlp(), replayed) == small_nnr  # the stored options reproduce the file
    with pytest.raises(KeyError):
        f.get_tensor("nope")


def test_huge_declared_tensor_in_a_tiny_file_is_refused_before_allocating():
    """A valid-CRC unit claiming 2**36 float32 elements in a few bytes of body."""
    import onnx
    from onnx import TensorProto, helper

    huge = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[2**18, 2**18])
    graph = helper.make_graph([], "g", [], [], [huge])
    model = helper.make_model(graph)
    body = bytes([0, 0, 0, 0, 128]) + b"\x00" * 8
    unit = TensorUnit(0, "w", TensorProto.FLOAT, (2**18, 2**18), 2, body)
    data = write_container({}, model.SerializeToString(), [unit])
    with pytest.raises(nnr.LimitError, match="memory limit"):
        nnr.decode(data)
    with pytest.raises(CorruptionError, match="refusing to allocate"):
        nnr.decode(data, max_memory=1 << 62)
    assert isinstance(model, onnx.ModelProto)


def test_tensor_unit_that_does_not_match_its_graph_slot_is_refused(small_nnr):
    f = nnr.open(small_nnr)
    units = list(f.units())
    units[0].dims = (3, 3)
    data = write_container(f.metadata(), read_container(small_nnr).graph, units)
    with pytest.raises(CorruptionError, match="does not match its place"):
        nnr.decode(data)
