"""Paths a model or a command line can point at: external data must stay inside the model's
folder, a missing or short data file is named, and no tool writes its output over its input."""

import os
import shutil

import onnx
import pytest

import nnr
from conformance.toy_models import mlp
from nnr.cli import decode_main, encode_main


@pytest.fixture()
def external_model(tmp_path):
    """model/m.onnx with every tensor in model/m.data, and outside/secret.bin: a copy of that
    data, so a location that reaches it would encode without complaint."""
    folder = tmp_path / "model"
    folder.mkdir()
    onnx.save_model(mlp(), folder / "m.onnx", save_as_external_data=True, all_tensors_to_one_file=True,
                    location="m.data", size_threshold=0)
    (tmp_path / "outside").mkdir()
    shutil.copy(folder / "m.data", tmp_path / "outside" / "secret.bin")
    return folder / "m.onnx"


def _relocate(path, location: str) -> str:
    """Point the first tensor's external data at ``location``; returns that tensor's name."""
    model = onnx.load(str(path), load_external_data=False)
    t = model.graph.initializer[0]
    for entry in t.external_data:
        if entry.key == "location":
            entry.value = location
    path.write_bytes(model.SerializeToString())
    return t.name


def _refused(path, capsys, *words: str) -> None:
    with pytest.raises(nnr.InputError) as exc:
        nnr.encode(path)
    assert all(w in str(exc.value) for w in words), str(exc.value)
    out = path.parent / "out.nnr"
    assert encode_main([str(path), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("\n") == 1 and all(w in err for w in words)
    assert not out.exists()
    assert [p.name for p in path.parent.iterdir() if p.name.endswith(".tmp")] == []


def test_external_data_inside_the_folder_is_read(external_model):
    assert nnr.decode(nnr.encode(external_model)).graph.initializer[0].HasField("raw_data")


@pytest.mark.parametrize("location", [
    "ABSOLUTE", "../outside/secret.bin", "sub/../../outside/secret.bin", "", "m.data\0x",
])
def test_external_data_outside_the_folder_is_refused(external_model, capsys, location):
    if location == "ABSOLUTE":
        location = str(external_model.parent.parent / "outside" / "secret.bin")
    (external_model.parent / "sub").mkdir()
    name = _relocate(external_model, location)
    _refused(external_model, capsys, name, "is not a relative path inside the model's folder")


def test_external_data_through_a_symlink_out_of_the_folder_is_refused(external_model, capsys):
    (external_model.parent / "link.data").symlink_to(external_model.parent.parent / "outside" / "secret.bin")
    name = _relocate(external_model, "link.data")
    _refused(external_model, capsys, name, "'link.data'", "leads outside the model's folder")


def test_external_data_symlink_inside_the_folder_is_followed(external_model):
    (external_model.parent / "link.data").symlink_to("m.data")
    _relocate(external_model, "link.data")
    assert nnr.decode(nnr.encode(external_model)).graph.initializer[0].HasField("raw_data")


def test_missing_external_data_file_is_named(external_model, capsys):
    os.unlink(external_model.parent / "m.data")
    _refused(external_model, capsys, "m.data", "No such file")


def test_external_data_file_short_by_one_byte_is_named(external_model, capsys):
    data = external_model.parent / "m.data"
    data.write_bytes(data.read_bytes()[:-1])
    _refused(external_model, capsys, "m.data", "too short")


@pytest.mark.parametrize("key, value, message", [
    ("offset", "twelve", "not a number"), ("offset", "-4", "negative"), ("length", "3", "length 3 !="),
    ("offset", str(1 << 70), "too short"),
])
def test_bad_external_offset_or_length_is_refused(external_model, capsys, key, value, message):
    model = onnx.load(str(external_model), load_external_data=False)
    t = model.graph.initializer[0]
    for entry in t.external_data:
        if entry.key == key:
            break
    else:
        entry = t.external_data.add()
        entry.key = key
    entry.value = value
    external_model.write_bytes(model.SerializeToString())
    _refused(external_model, capsys, t.name, message)


def _refuses_own_input(main, src, argv, capsys) -> None:
    before = src.read_bytes()
    assert main([str(src), *argv]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("\n") == 1 and "is the input file" in err
    assert src.read_bytes() == before


def test_no_tool_writes_over_its_input(tmp_path, capsys, monkeypatch):
    model = tmp_path / "m.onnx"
    onnx.save(mlp(), model)
    coded = tmp_path / "m.nnr"
    assert encode_main([str(model), "-o", str(coded), "-q"]) == 0
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sub").mkdir()
    (tmp_path / "alias.nnr").symlink_to(coded)
    _refuses_own_input(encode_main, model, ["-o", str(model)], capsys)
    _refuses_own_input(encode_main, model, ["-o", "sub/../m.onnx"], capsys)
    for out in (str(coded), "./m.nnr", "alias.nnr"):
        _refuses_own_input(decode_main, coded, ["-o", out], capsys)
        _refuses_own_input(decode_main, coded, ["-o", out, "--check"], capsys)
    os.link(coded, tmp_path / "hard.nnr")
    _refuses_own_input(decode_main, coded, ["-o", "hard.nnr"], capsys)


def test_decode_refuses_writing_external_data_over_its_input(tmp_path, capsys):
    model = tmp_path / "m.onnx"
    onnx.save(mlp(), model)
    coded = tmp_path / "d.onnx.data"
    assert encode_main([str(model), "-o", str(coded), "-q"]) == 0
    _refuses_own_input(decode_main, coded, ["-o", str(tmp_path / "d.onnx"), "--external-data"], capsys)
    assert decode_main([str(coded), "-o", str(tmp_path / "d.onnx"), "--no-external-data", "-q"]) == 0
