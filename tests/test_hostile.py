"""Hostile .nnr files: each is refused with its documented NnrError (or decodes, where it is
legal) within bounded memory and time, in a child process so a regression that aborts or
exhausts memory fails the test instead of killing the run."""

import io
import json
import multiprocessing
import resource
import zlib
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import nnr
from conformance.vectors import VECTOR_ROOT
from nnr.formats.container import FORMAT_VERSION, TensorUnit, inflate_graph, read_container, write_container
from nnr.cli import decode_main, info_main
from tests.conftest import fork_allowance

HOSTILE = Path(__file__).resolve().parents[1] / "conformance/vectors/hostile"
RECORDS = json.loads((HOSTILE / "hostile.json").read_text())
TIMEOUT = 60


def _decode_everything(data: bytes) -> str:
    """'ok', or the NnrError class name; any other exception propagates."""
    try:
        nnr.decode(data)
        f = nnr.open(data)
        f.info()
        for name in f.keys():
            f.get_tensor(name)
    except nnr.NnrError as exc:
        return type(exc).__name__
    return "ok"


def _child(conn, data: bytes) -> None:
    limit = fork_allowance()   # a fork of pytest: 3 GiB beyond what it inherits
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    try:
        conn.send(_decode_everything(data))
    except BaseException as exc:  # noqa: BLE001 - reported to the parent as the failure it is
        conn.send(f"crashed: {type(exc).__name__}: {exc}")


def decode_in_child(data: bytes) -> str:
    """Outcome of decoding ``data`` in a forked child under a memory limit and a timeout."""
    ctx = multiprocessing.get_context("fork")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(child, data))
    proc.start()
    child.close()
    ready = parent.poll(TIMEOUT)
    outcome = parent.recv() if ready else "timeout"
    proc.join(5 if ready else 0)
    if proc.is_alive():
        proc.kill()
        proc.join()
    if not ready and proc.exitcode is not None and proc.exitcode < 0:
        outcome = f"killed by signal {-proc.exitcode}"
    return outcome


@pytest.mark.parametrize("name", sorted(RECORDS))
def test_hostile_file_is_refused_as_documented(name):
    expected = RECORDS[name]["error"] or "ok"
    assert decode_in_child((HOSTILE / f"{name}.nnr").read_bytes()) == expected


@pytest.mark.parametrize("name", sorted(n for n, r in RECORDS.items() if r["error"]))
def test_cli_refuses_hostile_file_in_one_line_and_writes_nothing(name, tmp_path):
    out = tmp_path / "out.onnx"
    err = io.StringIO()
    with redirect_stderr(err):
        code = decode_main([str(HOSTILE / f"{name}.nnr"), "-o", str(out)])
    assert code == 3 and not any(tmp_path.iterdir())
    assert len(err.getvalue().strip().splitlines()) == 1 and "Traceback" not in err.getvalue()


@pytest.mark.parametrize("name", sorted(RECORDS))
def test_nnr_info_prints_json_or_one_error_line_without_control_characters(name):
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = info_main([str(HOSTILE / f"{name}.nnr"), "--json"])
    if code == 0:
        json.loads(out.getvalue())
    else:
        assert code == 3 and len(err.getvalue().strip().splitlines()) == 1
    printed = out.getvalue() + err.getvalue()
    assert not any(ord(c) < 32 and c not in "\n" or 0x7F <= ord(c) <= 0x9F for c in printed)


# Named attacks built here rather than committed: each rebuilds a valid file and changes one thing.

def _model_with(weights: dict[str, np.ndarray]) -> onnx.ModelProto:
    inits = [onnx.numpy_helper.from_array(w, name) for name, w in weights.items()]
    return helper.make_model(helper.make_graph([], "g", [], [], inits))


def _small_file(**options) -> bytes:
    rng = np.random.default_rng(0)
    model = _model_with({"a": rng.laplace(size=(32, 16)).astype(np.float32),
                         "b": rng.laplace(size=(64,)).astype(np.float32)})
    return nnr.encode(model, **options)


def _rebuild(data: bytes, meta=None, graph=None, units=None, version=None) -> bytes:
    c = read_container(data)
    f = nnr.open(data)
    return write_container(c.meta if meta is None else meta, c.graph if graph is None else graph,
                           list(f.units()) if units is None else units, FORMAT_VERSION if version is None else version)


def test_a_removed_tensor_unit_is_refused():
    data = _small_file()
    units = list(nnr.open(data).units())
    with pytest.raises(nnr.CorruptionError, match="no data and no tensor unit"):
        nnr.decode(_rebuild(data, units=units[1:]))


def test_graph_inflating_beyond_the_budget_is_refused_before_it_is_inflated():
    data = _small_file()
    c = read_container(data)
    model = onnx.ModelProto()
    model.ParseFromString(c.graph)
    model.doc_string = "x" * (80 << 20)   # 80 MiB of graph from about 80 KB of zlib
    bomb = _rebuild(data, graph=model.SerializeToString())
    assert len(bomb) < 200_000
    with pytest.raises(nnr.LimitError, match="max-memory"):
        nnr.decode(bomb)
    assert nnr.decode(bomb, max_memory=1 << 30).doc_string == model.doc_string


def test_graph_with_trailing_bytes_after_its_zlib_stream_is_refused():
    graph = read_container(_small_file()).graph
    with pytest.raises(nnr.FormatError, match="6 bytes after its zlib stream"):
        inflate_graph(zlib.compress(graph, 9) + b"hidden")
    assert inflate_graph(zlib.compress(graph, 9)) == graph


@pytest.mark.parametrize("location", ["/etc/hostname", "../../secret.bin", "weights.bin"])
def test_graph_tensor_pointing_at_external_data_is_refused(location):
    data = _small_file()
    model = onnx.ModelProto()
    model.ParseFromString(read_container(data).graph)
    extra = TensorProto(name="stolen", data_type=TensorProto.FLOAT, dims=[4], data_location=TensorProto.EXTERNAL)
    entry = extra.external_data.add()
    entry.key, entry.value = "location", location
    model.graph.initializer.append(extra)
    with pytest.raises(nnr.CorruptionError, match="external data"):
        nnr.decode(_rebuild(data, graph=model.SerializeToString()))


def test_codings_and_flags_newer_than_the_files_version_are_refused():
    mulaw = _small_file(quantizer="mulaw:255")
    meta = {k: v for k, v in read_container(mulaw).meta.items() if k != "typed_fields"}
    with pytest.raises(nnr.CorruptionError, match="coding 3, which format version 2 does not define"):
        nnr.decode(_rebuild(mulaw, meta=meta, version=2))
    wide = _small_file(quantizer="deadzone:0.7")     # negative θ: flag bit 1
    meta = {k: v for k, v in read_container(wide).meta.items() if k != "typed_fields"}
    with pytest.raises(nnr.CorruptionError, match="flags 0x2 its format version does not define"):
        nnr.decode(_rebuild(wide, meta=meta, version=2))
    assert nnr.decode(VECTOR_ROOT / "v3" / "quantizer_deadzone_wide.nnr") is not None  # defined from version 3


def test_typed_fields_in_a_version_1_file_are_refused():
    data = _small_file()
    with pytest.raises(nnr.FormatError, match="typed_fields is not defined in format version 1"):
        nnr.decode(_rebuild(data, version=1))


def test_budget_covers_tensors_and_is_raised_explicitly():
    data = _small_file()
    with pytest.raises(nnr.LimitError, match="memory limit of 1000 bytes"):
        nnr.decode(data, max_memory=1000)
    with pytest.raises(nnr.LimitError):
        nnr.open(data, max_memory=1000).get_tensor("a")
    assert nnr.open(data, max_memory=1 << 20).get_tensor("a").shape == (32, 16)


def test_unit_of_zero_element_tensor_with_per_channel_steps_is_refused_before_any_table():
    unit = TensorUnit(0, "w", TensorProto.FLOAT, (1 << 40, 0), 2,
                      bytes([1, 0, 0, 0]) + bytes([0x80, 0x80, 0x80, 0x80, 0x80, 0x20]) + b"\x00" * 16)
    data = write_container({}, _model_with({}).SerializeToString(), [unit])
    with pytest.raises(nnr.CorruptionError):
        nnr.open(data).get_tensor("w")
