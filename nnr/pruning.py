"""Pruning of an ONNX model's weights before quantization: the spec, which tensors, the report.

Spec (``--prune``):

* ``magnitude:F``  drop the fraction F ∈ [0, 1) of smallest-magnitude weights of each
  prunable tensor (with ``global``: one threshold over all prunable tensors);
* ``std:G``        drop |w| < G·σ in each prunable tensor (σ its standard deviation);
* ``filters:NORM:F`` with NORM ``l1``, ``l2``, ``random:SEED`` or ``activation``: drop the
  fraction F of output channels of each Conv, Gemm and MatMul weight — Conv filters (axis 0),
  Gemm/MatMul output rows or columns — ranked by the norm of their weights, a seeded draw,
  or the mean |output| of the channel on calibration inputs (``activation``).

Prunable by default: the weight inputs of Conv, ConvTranspose, Gemm, MatMul, LSTM, GRU, RNN
and (com.microsoft) Attention. Never by default: biases, normalisation parameters,
embeddings (Gather tables) and anything else. ``include`` and ``exclude`` name patterns
(fnmatch, e.g. ``*embed*``) override this, exclude last. Structured pruning leaves alone the
layers whose outputs reach a graph output without passing another weight layer (their
channels are the model's outputs), and weights it cannot slice by output channel; the
report says which. Dropped values become exact zeros in the weight's own storage.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from onnx import ModelProto, TensorProto

from nnr.codec import pruning as cp
from nnr.codec.floatcast import to_float64
from nnr.formats.onnx_io import (COMPLEX_TYPES, FLOAT_TYPES, STORAGE_DTYPES, fill_tensor, strip_tensor, tensor_bytes,
                             uses_typed_field)

from .graph import consumers_of, graph_constants, int_attr
from .errors import OptionError
from .tensorcodec import FLOAT_FORMAT_OF

METHODS = ("magnitude", "std", "filters")
RANKINGS = ("l1", "l2", "random", "activation")
WEIGHT_INPUTS = {"Conv": (1,), "ConvTranspose": (1,), "Gemm": (1,), "MatMul": (0, 1), "LSTM": (1, 2),
                 "GRU": (1, 2), "RNN": (1, 2), "Attention": (1,)}
"""Inputs of each op that hold layer weights (MatMul: whichever side is a constant)."""
WEIGHT_OPS = frozenset(WEIGHT_INPUTS)


@dataclass(frozen=True)
class PruneSpec:
    """A parsed ``--prune`` value."""

    method: str
    amount: float
    ranking: str = ""
    seed: int = 0

    @property
    def structured(self) -> bool:
        return self.method == "filters"


def _number(text: str, usage: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise OptionError(usage) from None


def parse_spec(text: str) -> PruneSpec:
    """Parse ``magnitude:F``, ``std:G`` or ``filters:(l1|l2|random:SEED|activation):F``."""
    parts = text.split(":") if isinstance(text, str) else []
    method = parts[0] if parts else ""
    usage = ("expected magnitude:F, std:G or filters:RANKING:F with RANKING l1, l2, random:SEED "
             f"or activation (F a fraction in [0, 1)), got {text!r}")
    if method not in METHODS:
        raise OptionError(f"unknown pruning method {method!r}; {usage}")
    if method in ("magnitude", "std"):
        if len(parts) != 2:
            raise OptionError(usage)
        amount, ranking, seed = _number(parts[1], usage), "", 0
    else:
        ranking = parts[1] if len(parts) > 1 else ""
        if ranking not in RANKINGS:
            raise OptionError(f"unknown filter ranking {ranking!r}; {usage}")
        if ranking == "random":
            if len(parts) != 4:
                raise OptionError(f"random ranking needs a seed: filters:random:SEED:F, got {text!r}")
            if not parts[2].isdigit():
                raise OptionError(f"the random seed must be an integer ≥ 0, got {parts[2]!r}")
            seed, amount = int(parts[2]), _number(parts[3], usage)
        else:
            if len(parts) != 3:
                raise OptionError(usage)
            seed, amount = 0, _number(parts[2], usage)
    if method == "std":
        if not np.isfinite(amount) or amount < 0:
            raise OptionError(f"std:G needs a finite G ≥ 0 (the threshold is G·σ), got {parts[1]!r}")
    elif not 0 <= amount < 1:
        raise OptionError(f"the pruning fraction must be in [0, 1), got {amount:g}"
                          + (" (1 would remove every weight)" if amount >= 1 else ""))
    return PruneSpec(method, amount, ranking, seed)


@dataclass
class TensorReport:
    """What pruning did to one tensor."""

    name: str
    op: str
    size: int
    zeros_before: int
    zeros_after: int
    channels: int = 0
    channels_pruned: int = 0
    note: str = ""
    dropped: np.ndarray | None = None   # structured pruning: which output channels were zeroed


@dataclass
class PruneReport:
    """Per-tensor results and the tensors structured pruning left alone (with why)."""

    tensors: list[TensorReport] = field(default_factory=list)
    removal: object | None = None   # nnr.removal.RemovalReport when channels were physically removed

    @property
    def sparsity(self) -> float:
        """Fraction of zeros over the pruned tensors."""
        n = sum(t.size for t in self.tensors if not t.note)
        return sum(t.zeros_after for t in self.tensors if not t.note) / n if n else 0.0

    def summary(self) -> str:
        done = [t for t in self.tensors if not t.note]
        n = sum(t.size for t in done)
        text = f"pruned {len(done)} tensors ({n:,} weights) to {self.sparsity:.1%} zeros"
        ch = sum(t.channels_pruned for t in done)
        if ch:
            text += f", {ch} of {sum(t.channels for t in done)} output channels"
        skipped = [t for t in self.tensors if t.note]
        if skipped:
            text += f"; left alone: {', '.join(f'{t.name} ({t.note})' for t in skipped)}"
        if self.removal is not None:
            text += "\n" + self.removal.summary()
        return text


@dataclass
class _Target:
    name: str
    op: str
    tensor: TensorProto
    node: object | None
    axis: int | None       # output-channel axis for structured pruning, None if it has none


def _reaches_output(model: ModelProto, start: str, consumers: dict[str, list]) -> bool:
    """Whether ``start`` flows into a graph output without passing another weight layer."""
    outputs = {o.name for o in model.graph.output}
    seen, todo = set(), [start]
    while todo:
        name = todo.pop()
        if name in outputs:
            return True
        if name in seen:
            continue
        seen.add(name)
        for node in consumers.get(name, []):
            if node.op_type not in WEIGHT_OPS:
                todo.extend(node.output)
    return False


def _output_axis(node, slot: int, dims: list[int]) -> int | None:
    if node.op_type == "Conv" and len(dims) >= 3:
        return 0
    if node.op_type == "Gemm" and len(dims) == 2 and slot == 1:
        return 0 if int_attr(node, "transB", 0) else 1
    if node.op_type == "MatMul" and len(dims) == 2 and slot == 1:
        return 1
    return None


def targets(model: ModelProto, include: tuple[str, ...] = (), exclude: tuple[str, ...] = ()) -> list[_Target]:
    """The float constants pruning applies to, in graph order, with their output-channel axis."""
    consts = graph_constants(model)
    picked: dict[str, _Target] = {}
    for node in model.graph.node:
        for slot in WEIGHT_INPUTS.get(node.op_type, ()):
            if slot < len(node.input) and node.input[slot] in consts and node.input[slot] not in picked:
                t = consts[node.input[slot]]
                picked[node.input[slot]] = _Target(node.input[slot], node.op_type, t, node,
                                                   _output_axis(node, slot, list(t.dims)))
    for name, t in consts.items():
        if name not in picked and any(fnmatch.fnmatchcase(name, p) for p in include):
            picked[name] = _Target(name, "by name", t, None, None)
    return [tg for name, tg in picked.items()
            if (tg.tensor.data_type in FLOAT_TYPES or tg.tensor.data_type in COMPLEX_TYPES)
            and len(tg.tensor.dims) >= 1
            and not any(fnmatch.fnmatchcase(name, p) for p in exclude)]


def _values(t: TensorProto, base_dir: Path | None) -> tuple[np.ndarray, np.ndarray]:
    storage = np.frombuffer(tensor_bytes(t, base_dir), dtype=STORAGE_DTYPES[t.data_type]).copy()
    if t.data_type in COMPLEX_TYPES:
        return storage, storage.astype(np.complex128).reshape(tuple(t.dims))
    return storage, to_float64(storage, FLOAT_FORMAT_OF[t.data_type]).reshape(tuple(t.dims))


def _store(t: TensorProto, storage: np.ndarray) -> None:
    typed = uses_typed_field(t)
    strip_tensor(t)
    fill_tensor(t, storage.tobytes(), typed=typed)


def activation_importance(model: ModelProto, tgts: list[_Target], inputs: dict[str, np.ndarray],
                          batch: int = 8) -> dict[str, np.ndarray]:
    """Mean |output| of each output channel of each target's layer over ``inputs``."""
    from . import fidelity

    wanted = {tg.name: tg.node.output[0] for tg in tgts if tg.node is not None and tg.axis is not None}
    names = list(dict.fromkeys(wanted.values()))
    if not names:
        return {}
    sums: dict[str, np.ndarray] = {}
    for values in fidelity.intermediates(model, names, inputs, batch):
        for name, a in values.items():
            a = np.abs(np.asarray(a, dtype=np.float64))
            axis = 1 if a.ndim >= 3 else a.ndim - 1
            sums[name] = sums.get(name, 0.0) + a.sum(axis=tuple(i for i in range(a.ndim) if i != axis))
    return {w: sums[o] / max(float(np.sum(sums[o])), 1e-300) for w, o in wanted.items()}


def prune_model(model: ModelProto, spec: PruneSpec | str, *, global_threshold: bool = False,
                criterion: str = "modulus", include: tuple[str, ...] = (), exclude: tuple[str, ...] = (),
                calibration: dict[str, np.ndarray] | None = None, steps: int = 1,
                base_dir: Path | None = None) -> PruneReport:
    """Prune ``model`` in place and report what changed.

    ``steps`` > 1 prunes iteratively: the target is reached in equal steps, importance
    re-measured after each (which matters only for ``activation``: without retraining,
    weight norms do not change when other weights are dropped)."""
    spec = parse_spec(spec) if isinstance(spec, str) else spec
    if global_threshold and spec.method != "magnitude":
        raise OptionError("a global threshold applies to magnitude pruning only (std and filters are per layer)")
    if spec.ranking == "activation" and not calibration:
        raise OptionError("filters:activation ranks channels by their output on real data: give --calibration")
    if criterion not in cp.CRITERIA:
        raise OptionError(f"unknown criterion {criterion!r}; choose one of {', '.join(cp.CRITERIA)}")
    if not isinstance(steps, int) or steps < 1:
        raise OptionError(f"pruning steps must be a positive integer, got {steps!r}")
    tgts = targets(model, include, exclude)
    report = PruneReport()
    if spec.structured:
        _prune_channels(model, tgts, spec, calibration, steps, base_dir, report)
        return report
    loaded = {tg.name: _values(tg.tensor, base_dir) for tg in tgts}
    threshold = None
    if global_threshold:
        threshold = cp.global_threshold([cp.scores(v, criterion) for _, v in loaded.values()], spec.amount)
    for tg in tgts:
        storage, values = loaded[tg.name]
        if spec.method == "std":
            keep = cp.std_mask(values, spec.amount, criterion)
        elif threshold is not None:
            keep = cp.scores(values, criterion) > threshold
        else:
            keep = cp.smallest_mask(cp.scores(values, criterion), spec.amount)
        before = int(np.count_nonzero(values == 0))
        storage.reshape(values.shape)[~keep] = 0
        _store(tg.tensor, storage)
        report.tensors.append(TensorReport(tg.name, tg.op, values.size, before,
                                           int(np.count_nonzero((values == 0) | ~keep))))
    return report


def _prune_channels(model: ModelProto, tgts: list[_Target], spec: PruneSpec,
                    calibration: dict[str, np.ndarray] | None, steps: int, base_dir: Path | None,
                    report: PruneReport) -> None:
    consumers = consumers_of(model)
    chosen = []
    for tg in tgts:
        note = ""
        if tg.axis is None:
            note = "no output-channel axis"
        elif _reaches_output(model, tg.node.output[0], consumers):
            note = "its channels are model outputs"
        if note:
            report.tensors.append(TensorReport(tg.name, tg.op, int(np.prod(tg.tensor.dims)), 0, 0, note=note))
        else:
            chosen.append(tg)
    dropped = {tg.name: np.zeros(tg.tensor.dims[tg.axis], dtype=bool) for tg in chosen}
    loaded = {tg.name: _values(tg.tensor, base_dir) for tg in chosen}
    zeros_before = {tg.name: int(np.count_nonzero(loaded[tg.name][1] == 0)) for tg in chosen}
    for step in range(1, steps + 1):
        fraction = spec.amount * step / steps
        importance = activation_importance(model, chosen, calibration) if spec.ranking == "activation" else {}
        for tg in chosen:
            storage, values = loaded[tg.name]
            n = values.shape[tg.axis]
            if spec.ranking in ("l1", "l2"):
                score = cp.channel_scores(values, tg.axis, spec.ranking)
            elif spec.ranking == "random":
                score = cp.random_channel_scores(n, spec.seed, tg.name)
            else:
                score = importance[tg.name]
            score = np.where(dropped[tg.name], -np.inf, score)   # once dropped, always dropped
            keep_ch = cp.smallest_mask(score, fraction)
            dropped[tg.name] |= ~keep_ch
            keep = cp.channel_mask(values.shape, tg.axis, ~dropped[tg.name])
            storage.reshape(values.shape)[~keep] = 0
            values[~keep] = 0.0
            _store(tg.tensor, storage)
    for tg in chosen:
        values = loaded[tg.name][1]
        report.tensors.append(TensorReport(tg.name, tg.op, values.size, zeros_before[tg.name],
                                           int(np.count_nonzero(values == 0)), channels=values.shape[tg.axis],
                                           channels_pruned=int(dropped[tg.name].sum()), dropped=dropped[tg.name]))

