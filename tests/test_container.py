"""The container refuses every damaged or foreign input with the documented error."""

import json
import struct
import zlib

import numpy as np
import pytest

import nnr
from conformance.toy_models import mlp
from nnr.formats.container import (FORMAT_VERSION, HEADER, TensorUnit, read_container, write_container)
from nnr.errors import CorruptionError, FormatError, VersionError


@pytest.fixture(scope="module")
def small_nnr() -> bytes:
    return nnr.encode(mlp())


def test_container_round_trip_keeps_units(small_nnr):
    graph = read_container(small_nnr).graph
    units = [TensorUnit(0, "", 0, (), 0, b"\0" * 16, 12.5), TensorUnit(2, "", 0, (), 0, b"\1" * 8)]
    data = write_container({"x": 1}, graph, units)
    c = read_container(data)
    assert c.version == FORMAT_VERSION and c.meta == {"x": 1} and c.graph == graph
    assert [(e.slot, e.name, e.dims) for e in c.index] == [(0, "fc1.weight", (64, 32)), (2, "fc2.weight", (10, 64))]
    units = list(nnr.open(data).units())
    assert [(u.slot, u.body) for u in units] == [(0, b"\0" * 16), (2, b"\1" * 8)]
    assert units[0].snr_db == 12.5 and np.isnan(units[1].snr_db)  # half-dB steps; NaN is "unknown"


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


def _with_version(data: bytes, version: int) -> bytes:
    head = bytearray(data[:12])
    struct.pack_into("<H", head, 4, version)
    return bytes(head) + struct.pack("<I", zlib.crc32(head)) + data[16:]


def test_unknown_newer_version_is_refused_with_upgrade_hint(small_nnr):
    with pytest.raises(VersionError, match="Upgrade nnr"):
        nnr.decode(_with_version(small_nnr, FORMAT_VERSION + 1))


def test_header_checksum_covers_version_and_flags(small_nnr):
    """A bit flip in the header is corruption, never an older or newer version."""
    for byte in range(4, 16):
        for bit in range(8):
            damaged = bytearray(small_nnr)
            damaged[byte] ^= 1 << bit
            with pytest.raises(FormatError):
                nnr.decode(bytes(damaged))
    for older in (1, 2, 3, 4):
        bumped = bytearray(small_nnr)
        struct.pack_into("<H", bumped, 4, older)
        with pytest.raises(FormatError, match="reserved"):
            nnr.decode(bytes(bumped))


def test_version_zero_is_not_a_version(small_nnr):
    with pytest.raises(FormatError, match="version 0") as err:
        nnr.decode(_with_version(small_nnr, 0)[:12] + bytes(4) + small_nnr[16:])
    assert not isinstance(err.value, VersionError)  # no "upgrade nnr" for a version that never was


@pytest.mark.parametrize("meta, ok", [
    ({"a": [[[[1]]]]}, True),
    ({"a": 2 ** 63 - 1, "b": -2 ** 63}, True),
    ({"a": 2 ** 63}, False),
    ({"a": -2 ** 63 - 1}, False),
    ({"deep": json.loads("[" * 63 + "]" * 63)}, True),
    ({"deep": json.loads("[" * 64 + "]" * 64)}, False),
])
def test_meta_limits_are_the_same_for_every_parser(small_nnr, meta, ok):
    """Nesting of at most 64 levels (the object itself is one) and integers in int64."""
    c = read_container(small_nnr)
    data = write_container(meta, c.graph, list(nnr.open(small_nnr).units()))
    if ok:
        assert nnr.open(data).metadata() == meta
    else:
        with pytest.raises(FormatError, match="metadata unit"):
            nnr.open(data)


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


@pytest.mark.parametrize("slots, message", [([0, 1, 7], "refers to slot 7"), ([0, 1, 1], "coded twice")])
def test_tensor_unit_without_its_own_graph_slot_is_refused(small_nnr, slots, message):
    f = nnr.open(small_nnr)
    units = list(f.units())
    for unit, slot in zip(units, slots):
        unit.slot = slot
    data = write_container(f.metadata(), read_container(small_nnr).graph, units)
    with pytest.raises(CorruptionError, match=message):
        nnr.decode(data)


def test_open_maps_a_file_and_reads_only_what_it_is_asked(tmp_path):
    """nnr.open memory-maps a path: a tensor read touches the index and that unit only, so a
    damaged unit elsewhere in the file goes unnoticed until it is asked for."""
    import mmap

    data = bytearray(nnr.encode(mlp(), lossless=True))
    f = nnr.open(data)
    first, last = f._container.index[0], f._container.index[-1]
    data[first.offset + first.length // 2] ^= 0xFF          # damage the first tensor's unit
    path = tmp_path / "m.nnr"
    path.write_bytes(data)
    mapped = nnr.open(path)
    assert isinstance(mapped._data.obj, mmap.mmap)
    assert mapped.get_tensor(last.name).size > 0              # an intact unit decodes ...
    with pytest.raises(CorruptionError):
        mapped.get_tensor(first.name)                         # ... the damaged one is refused when read
    empty = tmp_path / "empty.nnr"
    empty.write_bytes(b"")
    with pytest.raises(FormatError):
        nnr.open(empty)                                       # not mappable: read, then refused as usual
