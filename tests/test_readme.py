"""The README's Python example runs as written (on a small model in place of model.onnx)."""

import re

import onnx

from conformance.toy_models import mlp
from tests.conftest import ROOT


def test_readme_python_example_runs(tmp_path, monkeypatch):
    text = (ROOT / "README.md").read_text()
    block = re.search(r"```python\n(.*?)```", text, re.S).group(1)
    monkeypatch.chdir(tmp_path)
    onnx.save(mlp(), tmp_path / "model.onnx")
    (tmp_path / "model.nnr").write_bytes(__import__("nnr").encode(tmp_path / "model.onnx"))
    scope: dict = {}
    exec(compile(block, "README.md", "exec"), scope)
    assert isinstance(scope["model"], onnx.ModelProto)
    assert scope["f"].keys() == ["fc1.weight", "fc1.bias", "fc2.weight"]
    assert scope["session"].get_inputs()[0].name == "x"
