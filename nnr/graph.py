"""Queries on an ONNX graph that the encoder's steps share: its constant values, node
attributes, the nodes reading a tensor, and the inputs a caller must feed."""

from __future__ import annotations

from onnx import AttributeProto, ModelProto, TensorProto


def graph_constants(model: ModelProto) -> dict[str, TensorProto]:
    """Main-graph constant values by name: initializers and Constant nodes' ``value``."""
    found = {t.name: t for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant" and node.output:
            for a in node.attribute:
                if a.name == "value" and a.type == AttributeProto.TENSOR:
                    found[node.output[0]] = a.t
    return found


def int_attr(node, name: str, default: int) -> int:
    """A node's integer attribute, or ``default`` when the node does not set it."""
    return next((a.i for a in node.attribute if a.name == name), default)


def float_attr(node, name: str, default: float) -> float:
    """A node's float attribute, or ``default`` when the node does not set it."""
    return next((a.f for a in node.attribute if a.name == name), default)


def ints_attr(node, name: str, default: list[int]) -> list[int]:
    """A node's list-of-integers attribute, or ``default`` when the node does not set it."""
    return next((list(a.ints) for a in node.attribute if a.name == name), default)


def str_attr(node, name: str, default: str) -> str:
    """A node's string attribute (decoded as UTF-8), or ``default`` when the node does not set it."""
    return next((a.s.decode() for a in node.attribute if a.name == name), default)


def consumers_of(model: ModelProto) -> dict[str, list]:
    """The main-graph nodes reading each tensor name, in graph order."""
    found: dict[str, list] = {}
    for node in model.graph.node:
        for name in node.input:
            found.setdefault(name, []).append(node)
    return found


def model_inputs(model: ModelProto) -> list[str]:
    """Graph inputs a caller must feed (initializers listed as inputs are excluded)."""
    inits = {t.name for t in model.graph.initializer}
    return [i.name for i in model.graph.input if i.name not in inits]
