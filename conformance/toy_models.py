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


def mlp(seed: int = 0, dtype: int = TensorProto.FLOAT, typed: bool = False, hidden: int = 64,
        row_scales: bool = False) -> onnx.ModelProto:
    """Two Gemm layers with initializers of ``dtype`` (float, float16, bfloat16 or double),
    plus an int64 shape tensor and metadata that must survive untouched. With ``typed`` the
    weights sit in their type's repeated field (float_data, int32_data…) instead of raw_data;
    with ``row_scales`` fc1's rows differ in scale by up to 64×, as trained layers' often do."""
    rng = np.random.default_rng(seed)
    np_type = {TensorProto.FLOAT: np.float32, TensorProto.FLOAT16: np.float16,
               TensorProto.DOUBLE: np.float64, TensorProto.BFLOAT16: np.float32}[dtype]

    def init(name: str, arr: np.ndarray) -> TensorProto:
        if typed:
            return helper.make_tensor(name, dtype, arr.shape, arr.astype(np_type).ravel().tolist())
        if dtype == TensorProto.BFLOAT16:
            return helper.make_tensor(name, TensorProto.BFLOAT16, arr.shape, arr.astype(np.float32).ravel().tolist())
        return numpy_helper.from_array(arr.astype(np_type), name)

    w1, b1, w2, b2 = _w(rng, hidden, 32), _w(rng, hidden, scale=0.1), _w(rng, 10, hidden), _w(rng, 10, scale=0.1)
    if row_scales:
        w1 = w1 * np.exp2(rng.uniform(-3.0, 3.0, (hidden, 1))).astype(w1.dtype)
    inits = [
        init("fc1.weight", w1), init("fc1.bias", b1),
        init("fc2.weight", w2), init("fc2.bias", b2),
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


def complex_linear(seed: int = 20) -> onnx.ModelProto:
    """|x·W + b| with complex64 W and b, plus a complex128 tensor kept in double_data (typed)
    and one in raw_data: the complex tensor types in both storage fields (format version 4)."""
    rng = np.random.default_rng(seed)

    def cw(*shape: int, scale: float = 0.05) -> np.ndarray:
        return rng.laplace(0.0, scale, size=shape) + 1j * rng.laplace(0.0, scale, size=shape)

    w2 = cw(16, 4).astype(np.complex128)
    inits = [
        numpy_helper.from_array(cw(32, 16).astype(np.complex64), "cfc1.weight"),
        numpy_helper.from_array(cw(16, scale=0.1).astype(np.complex64), "cfc1.bias"),
        helper.make_tensor("cfc2.weight", TensorProto.COMPLEX128, w2.shape, w2.ravel().tolist()),
        numpy_helper.from_array(cw(16, 4).astype(np.complex128), "cfc2.weight_raw"),
    ]
    nodes = [
        helper.make_node("MatMul", ["x", "cfc1.weight"], ["h0"], name="cfc1"),
        helper.make_node("Add", ["h0", "cfc1.bias"], ["h"], name="cfc1_bias"),
        helper.make_node("Abs", ["h"], ["y"], name="modulus"),
        helper.make_node("Identity", ["cfc2.weight"], ["w2"], name="keep_w2"),
        helper.make_node("Identity", ["cfc2.weight_raw"], ["w2r"], name="keep_w2r"),
    ]
    graph = helper.make_graph(
        nodes, "complex_linear", [helper.make_tensor_value_info("x", TensorProto.COMPLEX64, ["N", 32])],
        [helper.make_tensor_value_info("y", TensorProto.COMPLEX64, ["N", 16]),
         helper.make_tensor_value_info("w2", TensorProto.COMPLEX128, [16, 4]),
         helper.make_tensor_value_info("w2r", TensorProto.COMPLEX128, [16, 4])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="nnr-toy")
    model.ir_version = 8
    return model


def fixed_size_image(side: int) -> onnx.ModelProto:
    """An image input declared N×3×?×?, whose graph runs only on side × side images: it adds a
    side × side pattern, then projects the flattened image to 10 scores."""
    rng = np.random.default_rng(1)
    inits = [numpy_helper.from_array(rng.normal(0, 0.1, (1, 3, side, side)).astype(np.float32), "pattern"),
             numpy_helper.from_array(rng.laplace(0, 0.05, (3 * side * side, 10)).astype(np.float32), "proj")]
    nodes = [helper.make_node("Add", ["x", "pattern"], ["y"]),
             helper.make_node("Flatten", ["y"], ["f"]),
             helper.make_node("MatMul", ["f", "proj"], ["scores"])]
    image = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, "h", "w"])
    graph = helper.make_graph(nodes, "fixed", [image],
                              [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["n", 10])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
