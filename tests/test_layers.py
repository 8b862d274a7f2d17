"""The layer rules of the design, checked on every import statement (inside functions too):
codec/ (nnr.codec) knows nothing of ONNX or of the layers above it; formats/ (nnr.formats)
knows nothing of quantization and imports only the codec's byte streams and errors; and no
modules import each other in a cycle, not even through an import inside a function."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"nnr": "nnr", "codec": "nnr.codec", "formats": "nnr.formats", "conformance": "conformance"}
"""Source folder -> the package it installs as (conformance/ is the suite, from the checkout)."""


def _imports(path: Path) -> set[str]:
    """Absolute module names a file imports, relative imports resolved against its package."""
    package = PACKAGES.get(path.parent.name, "nnr")
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package.rsplit(".", node.level - 1)[0] if node.level else ""
            module = ".".join(filter(None, (base, node.module)))
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names if node.module is None)
    return found


def _modules(folder: str) -> list[Path]:
    return sorted((ROOT / folder).glob("*.py"))


@pytest.mark.parametrize("path", _modules("codec"), ids=lambda p: p.name)
def test_codec_imports_nothing_above_it_and_no_onnx(path):
    bad = {m for m in _imports(path)
           if (m.split(".")[0] == "nnr" and not m.startswith("nnr.codec")) or m.split(".")[0] == "onnx"}
    assert not bad, f"{path.name} imports {sorted(bad)}"


FORMATS_MAY_USE = ("nnr.codec.bytestream", "nnr.codec.errors", "nnr.formats")


@pytest.mark.parametrize("path", _modules("formats"), ids=lambda p: p.name)
def test_formats_imports_only_byte_streams_and_errors_below_it(path):
    bad = {m for m in _imports(path) if m.split(".")[0] == "nnr" and not m.startswith(FORMATS_MAY_USE)}
    assert not bad, f"{path.name} imports {sorted(bad)}"


def test_the_error_classes_are_a_leaf():
    assert _imports(ROOT / "codec" / "errors.py") <= {"__future__"}


def test_no_top_level_package_but_nnr_is_installed():
    import tomllib

    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert {p.split(".")[0] for p in config["packages"]} == {"nnr"}
    assert config["package-dir"] == {"nnr": "nnr", "nnr.codec": "codec", "nnr.formats": "formats"}



def _module_graph() -> dict[str, set[str]]:
    """Module -> the project modules it imports. ``nnr`` itself (the package's __init__, whose lazy
    attributes are the public API and which every module may read __version__ from) is left out."""
    files = {}
    for folder, package in PACKAGES.items():
        for path in sorted((ROOT / folder).glob("*.py")):
            files[package if path.stem == "__init__" else f"{package}.{path.stem}"] = path
    graph = {}
    for name, path in files.items():
        targets = set()
        for module in _imports(path):
            while module and module not in files:
                module = module.rpartition(".")[0]
            if module and module != name and module != "nnr":
                targets.add(module)
        graph[name] = targets
    graph.pop("nnr")
    return graph


def test_no_import_cycles():
    graph = _module_graph()
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycle = path[path.index(nxt):] + [nxt]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt)
        path.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)


def test_graph_queries_live_in_one_module():
    """Attribute lookups and constant tables are nnr.graph's; no other module defines its own."""
    import nnr.graph as g

    shared = {n for n, f in vars(g).items() if callable(f) and getattr(f, "__module__", "") == g.__name__}
    for folder in ("nnr", "conformance"):
        for path in _modules(folder):
            if path == ROOT / "nnr" / "graph.py":
                continue
            defined = {node.name for node in ast.walk(ast.parse(path.read_text())) if isinstance(node, ast.FunctionDef)}
            assert not defined & shared, f"{path.name} defines {sorted(defined & shared)}, which nnr.graph provides"
