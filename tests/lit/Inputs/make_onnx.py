"""Writes the small ONNX models the lit tests import: make_onnx.py NAME OUT.onnx."""

import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def mlp() -> onnx.ModelProto:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])
    w = numpy_helper.from_array(np.arange(12, dtype=np.float32).reshape(4, 3) / 8, "w")
    b = numpy_helper.from_array(np.array([0.5, -np.inf, np.nan], np.float32), "b")
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["h"], name="fc/MatMul"),
        helper.make_node("Add", ["h", "b"], ["hb"], name="fc/Add"),
        helper.make_node("LeakyRelu", ["hb"], ["y"], name="act", alpha=0.25),
    ]
    graph = helper.make_graph(nodes, "mlp", [x], [y], [w, b])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def control_flow() -> onnx.ModelProto:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])
    then_out = helper.make_tensor_value_info("t", TensorProto.FLOAT, [2])
    else_out = helper.make_tensor_value_info("e", TensorProto.FLOAT, [2])
    then_g = helper.make_graph([helper.make_node("Neg", ["x"], ["t"])], "then", [], [then_out])
    else_g = helper.make_graph([helper.make_node("Abs", ["x"], ["e"])], "else", [], [else_out])
    nodes = [
        helper.make_node("ReduceSum", ["x"], ["s"], keepdims=0, name="sum"),
        helper.make_node("Constant", [], ["zero"], value_float=0.0, name="zero"),
        helper.make_node("Greater", ["s", "zero"], ["c"], name="cmp"),
        helper.make_node("If", ["c"], ["y"], then_branch=then_g, else_branch=else_g, name="branch"),
    ]
    graph = helper.make_graph(nodes, "cf", [x], [y])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def custom() -> onnx.ModelProto:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 2])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 2])
    nodes = [
        helper.make_node(
            "FancyOp", ["x", "", "x"], ["y"], domain="com.example", name="fancy", mode="fast", k=3
        )
    ]
    graph = helper.make_graph(nodes, "custom", [x], [y])
    return helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.example", 1)]
    )


def cycle() -> onnx.ModelProto:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])
    nodes = [
        helper.make_node("Add", ["x", "b"], ["a"], name="first"),
        helper.make_node("Relu", ["a"], ["b"], name="second"),
        helper.make_node("Identity", ["b"], ["y"], name="out"),
    ]
    graph = helper.make_graph(nodes, "cycle", [x], [y])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


MODELS = {"mlp": mlp, "control_flow": control_flow, "custom": custom, "cycle": cycle}

if __name__ == "__main__":
    name, out = sys.argv[1], sys.argv[2]
    onnx.save(MODELS[name](), out)
