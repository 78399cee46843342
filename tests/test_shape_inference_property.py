"""Property: on random static graphs, every type shape-inference infers equals the
shape the interpreter produces and the one onnx.shape_inference (data_prop) infers."""

from __future__ import annotations

import numpy as np
import onnx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper
from xdsl.context import Context
from xdsl.dialects.func import FuncOp

import neuron_ir
from neuron_ir.ir.util import info_of_type
from passes.shape_inference import ShapeInferencePass


class _Graph:
    def __init__(self, draw):
        self.draw = draw
        self.nodes: list = []
        self.inits: list = []
        self.values: list[tuple[str, tuple[int, ...]]] = []
        self.count = 0

    def fresh(self, prefix: str) -> str:
        self.count += 1
        return f"{prefix}{self.count}"

    def const(self, array: np.ndarray) -> str:
        name = self.fresh("c")
        self.inits.append(numpy_helper.from_array(array, name))
        return name

    def add(self, op: str, inputs: list[str], shape: tuple[int, ...], **attrs) -> None:
        out = self.fresh("v")
        self.nodes.append(helper.make_node(op, inputs, [out], name=f"n{self.count}", **attrs))
        self.values.append((out, shape))


def _values(draw, shape) -> np.ndarray:
    """Seeded non-trivial constants (mixed signs, distinct magnitudes)."""
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    return (rng.uniform(0.5, 1.5, shape) * rng.choice([-1.0, 1.0], shape)).astype(np.float32)


def _step(g: _Graph) -> None:
    draw = g.draw
    name, shape = draw(st.sampled_from(g.values))
    rank = len(shape)
    kind = draw(
        st.sampled_from(
            [
                "unary",
                "binary",
                "matmul",
                "transpose",
                "reshape",
                "reduce",
                "concat",
                "slice",
                "gather",
                "unsqueeze",
                "softmax",
                "flatten",
                "shape_reshape",
            ]
        )
    )
    if kind == "unary":
        g.add(draw(st.sampled_from(["Relu", "Exp", "Sigmoid", "Neg", "Tanh"])), [name], shape)
    elif kind == "binary":
        # A partner that broadcasts: a suffix of the shape with some dims set to 1.
        k = draw(st.integers(0, rank))
        other = tuple(1 if draw(st.booleans()) else d for d in shape[rank - k :])
        # Not ones: a multiply by one hides operand order and broadcasting mistakes.
        partner = g.const(_values(draw, other))
        op = draw(st.sampled_from(["Add", "Mul", "Sub", "Max"]))
        g.add(op, [name, partner] if draw(st.booleans()) else [partner, name], shape)
    elif kind == "matmul" and rank >= 1:
        n = draw(st.integers(1, 4))
        w = g.const(_values(draw, (shape[-1], n)))  # not ones: they hide transposes
        g.add("MatMul", [name, w], shape[:-1] + (n,) if rank > 1 else (n,))
    elif kind == "transpose" and rank >= 2:
        perm = draw(st.permutations(range(rank)))
        g.add("Transpose", [name], tuple(shape[p] for p in perm), perm=list(perm))
    elif kind == "reshape":
        total = int(np.prod(shape))
        target = draw(st.sampled_from([[-1], [1, -1], [total, 1], [-1, 1]]))
        out = tuple(total if d == -1 else d for d in target)
        g.add("Reshape", [name, g.const(np.array(target, np.int64))], out)
    elif kind == "reduce" and rank >= 1:
        axes = sorted(draw(st.sets(st.integers(0, rank - 1), min_size=1)))
        keep = draw(st.booleans())
        out = tuple((1 if i in axes else d) for i, d in enumerate(shape) if keep or i not in axes)
        g.add("ReduceMean", [name, g.const(np.array(axes, np.int64))], out, keepdims=int(keep))
    elif kind == "concat" and rank >= 1:
        axis = draw(st.integers(-rank, rank - 1))
        out = list(shape)
        out[axis] *= 2
        g.add("Concat", [name, name], tuple(out), axis=axis)
    elif kind == "slice" and rank >= 1:
        axis = draw(st.integers(0, rank - 1))
        start = draw(st.integers(0, shape[axis] - 1))
        end = draw(st.integers(start + 1, shape[axis] + 2))
        out = list(shape)
        out[axis] = min(end, shape[axis]) - start
        g.add(
            "Slice",
            [
                name,
                g.const(np.array([start], np.int64)),
                g.const(np.array([end], np.int64)),
                g.const(np.array([axis], np.int64)),
            ],
            tuple(out),
        )
    elif kind == "gather" and rank >= 1:
        axis = draw(st.integers(0, rank - 1))
        idx = draw(st.lists(st.integers(-shape[axis], shape[axis] - 1), min_size=1, max_size=3))
        out = shape[:axis] + (len(idx),) + shape[axis + 1 :]
        g.add("Gather", [name, g.const(np.array(idx, np.int64))], out, axis=axis)
    elif kind == "unsqueeze":
        axis = draw(st.integers(0, rank))
        g.add(
            "Unsqueeze",
            [name, g.const(np.array([axis], np.int64))],
            shape[:axis] + (1,) + shape[axis:],
        )
    elif kind == "softmax" and rank >= 1:
        g.add("Softmax", [name], shape, axis=draw(st.integers(-rank, rank - 1)))
    elif kind == "flatten":
        axis = draw(st.integers(0, rank))
        g.add(
            "Flatten", [name], (int(np.prod(shape[:axis])), int(np.prod(shape[axis:]))), axis=axis
        )
    elif kind == "shape_reshape" and rank >= 2:
        # Exporter-style: Reshape to [Shape(x)[0], -1] computed in the graph.
        s = g.fresh("s")
        g.nodes.append(helper.make_node("Shape", [name], [s]))
        first = g.fresh("f")
        g.nodes.append(
            helper.make_node("Gather", [s, g.const(np.array([0], np.int64))], [first], axis=0)
        )
        target = g.fresh("t")
        g.nodes.append(
            helper.make_node("Concat", [first, g.const(np.array([-1], np.int64))], [target], axis=0)
        )
        g.add("Reshape", [name, target], (shape[0], int(np.prod(shape[1:]))))


@st.composite
def graphs(draw):
    g = _Graph(draw)
    inputs = []
    for k in range(draw(st.integers(1, 2))):
        shape = tuple(draw(st.lists(st.integers(1, 4), min_size=1, max_size=4)))
        inputs.append(helper.make_tensor_value_info(f"x{k}", TensorProto.FLOAT, shape))
        g.values.append((f"x{k}", shape))
    for _ in range(draw(st.integers(1, 8))):
        _step(g)
    if all(n.startswith("x") for n, _ in g.values):
        # Every step was skipped: a graph needs an output (the onnx checker says so).
        g.add("Identity", ["x0"], g.values[0][1])
    produced = [(n, s) for n, s in g.values if not n.startswith("x")]
    outputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n, _ in produced]
    graph = helper.make_graph(g.nodes, "random", inputs, outputs, g.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    return model, dict(produced)


def random_feeds(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    """Seeded float32 inputs of the (static) shapes ``model`` declares."""
    rng = np.random.default_rng(0)
    return {
        i.name: rng.standard_normal([d.dim_value for d in i.type.tensor_type.shape.dim]).astype(
            np.float32
        )
        for i in model.graph.input
    }


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(graphs())
def test_inferred_types_match_interpreter_and_onnx(case):
    model, expected_shapes = case
    feeds = random_feeds(model)
    module = neuron_ir.import_model(model)
    ShapeInferencePass().apply(Context(), module)
    main = next(op for op in module.ops if isinstance(op, FuncOp))
    inferred = {
        model.graph.output[k].name: info_of_type(v.type)
        for k, v in enumerate(main.body.block.last_op.operands)
    }
    actual = neuron_ir.run(module, feeds)
    onnx_inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
    onnx_shapes = {
        o.name: tuple(d.dim_value for d in o.type.tensor_type.shape.dim)
        for o in onnx_inferred.graph.output
    }
    for name, info in inferred.items():
        assert info.shape == actual[name].shape == expected_shapes[name], name
        assert info.dtype == actual[name].dtype, name
        if name in onnx_shapes and all(onnx_shapes[name]):
            assert onnx_shapes[name] == info.shape, name
