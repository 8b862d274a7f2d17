"""Bias correction: cancel the mean output shift that quantizing a layer's weights causes.

Quantizing the weights W of a Conv or Gemm to Ŵ shifts the layer's mean output by
(Ŵ − W)·E[x], where E[x] is the mean of the layer's input over real data (per input
channel for Conv). Subtracting that shift from the layer's bias removes the systematic part
of the error for free: the bias is coded finely anyway, and the graph is unchanged. Only
layers whose weight and bias are constants of the main graph (initializers or Constant
nodes) and whose bias exists are corrected. (Nagel et al., "Data-Free Quantization through
Weight Equalization and Bias Correction", 2019, empirical variant.)
"""

from __future__ import annotations

import numpy as np
from onnx import ModelProto, TensorProto, numpy_helper

from . import fidelity
from .graph import graph_constants, int_attr


def correctable_layers(model: ModelProto) -> list:
    """Conv and Gemm nodes whose weight and bias are float constants of the main graph."""
    consts = graph_constants(model)
    layers = []
    for node in model.graph.node:
        if node.op_type not in ("Conv", "Gemm") or len(node.input) < 3:
            continue
        w, b = consts.get(node.input[1]), consts.get(node.input[2])
        if w is None or b is None or w.data_type != TensorProto.FLOAT or b.data_type != TensorProto.FLOAT:
            continue
        if node.op_type == "Gemm" and (len(w.dims) != 2 or len(b.dims) != 1 or int_attr(node, "transA", 0)):
            continue
        layers.append(node)
    return layers


def input_means(model: ModelProto, inputs: dict[str, np.ndarray], batch: int = 8) -> dict[str, np.ndarray]:
    """Mean of each correctable layer's data input over ``inputs``: per channel (axis 1) for
    Conv inputs, per feature for Gemm inputs."""
    layers = correctable_layers(model)
    names = list(dict.fromkeys(n.input[0] for n in layers))
    if not names:
        return {}
    sums: dict[str, np.ndarray] = {}
    count = 0
    for values in fidelity.intermediates(model, names, inputs, batch):
        k = len(values[names[0]])
        for name, a in values.items():
            a = np.asarray(a, dtype=np.float64)
            axes = (0,) + tuple(range(2, a.ndim))
            sums[name] = sums.get(name, 0.0) + a.mean(axis=axes) * k
        count += k
    return {name: s / count for name, s in sums.items()}


def corrected(original: ModelProto, decoded: ModelProto, means: dict[str, np.ndarray]) -> ModelProto:
    """A copy of ``original`` whose correctable biases absorb the mean output shift of the
    weights as ``decoded`` rebuilds them."""
    out = ModelProto()
    out.CopyFrom(original)
    consts, rebuilt = graph_constants(out), graph_constants(decoded)
    for node in correctable_layers(out):
        mu = means.get(node.input[0])
        if mu is None:
            continue
        w = numpy_helper.to_array(consts[node.input[1]]).astype(np.float64)
        dw = numpy_helper.to_array(rebuilt[node.input[1]]).astype(np.float64) - w
        if not np.any(dw):
            continue
        if node.op_type == "Conv":
            groups = int_attr(node, "group", 1)
            o, cg = w.shape[:2]
            if mu.shape != (cg * groups,):
                continue
            channel = (np.arange(o)[:, None] // (o // groups)) * cg + np.arange(cg)[None, :]
            shift = np.einsum("oc,oc->o", dw.reshape(o, cg, -1).sum(axis=2), mu[channel])
        else:
            shift = dw @ mu if int_attr(node, "transB", 0) else mu @ dw
        bias = consts[node.input[2]]
        b = numpy_helper.to_array(bias).astype(np.float64)
        if b.shape != shift.shape:
            continue
        new = (b - shift).astype(np.float32)
        if bias.HasField("raw_data"):
            bias.raw_data = new.astype("<f4").tobytes()
        else:  # keep the source's storage field
            del bias.float_data[:]
            bias.float_data.extend(new.tolist())
    return out
