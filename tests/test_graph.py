"""nnr.graph: the graph queries the encoder's steps share."""

from onnx import TensorProto, helper, numpy_helper
import numpy as np

from nnr import graph


def _model():
    w = numpy_helper.from_array(np.ones((2, 3), np.float32), "w")
    const = helper.make_node("Constant", [], ["c"], value=numpy_helper.from_array(np.zeros(3, np.float32)))
    gemm = helper.make_node("Gemm", ["x", "w", "c"], ["y"], transB=1, alpha=0.5)
    conv = helper.make_node("Conv", ["y", "w"], ["z"], auto_pad="SAME_UPPER", pads=[1, 1, 1, 1])
    g = helper.make_graph([const, gemm, conv], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3]),
                                                     helper.make_tensor_value_info("w", TensorProto.FLOAT, [2, 3])],
                          [helper.make_tensor_value_info("z", TensorProto.FLOAT, None)], initializer=[w])
    return helper.make_model(g)


def test_constants_are_initializers_and_constant_nodes():
    consts = graph.graph_constants(_model())
    assert set(consts) == {"w", "c"} and list(consts["c"].dims) == [3]


def test_attributes_or_their_defaults():
    _, gemm, conv = _model().graph.node
    assert graph.int_attr(gemm, "transB", 0) == 1 and graph.int_attr(gemm, "transA", 7) == 7
    assert graph.float_attr(gemm, "alpha", 1.0) == 0.5 and graph.float_attr(gemm, "beta", 1.0) == 1.0
    assert graph.ints_attr(conv, "pads", []) == [1, 1, 1, 1] and graph.ints_attr(conv, "strides", [1, 1]) == [1, 1]
    assert graph.str_attr(conv, "auto_pad", "NOTSET") == "SAME_UPPER" and graph.str_attr(gemm, "auto_pad", "-") == "-"


def test_consumers_in_graph_order_and_inputs_to_feed():
    m = _model()
    consumers = graph.consumers_of(m)
    assert [n.op_type for n in consumers["w"]] == ["Gemm", "Conv"] and "z" not in consumers
    assert graph.model_inputs(m) == ["x"]   # w is an initializer listed as an input
