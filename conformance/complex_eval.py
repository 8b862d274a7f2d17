"""A reference evaluator for complex-valued ONNX graphs, which onnxruntime cannot run.

onnxruntime registers no complex64/complex128 kernels, so the corpus's complex-valued
network (conformance/models/complex_mnist.onnx) is evaluated here, in numpy, with the ONNX
meaning of the few ops it uses: MatMul, Add, Abs (|z|, kept in the complex type with a zero
imaginary part) and Identity. Used to measure the fidelity of decoded complex models.
"""

from __future__ import annotations

import numpy as np
from onnx import ModelProto, numpy_helper

OPS = {
    "MatMul": lambda a, b: a @ b,
    "Add": lambda a, b: a + b,
    "Abs": lambda a: np.abs(a).astype(a.dtype),
    "Identity": lambda a: a,
}


def run(model: ModelProto, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
    """Values of the graph outputs for ``inputs`` (numpy arrays by input name)."""
    values = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    values.update(inputs)
    for node in model.graph.node:
        if node.op_type not in OPS or node.domain not in ("", "ai.onnx"):
            raise ValueError(f"complex_eval cannot run op {node.op_type!r}")
        values[node.output[0]] = OPS[node.op_type](*(values[name] for name in node.input))
    return [values[o.name] for o in model.graph.output]


def logits(model: ModelProto, pixels: np.ndarray) -> np.ndarray:
    """Real class scores of the complex MNIST network for N×1×28×28 pixels in [0, 1]."""
    x = pixels.reshape(len(pixels), -1).astype(np.complex64)
    return run(model, {"x": x})[0].real.astype(np.float64)
