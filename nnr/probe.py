"""The data-free probe: precision per tensor from what the model's *output* tolerates,
measured by running the model on synthetic inputs (nnr.synthetic) — no user data.

Each weight tensor (≥ 2-D) alone is rounded at a coarse probe step and the relative change of
every float output is measured: ``s_i = Σ_outputs MSE/variance ÷ squared weight error``. With
output distortion ≈ Σ s_i·E_i and E_i ≈ n_i·Δ_i²/12, the fewest bits for a given distortion
give every tensor the same marginal price, ``Δ_i ∝ 1/√s_i`` (as nnr.allocation does on real
data). Sensitivities measured on made-up inputs are noisy, so as a hedge each tensor's step
is the geometric mean of that optimum and the data-free rule's (OFFSET_WEIGHT). The common
level is set so the predicted output SNR meets the target; the coded model is then checked
on the same synthetic inputs and the level moves until the check passes.

Relative sensitivities transfer from synthetic to real inputs far better than absolute
fidelity does, so the target carries a margin (DEFAULT_SNR_DB) that the conformance suite
checks on real inputs. The result is plain encoder options (``qp`` and ``tensor_qp``): the
file records them, and replaying them codes the same bytes on any machine.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
from onnx import ModelProto, helper

from nnr.codec import exactmath
from nnr.codec.floatcast import to_float64
from nnr.formats.onnx_io import (STORAGE_DTYPES, fill_tensor, is_external, refer_external, strip_tensor, tensor_bytes,
                                 tensor_slots)

from .errors import first_line
from .options import EncoderOptions
from .threads import bounded_map
from .synthetic import SamplingError, image_sides, state_outputs, synthetic_batches

Progress = Callable[[int, int, str], None]
DEFAULT_SNR_DB = 36.0      # aimed at on synthetic inputs: ≥ 30 dB and ≥ 99 % agreement on real ones, with margin
PROBE_QP = 8.0             # probe step: the data-free rule's step at qp + 8 (4× coarser)
OFFSET_WEIGHT = 0.5        # probe offsets are halved: steps at the geometric mean of the rule's and the probe's
MAX_OFFSET = 12.0          # a tensor's qp is kept within ±12 (±3 octaves of step) of the common level
QP_GRID = 0.25             # qp values are rounded to this grid (compact options, replayable)
CHECK_TOLERANCE_DB = 1.5   # the coded model may fall this far short of the target …
OVERSHOOT_DB = 2.0         # … or exceed it by this much, before the level is moved and the model coded again
MAX_RETRIES = 3
FALLBACK_QP_OFFSET = -4.0  # a model that can't be probed is coded with the data-free rule this much finer
PROBE_ELEMENTS = 1 << 18   # input elements per sensitivity run (the fidelity check uses the whole batch)
PROBE_GROUP = 10           # tensors probed through one onnxruntime session
CHANNEL_GAIN = 0.8         # probe_channels: where they cut the output distortion at equal entropy by over 20 %
CHANNEL_SIDE_BITS = 16     # what a channel's own step costs in the file (a shift and a mantissa)


class ProbeUnavailable(Exception):
    """The model cannot be run on synthetic inputs; the message says why (for a one-line notice)."""


@dataclass
class ProbeReport:
    """What the probe did, for the user: measured tensors, inputs, and the fidelity it expects."""

    target_snr_db: float
    tensors: int = 0
    inputs: dict[str, tuple[int, ...]] = field(default_factory=dict)
    expected_snr_db: float = math.nan     # measured on the synthetic inputs with the coded weights
    seconds: float = 0.0
    levels: list[tuple[float, float]] = field(default_factory=list)   # (qp, SNR) of each coding tried
    channel_steps: int = 0                 # tensors given per-channel steps
    notice: str = ""                       # why the probe fell back to the data-free rule, if it did
    fallback_qp: float = math.nan          # the data-free rule's qp used then

    @property
    def retries(self) -> int:
        """Codings after the first (each moved the level)."""
        return max(0, len(self.levels) - 1)

    def summary(self) -> str:
        if self.notice:
            return f"probe skipped ({self.notice}); coded with the data-free step rule at qp {self.fallback_qp:g}"
        shapes = ", ".join(f"{k} {'x'.join(map(str, v))}" for k, v in self.inputs.items())
        return (f"probe: {self.tensors} tensors measured on synthetic inputs ({shapes}) in {self.seconds:.1f} s; "
                f"expected output SNR {self.expected_snr_db:.1f} dB on them (target {self.target_snr_db:g} dB)"
                + (f"; per-channel steps on {self.channel_steps} of them" if self.channel_steps else ""))


@dataclass
class Weight:
    """A float tensor the encoder quantizes, with its values and data-free step scale."""

    name: str
    slot: int
    numel: int
    fmt: str
    storage: np.ndarray
    unit_step: float     # geometric-mean step of the data-free rule at qp 0


def float_weights(model: ModelProto, base_dir: Path | None, opts: EncoderOptions,
                  arrays: dict[str, np.ndarray] | None = None) -> list[Weight]:
    """The ≥ 2-D float tensors the encoder quantizes (biases and norms are few bits, and the
    data-free rule keeps them fine), finite and not all zero. A main-graph initializer found
    in ``arrays`` (the probe's) is used from there rather than read again."""
    from nnr.formats.onnx_io import FLOAT_TYPES

    from .tensorcodec import FLOAT_FORMAT_OF

    found = []
    for slot in tensor_slots(model):
        t = slot.tensor
        numel = int(np.prod(t.dims, dtype=np.int64)) if t.dims else 1
        if t.data_type not in FLOAT_TYPES or len(t.dims) <= 1 or (numel < opts.min_elements and not is_external(t)):
            continue
        shared = (arrays or {}).get(t.name) if slot.path.startswith("graph/initializer[") else None
        storage = (shared.reshape(-1) if shared is not None
                   else np.frombuffer(tensor_bytes(t, base_dir), dtype=STORAGE_DTYPES[t.data_type]))
        fmt = FLOAT_FORMAT_OF[t.data_type]
        values = to_float64(storage, fmt).reshape(tuple(t.dims))
        if not np.all(np.isfinite(values)) or not np.any(values):
            continue
        found.append(Weight(slot.name, slot.index, numel, fmt, storage.reshape(tuple(t.dims)),
                            _unit_step(values, opts.rule_of(slot.name), opts)))
    return found


def _unit_step(values: np.ndarray, rule: str, opts: EncoderOptions) -> float:
    """Geometric mean of a tensor's steps under ``rule`` at qp 0."""
    from nnr.codec.allocation import steps_for

    steps = steps_for(values, 0.0, rule, opts.vector_qp, opts.size_exponent)
    return float(exactmath.exp(float(np.mean(exactmath.log(steps)))))


SHARED_BYTES = 1 << 16      # initializers this large are held once and shared by the probe's sessions
SHAREABLE = {1, 10, 11}      # float32, float16, float64: numpy and onnxruntime share their layout
SHARED_LOCATION = "nnr-probe-shared"   # a name no file has: sessions get these values from memory


def _copy_fields(dst, src, skip: str) -> None:
    """Copy every set field of the message ``src`` into ``dst`` but the one named ``skip``."""
    for fd, value in src.ListFields():
        if fd.name == skip:
            continue
        repeated = fd.is_repeated if hasattr(fd, "is_repeated") else fd.label == fd.LABEL_REPEATED  # protobuf 7 / 4–6
        if repeated:
            getattr(dst, fd.name).extend(value)
        elif fd.type == fd.TYPE_MESSAGE:
            getattr(dst, fd.name).CopyFrom(value)
        else:
            setattr(dst, fd.name, value)


def _shared(t) -> bool:
    return any(e.key == "location" and e.value == SHARED_LOCATION for e in t.external_data)


def _refer(dst, src) -> None:
    """Make ``dst`` the name, type and shape of ``src`` with its values in the shared arrays
    (``dst`` may be ``src``)."""
    name, dtype, dims, doc = src.name, src.data_type, list(src.dims), src.doc_string
    nbytes = int(np.prod(dims, dtype=np.int64)) * np.dtype(STORAGE_DTYPES[dtype]).itemsize
    dst.Clear()
    dst.name, dst.data_type, dst.doc_string = name, dtype, doc
    dst.dims.extend(dims)
    refer_external(dst, SHARED_LOCATION, 0, nbytes)


class Probe:
    """The model on fixed synthetic inputs: measures how much replaced weights move its outputs."""

    def __init__(self, model: ModelProto, feeds: list[dict[str, np.ndarray]], base_dir: Path | None = None,
                 threads: int | None = None):
        """``model`` may keep its weights in external data (found in ``base_dir``): the probe
        reads each large weight once into ``arrays`` and feeds it to every session as an input
        (onnxruntime copies the initializers it is given, never the inputs it is fed), so the
        weights are in memory once. ``forget`` drops them once probing is done; a later check
        reads them again from ``model``. ``threads``: how many runs go at once (each session runs
        on one thread, so every measurement is computed the same way whatever the count)."""
        import threading

        from . import fidelity

        self.workers = max(1, threads or 1)
        self._lock = threading.Lock()
        self._fidelity = fidelity
        self.feeds = {False: feeds, True: _first_samples(feeds, PROBE_ELEMENTS)}
        self.arrays: dict[str, np.ndarray] = {}   # the large weights, fed to every session
        self._sources: dict[str, tuple] = {}      # where each can be read again: (TensorProto, folder)
        self.base = self._skeleton(model, base_dir)
        self.states = state_outputs(model)   # recurrent state input → the output carrying it on
        _measure_before_squashing(self.base.graph, keep=set(self.states.values()))
        self.fed = ModelProto()
        self.fed.CopyFrom(self.base)
        self.feedable = _feedable(self.fed)  # slot → initializer name, Constant values made initializers
        self._share(self.fed)
        self._sessions: dict[frozenset, object] = {}
        if self.states:
            warm = self._open(self._skeleton(model, base_dir))
            weights = self._weights_for(warm, {})
            feeds = [_stream(warm, feed, _chunks(feeds, k + 1), self.states, weights)[0]
                     for k, feed in enumerate(feeds)]
        budget = PROBE_ELEMENTS // STREAM_STEPS if self.states else PROBE_ELEMENTS   # a stream runs each feed on
        self.feeds = {False: feeds, True: _first_samples(feeds, budget)}
        session = self._open(self.fed)   # the reference run; dropped after
        self.outputs = [o.name for o in session.get_outputs()]
        self.float_outputs = [i for i, o in enumerate(session.get_outputs())
                              if "float" in o.type or o.type == "tensor(undefined)"]
        self.reference = {small: self._outputs(session, {}, small, self.workers) for small in (False, True)}
        if not any(float(np.var(r)) > 0 for r in self.reference[True] if np.all(np.isfinite(r))):
            raise ProbeUnavailable("the model's float outputs are all zero or not finite on synthetic inputs")

    def _skeleton(self, model: ModelProto, base_dir: Path | None) -> ModelProto:
        """A copy of ``model`` whose large main-graph float initializers refer to ``arrays``
        (read once, from the model or its external data) instead of holding their values; the
        weights are never copied into the skeleton. Other external tensors are read in."""
        sk = ModelProto()
        _copy_fields(sk, model, skip="graph")
        _copy_fields(sk.graph, model.graph, skip="initializer")
        for t in model.graph.initializer:
            if t.data_type in SHAREABLE and (is_external(t) or t.ByteSize() >= SHARED_BYTES):
                self._keep(t, base_dir)
                _refer(sk.graph.initializer.add(), t)
            else:
                sk.graph.initializer.add().CopyFrom(t)
        for slot in tensor_slots(sk):
            if is_external(slot.tensor) and not _shared(slot.tensor):
                data = tensor_bytes(slot.tensor, base_dir)
                strip_tensor(slot.tensor)
                fill_tensor(slot.tensor, data)
        return sk

    def release(self) -> None:
        """Drop the cached sessions; the next measurement opens what it needs."""
        self._sessions.clear()

    def forget(self) -> None:
        """Drop the sessions and every weight that can be read again from the model: after
        probing only the final checks remain, and they read what they need."""
        self.release()
        for name in self._sources:
            self.arrays.pop(name, None)

    def _keep(self, t, base_dir: Path | None, rereadable: bool = True) -> None:
        """Read ``t``'s values into ``arrays`` (once per name); ``rereadable``: ``t`` keeps them,
        so ``forget`` may drop the copy."""
        if t.name not in self.arrays and t.name not in self._sources:
            self.arrays[t.name] = np.frombuffer(tensor_bytes(t, base_dir),
                                                STORAGE_DTYPES[t.data_type]).reshape(tuple(t.dims))
            if rereadable:
                self._sources[t.name] = (t, base_dir)

    def _array(self, name: str) -> np.ndarray:
        """A large weight's values: held, or read again after ``forget``."""
        if name in self.arrays:
            return self.arrays[name]
        t, base_dir = self._sources[name]
        return np.frombuffer(tensor_bytes(t, base_dir), STORAGE_DTYPES[t.data_type]).reshape(tuple(t.dims))

    def _share(self, skeleton: ModelProto) -> None:
        """Share the large initializers ``_feedable`` made of Constant nodes' values too (held
        to the end: the skeleton no longer has them)."""
        for t in skeleton.graph.initializer:
            if not _shared(t) and t.data_type in SHAREABLE and t.ByteSize() >= SHARED_BYTES:
                self._keep(t, None, rereadable=False)
                _refer(t, t)

    def _open(self, model: ModelProto, fed: frozenset = frozenset()):
        """A session over a skeleton in which the shared weights, and the initializers ``fed``,
        are graph inputs: the shared ones leave the initializers, the others become overridable."""
        work = ModelProto()
        work.CopyFrom(model)   # a skeleton: its large weights hold no values
        listed = {i.name for i in work.graph.input}
        inputs = [t for t in work.graph.initializer if (_shared(t) or t.name in fed) and t.name not in listed]
        work.graph.input.extend(helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)) for t in inputs)
        kept = [t for t in work.graph.initializer if not _shared(t)]
        del work.graph.initializer[:]
        work.graph.initializer.extend(kept)
        return self._fidelity.session(work, quiet=True, threads=1)

    def _weights_for(self, session, extra: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The shared weights ``session`` takes as inputs, but those ``extra`` replaces."""
        return {i.name: self._array(i.name) for i in session.get_inputs()
                if i.name not in extra and (i.name in self.arrays or i.name in self._sources)}

    def _session(self, names: frozenset):
        """A session in which the initializers ``names`` can be fed. The shared weights are
        always inputs, so one session serves every group of them."""
        key = frozenset(n for n in names if n not in self.arrays and n not in self._sources)
        with self._lock:
            if key not in self._sessions:
                if len(self._sessions) >= self.workers:
                    self.release()  # groups come one after another; each worker may be on its own
                self._sessions[key] = self._open(self.fed, key)
            return self._sessions[key]

    def _outputs(self, session, extra: dict[str, np.ndarray], small: bool, workers: int = 1) -> list[np.ndarray]:
        """The float outputs on the feeds. A model with a recurrent state runs each feed on as
        a stream of STREAM_STEPS chunks, each call's state fed to the next: a stream's error
        builds up through the state, and one call from a clean state does not show it."""
        weights = {**self._weights_for(session, extra), **extra}
        feeds = self.feeds[small]
        if self.states:
            def run(k: int) -> list:
                return _stream(session, feeds[k], _chunks(feeds, k), self.states, weights)[1]
        else:
            def run(k: int) -> list:
                return [session.run(None, {**feeds[k], **weights})]
        runs = [r for rs in bounded_map(run, range(len(feeds)), workers if workers > 1 and len(feeds) > 1 else 0,
                                        "nnr-probe-run") for r in rs]
        return [np.concatenate([np.asarray(r[i], dtype=np.float64).ravel() for r in runs]) for i in self.float_outputs]

    def distortion(self, replaced: dict[int, np.ndarray], small: bool = False,
                   group: list[int] | None = None, workers: int | None = None) -> float:
        """Σ over float outputs of MSE ÷ output variance, with the tensors of the given slots
        replaced by the given storage arrays; ``small``: on the first few samples only;
        ``group``: slots whose session to use (one session serves the replacements of a group);
        ``workers``: runs at once over the samples (default: the probe's)."""
        direct = {}
        if all(i in self.feedable for i in replaced):
            direct = {self.feedable[i]: np.ascontiguousarray(a) for i, a in replaced.items()}
            names = frozenset(self.feedable[i] for i in (group or replaced) if i in self.feedable) | set(direct)
            session = self._session(frozenset(names))
        else:  # tensors inside subgraphs or functions cannot be fed: a copy with the values filled in
            work = ModelProto()
            work.CopyFrom(self.base)
            slots = tensor_slots(work)
            for i, a in replaced.items():
                strip_tensor(slots[i].tensor)
                fill_tensor(slots[i].tensor, np.ascontiguousarray(a).tobytes())
            session = self._open(work)
        outs = self._outputs(session, direct, small, self.workers if workers is None else workers)
        total = 0.0
        for ref, out in zip(self.reference[small], outs, strict=True):
            power = float(np.var(ref))
            if power > 0 and math.isfinite(power):
                total += float(np.mean((out - ref) ** 2)) / power
        return total if math.isfinite(total) else math.inf


_MAIN_CONSTANT = re.compile(r"^graph/node\[(\d+):Constant:[^\]]*\]/value$")


def _feedable(model: ModelProto) -> dict[int, str]:
    """Turn ``model``'s main-graph Constant values into initializers; returns slot index →
    initializer name for every tensor that can be fed (slots numbered as in the model before)."""
    graph = model.graph
    names = {}
    constants = {}
    for slot in tensor_slots(model):
        if slot.path.startswith("graph/initializer["):
            names[slot.index] = slot.tensor.name
        elif (m := _MAIN_CONSTANT.match(slot.path)) and len(graph.node[int(m.group(1))].output) == 1:
            constants[int(m.group(1))] = slot.index
    for n in sorted(constants, reverse=True):
        node = graph.node[n]
        tensor = next(a.t for a in node.attribute if a.name == "value")
        moved = graph.initializer.add()
        moved.CopyFrom(tensor)
        moved.name = node.output[0]
        names[constants[n]] = moved.name
        del graph.node[n]
    return names


SQUASHING = {"Sigmoid", "Softmax", "LogSoftmax", "Tanh"}
SHAPE_ONLY = {"Reshape", "Transpose", "Squeeze", "Unsqueeze", "Identity", "Flatten"}


def _measure_before_squashing(graph, keep: set[str] = frozenset()) -> None:
    """Replace each graph output computed by a final Sigmoid/Softmax/Tanh (through shape-only
    ops) by that op's input: saturation hides weight noise in probabilities on made-up inputs
    (a detector that sees no text, a pitch tracker that hears no voice), logits do not.
    Outputs in ``keep`` (recurrent states, fed back as they are) stay."""
    producer = {o: n for n in graph.node for o in n.output}
    outputs = []
    for out in graph.output:
        name = out.name
        node = producer.get(name) if name not in keep else None
        while node is not None and node.op_type in SHAPE_ONLY:
            node = producer.get(node.input[0])
        if node is not None and node.op_type in SQUASHING:
            outputs.append(helper.make_empty_tensor_value_info(node.input[0]))
        else:
            outputs.append(out)
    del graph.output[:]
    seen = set()
    graph.output.extend(o for o in outputs if not (o.name in seen or seen.add(o.name)))


STREAM_STEPS = 8   # chunks a recurrent model runs through: to warm its state up, then to measure


def _chunks(feeds: list[dict[str, np.ndarray]], first: int) -> list[dict[str, np.ndarray]]:
    """STREAM_STEPS chunks of a synthetic stream: the feeds in turn from ``first`` on."""
    return [feeds[(first + step) % len(feeds)] for step in range(STREAM_STEPS)]


def _stream(session, feed: dict[str, np.ndarray], chunks: list[dict[str, np.ndarray]], states: dict[str, str],
            weights: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], list]:
    """Run ``chunks`` one after another from ``feed``'s recurrent states, each call's state
    outputs fed to the next call (``weights``: the session's weight inputs). Returns ``feed``
    with the states reached (a zero state hides the recurrent weights from the probe) and
    every call's outputs."""
    names = [o.name for o in session.get_outputs()]
    current, runs = dict(feed), []
    for chunk in chunks:
        runs.append(session.run(None, {**chunk, **weights, **{i: current[i] for i in states}}))
        outs = dict(zip(names, runs[-1]))
        current.update({i: outs[o].astype(feed[i].dtype) for i, o in states.items()})
    return current, runs


def _first_samples(feeds: list[dict[str, np.ndarray]], elements: int) -> list[dict[str, np.ndarray]]:
    """The first samples of the feeds, as many as keep the largest input within ``elements``
    in all (at least one sample)."""
    chosen, used = [], 0
    for feed in feeds:
        batch = min((v.shape[0] for v in feed.values() if v.ndim), default=1)
        per_sample = max((v.size // max(v.shape[0], 1) for v in feed.values() if v.ndim), default=1)
        n = min(batch, max(0, (elements - used) // max(per_sample, 1)))
        if n == 0:
            break
        chosen.append({k: (v[:n] if v.ndim and v.shape[0] == batch else v) for k, v in feed.items()})
        used += n * per_sample
    if not chosen:
        batch = min((v.shape[0] for v in feeds[0].values() if v.ndim), default=1)
        chosen = [{k: (v[:1] if v.ndim and v.shape[0] == batch else v) for k, v in feeds[0].items()}]
    return chosen


def _rounded(w: Weight, step: float) -> np.ndarray:
    from nnr.codec.floatcast import to_storage

    values = to_float64(w.storage, w.fmt)
    return to_storage(np.round(values / step) * step, w.fmt).reshape(w.storage.shape)


def _channel_steps(w: Weight, step: float) -> np.ndarray | None:
    """Steps per output channel (axis 0), each in proportion to its channel's Laplace scale,
    of geometric mean ``step`` (so about the bits of one step ``step`` at high rate), shaped to
    broadcast over the tensor; None for a tensor of one channel."""
    values = to_float64(w.storage, w.fmt)
    if values.ndim < 2 or values.shape[0] < 2:
        return None
    scales = np.mean(np.abs(values.reshape(values.shape[0], -1)), axis=1)
    scales = np.where(scales > 0, scales, float(np.mean(np.abs(values))))
    logs = exactmath.log2(scales)
    steps = step * exactmath.exp2(logs - float(np.mean(logs)))
    return steps.reshape((-1,) + (1,) * (values.ndim - 1))


def _level_bits(values: np.ndarray, step: float | np.ndarray) -> float:
    """Order-0 entropy, in bits, of the levels of ``values`` rounded at ``step``."""
    _, counts = np.unique(np.round(values / step).astype(np.int64), return_counts=True)
    return float(-np.sum(counts * exactmath.log2(counts / values.size)))


def _equal_rate_channel_steps(w: Weight, step: float) -> tuple[np.ndarray, float] | None:
    """Per-channel steps (:func:`_channel_steps` scaled by a factor) whose levels, with each
    channel's own step written (CHANNEL_SIDE_BITS), take the entropy of one step ``step``'s
    levels, and that factor; None for one channel, or when no factor within 16× either way
    reaches it."""
    base = _channel_steps(w, step)
    if base is None:
        return None
    values = to_float64(w.storage, w.fmt)
    budget = _level_bits(values, step) - CHANNEL_SIDE_BITS * base.size
    lo, hi = -4.0, 4.0                      # log2 of the factor; coarser steps take fewer bits
    if (_level_bits(values, base * exactmath.exp2(hi)) > budget
            or _level_bits(values, base * exactmath.exp2(lo)) <= budget):
        return None
    for _ in range(12):
        mid = (lo + hi) / 2
        if _level_bits(values, base * exactmath.exp2(mid)) > budget:
            lo = mid
        else:
            hi = mid
    scale = float(exactmath.exp2(hi))
    return base * scale, scale


def _grid(q: float) -> float:
    return math.floor(q / QP_GRID + 0.5) * QP_GRID


def plan(model: ModelProto, opts: EncoderOptions, target_snr_db: float = DEFAULT_SNR_DB,
         progress: Progress | None = None, offset_weight: float = OFFSET_WEIGHT,
         max_offset: float = MAX_OFFSET, base_dir: Path | None = None,
         threads: int | None = None) -> tuple[EncoderOptions, Probe, ProbeReport]:
    """Options whose per-tensor steps follow measured output sensitivity, at the level the
    target output SNR on synthetic inputs predicts. External data is read from ``base_dir``.
    Each tensor's qp offset from that level is the 1/√s optimum's times ``offset_weight``,
    within ±``max_offset`` (tools/probe_allocation.py measures other weights).
    Raises ProbeUnavailable when the model cannot be run on synthetic inputs."""
    t0 = time.perf_counter()
    report = ProbeReport(target_snr_db)
    feeds, probe = _running_feeds(model, base_dir, threads)
    report.inputs = {k: (len(feeds),) + tuple(v.shape) if len(feeds) > 1 else tuple(v.shape)
                     for k, v in feeds[0].items()}
    weights = float_weights(model, base_dir, opts, probe.arrays)
    sens: dict[str, float] = {}
    channel: list[str] = []

    def measured(i: int) -> tuple[float, float | None] | None:
        """(output distortion per unit of weight error, rounding weight i; its unit step under
        the channel rule if its steps should follow its channels, else None), None when
        rounding does not move it."""
        w = weights[i]
        step = w.unit_step * exactmath.exp2((opts.qp + PROBE_QP) / 4.0)
        rounded = _rounded(w, step)
        error = float(np.sum((to_float64(rounded, w.fmt) - to_float64(w.storage, w.fmt)) ** 2))
        if error <= 0:
            return None
        group = [v.slot for v in weights[i - i % PROBE_GROUP:i - i % PROBE_GROUP + PROBE_GROUP]]

        def distortion(replacement: np.ndarray) -> float:
            try:
                return probe.distortion({w.slot: replacement}, small=True, group=group, workers=1)
            except Exception as exc:  # onnxruntime cannot run the model with this tensor fed or replaced
                raise ProbeUnavailable(f"onnxruntime failed probing {w.name}: {first_line(exc)}") from None

        d = distortion(rounded)
        if not (d > 0 and math.isfinite(d)):
            return None
        channel_unit = None
        matched = _equal_rate_channel_steps(w, step) if opts.probe_channels and opts.step_rule == "scale" else None
        if matched is not None:
            steps, scale = matched
            d_channel = distortion(_rounded(w, steps))
            if 0 < d_channel < CHANNEL_GAIN * d:
                d = d_channel / (scale * scale)   # as at steps of geometric mean ``step``
                channel_unit = _unit_step(to_float64(w.storage, w.fmt), "channel", opts)
        return d / error, channel_unit

    # with threads, several tensors are measured at once, each run on one onnxruntime thread
    workers = probe.workers if probe.workers > 1 else 0
    with contextlib.closing(bounded_map(measured, range(len(weights)), workers, "nnr-probe", ahead=1)) as results:
        for i, (w, sensitivity) in enumerate(zip(weights, results)):
            if progress:
                progress(i, len(weights), f"probe {w.name}")
            if sensitivity is not None:
                sens[w.name], channel_unit = sensitivity
                if channel_unit is not None:
                    channel.append(w.name)
                    weights[i] = dataclasses.replace(w, unit_step=channel_unit)
    probe.forget()
    if progress:
        progress(len(weights), len(weights), "probe done")
    report.tensors = len(sens)
    report.channel_steps = len(channel)
    report.seconds = time.perf_counter() - t0
    if opts.probe_channels:   # the probe's choice replaces any given; their unit steps are the channel rule's
        opts = dataclasses.replace(opts, channel_steps=tuple(channel))
    return _allocate(weights, sens, opts, target_snr_db, offset_weight, max_offset), probe, report


def _running_feeds(model: ModelProto, base_dir: Path | None,
                   threads: int | None) -> tuple[list[dict[str, np.ndarray]], Probe]:
    """Synthetic feeds the model runs on, and the probe on them. An image input of unknown size
    is tried at each of IMAGE_SIDES in turn: some models accept only some sizes (a text-line
    recogniser's height must pool down to one row). Any failure moves on to the next size (a
    failure that has nothing to do with the size costs a few more tries). Raises
    ProbeUnavailable with the first failure when none runs."""
    try:
        sides = image_sides(model)
    except SamplingError as exc:
        raise ProbeUnavailable(str(exc)) from None
    first = ""
    for side in sides:
        feeds = synthetic_batches(model, image_side=side)
        try:
            return feeds, Probe(model, feeds, base_dir, threads)
        except ProbeUnavailable:
            raise
        except Exception as exc:  # onnxruntime refuses the model or the made-up inputs
            first = first or first_line(exc)   # the text only: the traceback would keep the failed probe's weights
    tried = f" (image sides tried: {', '.join(map(str, sides))})" if len(sides) > 1 else ""
    raise ProbeUnavailable(f"onnxruntime cannot run the model on synthetic inputs{tried}: {first}")


def _allocate(weights: list[Weight], sens: dict[str, float], opts: EncoderOptions,
              target_snr_db: float, offset_weight: float, max_offset: float) -> EncoderOptions:
    measured = [w for w in weights if w.name in sens]
    if not measured:
        return opts
    total = sum(w.numel for w in measured)
    c = math.sqrt(12.0 * 10.0 ** (-target_snr_db / 10.0) / total)   # Σ s_i n_i Δ_i²/12 = target distortion
    qps = {w.name: 4.0 * math.log2(c / math.sqrt(sens[w.name]) / w.unit_step) for w in measured}
    level = _grid(sum(w.numel * qps[w.name] for w in measured) / total)
    offsets = {n: _grid(max(-max_offset, min(max_offset, offset_weight * (q - level)))) for n, q in qps.items()}
    level = max(-80.0, min(40.0, level))
    return dataclasses.replace(opts, qp=level, tensor_qp={n: q for n, q in offsets.items() if q != 0.0})


def next_level(history: list[tuple[float, float]], target_snr_db: float) -> float | None:
    """The qp to code at next, given the (qp, SNR) of the codings so far; None when the last
    one is close enough or no untried level is left. Until the target is bracketed, steps
    assume 6 dB per 4 qp; then the next level is interpolated inside the bracket."""
    qp, snr = history[-1]
    low = target_snr_db - CHECK_TOLERANCE_DB
    if low <= snr <= target_snr_db + OVERSHOOT_DB:
        return None
    met = [q for q, v in history if v >= low]
    missed = [(q, v) for q, v in history if v < low]
    aim = target_snr_db + 0.25 if snr < target_snr_db else target_snr_db + 0.5
    if met and missed and max(met) < min(q for q, _ in missed):
        q_met = max(met)                                    # coarsest level that met the target
        q_miss, v_miss = min(missed)                        # finest level that missed it
        v_met = next(v for q, v in history if q == q_met)
        guess = q_met + (q_miss - q_met) * (v_met - aim) / max(v_met - v_miss, 1e-9)
        nxt = _grid(min(max(guess, q_met + QP_GRID), q_miss - QP_GRID))
        tried = {q for q, _ in history}
        return None if nxt in tried or not q_met < nxt < q_miss else nxt
    return max(-80.0, min(40.0, _grid(qp - (aim - snr) * 4.0 / 6.02)))


def snr_of(distortion: float) -> float:
    return math.inf if distortion <= 0 else -10.0 * math.log10(distortion)


