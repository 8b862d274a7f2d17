"""Small synthetic ONNX models that exercise every place and type weights can have.

They are built from a seeded generator; the vectors in conformance/vectors keep the built
model next to its .nnr, so a change here never silently changes a committed vector.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def _w(rng: np.random.Generator, *shape: int, scale: float = 0.05) -> np.ndarray:
    return rng.laplace(0.0, scale, size=shape).astype(np.float32)


def mlp(seed: int = 0, dtype: int = TensorProto.FLOAT, typed: bool = False) -> onnx.ModelProto:
    """Two Gemm layers with initializers of ``dtype`` (float, float16, bfloat16 or double),
    plus an int64 shape tensor and metadata that must survive untouched. With ``typed`` the
    weights sit in their type's repeated field (float_data, int32_data…) instead of raw_data."""
    rng = np.random.default_rng(seed)
    np_type = {TensorProto.FLOAT: np.float32, TensorProto.FLOAT16: np.float16,
               TensorProto.DOUBLE: np.float64, TensorProto.BFLOAT16: np.float32}[dtype]

    def init(name: str, arr: np.ndarray) -> TensorProto:
        if typed:
            return helper.make_tensor(name, dtype, arr.shape, arr.astype(np_type).ravel().tolist())
        if dtype == TensorProto.BFLOAT16:
            return helper.make_tensor(name, TensorProto.BFLOAT16, arr.shape, arr.astype(np.float32).ravel().tolist())
        return numpy_helper.from_array(arr.astype(np_type), name)

    inits = [
        init("fc1.weight", _w(rng, 64, 32)), init("fc1.bias", _w(rng, 64, scale=0.1)),
        init("fc2.weight", _w(rng, 10, 64)), init("fc2.bias", _w(rng, 10, scale=0.1)),
        numpy_helper.from_array(np.array([-1, 10], dtype=np.int64), "out_shape"),
    ]
    nodes = [
        helper.make_node("Gemm", ["x", "fc1.weight", "fc1.bias"], ["h"], transB=1, name="fc1"),
        helper.make_node("Relu", ["h"], ["hr"], name="relu"),
        helper.make_node("Gemm", ["hr", "fc2.weight", "fc2.bias"], ["y0"], transB=1, name="fc2"),
        helper.make_node("Reshape", ["y0", "out_shape"], ["y"], name="reshape"),
    ]
    graph = helper.make_graph(
        nodes, "mlp", [helper.make_tensor_value_info("x", dtype, ["N", 32])],
        [helper.make_tensor_value_info("y", dtype, ["N", 10])], inits, doc_string="toy MLP")
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)],
                              producer_name="nnr-toy", doc_string="model doc")
    model.ir_version = 8
    helper.set_model_props(model, {"author": "nnr tests", "purpose": "conformance"})
    return model


def constants_and_subgraphs(seed: int = 1) -> onnx.ModelProto:
    """Weights in Constant nodes, including inside both branches of an If (like silero-vad)."""
    rng = np.random.default_rng(seed)

    def const(name: str, arr: np.ndarray) -> onnx.NodeProto:
        return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(arr, name + "_value"),
                                name=name + "_node")

    def branch(tag: str) -> onnx.GraphProto:
        return helper.make_graph(
            [const(f"{tag}_w", _w(rng, 16, 16)), helper.make_node("MatMul", ["h", f"{tag}_w"], [f"{tag}_out"])],
            f"{tag}_branch", [], [helper.make_tensor_value_info(f"{tag}_out", TensorProto.FLOAT, ["N", 16])])

    nodes = [
        const("w_in", _w(rng, 8, 16)),
        const("b_in", _w(rng, 16, scale=0.1)),
        helper.make_node("MatMul", ["x", "w_in"], ["m"], name="mm_in"),
        helper.make_node("Add", ["m", "b_in"], ["h"], name="add_in"),
        helper.make_node("If", ["flag"], ["y"], name="branchy",
                         then_branch=branch("then"), else_branch=branch("else")),
    ]
    graph = helper.make_graph(
        nodes, "constants", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8]),
                             helper.make_tensor_value_info("flag", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 16])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="nnr-toy")
    model.ir_version = 8
    return model
