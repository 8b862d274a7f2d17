"""The command-line tools: help, happy paths, and clear errors without partial files."""

import json
import os

import onnx
import pytest

from conformance.toy_models import mlp
from formats.container import FORMAT_VERSION
from nnr.cli import decode_main, encode_main, info_main


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


@pytest.mark.parametrize("damage, code, message", [
    (lambda d: d[: len(d) // 2], 3, "truncated"),
    (lambda d: d[:40] + bytes([d[40] ^ 0x10]) + d[41:], 3, "CRC32"),
    (lambda d: d[:4] + b"\x07\x00" + d[6:], 3, "format version 7"),
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
