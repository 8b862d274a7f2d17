"""Compare nnr with NNCodec 2.1.3 (Fraunhofer HHI's reference software of the MPEG NNC
standard) over the whole conformance corpus: whole-file bytes at equal fidelity.

    python tools/compare_nncodec.py --markdown docs/nncodec_corpus.md

For every corpus model both codecs are swept over qp in steps of 1 (NNCodec's finest; a step
of 2 moves a file by 15-20 %); each point is decoded and run on the
model's real inputs (conformance.tasks). At two thresholds, on the task's metric (top-1
agreement for classifiers, output SNR otherwise):

    strict: agreement >= 0.999, else SNR >= 30 dB;  loose: agreement >= 0.99, else SNR >= 20 dB,

the smallest whole file of each codec that meets it is taken, and nnr/NNCodec is reported per
model with the geometric mean over models. Whole files: nnr's .nnr file; for NNCodec, the sum
of its per-tensor bitstreams plus what it needs to rebuild the model, the ONNX model with the
coded tensors' data stripped, compressed with zlib level 9. A sweep that never meets the strict
threshold is extended to finer qps, and one whose coarsest point still meets the loose one to
coarser qps, so the optimum is not cut off by the sweep's ends. nnr is also measured once at
its plain default (no option given), and its default pipeline, the probe, is swept over the
output SNR it aims at on synthetic inputs (--nnr-targets, every 4 dB); where a threshold goes
from missed to met between two targets, the targets between them are measured too, every
--nnr-target-step dB (1 by default: one qp step of the data-free rule moves its output SNR by
about 1.5 dB, and the probe's 4 dB steps would overstate its smallest passing file by up to 15 %).

A whole-corpus run takes hours: ``--update RUN.json --models a,b`` measures those models again
and writes the table of every model of the earlier run, with both commands; with
``--refine-probe`` it keeps their earlier points and measures only the refined probe targets,
after checking that each model file is the one measured then and that nnr's default still makes
a file of the same size and fidelity.

NNCodec's points are cached (--nncodec-points, keyed by model, ONNX sha256 and qp), so the nnr
side can be re-measured in nnr's own venv; nncodec is imported only for points not cached.
NNCodec needs torch and stays out of nnr's dependencies. Its side venv (NNCodec compiles C++
on install, a few minutes):

    python3 -m venv /tmp/nncv
    /tmp/nncv/bin/pip install torch==2.13.0          # the machine's local CPU wheel
    /tmp/nncv/bin/pip install --no-deps nncodec==2.1.3
    /tmp/nncv/bin/pip install numpy==2.4.6 onnx==1.23.2 onnxruntime==1.32.0 protobuf==7.36.2 \\
        constriction==0.5.0 numba==0.68.1 pillow pandas click tqdm h5py opencv-python-headless \\
        scikit-learn ptflops torchmetrics                 # nnr's deps pinned as in nnr's venv
    /tmp/nncv/bin/pip install --no-deps -r conformance/corpus.txt
    PYTHONPATH=. /tmp/nncv/bin/python tools/compare_nncodec.py --markdown docs/nncodec_corpus.md

(pip warns that nncodec wants numpy<2 and torchvision: its tensor codec works with numpy 2.)
NNCodec imports torchvision's datasets at import time (for its training use cases); this
script only calls its tensor codec (``nncodec.tensor.encode/decode``, default settings: the
given qp for tensors of rank >= 2, its fixed qp -75 for 1-D ones), so it installs an empty
torchvision stand-in first (PyPI's torchvision does not load beside the local torch). It codes
every float32 and float16 tensor of >= 16 elements (formats.onnx_io.tensor_slots: initializers,
Constant nodes, subgraphs), float16 ones as float32 and back. Complex-valued models are
skipped on its side.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import math
import os
import shlex
import sys
import tempfile
import time
import types
import zlib
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, NamedTuple

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
from onnx import ModelProto, TensorProto, numpy_helper  # noqa: E402

from tools._emit import emit  # noqa: E402

NNCODEC_VERSION = "2.1.3"
THRESHOLDS = {"strict": {"agreement": 0.999, "snr_db": 30.0},
              "loose": {"agreement": 0.99, "snr_db": 20.0}}
"""Fidelity a point must reach, per threshold and metric (nested: strict implies loose)."""
QP_LIMITS = {"nnr": (-80.0, 40.0), "NNCodec": (-90.0, 0.0)}
"""How far a sweep may be extended (nnr's qp range; NNCodec's 1-D tensors stay at -75 anyway)."""
MAX_EXTRA = 16
"""Points a sweep may add at each end before giving up."""
MIN_ELEMENTS = 16
CODED_TYPES = {TensorProto.FLOAT: "<f4", TensorProto.FLOAT16: "<f2"}
COMPLEX_TYPES = (TensorProto.COMPLEX64, TensorProto.COMPLEX128)
CACHE_ABOUT = (f"NNCodec {NNCODEC_VERSION} points cached by tools/compare_nncodec.py: per corpus model (keyed "
               "by its ONNX sha256) and qp, payload = sum of per-tensor bitstreams, bytes = payload + "
               "zlib-9 of the stripped model, metrics of the model's conformance task, seconds = encode + decode.")


@dataclass
class Point:
    """One coded model: its size and its fidelity on the task's inputs."""

    qp: float | None              # None: nnr's plain default
    bytes: int                    # whole file
    metrics: dict[str, float]
    seconds: float                # encode + decode
    payload: int | None = None    # NNCodec: sum of bitstreams
    payload_1d: int | None = None  # NNCodec: the part spent on 1-D tensors
    target: float | None = None    # nnr's probe: the output SNR aimed at on synthetic inputs (qp unused)

    @classmethod
    def from_json(cls, d: dict) -> "Point":
        return cls(**d)


@dataclass
class ModelResult:
    """Everything measured for one corpus model."""

    name: str
    task: str
    metric: str                   # threshold metric: agreement or snr_db
    sha256: str
    weights: int                  # elements of the tensors NNCodec codes
    nnr_default: Point
    nnr: list[Point]
    nncodec: list[Point] = field(default_factory=list)
    nnr_probe: list[Point] = field(default_factory=list)  # nnr's default pipeline at several targets
    note: str = ""                # why a codec is missing, stale cache, ...

    def best(self, codec: str, level: str) -> Point | None:
        """The smallest file meeting ``level``: for nnr, either way of coding without data
        (the data-free rule's --qp or the probe's --synthetic-snr); "rule" and "probe" ask for one."""
        points = {"nnr": self.nnr + self.nnr_probe, "rule": self.nnr, "probe": self.nnr_probe}.get(codec, self.nncodec)
        return best_point(points, self.metric, level)

    def ratio(self, level: str) -> float | None:
        a, b = self.best("nnr", level), self.best("NNCodec", level)
        return None if a is None or b is None else a.bytes / b.bytes

    @classmethod
    def from_json(cls, d: dict) -> "ModelResult":
        """A model of an earlier run's --json (to_json)."""
        fields = {k: v for k, v in d.items() if k != "best"}
        points = {k: [Point.from_json(p) for p in fields[k]] for k in ("nnr", "nncodec", "nnr_probe")}
        return cls(**(fields | points | {"nnr_default": Point.from_json(fields["nnr_default"])}))


# --- thresholds and sweeps ---------------------------------------------------------------

def threshold_metric(primary: str) -> str:
    """The metric thresholds apply to: top-1 agreement for classifiers, output SNR otherwise."""
    return "agreement" if primary == "agreement" else "snr_db"


def meets(point: Point, metric: str, level: str) -> bool:
    value = point.metrics.get(metric, float("nan"))
    return bool(value >= THRESHOLDS[level][metric])  # NaN never meets


def best_point(points: list[Point], metric: str, level: str) -> Point | None:
    """The smallest file among ``points`` that meets ``level``, or None."""
    ok = [p for p in points if meets(p, metric, level)]
    return min(ok, key=lambda p: p.bytes) if ok else None


def parse_qps(text: str) -> list[float]:
    """``-48:-18:2`` (first:last:step, both ends included) or a comma list ``-40,-32,-24``."""
    try:
        if ":" in text:
            first, last, step = (float(v) for v in text.split(":"))
            if step <= 0 or first > last:
                raise ValueError
            n = int(round((last - first) / step))
            return [first + i * step for i in range(n + 1)]
        return sorted({float(v) for v in text.split(",") if v.strip()})
    except ValueError:
        raise SystemExit(f"compare_nncodec: qp list {text!r} is neither FIRST:LAST:STEP (FIRST <= LAST, "
                         "STEP > 0) nor a comma list of numbers") from None


def sweep(measure: Callable[[float], Point], qps: list[float], metric: str, limits: tuple[float, float],
          log: Callable[[str], None]) -> list[Point]:
    """Measure ``qps``; then extend finer until the strict threshold is met, and coarser while
    the coarsest point still meets the loose one (its optimum may lie beyond), within ``limits``."""
    points = {q: measure(q) for q in qps}
    step = min((b - a for a, b in zip(sorted(points), sorted(points)[1:])), default=2.0)
    for _ in range(MAX_EXTRA):
        if any(meets(p, metric, "strict") for p in points.values()) or min(points) - step < limits[0]:
            break
        log(f"no point meets strict yet: extending to qp {min(points) - step:g}")
        points[min(points) - step] = measure(min(points) - step)
    for _ in range(MAX_EXTRA):
        if not meets(points[max(points)], metric, "loose") or max(points) + step > limits[1]:
            break
        log(f"the coarsest point still meets loose: extending to qp {max(points) + step:g}")
        points[max(points) + step] = measure(max(points) + step)
    return [points[q] for q in sorted(points)]


def refine_targets(points: list[Point], metric: str, step: float) -> list[float]:
    """Probe targets ``step`` dB apart between each pair of neighbouring targets of ``points``
    where a threshold goes from missed to met, not measured yet: the probe's file mostly grows
    with its target, so the smallest file meeting the threshold usually lies there, and a coarse
    sweep overstates it by up to one of its steps. Every such pair is refined, as the file does
    not always grow."""
    if step <= 0:
        return []
    done = {round(p.target, 6) for p in points}
    ordered = sorted(points, key=lambda p: p.target)
    wanted: set[float] = set()
    for level in THRESHOLDS:
        for below, above in zip(ordered, ordered[1:]):
            if meets(below, metric, level) or not meets(above, metric, level):
                continue
            n = math.ceil((above.target - below.target) / step - 1e-9)
            wanted.update(round(below.target + k * step, 6) for k in range(1, n))
    return sorted(wanted - done)


# --- models --------------------------------------------------------------------------------

def model_sha256(model: ModelProto, path: Path | None) -> str:
    """sha256 of the ONNX file, or of the serialised model when it is derived in memory."""
    data = path.read_bytes() if path is not None else model.SerializeToString()
    return hashlib.sha256(data).hexdigest()


def fingerprint(outputs: Any) -> str:
    """sha256 of a task's outputs, floats rounded to float16 so that only a change of the
    inputs or the model shows, not the last bits of a kernel."""
    h = hashlib.sha256()

    def add(obj: Any) -> None:
        if isinstance(obj, dict):
            for k in sorted(obj):
                h.update(str(k).encode())
                add(obj[k])
        elif isinstance(obj, (list, tuple)):
            for v in obj:
                add(v)
        elif isinstance(obj, (np.ndarray, np.generic, float, int)):
            arr = np.ascontiguousarray(obj)
            if arr.dtype.kind == "c":
                arr = arr.view(arr.real.dtype)
            if arr.dtype.kind == "f":
                arr = arr.astype(np.float16)
            h.update(str(arr.shape).encode() + arr.tobytes())
        else:
            h.update(repr(obj).encode())

    add(outputs)
    return h.hexdigest()


def nncodec_slots(model: ModelProto) -> list[int]:
    """Slot numbers of the tensors NNCodec codes: float32/float16 with >= 16 elements, inline."""
    from nnr.formats.onnx_io import is_external, tensor_slots

    return [s.index for s in tensor_slots(model)
            if s.tensor.data_type in CODED_TYPES and not is_external(s.tensor)
            and int(np.prod(s.tensor.dims, dtype=np.int64)) >= MIN_ELEMENTS]


def is_complex(model: ModelProto) -> bool:
    from nnr.formats.onnx_io import tensor_slots

    return any(s.tensor.data_type in COMPLEX_TYPES for s in tensor_slots(model))


def stripped_bytes(model: ModelProto, slots: list[int]) -> int:
    """zlib-9 size of the model with the coded tensors' data stripped: what NNCodec's payload
    needs beside it to rebuild the ONNX file."""
    from nnr.formats.onnx_io import strip_tensor, tensor_slots

    work = ModelProto()
    work.CopyFrom(model)
    all_slots = tensor_slots(work)
    for i in slots:
        strip_tensor(all_slots[i].tensor)
    return len(zlib.compress(work.SerializeToString(), 9))


# --- the two codecs ------------------------------------------------------------------------

def nnr_point(source: Path | ModelProto, qp: float | None, task: Any, ref: Any, target: float | None = None,
              options: dict | None = None) -> Point:
    """Encode with nnr's public API (its defaults; only qp, or only the probe's target SNR,
    given, plus any ``options`` of a variant being measured), decode, measure."""
    import nnr
    from nnr.decoder import OWN_OUTPUT_MEMORY

    options = options or {}
    t0 = time.perf_counter()
    if qp is not None:
        data = nnr.encode(source, qp=qp, **options)
    else:
        data = nnr.encode(source, **options) if target is None else nnr.encode(source, target_snr_db=target, **options)
    decoded = nnr.decode(data, max_memory=OWN_OUTPUT_MEMORY)   # a coarse point may be below the default's bits
    seconds = time.perf_counter() - t0
    return Point(qp, len(data), _floats(task.measure(ref, task.infer(decoded))), seconds, target=target)


def _stub_torchvision() -> None:
    """An empty torchvision: NNCodec imports its datasets, which its tensor codec never uses."""
    class Anything:
        def __init__(self, *args, **kwargs):
            pass

        def __call__(self, *args, **kwargs):
            return Anything()

        def __getattr__(self, name):
            return Anything()

    class Module(types.ModuleType):
        def __getattr__(self, name):
            if name.startswith("__"):
                raise AttributeError(name)
            return Anything

    root = Module("torchvision")
    root.__path__ = []
    sys.modules["torchvision"] = root
    for sub in ("datasets", "transforms", "models", "ops", "io"):
        mod = Module(f"torchvision.{sub}")
        mod.__path__ = []
        setattr(root, sub, mod)
        sys.modules[f"torchvision.{sub}"] = mod


def import_nncodec(why: str) -> Any:
    """nncodec.tensor, or an error saying how to get it."""
    if "torchvision" not in sys.modules:
        _stub_torchvision()
    try:
        with contextlib.redirect_stdout(sys.stderr):
            import nncodec
            import nncodec.tensor as nnc_tensor
    except ImportError as exc:
        raise SystemExit(f"compare_nncodec: {why}, and nncodec cannot be imported here ({exc}). Run this tool in "
                         "NNCodec's side venv (see the docstring: python tools/compare_nncodec.py --help), or "
                         "pass --nnc-qps/--models that the cache already holds.") from exc
    version = getattr(nncodec, "__version__", NNCODEC_VERSION)
    if version != NNCODEC_VERSION:
        raise SystemExit(f"compare_nncodec: found nncodec {version}; the cache and this table are for "
                         f"{NNCODEC_VERSION} (pip install --no-deps nncodec=={NNCODEC_VERSION})")
    return nnc_tensor


def nncodec_point(nnc: Any, model: ModelProto, slots: list[int], skeleton: int, qp: float,
                  task: Any, ref: Any) -> Point:
    """Code every selected tensor with NNCodec's tensor codec at ``qp``, fill the decoded
    values in, measure."""
    from nnr.formats.onnx_io import fill_tensor, strip_tensor, tensor_slots

    if qp != int(qp):
        raise SystemExit(f"compare_nncodec: NNCodec's qp is an integer, got {qp:g} (fix --nnc-qps)")
    work = ModelProto()
    work.CopyFrom(model)
    targets = tensor_slots(work)
    payload = payload_1d = 0
    seconds = 0.0
    with tempfile.TemporaryDirectory() as results, contextlib.redirect_stdout(sys.stderr):
        for i in slots:
            tensor = targets[i].tensor
            values = numpy_helper.to_array(tensor)
            t0 = time.perf_counter()
            bitstream = nnc.encode(values.astype(np.float32), args={
                "qp": int(qp), "results": results, "verbose": False, "tensor_id": "0"})
            decoded = nnc.decode(bitstream)
            seconds += time.perf_counter() - t0
            decoded = np.asarray(decoded["0"] if isinstance(decoded, dict) else decoded)
            payload += len(bitstream)
            payload_1d += len(bitstream) if values.ndim <= 1 else 0
            storage = decoded.reshape(values.shape).astype(CODED_TYPES[tensor.data_type])
            strip_tensor(tensor)
            fill_tensor(tensor, storage.tobytes())
    metrics = _floats(task.measure(ref, task.infer(work)))
    return Point(qp, payload + skeleton, metrics, seconds, payload, payload_1d)


def _floats(metrics: dict) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items()}


# --- the cache of NNCodec points -----------------------------------------------------------

class NncodecCache:
    """NNCodec points by model and qp, in a JSON file rewritten after every new point."""

    def __init__(self, path: Path | None):
        self.path = path
        self.models: dict[str, dict] = {}
        if path is not None and path.exists():
            try:
                raw = json.loads(path.read_text())
                if raw.get("nncodec") == NNCODEC_VERSION:
                    self.models = raw["models"]
            except (json.JSONDecodeError, KeyError, TypeError) as exc:
                raise SystemExit(f"compare_nncodec: {path} is not a cache this tool wrote ({exc}); "
                                 "move it away or name another with --nncodec-points") from exc

    def entry(self, name: str, sha256: str, reference: str, log: Callable[[str], None]) -> dict:
        """The model's cached entry, emptied when the model changed; a changed reference
        output is reported (the cached fidelity was measured on other inputs)."""
        e = self.models.get(name)
        if e is not None and e.get("sha256") != sha256:
            log(f"cached NNCodec points were for another file (sha256 {e.get('sha256', '?')[:12]}): recomputing")
            e = None
        if e is None:
            e = self.models[name] = {"sha256": sha256, "reference": reference, "points": {}}
        return e

    def get(self, entry: dict, qp: float) -> Point | None:
        d = entry["points"].get(f"{qp:g}")
        return Point.from_json(d) if d is not None else None

    def put(self, entry: dict, point: Point) -> None:
        entry["points"][f"{point.qp:g}"] = asdict(point)
        self.save()

    def save(self) -> None:
        if self.path is None:
            return
        text = json.dumps({"about": CACHE_ABOUT, "nncodec": NNCODEC_VERSION, "models": self.models}, indent=1)
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(text + "\n")
        os.replace(tmp, self.path)


# --- one model -----------------------------------------------------------------------------

def measure_model(name: str, manifest: Any, cache: NncodecCache, nnr_qps: list[float], nnc_qps: list[float],
                  refresh: bool, targets: list[float] = (), options: dict | None = None,
                  target_step: float = 1.0) -> ModelResult:
    """Sweep both codecs on one corpus model; the probe's targets refined near each threshold
    (refine_targets) ``target_step`` dB apart."""
    m = _model_task(name, manifest)
    slots = nncodec_slots(m.model)
    result = ModelResult(name, manifest.models[name].task, m.metric, model_sha256(m.model, m.path),
                         _elements(m.model, slots), _nnr_default(m.source, m.task, m.ref, m.metric, m.log, options), [])

    def rule_point(qp: float) -> Point:
        return _logged(m.log, "nnr", m.metric, nnr_point(m.source, qp, m.task, m.ref, options=options))
    result.nnr = sweep(rule_point, nnr_qps, m.metric, QP_LIMITS["nnr"], m.log)
    for target in targets:
        result.nnr_probe.append(_probe_point(m, target, options))
    _refine_probe(result, m, options, target_step)
    if is_complex(m.model):
        result.note = "complex-valued weights: NNCodec codes real tensors only"
        m.log(f"NNCodec skipped: {result.note}")
        return result
    result.nncodec, stale = nncodec_sweep(name, m.model, slots, m.task, m.ref, result.sha256, m.metric, cache,
                                          nnc_qps, refresh, m.log)
    if stale:
        result.note = ("NNCodec's cached fidelity was measured on other reference outputs (the task's inputs "
                       "changed): re-run in NNCodec's venv with --refresh-nncodec")
    return result


class ModelTask(NamedTuple):
    """A corpus model ready to measure: its task, threshold metric and the original's outputs."""

    name: str
    task: Any
    metric: str
    model: ModelProto
    path: Path | None
    ref: Any

    @property
    def source(self) -> Path | ModelProto:
        """What nnr encodes: the file (external data found beside it), else the model."""
        return self.path or self.model

    def log(self, msg: str) -> None:
        """A progress line on stderr, tagged with the model."""
        print(f"[{self.name}] {msg}", file=sys.stderr, flush=True)


def _model_task(name: str, manifest: Any) -> ModelTask:
    """Load a corpus model and run the original on its task's inputs."""
    from conformance.corpus import load_model
    from conformance.tasks import TASKS

    task = TASKS[manifest.models[name].task]
    model, path = load_model(name, manifest)
    return ModelTask(name, task, threshold_metric(task.primary), model, path, task.infer(model))


SAME_SNR_DB = 1e-3
"""Output SNRs this close count as the same measurement (onnxruntime's sums vary in the last bits)."""


def stale_reason(earlier: ModelResult, manifest: Any, options: dict | None = None) -> str:
    """Why an earlier run's points of a model no longer hold ("" when they do): the model file
    differs, or nnr's default makes a file of another size or fidelity."""
    m = _model_task(earlier.name, manifest)
    if model_sha256(m.model, m.path) != earlier.sha256 or m.metric != earlier.metric:
        return "the model file differs"
    default = _nnr_default(m.source, m.task, m.ref, m.metric, m.log, options)
    before, now = (p.metrics.get(m.metric, math.nan) for p in (earlier.nnr_default, default))
    same = before == now or (math.isnan(before) and math.isnan(now)) or (
        m.metric == "snr_db" and abs(before - now) <= SAME_SNR_DB)
    if default.bytes != earlier.nnr_default.bytes or not same:
        return (f"nnr's default makes {default.bytes:,} B at {m.metric} {now:.6g}, the earlier run's "
                f"{earlier.nnr_default.bytes:,} B at {before:.6g}")
    return ""


def refine_model(earlier: ModelResult, manifest: Any, target_step: float, options: dict | None = None) -> ModelResult:
    """An earlier run's model (checked by :func:`stale_reason`) with its probe sweep refined
    (refine_targets), every earlier point kept."""
    result = replace(earlier, nnr_probe=list(earlier.nnr_probe))
    _refine_probe(result, _model_task(earlier.name, manifest), options, target_step)
    return result


def _probe_point(m: ModelTask, target: float, options: dict | None) -> Point:
    """nnr's default pipeline aiming at ``target`` dB on synthetic inputs, measured on the task."""
    point = nnr_point(m.source, None, m.task, m.ref, target, options)
    m.log(f"nnr probe {target:g} dB: {point.bytes:,} B, {fidelity_text(m.metric, point)}, {point.seconds:.1f} s")
    return point


def _refine_probe(result: ModelResult, m: ModelTask, options: dict | None, target_step: float) -> None:
    """Add the probe points refine_targets asks for to ``result``, its probe sweep kept in target order."""
    for target in refine_targets(result.nnr_probe, result.metric, target_step):
        result.nnr_probe.append(_probe_point(m, target, options))
    result.nnr_probe.sort(key=lambda p: p.target)


def _nnr_default(source: Path | ModelProto, task: Any, ref: Any, metric: str, log: Callable[[str], None],
                 options: dict | None = None) -> Point:
    point = nnr_point(source, None, task, ref, options=options)
    log(f"nnr default: {point.bytes:,} B, {fidelity_text(metric, point)}")
    return point


def nncodec_sweep(name: str, model: ModelProto, slots: list[int], task: Any, ref: Any, sha256: str, metric: str,
                  cache: NncodecCache, qps: list[float], refresh: bool,
                  log: Callable[[str], None]) -> tuple[list[Point], bool]:
    """NNCodec's sweep, from the cache where it has the point; True when the cached points
    were measured on different reference outputs."""
    reference = fingerprint(ref)
    entry = cache.entry(name, sha256, reference, log)
    if refresh:
        entry["points"], entry["reference"] = {}, reference
    stale = entry.get("reference") != reference and bool(entry["points"])
    if stale:
        log("cached NNCodec points were measured on other reference outputs: pass --refresh-nncodec "
            "(in NNCodec's venv) to recompute them")
    state: dict[str, Any] = {}

    def measure(qp: float) -> Point:
        point = cache.get(entry, qp)
        if point is None:
            if "nnc" not in state:
                state["nnc"] = import_nncodec(f"NNCodec points for {name} at qp {qp:g} are not in the cache "
                                              f"({cache.path})")
                state["skeleton"] = stripped_bytes(model, slots)
            point = nncodec_point(state["nnc"], model, slots, state["skeleton"], qp, task, ref)
            cache.put(entry, point)
        return _logged(log, "NNCodec", metric, point)

    return sweep(measure, qps, metric, QP_LIMITS["NNCodec"], log), stale


def _elements(model: ModelProto, slots: list[int]) -> int:
    from nnr.formats.onnx_io import tensor_slots

    all_slots = tensor_slots(model)
    return int(sum(np.prod(all_slots[i].tensor.dims, dtype=np.int64) for i in slots))


def _logged(log: Callable[[str], None], codec: str, metric: str, point: Point) -> Point:
    log(f"{codec} qp {point.qp:g}: {point.bytes:,} B, {fidelity_text(metric, point)}, {point.seconds:.1f} s")
    return point


# --- output --------------------------------------------------------------------------------

def fidelity_text(metric: str, point: Point) -> str:
    """A point's fidelity on the threshold metric, as the tables show it."""
    value = point.metrics.get(metric, float("nan"))
    return f"{value:.4f} agreement" if metric == "agreement" else f"{value:.1f} dB"


def _level(metric: str, point: Point) -> str:
    for level in THRESHOLDS:
        if meets(point, metric, level):
            return level
    return "below loose"


def _cell(point: Point | None) -> str:
    if point is None:
        return "not met"
    return f"{point.bytes:,} (" + (f"qp {point.qp:g}" if point.target is None else f"probe {point.target:g} dB") + ")"


def geomean(values: list[float]) -> float | None:
    return math.exp(sum(math.log(v) for v in values) / len(values)) if values else None


def render(command: str, results: list[ModelResult]) -> str:
    """The markdown report: the command (one a line when a run updates another), one table, the
    geometric means, notes."""
    lines = ["```sh", command, "```", "",
             f"nnr {_nnr_version()} against NNCodec {NNCODEC_VERSION}: smallest whole file of each codec's qp sweep "
             "that meets each threshold. Strict: top-1 agreement ≥ 0.999 for classifiers, else output SNR ≥ 30 dB; "
             "loose: agreement ≥ 0.99, else SNR ≥ 20 dB. nnr: the .nnr file; NNCodec: its per-tensor bitstreams "
             "plus the ONNX model with the coded tensors' data stripped, zlib level 9. \"default\": nnr with no "
             "option given, and the threshold it meets.", "",
             "| model | metric | nnr default | fidelity | strict: nnr | NNCodec | nnr/NNCodec "
             "| loose: nnr | NNCodec | nnr/NNCodec |",
             "|---|---|--:|---|--:|--:|--:|--:|--:|--:|"]
    for r in results:
        cells = [r.name, r.metric, f"{r.nnr_default.bytes:,}",
                 f"{fidelity_text(r.metric, r.nnr_default)} ({_level(r.metric, r.nnr_default)})"]
        for level in THRESHOLDS:
            ratio = r.ratio(level)
            nnc = "–" if not r.nncodec else _cell(r.best("NNCodec", level))
            cells += [_cell(r.best("nnr", level)), nnc, "–" if ratio is None else f"{ratio:.3f}"]
        lines.append("| " + " | ".join(cells) + " |")
    means = {level: [r.ratio(level) for r in results if r.ratio(level) is not None] for level in THRESHOLDS}
    gm = ["–" if not v else f"**{geomean(v):.3f}** ({len(v)} models)" for v in means.values()]
    lines.append(f"| geometric mean | | | | | | {gm[0]} | | | {gm[1]} |")
    lines += ["", "Geometric mean of nnr/NNCodec: " + "; ".join(
        f"{level} {g}" for level, g in zip(THRESHOLDS, gm)) + "."]
    lines += ["", "What the probe (the default pipeline, swept over `--synthetic-snr` at the command's "
              "`--nnr-targets`, and at every `--nnr-target-step` dB between two targets where a threshold goes "
              "from missed to met) saves over the data-free step rule (swept over `--qp`), each at its smallest "
              "file meeting the threshold:", "",
              "| model | threshold | data-free rule | probe | probe saves |", "|---|---|--:|--:|--:|"]
    for r in results:
        fell_back = len(r.nnr_probe) > 1 and len({p.bytes for p in r.nnr_probe}) == 1
        for level in THRESHOLDS:
            rule, probe = r.best("rule", level), r.best("probe", level)
            saved = "–" if rule is None or probe is None else f"{100 * (1 - probe.bytes / rule.bytes):+.1f} %"
            if fell_back:  # every target gave the same file: the probe could not run
                probe, saved = None, "–"
            lines.append(f"| {r.name} | {level} | {_cell(rule)} | "
                         f"{'falls back to the rule at qp -36' if fell_back else _cell(probe)} | {saved} |")
    notes = _notes(results)
    if notes:
        lines += ["", "Notes:", ""] + [f"- {n}" for n in notes]
    return "\n".join(lines) + "\n"


def _notes(results: list[ModelResult]) -> list[str]:
    notes = []
    for r in results:
        if r.note:
            notes.append(f"{r.name}: {r.note}.")
        for codec, points in (("nnr", r.nnr), ("NNCodec", r.nncodec)):
            if not points:
                continue
            missed = [level for level in THRESHOLDS if best_point(points, r.metric, level) is None]
            if missed:
                which = "either threshold" if len(missed) == len(THRESHOLDS) else f"the {missed[0]} threshold"
                notes.append(f"{r.name}: {codec} never meets {which} in its sweep "
                             f"(qp {points[0].qp:g} to {points[-1].qp:g}).")
        heavy = [p for p in r.nncodec if p.payload and p.payload_1d and p.payload_1d > 0.25 * p.payload]
        if heavy:
            share = max(p.payload_1d / p.payload for p in heavy)
            notes.append(f"{r.name}: NNCodec's 1-D tensors (fixed qp -75) take up to {100 * share:.0f} % of its "
                         "payload.")
    return notes


def to_json(command: str, results: list[ModelResult]) -> dict:
    """Every point of the run, and the table's numbers."""
    out: dict[str, Any] = {"command": command, "nnr": _nnr_version(), "nncodec": NNCODEC_VERSION,
                           "thresholds": THRESHOLDS, "models": {}}
    for r in results:
        d = asdict(r)
        d["best"] = {level: {"nnr": _qp_bytes(r.best("nnr", level)),
                             "NNCodec": _qp_bytes(r.best("NNCodec", level)), "ratio": r.ratio(level)}
                     for level in THRESHOLDS}
        out["models"][r.name] = d
    out["geomean"] = {level: geomean([r.ratio(level) for r in results if r.ratio(level) is not None])
                      for level in THRESHOLDS}
    return out


def merged(earlier: list[ModelResult], results: list[ModelResult]) -> list[ModelResult]:
    """An earlier run's models, each replaced by its new measurement where there is one (new
    models last)."""
    fresh = {r.name: r for r in results}
    return [fresh.pop(r.name, r) for r in earlier] + list(fresh.values())


def _qp_bytes(point: Point | None) -> dict | None:
    return None if point is None else {"qp": point.qp, "bytes": point.bytes}


def _nnr_version() -> str:
    import nnr

    return nnr.__version__


# --- main ----------------------------------------------------------------------------------

def select_models(text: str | None, manifest: Any) -> list[str]:
    if not text:
        return list(manifest.models)
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in manifest.models]
    if unknown:
        raise SystemExit(f"compare_nncodec: unknown corpus model(s) {', '.join(unknown)}; "
                         f"known: {', '.join(manifest.models)}")
    return names


def parse_options(items: list[str]) -> dict:
    """``KEY=VALUE`` pairs as encoder options, checked by nnr's own option validation."""
    from nnr.errors import OptionError
    from nnr.options import EncoderOptions

    options = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"compare_nncodec: --nnr-option {item!r} is not KEY=VALUE")
        try:
            options[key] = json.loads(text)
        except ValueError:
            options[key] = text
    if {"qp", "lossless"} & options.keys():
        raise SystemExit("compare_nncodec: --nnr-option cannot set qp or lossless: the sweep sets the level")
    try:
        EncoderOptions.build(**options)
    except OptionError as exc:
        raise SystemExit(f"compare_nncodec: --nnr-option: {exc}") from None
    return options


def main(argv: list[str] | None = None) -> int:
    from conformance.corpus import load_manifest

    argv = sys.argv[1:] if argv is None else argv
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--models", help="comma list of corpus models (default: all)")
    ap.add_argument("--nnc-qps", default="-48:-18:1", help="NNCodec's qps: FIRST:LAST:STEP or a comma list "
                    "(integers; default -48:-18:1, its finest, extended when a threshold is missed)")
    ap.add_argument("--nnr-qps", default="-44:-12:1", help="nnr's qps, likewise (default -44:-12:1: "
                    "a step of 2 moves a file by 15-20 %%, more than most techniques save)")
    ap.add_argument("--nnr-targets", default="2:46:4",
                    help="output SNRs (dB) the probe aims at on synthetic inputs, swept like the qps "
                         "(default 2:46:4; empty for none)")
    ap.add_argument("--nnr-target-step", type=float, default=1.0,
                    help="where a threshold falls between two targets, also measure the targets between them "
                         "this many dB apart (default 1; 0: none)")
    ap.add_argument("--refine-probe", action="store_true",
                    help="with --update: keep the earlier points of --models and measure only the probe targets "
                         "--nnr-target-step asks for (the model files and the size and fidelity of nnr's default "
                         "must be those of the earlier run)")
    ap.add_argument("--nnr-option", action="append", default=[], metavar="KEY=VALUE",
                    help="an encoder option (nnr/options.py; VALUE as JSON, else a string) added to every nnr "
                         "point, to measure a variant against the defaults; repeatable")
    ap.add_argument("--nncodec-points", type=Path, default=ROOT / "docs" / "nncodec_corpus.json",
                    help="cache of NNCodec's points, read and updated (default docs/nncodec_corpus.json)")
    ap.add_argument("--refresh-nncodec", action="store_true",
                    help="recompute NNCodec's points of the chosen models instead of reading the cache")
    ap.add_argument("--markdown", type=Path, help="write the table here")
    ap.add_argument("--json", type=Path, help="write every point of the run here")
    ap.add_argument("--update", type=Path, metavar="JSON",
                    help="an earlier run's --json: measure only --models again (the rest of the corpus takes "
                         "hours) and write the table of all, with the commands of both runs")
    args = ap.parse_args(argv)

    earlier, command = None, shlex.join(["python", "tools/compare_nncodec.py", *argv])
    if args.update is not None:
        if not args.models:
            raise SystemExit("compare_nncodec: --update needs --models (the models to measure again)")
        try:
            doc = json.loads(args.update.read_text())
            earlier = [ModelResult.from_json(d) for d in doc["models"].values()]
            command = str(doc["command"]) + "\n" + command
            versions = (str(doc["nnr"]), str(doc["nncodec"]))
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise SystemExit(f"compare_nncodec: {args.update} is not a JSON this tool wrote ({exc})") from None
        if versions != (_nnr_version(), NNCODEC_VERSION):
            raise SystemExit(f"compare_nncodec: {args.update} measured nnr {versions[0]} and NNCodec {versions[1]}, "
                             f"not nnr {_nnr_version()} and NNCodec {NNCODEC_VERSION}: run the whole corpus again")
    manifest = load_manifest()
    names = select_models(args.models, manifest)
    nnr_qps, nnc_qps = parse_qps(args.nnr_qps), parse_qps(args.nnc_qps)
    cache = NncodecCache(args.nncodec_points)
    t0 = time.perf_counter()
    targets = parse_qps(args.nnr_targets) if args.nnr_targets.strip() else []
    options = parse_options(args.nnr_option)
    if not args.nnr_target_step >= 0:
        raise SystemExit("compare_nncodec: --nnr-target-step is a number of dB, 0 or more; "
                         f"got {args.nnr_target_step:g}")
    if args.refine_probe:
        if earlier is None:
            raise SystemExit("compare_nncodec: --refine-probe refines an earlier run: give it with --update")
        ignored = [f"--{k.replace('_', '-')}" for k in ("nnr_qps", "nnc_qps", "nnr_targets", "refresh_nncodec")
                   if getattr(args, k) != ap.get_default(k)]
        if ignored:
            raise SystemExit(f"compare_nncodec: --refine-probe keeps the earlier sweeps; {', '.join(ignored)} would "
                             "change them: measure the models again without --refine-probe")
        known = {r.name: r for r in earlier}
        missing = [n for n in names if n not in known]
        if missing:
            raise SystemExit(f"compare_nncodec: {args.update} has no {', '.join(missing)} to refine")
        stale = [f"{n}: {why}" for n in names if (why := stale_reason(known[n], manifest, options))]
        if stale:
            raise SystemExit("compare_nncodec: the earlier points of these models are stale (measure them again "
                             "without --refine-probe):\n  " + "\n  ".join(stale))
        results = [refine_model(known[n], manifest, args.nnr_target_step, options) for n in names]
    else:
        results = [measure_model(n, manifest, cache, nnr_qps, nnc_qps, args.refresh_nncodec, targets, options,
                                 args.nnr_target_step) for n in names]
    print(f"done in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    if earlier is not None:
        results = merged(earlier, results)
    if args.json:
        args.json.write_text(json.dumps(to_json(command, results), indent=1) + "\n")
    emit(render(command, results), args.markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
