"""The command-line tools: help, happy paths, and clear errors without partial files."""

import json
import os

import onnx
import pytest

import nnr

from conformance.toy_models import mlp
from nnr.formats.container import FORMAT_VERSION
from nnr.cli import decode_main, encode_main, info_main
from tests.conftest import exit_code


@pytest.fixture()
def model_path(tmp_path):
    p = tmp_path / "m.onnx"
    onnx.save(mlp(), p)
    return p


def _no_traceback(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err


def test_encode_decode_info_round_trip(tmp_path, model_path, capsys):
    out = tmp_path / "m.nnr"
    assert encode_main([str(model_path), "-o", str(out)]) == 0
    mask = os.umask(0)
    os.umask(mask)
    assert out.stat().st_mode & 0o777 == 0o666 & ~mask  # not mkstemp's private 0600
    assert decode_main([str(out), "-o", str(tmp_path / "d.onnx"), "--check"]) == 0
    onnx.checker.check_model(str(tmp_path / "d.onnx"))
    capsys.readouterr()
    assert info_main([str(out), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["format_version"] == FORMAT_VERSION and len(info["tensors"]) == 3
    assert {t["mode"] for t in info["tensors"]} == {"lossy"}
    assert all(t["snr_db"] > 20 for t in info["tensors"])
    assert info_main([str(out)]) == 0
    assert "fc1.weight" in capsys.readouterr().out


def test_lossless_and_qp_flags(tmp_path, model_path):
    assert encode_main([str(model_path), "-o", str(tmp_path / "a.nnr"), "--lossless", "-q"]) == 0
    assert encode_main([str(model_path), "-o", str(tmp_path / "b.nnr"), "--qp", "-16", "-q"]) == 0
    assert encode_main([str(model_path), "-o", str(tmp_path / "c.nnr"), "--qp", "-40", "-q"]) == 0
    sizes = [os.path.getsize(tmp_path / n) for n in ("a.nnr", "c.nnr", "b.nnr")]
    assert sizes == sorted(sizes, reverse=True)


@pytest.mark.parametrize("args, message", [
    (["missing.onnx"], "no such file"),
    (["--qp", "nan"], "qp must be"),
])
def test_encode_errors(tmp_path, model_path, capsys, args, message):
    out = tmp_path / "x.nnr"
    argv = [str(tmp_path / args[0]) if args[0].endswith(".onnx") else str(model_path), "-o", str(out)]
    argv += [a for a in args if not a.endswith(".onnx")]
    assert encode_main(argv) != 0
    assert message in _no_traceback(capsys)
    assert not out.exists()


def test_encode_refuses_non_onnx(tmp_path, capsys):
    bad = tmp_path / "bad.onnx"
    bad.write_text("this is not a model\n" * 20)
    assert encode_main([str(bad), "-o", str(tmp_path / "x.nnr")]) == 2
    assert "not an ONNX model" in _no_traceback(capsys)
    assert not (tmp_path / "x.nnr").exists()


def test_unwritable_output_is_a_clear_error(tmp_path, model_path, capsys):
    assert encode_main([str(model_path), "-o", str(tmp_path / "no" / "dir" / "x.nnr")]) == 5
    assert "does not exist" in _no_traceback(capsys)
    assert encode_main([str(model_path), "-o", str(tmp_path)]) == 5
    assert "is a directory" in _no_traceback(capsys)


def _with_version(data: bytes, version: int) -> bytes:
    """A well-formed header of another version (its checksum recomputed), as a newer nnr writes."""
    import struct
    import zlib
    head = data[:4] + struct.pack("<H", version) + data[6:12]
    return head + struct.pack("<I", zlib.crc32(head)) + data[16:]


@pytest.mark.parametrize("damage, code, message", [
    (lambda d: d[: len(d) // 2], 3, "truncated"),
    (lambda d: d[:40] + bytes([d[40] ^ 0x10]) + d[41:], 3, "CRC32"),
    (lambda d: _with_version(d, FORMAT_VERSION + 1), 3, f"format version {FORMAT_VERSION + 1}"),
    (lambda d: d[:4] + bytes([FORMAT_VERSION + 1, 0]) + d[6:], 3, "header fails its CRC32"),
    (lambda d: b"GIF89a" + d, 3, "not an .nnr file"),
])
def test_decode_refuses_damaged_files(tmp_path, model_path, capsys, damage, code, message):
    good = tmp_path / "m.nnr"
    assert encode_main([str(model_path), "-o", str(good), "-q"]) == 0
    bad = tmp_path / "bad.nnr"
    bad.write_bytes(damage(good.read_bytes()))
    out = tmp_path / "out.onnx"
    assert decode_main([str(bad), "-o", str(out)]) == code
    assert message in _no_traceback(capsys)
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_decode_missing_input(tmp_path, capsys):
    assert decode_main([str(tmp_path / "none.nnr"), "-o", str(tmp_path / "o.onnx")]) == 2
    assert "no such file" in _no_traceback(capsys)


def test_help_explains(capsys):
    with pytest.raises(SystemExit) as e:
        encode_main(["--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    assert "--qp" in text and "--lossless" in text and "doubles" in text


def _encoded(tmp_path, model_path, *flags) -> "os.PathLike":
    out = tmp_path / "m.nnr"
    assert encode_main([str(model_path), "-o", str(out), "-q", *flags]) == 0
    return out


def _leftovers(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


@pytest.mark.parametrize("flag, message", [
    ("--no-external-data", "too large for a single ONNX file (> 2 GB); decode with --external-data"),
    ("--external-data", "too large for ONNX (> 2 GB) even with its weights in external data"),
])
def test_decode_too_large_model_is_a_clear_error(tmp_path, model_path, capsys, monkeypatch, flag, message):
    """protobuf's 2 GB limit (upb raises EncodeError), simulated: a real one needs ~4 GB and 20 s."""
    from google.protobuf.message import EncodeError

    src = _encoded(tmp_path, model_path)

    def too_large(self):
        raise EncodeError("Failed to serialize proto")

    monkeypatch.setattr(onnx.ModelProto, "SerializeToString", too_large)
    out = tmp_path / "big.onnx"
    assert decode_main([str(src), "-o", str(out), flag]) == 2
    err = _no_traceback(capsys)
    assert message in err and err.count("\n") == 1
    assert not out.exists() and not (tmp_path / "big.onnx.data").exists()
    assert _leftovers(tmp_path) == []


def test_info_json_of_lossless_file_is_strict_json(tmp_path, model_path, capsys):
    src = _encoded(tmp_path, model_path, "--lossless")
    capsys.readouterr()
    assert info_main([str(src), "--json"]) == 0

    def refuse(token):
        raise AssertionError(f"{token} is not JSON")

    info = json.loads(capsys.readouterr().out, parse_constant=refuse)
    rows = [t for t in info["tensors"] if t["mode"] == "lossless"]
    assert rows and all(t["snr_db"] is None for t in rows)


def _unchecked_model() -> onnx.ModelProto:
    """A model nnr codes but onnx.checker refuses (an operator that does not exist)."""
    model = mlp()
    model.graph.node[1].op_type = "NoSuchOp"
    return model


@pytest.mark.parametrize("flag", ["--no-external-data", "--external-data"])
def test_decode_check_failure_writes_nothing(tmp_path, capsys, flag):
    onnx_path = tmp_path / "bad.onnx"
    onnx_path.write_bytes(_unchecked_model().SerializeToString())
    src = _encoded(tmp_path, onnx_path)
    out = tmp_path / "d.onnx"
    out.write_bytes(b"previous")
    assert decode_main([str(src), "-o", str(out), "--check", "-f", flag]) == 3
    err = _no_traceback(capsys)
    assert "fails onnx.checker" in err and "NoSuchOp" in err and err.count("\n") == 1
    assert out.read_bytes() == b"previous" and not (tmp_path / "d.onnx.data").exists()
    assert _leftovers(tmp_path) == []
    assert decode_main([str(src), "-o", str(out), flag]) == 2  # an existing output needs -f
    assert decode_main([str(src), "-o", str(out), "-f", flag]) == 0  # without --check it is written


@pytest.mark.parametrize("bad", [False, True])
def test_decode_check_of_model_too_large_for_memory_checks_by_path(tmp_path, model_path, capsys, monkeypatch, bad):
    """Above 2 GB onnx.checker can only check a path: the model is staged beside the output."""
    if bad:
        model_path.write_bytes(_unchecked_model().SerializeToString())
    src = _encoded(tmp_path, model_path)
    check = onnx.checker.check_model
    checked = []

    def by_path_only(model, *args, **kwargs):
        if isinstance(model, onnx.ModelProto):
            raise ValueError("This protobuf of onnx model is too large (>2GiB)")
        checked.append(model)
        return check(model, *args, **kwargs)

    monkeypatch.setattr(onnx.checker, "check_model", by_path_only)
    out = tmp_path / "d.onnx"
    assert decode_main([str(src), "-o", str(out), "--check", "--external-data", "-q"]) == (3 if bad else 0)
    assert len(checked) == 1 and _leftovers(tmp_path) == []
    _no_traceback(capsys)
    if bad:
        assert not out.exists() and not (tmp_path / "d.onnx.data").exists()
    else:
        monkeypatch.undo()
        onnx.checker.check_model(str(out))
        first = onnx.load(str(out), load_external_data=False).graph.initializer[0]
        assert first.data_location == onnx.TensorProto.EXTERNAL


HOSTILE = ["\x1b]0;pwned\x07", "\x1b[2J\x9b31m", "two\nlines\ttab\x7f"]


@pytest.fixture()
def hostile_nnr(tmp_path, model_path):
    """An .nnr whose tensor names, producer and options carry terminal control sequences."""
    import onnx

    from nnr.formats.container import read_container, read_tensor_unit, write_container
    from nnr.formats.onnx_io import tensor_slots

    data = _encoded(tmp_path, model_path).read_bytes()
    c = read_container(data)
    units = [read_tensor_unit(data, e) for e in c.index]
    graph = onnx.ModelProto()
    graph.ParseFromString(c.graph)
    slots = tensor_slots(graph)
    renamed = dict(zip((slots[u.slot].tensor.name for u in units), HOSTILE))
    for node in graph.graph.node:  # tensor names live in the graph; keep the nodes' references
        node.input[:] = [renamed.get(i, i) for i in node.input]
    for u, name in zip(units, HOSTILE):
        slots[u.slot].tensor.name = name
    meta = {**c.meta, "producer": "nnr \x1b]0;pwned\x07\ud800", "options": {"\x9b31m": "\x1b[2J\x7f"}}
    path = tmp_path / "hostile.nnr"
    path.write_bytes(write_container(meta, graph.SerializeToString(), units))
    return path


def test_info_escapes_control_characters(hostile_nnr, capsys):
    capsys.readouterr()
    assert info_main([str(hostile_nnr)]) == 0
    out = capsys.readouterr().out
    assert not any(ch in out for ch in "\x1b\x07\x9b\x7f\t\ud800")
    assert "\\x1b]0;pwned\\x07" in out and "\\x1b[2J" in out and "\\x9b31m" in out and "\\ud800" in out
    assert "two\\x0alines\\x09tab\\x7f" in out


def test_info_json_is_ascii_and_exact(hostile_nnr, capsys):
    capsys.readouterr()
    assert info_main([str(hostile_nnr), "--json"]) == 0
    out = capsys.readouterr().out
    assert out.isascii() and "\x7f" not in out
    info = json.loads(out)
    assert [t["name"] for t in info["tensors"]] == HOSTILE
    assert info["metadata"]["options"] == {"\x9b31m": "\x1b[2J\x7f"}


@pytest.mark.parametrize("as_json", [False, True])
def test_info_survives_deeply_nested_metadata(tmp_path, model_path, capsys, as_json):
    from nnr.formats.container import read_container, read_tensor_unit, write_container

    data = _encoded(tmp_path, model_path).read_bytes()
    c = read_container(data)
    units = [read_tensor_unit(data, e) for e in c.index]
    deep = tmp_path / "deep.nnr"
    deep.write_bytes(write_container({**c.meta, "options": json.loads("[" * 900 + "]" * 900)}, c.graph, units))
    code = info_main([str(deep), *(["--json"] if as_json else [])])
    err = _no_traceback(capsys)
    assert code == 3 and err.count("\n") == 1 and "nests deeper than 64" in err


def test_error_line_escapes_control_characters(tmp_path, capsys):
    name = tmp_path / "x\x1b]0;pwned\x07\x9b31m\n.nnr"
    assert decode_main([str(name), "-o", str(tmp_path / "o.onnx")]) == 2
    err = _no_traceback(capsys)
    assert err.count("\n") == 1 and "no such file" in err
    assert not any(ch in err[:-1] for ch in "\x1b\x07\x9b\n")


@pytest.mark.parametrize("text, escaped", [
    ("plain näme", "plain näme"), ("\x00\x1f", "\\x00\\x1f"), ("\x7f\x80\x9f\xa0", "\\x7f\\x80\\x9f\xa0"),
    ("a\nb", "a\\x0ab"), ("\ud800", "\\ud800"),
])
def test_printable(text, escaped):
    from nnr.console import printable as _printable

    assert _printable(text) == escaped


@pytest.mark.parametrize("main", [decode_main, info_main])
@pytest.mark.parametrize("value", ["lots", "0", "-1MB", "4GiBx", "1.5XB"])
def test_max_memory_bad_value_is_a_usage_error(tmp_path, capsys, main, value):

    argv = [str(tmp_path / "m.nnr"), f"--max-memory={value}"] + (["-o", str(tmp_path / "o.onnx")]
                                                                 if main is decode_main else [])
    assert exit_code(main, argv) == 2
    err = _no_traceback(capsys)
    assert "--max-memory" in err and "cannot read size" in err


@pytest.mark.parametrize("value, expected", [
    ("512MB", 512_000_000), ("2GiB", 2 << 30), ("4G", 4 << 30), ("9000000", 9_000_000), ("1.5MB", 1_500_000),
    (None, None),
])
def test_max_memory_is_passed_to_the_decoder(tmp_path, model_path, monkeypatch, value, expected):
    import nnr.decoder

    src = _encoded(tmp_path, model_path)
    seen = []

    def spy(fn):
        def wrapped(*args, max_memory=None, **kwargs):
            seen.append(max_memory)
            return fn(*args, max_memory=max_memory, **kwargs)
        return wrapped

    monkeypatch.setattr(nnr.decoder, "open", spy(nnr.decoder.open))
    monkeypatch.setattr(nnr.decoder, "decode_to_file", spy(nnr.decoder.decode_to_file))
    flag = [] if value is None else ["--max-memory", value]
    out = str(tmp_path / "o.onnx")
    assert decode_main([str(src), "-o", out, "-q", *flag]) == 0
    assert decode_main([str(src), "-o", out, "-q", "--check", "-f", *flag]) == 0
    assert info_main([str(src), "--json", *flag]) == 0
    assert seen == [expected] * 3


def test_max_memory_limit_is_enforced(tmp_path, model_path, capsys):
    src = _encoded(tmp_path, model_path)
    out = tmp_path / "o.onnx"
    for main, argv in ((decode_main, ["-o", str(out), "--max-memory", "1K"]),
                       (decode_main, ["-o", str(out), "--max-memory", "1K", "--check"]),
                       (info_main, ["--max-memory", "16"])):  # info decodes no weights, only the graph
        assert main([str(src), *argv]) == 3
        assert "--max-memory" in _no_traceback(capsys)
    assert not out.exists()
    assert info_main([str(src), "--max-memory", "1K"]) == 0


def test_encode_says_what_memory_a_file_beyond_the_default_limit_needs(tmp_path, capsys, monkeypatch):
    """A file compressed further than the default decoding limit (max(64 MiB, 1024 x its size))
    assumes decodes only with a raised --max-memory: nnr-encode says how much, and only then."""
    import re

    monkeypatch.setattr("nnr.decoder.DEFAULT_MEMORY_FLOOR", 0)   # the same rule, scaled to a size a test affords
    monkeypatch.setattr("nnr.decoder.MEMORY_PER_FILE_BYTE", 100)
    src = tmp_path / "wide.onnx"
    onnx.save(mlp(hidden=2000), src)
    coded, out = tmp_path / "w.nnr", tmp_path / "o.onnx"
    assert encode_main([str(src), "-o", str(coded), "--data-free", "--prune", "magnitude:0.99", "--json"]) == 0
    captured = capsys.readouterr()
    needed = json.loads(captured.out)["decode_memory"]
    hint = re.search(r"--max-memory (\d+)MB", captured.err)
    assert hint and int(hint.group(1)) * 10**6 >= needed
    assert decode_main([str(coded), "-o", str(out), "-q"]) == 3
    assert decode_main([str(coded), "-o", str(out), "-q", "--max-memory", str(needed - 1)]) == 3
    assert decode_main([str(coded), "-o", str(out), "-q", "--max-memory", f"{hint.group(1)}MB"]) == 0
    capsys.readouterr()
    assert encode_main([str(src), "-o", str(tmp_path / "quiet.nnr"), "--data-free", "--prune", "magnitude:0.99",
                        "-q"]) == 0
    assert capsys.readouterr().err.startswith("warning: decode this file with --max-memory")  # -q keeps it
    assert encode_main([str(src), "-o", str(tmp_path / "fine.nnr"), "--data-free"]) == 0
    assert "--max-memory" not in _no_traceback(capsys)


def test_nnr_command_dispatches_to_each_tool(tmp_path, model_path, capsys):
    from nnr.cli import COMMANDS, main

    assert main(["--help"]) == 0
    usage = capsys.readouterr().out
    assert all(f"  {c} " in usage for c in COMMANDS)
    assert main([]) == 2 and "usage: nnr <command>" in capsys.readouterr().err
    assert main(["frobnicate"]) == 2 and "unknown command 'frobnicate'" in _no_traceback(capsys)
    for command in COMMANDS:
        with pytest.raises(SystemExit) as done:
            main([command, "--version"])
        assert done.value.code == 0 and capsys.readouterr().out.strip() == f"nnr {nnr.__version__}"
    out = tmp_path / "m.nnr"
    assert main(["encode", str(model_path), "-o", str(out)]) == 0
    assert "lossy" in capsys.readouterr().err
    assert main(["encode", str(model_path), "-o", str(out)]) == 2
    err = _no_traceback(capsys)
    assert "nnr encode: error:" in err and "use -f" in err
    assert main(["encode", str(model_path), "-o", str(out), "-f", "--lossless"]) == 0
    assert "lossless" in capsys.readouterr().err
    assert main(["decode", str(out), "-o", str(tmp_path / "d.onnx"), "-q"]) == 0
    assert main(["info", str(out), "--json"]) == 0 and json.loads(capsys.readouterr().out)["format_version"] >= 5


def test_existing_output_needs_force(tmp_path, model_path, capsys):
    out = tmp_path / "m.nnr"
    out.write_bytes(b"keep me")
    assert encode_main([str(model_path), "-o", str(out)]) == 2
    err = _no_traceback(capsys)
    assert "already exists; use -f" in err and out.read_bytes() == b"keep me"
    assert encode_main([str(model_path), "-o", str(out), "-f", "-q"]) == 0 and out.read_bytes()[:4] == b"\x89NNR"
    decoded = tmp_path / "d.onnx"
    decoded.write_bytes(b"keep me too")
    assert decode_main([str(out), "-o", str(decoded)]) == 2 and decoded.read_bytes() == b"keep me too"
    assert decode_main([str(out), "-o", str(decoded), "-f", "-q"]) == 0


def test_encoding_commands_name_the_extra_a_decode_only_install_lacks(monkeypatch, tmp_path, model_path, capsys):
    import importlib.util

    from nnr.cli import main

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "numba" else real(name, *a))
    assert main(["encode", str(model_path), "-o", str(tmp_path / "m.nnr")]) == 2
    err = _no_traceback(capsys)
    assert err.count("\n") == 1 and "pip install 'nnr[encode]'" in err and not (tmp_path / "m.nnr").exists()


def test_dash_is_standard_input_and_output(tmp_path, model_path):
    """nnr encode - -o - | nnr decode - -o - | … : a pipe of bytes, no files."""
    import subprocess
    import sys

    run = [sys.executable, "-m", "nnr.cli"]
    packed = subprocess.run(run + ["encode", "-", "-o", "-", "-q"], input=model_path.read_bytes(),
                            capture_output=True, check=True).stdout
    assert packed[:4] == b"\x89NNR"
    info = subprocess.run(run + ["info", "-", "--json"], input=packed, capture_output=True, check=True).stdout
    assert json.loads(info)["file"] == "<stdin>" and json.loads(info)["file_bytes"] == len(packed)
    decoded = subprocess.run(run + ["decode", "-", "-o", "-", "--check"], input=packed, capture_output=True,
                             check=True)
    assert onnx.load_from_string(decoded.stdout).graph.node and b"<stdin> -> -" in decoded.stderr
    refused = subprocess.run(run + ["decode", "-", "-o", "-", "--external-data"], input=packed, capture_output=True)
    assert refused.returncode == 2 and b"needs an output file" in refused.stderr and not refused.stdout


@pytest.mark.parametrize("command", ["encode", "decode", "info", "analyze", "search", "conformance", "demo"])
def test_every_command_has_the_same_common_flags(command, capsys):
    from nnr.cli import main

    with pytest.raises(SystemExit) as done:
        main([command, "--help"])
    assert done.value.code == 0
    usage = " ".join(capsys.readouterr().out.split())
    assert "--json print" in usage and "-q, --quiet print no progress" in usage and "--version" in usage


def test_json_is_the_result_on_stdout_and_quiet_silences_stderr(tmp_path, model_path, capsys):
    """--json: one JSON document on stdout; -q: nothing on stderr; both the same for every command."""
    from nnr.cli import main

    out, decoded = tmp_path / "m.nnr", tmp_path / "d.onnx"
    assert main(["encode", str(model_path), "-o", str(out), "--json"]) == 0
    captured = capsys.readouterr()
    doc = json.loads(captured.out)
    assert doc["output_bytes"] == out.stat().st_size and doc["input_bytes"] == model_path.stat().st_size
    assert doc["lossy"] is True and doc["options"]["qp"] == nnr.open(out).metadata()["options"]["qp"]
    assert doc["probe"]["tensors"] > 0 and doc["probe"]["expected_snr_db"] > 20
    assert "probe:" in captured.err and "lossy" in captured.err          # stderr keeps the notices
    assert main(["encode", str(model_path), "-o", str(out), "-f", "--lossless", "--json", "-q"]) == 0
    captured = capsys.readouterr()
    assert captured.err == "" and json.loads(captured.out)["lossy"] is False
    assert json.loads(captured.out)["probe"] is None
    assert main(["decode", str(out), "-o", str(decoded), "--json", "-q"]) == 0
    captured = capsys.readouterr()
    doc = json.loads(captured.out)
    assert captured.err == "" and doc["files"] == {str(decoded): decoded.stat().st_size} and doc["tensors"] == 3
    assert main(["info", str(out), "--json", "-q"]) == 0
    captured = capsys.readouterr()
    assert captured.err == "" and json.loads(captured.out)["coded_tensors"] == 3
    for command in (["encode", str(model_path)], ["decode", str(out)]):
        assert exit_code(main, [*command, "-o", "-", "--json"]) == 2
        captured = capsys.readouterr()
        assert "both write to standard output" in captured.err and captured.out == ""


@pytest.mark.parametrize("command", ["encode", "decode"])
def test_a_full_disk_is_a_clear_error_and_leaves_nothing(tmp_path, model_path, capsys, monkeypatch, command):
    """ENOSPC in the middle of writing (faked): one line naming the output, exit 5, and no
    partial output, temporary spill or .data file left behind."""
    import errno

    from nnr.formats import container, onnx_io

    packed = tmp_path / "in.nnr"
    assert encode_main([str(model_path), "-o", str(packed), "-q", "--lossless"]) == 0
    out_dir = tmp_path / "out"
    out_dir.mkdir()

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    if command == "encode":
        monkeypatch.setattr(container.ContainerWriter, "add", full)
        argv = ["encode", str(model_path), "-o", str(out_dir / "m.nnr"), "--data-free"]
    else:
        monkeypatch.setattr(onnx_io.ExternalData, "place", full)
        argv = ["decode", str(packed), "-o", str(out_dir / "m.onnx"), "--external-data"]
    from nnr.cli import main

    assert main(argv) == 5
    err = _no_traceback(capsys)
    assert "No space left on device" in err and str(out_dir / "m.") in err and err.count("\n") == 1
    assert list(out_dir.iterdir()) == []


def test_the_summary_counts_external_data_in_the_input_size(tmp_path, capsys):
    from nnr.cli import main

    src = tmp_path / "ext.onnx"
    onnx.save(mlp(), src, save_as_external_data=True, all_tensors_to_one_file=True, location="ext.bin",
              size_threshold=0)
    assert main(["encode", str(src), "-o", str(tmp_path / "m.nnr"), "--json", "-q"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["input_bytes"] == src.stat().st_size + (tmp_path / "ext.bin").stat().st_size


def test_decode_threads_flag(tmp_path, model_path, capsys):
    enc = tmp_path / "m.nnr"
    assert encode_main([str(model_path), "-o", str(enc), "--data-free", "-q"]) == 0
    outs = [tmp_path / f"d{n}.onnx" for n in (1, 2)]
    for n, out in zip((1, 2), outs):
        assert decode_main([str(enc), "-o", str(out), "--threads", str(n), "-q"]) == 0
    assert outs[0].read_bytes() == outs[1].read_bytes()
    assert decode_main([str(enc), "-o", str(tmp_path / "x.onnx"), "--threads", "0"]) == 2
    assert "threads" in _no_traceback(capsys) and not (tmp_path / "x.onnx").exists()


def test_reconstruction_flag_reaches_the_file_and_options_replay_keeps_it(tmp_path, model_path):
    recorded = {}
    for rule in ("gain", "mse"):
        out = tmp_path / f"{rule}.nnr"
        assert encode_main([str(model_path), "-o", str(out), "--data-free", "--reconstruction", rule, "-q"]) == 0
        recorded[rule] = nnr.open(out).metadata()["options"]
    assert recorded["gain"]["reconstruction"] == "gain" and "reconstruction" not in recorded["mse"]
    replayed = tmp_path / "opts.json"
    replayed.write_text(json.dumps(recorded["gain"]))
    again = tmp_path / "again.nnr"
    assert encode_main([str(model_path), "-o", str(again), "--data-free", "--options", str(replayed), "-q"]) == 0
    assert again.read_bytes() == (tmp_path / "gain.nnr").read_bytes()
