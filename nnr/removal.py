"""Physical removal of pruned output channels (``--remove``): smaller weights, fewer FLOPs.

Structured pruning zeroes whole output channels; a zeroed channel then carries a constant
(the layer's bias, through what follows). Removal deletes the channel from the producing
layer (its weight slice and bias entry), from the per-channel ops that follow it
(BatchNormalization, element-wise activations, pooling), and from the input side of the
layers that read it, whose biases absorb the constant so the model computes the same thing
as the zeroed one. It is done only where that holds exactly:

* the producer is a Conv with group = 1, a Gemm or a MatMul;
* the channel flows, through that chain of per-channel ops alone, into Convs with group = 1,
  Gemms or MatMuls with constant weights (a Flatten may sit in between when the tensor's
  shape is known), never into a graph output, Add, Concat, Reshape, depthwise Conv, …;
* its constant is zero, or every reader can absorb it: a Conv without padding, a Gemm with
  beta ≠ 0 (not a MatMul, which has no bias).

Every other pruned channel stays zeroed, and the report says why.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from onnx import ModelProto, numpy_helper, shape_inference

from nnr.codec import exactmath

from .graph import consumers_of, float_attr, graph_constants, int_attr, ints_attr, str_attr

UNARY = {
    "Relu": lambda v, n, c: np.maximum(v, 0.0),
    "Sigmoid": lambda v, n, c: 1.0 / (1.0 + exactmath.exp(-v)),
    "Tanh": lambda v, n, c: _tanh(v),
    "Identity": lambda v, n, c: v,
    "LeakyRelu": lambda v, n, c: np.where(v >= 0, v, float_attr(n, "alpha", 0.01) * v),
    "HardSigmoid": lambda v, n, c: np.clip(float_attr(n, "alpha", 0.2) * v + float_attr(n, "beta", 0.5), 0, 1),
    "HardSwish": lambda v, n, c: v * np.clip(v / 6.0 + 0.5, 0, 1),
    "Clip": lambda v, n, c: _clip(v, n, c),
}
"""Element-wise ops a removed channel may pass through, and what they do to its constant."""


def _tanh(v: np.ndarray) -> np.ndarray:
    """tanh from the platform-independent expm1: tanh v = e / (e + 2), e = expm1(2v)."""
    e = exactmath.expm1(2.0 * np.minimum(np.abs(v), 20.0))
    return np.copysign(e / (e + 2.0), v)
POOLS = ("MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool")
CHANNEL_MULTIPLE = 8
"""By default removal leaves each layer a multiple of this many channels (or all it had):
onnxruntime's CPU convolutions work on blocks of 8 channels, and tools/bench_removal.py
measured odd counts (14, 23, 45 on the MNIST CNN) running slower than the unpruned model."""
SHOWN_REASONS = 5


@dataclass
class RemovalReport:
    """Channels removed per layer, channels left zeroed (with why), and the parameter count."""

    removed: dict[str, tuple[int, int]] = field(default_factory=dict)   # weight -> (removed, channels)
    zeroed: dict[str, tuple[int, str]] = field(default_factory=dict)    # weight -> (kept zeroed, why)
    params_before: int = 0
    params_after: int = 0

    @property
    def channels_removed(self) -> int:
        return sum(n for n, _ in self.removed.values())

    def summary(self) -> str:
        text = (f"removed {self.channels_removed} channels from {len(self.removed)} layer"
                f"{'' if len(self.removed) == 1 else 's'}; float parameters "
                f"{self.params_before:,} -> {self.params_after:,} "
                f"({self.params_after / max(self.params_before, 1) - 1:+.1%})")
        if self.zeroed:
            shown = list(self.zeroed.items())[:SHOWN_REASONS]
            text += "; zeroed instead: " + "; ".join(f"{n} in {w} ({why})" for w, (n, why) in shown)
            if len(self.zeroed) > SHOWN_REASONS:
                text += f"; and in {len(self.zeroed) - SHOWN_REASONS} more layers"
        return text


def _clip(v: np.ndarray, node, consts: dict) -> np.ndarray:
    lo = float_attr(node, "min", -np.inf)
    hi = float_attr(node, "max", np.inf)
    if len(node.input) > 1 and node.input[1]:
        lo = float(numpy_helper.to_array(consts[node.input[1]]))
    if len(node.input) > 2 and node.input[2]:
        hi = float(numpy_helper.to_array(consts[node.input[2]]))
    return np.clip(v, lo, hi)


def float_params(model: ModelProto) -> int:
    """Float (32/16/bf16/64-bit) elements of the main graph's constants (initializers and
    Constant nodes): the parameter count removal reports."""
    return sum(int(np.prod(t.dims)) for t in graph_constants(model).values() if t.data_type in (1, 10, 11, 16))


@dataclass
class _Chain:
    ops: list           # per-channel nodes after the producer, in order
    readers: list       # (node, block) reading the channel: Conv/Gemm/MatMul; block = features per channel
    problem: str = ""


def _chain(model: ModelProto, producer, consts: dict, consumers: dict, shapes: dict) -> _Chain:
    """Follow the producer's output through per-channel ops to the layers that read it."""
    outputs = {o.name for o in model.graph.output}
    ops, t, block, global_pooled = [], producer.output[0], 1, False
    while True:
        if t in outputs:
            return _Chain(ops, [], "its channels reach a model output")
        users = consumers.get(t, [])
        if not users:
            return _Chain(ops, [], "its output is not used")
        if len(users) == 1 and users[0].input[0] == t and _per_channel(users[0], consts):
            node = users[0]
            global_pooled = global_pooled or node.op_type.startswith("Global")
            ops.append(node)
            t = node.output[0]
            continue
        if len(users) == 1 and users[0].op_type == "Flatten" and int_attr(users[0], "axis", 1) == 1:
            shape = shapes.get(t)
            if global_pooled:
                block = 1
            elif shape is None or len(shape) < 2 or any(not isinstance(d, int) or d <= 0 for d in shape[2:]):
                return _Chain(ops, [], "a Flatten of a tensor whose spatial size is unknown follows")
            else:
                block = int(np.prod(shape[2:]))
            ops.append(users[0])
            t = users[0].output[0]
            continue
        readers = []
        for node in users:
            if node.input[0] != t or len(node.input) < 2 or node.input[1] not in consts:
                return _Chain(ops, [], f"read by {node.op_type}, which removal cannot follow")
            if node.op_type == "Conv" and int_attr(node, "group", 1) == 1 and block == 1:
                readers.append((node, 1))
            elif node.op_type == "Gemm" and not int_attr(node, "transA", 0):
                readers.append((node, block))
            elif node.op_type == "MatMul" and len(consts[node.input[1]].dims) == 2:
                readers.append((node, block))
            else:
                return _Chain(ops, [], f"read by {'grouped Conv' if node.op_type == 'Conv' else node.op_type}, "
                                       "which removal cannot follow")
        return _Chain(ops, readers)


def _per_channel(node, consts: dict) -> bool:
    if node.op_type == "BatchNormalization":
        return all(name in consts for name in node.input[1:5]) and len(node.output) == 1
    if node.op_type == "Clip":
        return all(not name or name in consts for name in node.input[1:])
    if node.op_type in POOLS:
        return True
    return node.op_type in UNARY


def _constants_after(chain: _Chain, base: np.ndarray, consts: dict) -> np.ndarray | None:
    """The value each (zeroed) channel carries into the readers, or None when a pool's padding
    would make it vary."""
    v = base.astype(np.float64)
    for node in chain.ops:
        if node.op_type == "BatchNormalization":
            scale, bias, mean, var = (numpy_helper.to_array(consts[n]).astype(np.float64) for n in node.input[1:5])
            v = (v - mean) / np.sqrt(var + float_attr(node, "epsilon", 1e-5)) * scale + bias
        elif node.op_type in UNARY:
            v = UNARY[node.op_type](v, node, consts)
        elif node.op_type == "AveragePool" and any(ints_attr(node, "pads", [])) \
                and int_attr(node, "count_include_pad", 0):
            return None
    return v


def _padded(node) -> bool:
    auto = str_attr(node, "auto_pad", "NOTSET")
    pads = ints_attr(node, "pads", [])
    return auto in ("SAME_UPPER", "SAME_LOWER") or any(pads)


def _set(t, arr: np.ndarray) -> None:
    t.CopyFrom(numpy_helper.from_array(arr.astype(numpy_helper.to_array(t).dtype), t.name))


def remove_channels(model: ModelProto, dropped: dict[str, np.ndarray],
                    multiple: int = CHANNEL_MULTIPLE) -> RemovalReport:
    """Remove, in place, the zeroed output channels ``dropped`` (weight name -> bool mask) where
    that is exact, keeping each layer's channel count a multiple of ``multiple``; returns what
    was removed and what stays zeroed. Weights must be inline."""
    report = RemovalReport(params_before=float_params(model))
    try:
        shapes = {v.name: [d.dim_value if d.HasField("dim_value") else None for d in v.type.tensor_type.shape.dim]
                  for v in shape_inference.infer_shapes(model).graph.value_info}
    except Exception:  # noqa: BLE001 - shapes are a help, not a requirement
        shapes = {}
    changed: set[str] = set()
    consumers = consumers_of(model)   # removal only adds bias inputs, which no chain follows
    for wname, mask in dropped.items():
        if not mask.any():
            continue
        consts = graph_constants(model)
        producer = next((n for n in model.graph.node if len(n.input) > 1 and n.input[1] == wname), None)
        why = _producer_problem(producer)
        chain = _Chain([], [], why) if why else _chain(model, producer, consts, consumers, shapes)
        if chain.problem:
            report.zeroed[wname] = (int(mask.sum()), chain.problem)
            continue
        w = numpy_helper.to_array(consts[wname])
        axis = _out_axis(producer)
        bias = _bias_vector(producer, consts, w.shape[axis])
        carried = _constants_after(chain, bias if bias is not None else np.zeros(w.shape[axis]), consts)
        absorbable = carried is not None and all(_absorbs(node) for node, _ in chain.readers)
        exact = mask & ((carried == 0) if not absorbable else True) if carried is not None else np.zeros_like(mask)
        remove = _round_to_multiple(exact, multiple)
        kept = _why_kept(mask, exact, remove, carried, chain.readers, multiple)
        if kept:
            report.zeroed[wname] = kept
        if not remove.any():
            continue
        keep = ~remove
        for node, block in chain.readers:
            _shrink_reader(node, consts, model, keep, carried, block)
        _set(consts[wname], np.compress(keep, w, axis=axis))
        if bias is not None:
            _set(consts[producer.input[2]], _compress_bias(numpy_helper.to_array(consts[producer.input[2]]), keep))
        for node in chain.ops:
            if node.op_type == "BatchNormalization":
                for name in node.input[1:5]:
                    _set(consts[name], numpy_helper.to_array(consts[name])[keep])
        changed.update([producer.output[0]] + [o for n in chain.ops for o in n.output])
        report.removed[wname] = (int(remove.sum()), int(mask.size))
    keep_info = [v for v in model.graph.value_info if v.name not in changed]
    del model.graph.value_info[:]
    model.graph.value_info.extend(keep_info)
    report.params_after = float_params(model)
    return report


def _why_kept(mask: np.ndarray, exact: np.ndarray, remove: np.ndarray, carried: np.ndarray | None,
              readers: list, multiple: int) -> tuple[int, str] | None:
    """(count, reasons) of the pruned channels that stay zeroed instead of being removed."""
    reasons = []
    blocked, rounded = int((mask & ~exact).sum()), int((exact & ~remove).sum())
    if blocked:
        if carried is None:
            reasons.append("a padded pool would make its constant vary")
        elif any(node.op_type == "Conv" for node, _ in readers):
            reasons.append("a padded convolution reads its non-zero constant")
        else:
            reasons.append("a MatMul, which has no bias to absorb it, reads its non-zero constant")
    if rounded:
        reasons.append(f"channel count kept a multiple of {multiple}")
    return (blocked + rounded, "; ".join(reasons)) if reasons else None


def _round_to_multiple(removable: np.ndarray, multiple: int) -> np.ndarray:
    """The removable channels to actually remove so that the kept count is a multiple of
    ``multiple``: the highest-indexed removable ones stay (zeroed) when some must."""
    n, k = removable.size, int(removable.sum())
    if multiple <= 1 or k == 0:
        return removable
    keep = -(-(n - k) // multiple) * multiple
    count = max(n - max(keep, 0), 0) if keep < n else 0
    out = np.zeros_like(removable)
    out[np.flatnonzero(removable)[:count]] = True
    return out


def _producer_problem(node) -> str:
    if node is None:
        return "no layer uses it as its weight"
    if node.op_type == "Conv" and int_attr(node, "group", 1) != 1:
        return "grouped convolution: its input channels would have to go too"
    if node.op_type not in ("Conv", "Gemm", "MatMul"):
        return f"{node.op_type} outputs cannot be removed"
    return ""


def _out_axis(node) -> int:
    if node.op_type == "Conv":
        return 0
    if node.op_type == "Gemm":
        return 0 if int_attr(node, "transB", 0) else 1
    return 1


def _bias_vector(node, consts: dict, n: int) -> np.ndarray | None:
    if node.op_type == "MatMul" or len(node.input) < 3 or not node.input[2]:
        return None
    b = numpy_helper.to_array(consts[node.input[2]]).astype(np.float64)
    if node.op_type == "Gemm":
        b = np.broadcast_to(b, (1, n)).reshape(n) * float_attr(node, "beta", 1.0)
    return b.reshape(n)


def _compress_bias(b: np.ndarray, keep: np.ndarray) -> np.ndarray:
    if b.ndim == 0 or b.shape[-1] == 1:
        return b
    return np.compress(keep, b, axis=b.ndim - 1)


def _absorbs(node) -> bool:
    if node.op_type == "MatMul":
        return False
    if node.op_type == "Gemm":
        return float_attr(node, "beta", 1.0) != 0
    return not _padded(node)


def _shrink_reader(node, consts: dict, model: ModelProto, keep: np.ndarray, carried: np.ndarray, block: int) -> None:
    """Drop the removed channels from a reader's input side, its bias absorbing their constants."""
    w = numpy_helper.to_array(consts[node.input[1]])
    features = np.repeat(keep, block)
    if node.op_type == "Conv":
        in_axis = 1
    elif node.op_type == "Gemm":
        in_axis = 1 if int_attr(node, "transB", 0) else 0
    else:
        in_axis = 0
    gone = np.repeat(~keep * np.nan_to_num(carried), block)
    shift = np.tensordot(np.moveaxis(w.astype(np.float64), in_axis, -1), gone, axes=([-1], [0]))
    if node.op_type == "Conv":
        shift = shift.reshape(w.shape[0], -1).sum(axis=1)
    elif node.op_type == "Gemm":
        shift = shift * float_attr(node, "alpha", 1.0) / float_attr(node, "beta", 1.0)
    if np.any(shift):
        out = shift.shape[0]
        if len(node.input) < 3 or not node.input[2]:
            name = node.input[1] + ".absorbed_bias"
            model.graph.initializer.append(numpy_helper.from_array(np.zeros(out, dtype=w.dtype), name))
            while len(node.input) < 3:
                node.input.append("")
            node.input[2] = name
            consts[name] = model.graph.initializer[-1]
        b = numpy_helper.to_array(consts[node.input[2]])
        _set(consts[node.input[2]], (b.astype(np.float64) + np.broadcast_to(shift, b.shape if b.ndim else (out,))))
    _set(consts[node.input[1]], np.compress(features, w, axis=in_axis))


def synthetic_inputs(model: ModelProto, batch: int = 1, seed: int = 0) -> dict[str, np.ndarray] | None:
    """Made-up inputs of the graph's declared types and shapes (nnr.synthetic) that onnxruntime
    runs the model on, trying each of nnr.synthetic.IMAGE_SIDES for an image of undeclared
    size; None when there are none."""
    from . import fidelity
    from .synthetic import image_sides, synthetic_inputs as made_up

    try:
        sides = image_sides(model)
        sess = fidelity.session(model, quiet=True)
    except Exception:  # inputs that cannot be made up (SamplingError), or a model onnxruntime cannot load
        return None
    for side in sides:
        feed = made_up(model, batch, seed, side)
        try:
            sess.run(None, feed)
            return feed
        except Exception:  # onnxruntime refuses inputs of this size
            continue
    return None


def inference_ms(model: ModelProto, feed: dict[str, np.ndarray], runs: int = 30) -> float:
    """Median wall time of one onnxruntime run on ``feed``, in milliseconds (after one warm-up)."""
    import time

    from . import fidelity

    sess = fidelity.session(model)
    sess.run(None, feed)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        sess.run(None, feed)
        times.append(time.perf_counter() - t0)
    return 1000.0 * float(np.median(times))
