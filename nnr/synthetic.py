"""Synthetic model inputs made from the input signature alone, for encoder probes that need no
user data.

Each graph input gets seeded values of its declared type and shape:

* an input shaped like an output whose name extends its own (h → h_out) is a carried
  recurrent state: zeros (a fresh stream);
* float image batches (N×C×H×W with C ≤ 4): smooth noise (8×8 blocks plus fine detail);
* other float inputs (audio, features): white noise;
* integer inputs that index an embedding table (Gather on an initializer): uniform ids over
  the table's rows; integer masks (name contains ``mask``) are ones, token types zeros.

Float inputs are not known to be normalised one way or another, so the samples of a batch
span a decade of amplitude (standard deviation 0.1 to 1). A dynamic dimension is filled only
when there is a hint: the first one is the batch; the height or width of an image input
(float N×C×H×W, C ≤ 4) takes the other, known side if it is larger than the side asked for
(``image_side``, 224 by default; the probe tries each of IMAGE_SIDES), else that side; one
whose name says it is a length (``seq``, ``len``, ``time``, ``sample``, ``frame``, ``token``, ``step``) gets 64
tokens or 16,000 samples. Anything else cannot be sampled and raises :class:`SamplingError`.
"""

from __future__ import annotations

import re

import numpy as np
from onnx import ModelProto, TensorProto, helper

MAX_ELEMENTS = 1 << 20            # elements per input across the batch: keeps a probe run cheap
BATCH = 8
TOKENS, SAMPLES = 64, 16000       # filled-in lengths of token and signal dimensions
IMAGE_SIDES = (224, 128, 64, 32)  # filled-in sides of an image input of unknown size, in the order tried
_LENGTH = re.compile(r"seq|len|time|sample|frame|token|step", re.IGNORECASE)
_FLOATS = (TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.DOUBLE, TensorProto.BFLOAT16)
_INTEGERS = (TensorProto.INT64, TensorProto.INT32, TensorProto.INT16, TensorProto.INT8, TensorProto.UINT8)


class SamplingError(ValueError):
    """The model's inputs cannot be made up from its signature; the message says which and why."""


def _dims(vi, batch: int, fill: int, image_side: int) -> list[int]:
    tt = vi.type.tensor_type
    if not tt.HasField("shape"):
        raise SamplingError(f"input {vi.name!r} has no declared shape")
    declared = [int(d.dim_value) if d.HasField("dim_value") and d.dim_value > 0 else 0 for d in tt.shape.dim]
    image = (len(declared) == 4 and 0 < declared[1] <= 4 and tt.elem_type in _FLOATS)
    dims = []
    for axis, d in enumerate(tt.shape.dim):
        if declared[axis]:
            dims.append(declared[axis])
        elif axis == 0:
            dims.append(batch)
        elif image:  # an N×C×H×W image of unknown size: its known side, at least image_side
            dims.append(max(max(declared[2:]), image_side))
        elif _LENGTH.search(d.dim_param or ""):
            dims.append(fill)
        else:
            raise SamplingError(f"input {vi.name!r}: dimension {axis} ({d.dim_param or 'unnamed'}) is dynamic "
                                "with no hint of its size")
    return dims


def _output_shapes(model: ModelProto) -> dict[str, tuple]:
    shapes = {}
    for o in model.graph.output:
        tt = o.type.tensor_type
        if tt.HasField("shape"):
            shapes[o.name] = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in tt.shape.dim)
    return shapes


def _is_state(name: str, declared: tuple, outputs: dict[str, tuple]) -> bool:
    """Whether an input is a recurrent state fed back: an output of the same shape whose name
    extends the input's (h → h_out, state → stateN)."""
    return any(len(shape) == len(declared) and all(a == b or a == -1 or b == -1 for a, b in zip(shape, declared))
               and out.lower().startswith(name.lower()) and out != name for out, shape in outputs.items())


def _embedding_rows(model: ModelProto, name: str) -> int | None:
    """Rows of the initializer table that ``name`` indexes through a Gather, if any."""
    tables = {t.name: t for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Gather" and len(node.input) > 1 and node.input[1] == name and node.input[0] in tables:
            dims = tables[node.input[0]].dims
            return int(dims[0]) if dims else None
    return None


def _amplitudes(n: int) -> np.ndarray:
    """n amplitudes spanning 0.1 to 1 evenly in log, the middle ones first (so the first few
    samples of a batch are typical, and a cut batch still spans the range)."""
    if n == 1:
        return np.array([0.3])
    logs = np.linspace(-1.0, 0.0, n)
    return 10.0 ** logs[np.argsort(np.abs(logs + 0.5), kind="stable")]


def synthetic_inputs(model: ModelProto, batch: int = BATCH, seed: int = 0,
                     image_side: int = IMAGE_SIDES[0]) -> dict[str, np.ndarray]:
    """One seeded array per graph input (initializers listed as inputs excluded); raises
    SamplingError when an input's type or size cannot be made up. ``image_side`` fills the
    unknown sides of image inputs."""
    rng = np.random.default_rng(seed)
    inits = {t.name for t in model.graph.initializer}
    outputs = _output_shapes(model)
    feed, batched = {}, []
    inputs = [vi for vi in model.graph.input if vi.name not in inits]
    for vi in inputs:
        et = vi.type.tensor_type.elem_type
        if et not in _FLOATS and et not in _INTEGERS and et != TensorProto.BOOL:
            kind = TensorProto.DataType.Name(et).lower() if et in TensorProto.DataType.values() else f"#{et}"
            raise SamplingError(f"input {vi.name!r} is of type {kind}, which cannot be sampled")
        dtype = helper.tensor_dtype_to_np_dtype(et) if et != TensorProto.BFLOAT16 else np.float32
        dims = _dims(vi, batch, SAMPLES if et in _FLOATS else TOKENS, image_side)
        declared = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in vi.type.tensor_type.shape.dim)
        if declared and declared[0] <= 0:
            per_sample = int(np.prod(dims[1:], dtype=np.int64))
            dims[0] = max(min(2, batch), min(batch, MAX_ELEMENTS // max(per_sample, 1)))
            batched.append(vi.name)
        if et in _FLOATS:
            feed[vi.name] = _float_input(rng, dims, _is_state(vi.name, declared, outputs)).astype(dtype)
        elif et == TensorProto.BOOL:
            feed[vi.name] = np.ones(dims, dtype=bool)
        else:
            feed[vi.name] = _integer_input(rng, model, vi.name, dims).astype(dtype)
    if batched:  # inputs shrunk differently: every batch cut to the smallest
        n = min(feed[k].shape[0] for k in batched)
        feed.update({k: feed[k][:n] for k in batched})
    return feed


def _float_input(rng: np.random.Generator, dims: list[int], state: bool) -> np.ndarray:
    if state:
        return np.zeros(dims)
    if len(dims) == 4 and dims[1] <= 4:
        coarse = rng.standard_normal((dims[0], dims[1], -(-dims[2] // 8), -(-dims[3] // 8)))
        x = np.kron(coarse, np.ones((1, 1, 8, 8)))[:, :, :dims[2], :dims[3]] + 0.5 * rng.standard_normal(dims)
    else:
        x = rng.standard_normal(dims)
    if not dims:
        return x
    x = x / max(float(np.std(x)), 1e-12)
    return x * _amplitudes(dims[0]).reshape((-1,) + (1,) * (len(dims) - 1))


def _integer_input(rng: np.random.Generator, model: ModelProto, name: str, dims: list[int]) -> np.ndarray:
    rows = _embedding_rows(model, name)
    if rows:
        return rng.integers(0, rows, dims)
    if "mask" in name.lower():
        return np.ones(dims, dtype=np.int64)
    if "type" in name.lower():
        return np.zeros(dims, dtype=np.int64)
    raise SamplingError(f"integer input {name!r} indexes no embedding table and its meaning is unknown")


def image_sides(model: ModelProto) -> list[int]:
    """The sides of IMAGE_SIDES that give the model's inputs different shapes, in order: the
    sides worth trying when the model refuses one (just the first when no image input has an
    unknown size). Raises SamplingError as synthetic_inputs does."""
    sides, seen = [], []
    for side in IMAGE_SIDES:
        shapes = [(k, v.shape[1:]) for k, v in synthetic_inputs(model, 1, 0, side).items()]
        if shapes not in seen:
            sides.append(side)
            seen.append(shapes)
    return sides


def synthetic_batches(model: ModelProto, samples: int = BATCH, seed: int = 0,
                      image_side: int = IMAGE_SIDES[0]) -> list[dict[str, np.ndarray]]:
    """Feeds holding about ``samples`` samples in all: one batch when the batch dimension is
    dynamic, else several seeded draws of the fixed batch (e.g. a streaming model fed one
    chunk at a time, each draw a fresh stream)."""
    first = synthetic_inputs(model, samples, seed, image_side)
    batch = min((v.shape[0] for v in first.values() if v.ndim), default=1)
    if batch >= samples or any(k in first for k in _dynamic_batch_inputs(model)):
        return [first]
    return [first] + [synthetic_inputs(model, samples, seed + k, image_side) for k in range(1, -(-samples // batch))]


def _dynamic_batch_inputs(model: ModelProto) -> list[str]:
    inits = {t.name for t in model.graph.initializer}
    return [vi.name for vi in model.graph.input if vi.name not in inits and vi.type.tensor_type.shape.dim
            and not vi.type.tensor_type.shape.dim[0].dim_value > 0]


def state_outputs(model: ModelProto) -> dict[str, str]:
    """Recurrent state inputs → the output that carries each one to the next call."""
    inits = {t.name for t in model.graph.initializer}
    outputs = _output_shapes(model)
    found = {}
    for vi in model.graph.input:
        if vi.name in inits or not vi.type.tensor_type.HasField("shape"):
            continue
        declared = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in vi.type.tensor_type.shape.dim)
        for out, shape in outputs.items():
            if _is_state(vi.name, declared, {out: shape}):
                found[vi.name] = out
                break
    return found
