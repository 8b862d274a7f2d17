"""The README's examples run as written: the Python block, every line of the command-line
block (on the repo's MNIST CNN in place of model.onnx), and the demo of its first line. Its
install lines are run by .ci/check_install against the built wheel; `bash .ci/run` is CI."""

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

from conformance.toy_models import mlp
from nnr.cli import main
from tests.conftest import ROOT

README = (ROOT / "README.md").read_text()
BLOCKS = re.findall(r"```(\w*)\n(.*?)```", README, re.S)


def test_readme_python_example_runs(tmp_path, monkeypatch):
    block = next(body for lang, body in BLOCKS if lang == "python")
    monkeypatch.chdir(tmp_path)
    onnx.save(mlp(), tmp_path / "model.onnx")
    (tmp_path / "model.nnr").write_bytes(__import__("nnr").encode(tmp_path / "model.onnx"))
    scope: dict = {}
    exec(compile(block, "README.md", "exec"), scope)
    assert isinstance(scope["model"], onnx.ModelProto)
    assert scope["f"].keys() == ["fc1.weight", "fc1.bias", "fc2.weight"]
    assert scope["session"].get_inputs()[0].name == "x"


def _command_lines() -> list[str]:
    block = next(body for lang, body in BLOCKS if not lang and body.lstrip().startswith("nnr encode"))
    return [line for line in block.splitlines() if line.strip()]


def test_readme_command_block_is_what_the_tests_run():
    lines = _command_lines()
    assert len(lines) >= 8 and all(shlex.split(line)[0] == "nnr" for line in lines)


@pytest.mark.parametrize("line", _command_lines(), ids=lambda line: " ".join(shlex.split(line)[1:3]))
def test_readme_command_runs(line, tmp_path):
    """Each line through bash, as a user would type it, with this environment's nnr."""
    shutil.copy(ROOT / "conformance" / "models" / "mnist_cnn.onnx", tmp_path / "model.onnx")
    images = np.random.default_rng(0).random((48, 1, 28, 28), dtype=np.float32)
    np.savez(tmp_path / "inputs.npz", image=images)
    if shlex.split(line)[1] in ("decode", "info"):
        assert main(["encode", str(tmp_path / "model.onnx"), "-o", str(tmp_path / "model.nnr"), "-q"]) == 0
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    done = subprocess.run(["bash", "-c", line], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr


def test_readme_install_lines_are_the_ones_ci_checks():
    install = next(body for lang, body in BLOCKS if "pip install nnr" in body)
    assert "pip install 'nnr[encode]'" in install
    check = (ROOT / ".ci" / "check_install").read_text()
    assert 'pip" install --quiet "$wheel"' in check and 'pip" install --quiet "$wheel[encode]"' in check


def test_demo_runs(capsys):
    """The README's first line: nnr demo on the committed EfficientNet-Lite0 and photos (with
    --json, whose numbers are what the plain command renders as text)."""
    pytest.importorskip("PIL")
    from nnr.demo import render

    assert main(["demo", "--json"]) == 0
    captured = capsys.readouterr()
    doc = json.loads(captured.out)
    assert "lossy" in captured.err and "scoring both models" in captured.err   # progress and summaries on stderr
    assert doc["nnr_bytes"] < doc["original_bytes"] and doc["agreement"] >= 0.99
    text = render(doc)
    assert ".nnr size" in text and f"top-1 agreement  {doc['agreement']:.1%}" in text
