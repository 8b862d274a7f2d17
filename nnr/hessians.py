"""Second moments of each layer's input on calibration data, for data-aware rounding.

For a Conv, Gemm or MatMul whose weight is a constant, the encoder can round the weight
with error feedback (codec.error_feedback) if it knows H = E[x·xᵀ] of the vectors the
weight multiplies: image patches for a Conv (one H per group), feature rows for Gemm and
MatMul. They are measured here with onnxruntime on the calibration inputs. Patches are
subsampled with a fixed seed, so the same inputs always give the same H (and file).
"""

from __future__ import annotations

import numpy as np
from onnx import ModelProto, TensorProto

from nnr.codec.lossy_encode import Feedback

from . import fidelity
from .graph import graph_constants, int_attr, ints_attr, str_attr

MAX_ROWS_PER_BATCH = 8192
"""Patches (or feature rows) sampled per layer from each batch of inputs, at most..."""
MAX_VALUES_PER_BATCH = 1 << 22
"""...and at most this many patch values (grouped convolutions: many small H, few rows needed)..."""
MIN_ROWS_PER_BATCH = 1024
"""...but never fewer rows than this."""


def _conv_geometry(node, in_hw: tuple[int, int], kernel: tuple[int, int]):
    """(pads top, left, bottom, right), strides, dilations of a 2-D Conv, auto_pad resolved."""
    strides = ints_attr(node, "strides", [1, 1])
    dil = ints_attr(node, "dilations", [1, 1])
    pads = ints_attr(node, "pads", [0, 0, 0, 0])
    auto = str_attr(node, "auto_pad", "NOTSET")
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        pads = [0, 0, 0, 0]
        for ax in range(2):
            out = -(-in_hw[ax] // strides[ax])
            total = max((out - 1) * strides[ax] + dil[ax] * (kernel[ax] - 1) + 1 - in_hw[ax], 0)
            small, big = total // 2, total - total // 2
            pads[ax], pads[ax + 2] = (small, big) if auto == "SAME_UPPER" else (big, small)
    elif auto == "VALID":
        pads = [0, 0, 0, 0]
    return pads, strides, dil


def _layers(model: ModelProto) -> list[tuple[object, str, bool]]:
    """(node, weight name, transposed) of every layer whose weight is a float constant used
    by that node alone: 2-D Conv, Gemm (transA = 0) and MatMul with a constant 2-D right side."""
    consts = graph_constants(model)
    uses: dict[str, int] = {}
    for node in model.graph.node:
        for name in node.input:
            uses[name] = uses.get(name, 0) + 1
    found = []
    for node in model.graph.node:
        if len(node.input) < 2 or uses.get(node.input[1], 0) != 1:
            continue
        w = consts.get(node.input[1])
        if w is None or w.data_type not in (TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.DOUBLE,
                                            TensorProto.BFLOAT16):
            continue
        if node.op_type == "Conv" and len(w.dims) == 4:
            found.append((node, node.input[1], False))
        elif node.op_type == "Gemm" and len(w.dims) == 2 and not int_attr(node, "transA", 0):
            found.append((node, node.input[1], not int_attr(node, "transB", 0)))
        elif node.op_type == "MatMul" and len(w.dims) == 2:
            found.append((node, node.input[1], True))
    return found


def _conv_rows(a: np.ndarray, node, kernel: tuple[int, int], groups: int, rng: np.random.Generator) -> np.ndarray:
    """Sampled im2col patches of a (N, C, H, W) input: (P, groups, C/groups · kh · kw), in the
    weight's (channel, kh, kw) order."""
    n, c, hh, ww = a.shape
    pads, strides, dil = _conv_geometry(node, (hh, ww), kernel)
    a = a.transpose(0, 2, 3, 1)
    if any(pads):
        a = np.pad(a, ((0, 0), (pads[0], pads[2]), (pads[1], pads[3]), (0, 0)))
    oh = (a.shape[1] - dil[0] * (kernel[0] - 1) - 1) // strides[0] + 1
    ow = (a.shape[2] - dil[1] * (kernel[1] - 1) - 1) // strides[1] + 1
    total = n * oh * ow
    cap = min(MAX_ROWS_PER_BATCH, max(MIN_ROWS_PER_BATCH, MAX_VALUES_PER_BATCH // (c * kernel[0] * kernel[1])))
    pick = np.sort(rng.choice(total, cap, replace=False)) if total > cap else np.arange(total)
    ni, rest = np.divmod(pick, oh * ow)
    yi, xi = np.divmod(rest, ow)
    cols = np.empty((pick.size, c, kernel[0] * kernel[1]), dtype=np.float32)
    for i in range(kernel[0]):
        for j in range(kernel[1]):
            cols[:, :, i * kernel[1] + j] = a[ni, yi * strides[0] + i * dil[0], xi * strides[1] + j * dil[1]]
    return cols.reshape(pick.size, groups, -1)


def layer_hessians(model: ModelProto, inputs: dict[str, np.ndarray], batch: int = 8,
                   damping: float | None = None) -> dict[str, Feedback]:
    """Input second moments of every eligible layer, by weight name, measured on ``inputs``."""
    layers = _layers(model)
    names = list(dict.fromkeys(node.input[0] for node, _, _ in layers))
    if not names:
        return {}
    consts = graph_constants(model)
    rng = np.random.default_rng(0)
    sums: dict[str, np.ndarray] = {}
    counts: dict[str, int] = {}
    for acts in fidelity.intermediates(model, names, inputs, batch):
        for node, wname, _ in layers:
            a = np.asarray(acts[node.input[0]], dtype=np.float32)
            if node.op_type == "Conv":
                dims = consts[wname].dims
                if a.ndim != 4:
                    continue
                rows = _conv_rows(a, node, (dims[2], dims[3]), int_attr(node, "group", 1), rng)
            else:
                flat = a.reshape(-1, a.shape[-1])
                if flat.shape[0] > MAX_ROWS_PER_BATCH:
                    flat = flat[np.sort(rng.choice(flat.shape[0], MAX_ROWS_PER_BATCH, replace=False))]
                rows = flat[:, None, :]
            if rows.shape[1] == 1:
                moment = (rows[:, 0].T @ rows[:, 0])[None]
            else:
                by_group = rows.transpose(1, 2, 0)
                moment = np.matmul(by_group, by_group.transpose(0, 2, 1))
            sums[wname] = sums.get(wname, 0.0) + moment.astype(np.float64)
            counts[wname] = counts.get(wname, 0) + rows.shape[0]
    extra = {} if damping is None else {"damping": damping}
    return {wname: Feedback(sums[wname] / counts[wname], transposed, **extra)
            for _, wname, transposed in layers if counts.get(wname)}

