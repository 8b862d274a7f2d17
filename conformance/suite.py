"""Run the corpus at its operating points and check every size ceiling and fidelity floor.

One check = one model at one operating point: encode, decode, then verify that the
decoded model passes onnx.checker, keeps the graph exactly (everything but weight
values), is byte-identical for lossless points, fits under the size ceiling, and meets
every fidelity floor of the manifest on the task's real inputs.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Callable

import onnx
from onnx import ModelProto, TensorProto

import nnr
from nnr.formats.onnx_io import strip_tensor, tensor_slots

from .corpus import Entry, Limits, Manifest, load_model
from .tasks import TASKS

FLOAT_TYPES = {TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.BFLOAT16, TensorProto.DOUBLE,
               TensorProto.COMPLEX64, TensorProto.COMPLEX128}  # weights nnr codes (complex: version 4)


@dataclass
class Result:
    """One row of the report."""

    model: str
    point: str
    params: int                 # float weights coded in the bitstream
    original_bytes: int         # the ONNX file (with any external data)
    nnr_bytes: int
    ratio: float
    bits_per_weight: float
    primary: str                # the headline fidelity metric of the model's task
    metrics: dict[str, float]
    encode_s: float
    decode_s: float
    violations: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.violations

    def to_json(self) -> dict:
        return {**asdict(self), "passed": self.passed}


def skeleton(model: ModelProto) -> bytes:
    """The model serialised with every tensor's data stripped: all that must survive exactly."""
    m = ModelProto()
    m.CopyFrom(model)
    for s in tensor_slots(m):
        strip_tensor(s.tensor)
    return m.SerializeToString()


def weight_locations(model: ModelProto, min_elements: int = 16) -> set[str]:
    """Where the model keeps its float weights: initializers, Constant nodes, subgraphs, functions."""
    found = set()
    for s in tensor_slots(model):
        t = s.tensor
        if t.data_type not in FLOAT_TYPES or math.prod(t.dims) < min_elements:
            continue
        if s.path.startswith("function["):
            found.add("functions")
        elif s.path.count("/node[") > 1:
            found.add("subgraphs")
        elif ":Constant:" in s.path:
            found.add("Constant nodes")
        else:
            found.add("initializers")
    return found


class Corpus:
    """Loads each model once and caches the original model's outputs on its task's inputs."""

    def __init__(self, manifest: Manifest):
        self.manifest = manifest
        self._models: dict[str, tuple[ModelProto, bytes, int, object]] = {}
        self._reference: dict[str, object] = {}

    def model(self, name: str) -> tuple[ModelProto, bytes, int, object]:
        """(ModelProto, its serialisation, size in bytes, what to hand the encoder)."""
        if name not in self._models:
            model, path = load_model(name, self.manifest)
            blob = model.SerializeToString()
            size = path.stat().st_size if path else len(blob)
            self._models[name] = (model, blob, size, path or model)
        return self._models[name]

    def reference(self, name: str):
        if name not in self._reference:
            entry = self.manifest.models[name]
            self._reference[name] = TASKS[entry.task].infer(self.model(name)[0])
        return self._reference[name]


def check(corpus: Corpus, entry: Entry, point: str, options: dict | None = None,
          limits: Limits | None = None) -> Result:
    """Encode and decode one model at one operating point and check it against the manifest.

    ``options``/``limits`` default to the manifest's; a sweep passes its own options and no
    limits (only the structural checks apply then)."""
    if options is None:
        options, limits = corpus.manifest.points[point], entry.limits[point]
    task = TASKS[entry.task]
    model, blob, size, source = corpus.model(entry.name)

    t0 = time.perf_counter()
    probes = []
    data = nnr.encode(source, on_probe=probes.append, **options)
    t1 = time.perf_counter()
    decoded = nnr.decode(data)
    t2 = time.perf_counter()

    params = sum(u.numel for u in nnr.open(data).units() if u.dtype in FLOAT_TYPES)
    violations = []
    try:
        onnx.checker.check_model(decoded)
    except onnx.checker.ValidationError as exc:
        violations.append(f"decoded model fails onnx.checker: {str(exc).splitlines()[0]}")
    if skeleton(decoded) != skeleton(model):
        violations.append("graph, names or attributes changed")
    if options.get("lossless") and decoded.SerializeToString() != blob:
        violations.append("lossless decode is not byte-identical to the original")
    found = weight_locations(model)
    if found != set(entry.weights_in):
        violations.append(f"weights found in {sorted(found)}, manifest says {sorted(entry.weights_in)}")

    metrics = task.measure(corpus.reference(entry.name), task.infer(decoded))
    if probes and not probes[0].notice:
        metrics["expected_snr_db"] = probes[0].expected_snr_db
        if metrics["snr_db"] < probes[0].expected_snr_db - ESTIMATE_MARGIN_DB:
            violations.append(f"output SNR {metrics['snr_db']:.1f} dB on real inputs is more than "
                              f"{ESTIMATE_MARGIN_DB:g} dB below the probe's estimate "
                              f"{probes[0].expected_snr_db:.1f} dB")
    ratio = len(data) / size
    if limits is not None:
        violations += limit_violations(limits, ratio, metrics)
    return Result(entry.name, point, params, size, len(data), ratio, 8.0 * len(data) / max(params, 1),
                  task.primary, metrics, t1 - t0, t2 - t1, violations)


ESTIMATE_MARGIN_DB = 3.0  # the probe's expected output SNR (synthetic inputs) may exceed the real one by this


def limit_violations(limits: Limits, ratio: float, metrics: dict[str, float]) -> list[str]:
    """What breaks the size ceiling or a fidelity floor/ceiling; empty when all hold."""
    found = []
    if ratio > limits.max_ratio:
        found.append(f"size ratio {ratio:.4f} > ceiling {limits.max_ratio}")
    for name, floor in limits.min.items():
        if not metrics[name] >= floor:
            found.append(f"{name} {metrics[name]:.4g} < floor {floor}")
    for name, ceiling in limits.max.items():
        if not metrics[name] <= ceiling:
            found.append(f"{name} {metrics[name]:.4g} > ceiling {ceiling}")
    return found


SWEEP_QPS = (-40, -36, -28, -20, -16)  # with the operating points, a size-vs-fidelity curve per model


def plan(manifest: Manifest, full: bool, models: list[str] | None = None,
         points: list[str] | None = None) -> list[tuple[Entry, str]]:
    """The (model, operating point) checks of a tier, in manifest order."""
    todo = []
    for name, entry in manifest.models.items():
        if models and name not in models:
            continue
        for point in (entry.limits if full else entry.fast):
            if not points or point in points:
                todo.append((entry, point))
    return todo


def run(manifest: Manifest, todo: list[tuple[Entry, str]], sweep: bool = False,
        progress: Callable[[int, int, str], None] | None = None) -> tuple[list[Result], list[Result]]:
    """Checked results of ``todo``, and with ``sweep`` unchecked results at SWEEP_QPS for
    every model in it (the points of the plot's curves)."""
    corpus = Corpus(manifest)
    models = {e.name: e for e, _ in todo}
    extra = [(e, f"qp{qp}") for e in models.values() for qp in SWEEP_QPS] if sweep else []
    total = len(todo) + len(extra)
    results, swept = [], []
    for i, (entry, point) in enumerate(todo + extra):
        if progress:
            progress(i, total, f"{entry.name} @ {point}")
        if i < len(todo):
            results.append(check(corpus, entry, point))
        else:
            swept.append(check(corpus, entry, point, {"qp": float(point[2:])}))
    if progress:
        progress(total, total, "done")
    return results, swept
