"""Properties of batching on random graphs:

* a graph with a symbolic batch axis, compiled for a random batch N and run on a random
  client batch B, gives what the un-compiled graph gives at B;
* a static batch-1 graph (shape constants hard-coding the 1), rebatched and compiled for
  N, run on B samples gives the B batch-1 runs stacked.
"""

from __future__ import annotations

import numpy as np
import onnx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper

import neuron_ir

F = 6  # features; even, so Reshape can split it in two


class _Graph:
    def __init__(self, seed: int):
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.count = 0

    def name(self, prefix: str) -> str:
        self.count += 1
        return f"{prefix}{self.count}"

    def const(self, array: np.ndarray) -> str:
        name = self.name("c")
        self.inits.append(onnx.numpy_helper.from_array(np.asarray(array), name))
        return name

    def op(self, op_type: str, inputs: list[str], **attrs) -> str:
        out = self.name("v")
        self.nodes.append(
            helper.make_node(op_type, inputs, [out], name=out + "_" + op_type, **attrs)
        )
        return out


_DYNAMIC_OPS = [
    "matmul",
    "add_other",
    "mul_scale",
    "relu",
    "tanh",
    "softmax",
    "center",
    "split_merge",
    "sigmoid",
]


def _dynamic_graph(seed: int, ops: list[str], second_output: bool) -> onnx.ModelProto:
    """x[batch,F], y[batch,F], scale[F] (no batch axis) -> random [batch,F] chain."""
    g = _Graph(seed)
    pool = ["x", "y"]
    v = "x"
    for kind in ops:
        if kind == "matmul":
            w = g.const(g.rng.standard_normal((F, F)).astype(np.float32) / 3)
            v = g.op("MatMul", [v, w])
        elif kind == "add_other":
            v = g.op("Add", [v, pool[g.rng.integers(len(pool))]])
        elif kind == "mul_scale":
            v = g.op("Mul", [v, "scale"])
        elif kind == "relu":
            v = g.op("Relu", [v])
        elif kind == "tanh":
            v = g.op("Tanh", [v])
        elif kind == "sigmoid":
            v = g.op("Sigmoid", [v])
        elif kind == "softmax":
            v = g.op("Softmax", [v], axis=-1)
        elif kind == "center":
            mean = g.op("ReduceMean", [v, g.const(np.array([1], np.int64))], keepdims=1)
            v = g.op("Sub", [v, mean])
        elif kind == "split_merge":
            v = g.op("Reshape", [v, g.const(np.array([-1, 2, F // 2], np.int64))])
            v = g.op("Transpose", [v], perm=[0, 2, 1])
            v = g.op("Reshape", [v, g.const(np.array([-1, F], np.int64))])
        pool.append(v)
    outputs = [helper.make_tensor_value_info(v, TensorProto.FLOAT, ["batch", F])]
    if second_output:
        outputs.append(
            helper.make_tensor_value_info(pool[len(pool) // 2], TensorProto.FLOAT, ["batch", F])
        )
    # An output without the batch axis: it must come out once, the same in every chunk.
    two = g.op("Mul", ["scale", g.const(np.array(2.0, np.float32))])
    outputs.append(helper.make_tensor_value_info(two, TensorProto.FLOAT, [F]))
    graph = helper.make_graph(
        g.nodes,
        "random_batched",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", F]),
            helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", F]),
            helper.make_tensor_value_info("scale", TensorProto.FLOAT, [F]),
        ],
        outputs,
        g.inits,
    )
    # Opset 18: ReduceMean takes its axes as an input from 18 on (the onnx checker,
    # run on import, refuses the input at 17).
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**16),
    ops=st.lists(st.sampled_from(_DYNAMIC_OPS), min_size=1, max_size=6),
    second=st.booleans(),
    n=st.integers(1, 5),
    b=st.integers(1, 12),
)
def test_batched_run_equals_unbatched_run(seed, ops, second, n, b):
    model = _dynamic_graph(seed, ops, second)
    rng = np.random.default_rng(seed + 1)
    feeds = {
        "x": rng.standard_normal((b, F)).astype(np.float32),
        "y": rng.standard_normal((b, F)).astype(np.float32),
        "scale": rng.standard_normal(F).astype(np.float32),
    }
    want = neuron_ir.run(neuron_ir.import_model(model), feeds)
    cm = neuron_ir.compile(model, batch=n)
    got = cm.run(feeds)
    assert got.keys() == want.keys()
    for key in want:
        assert got[key].shape == want[key].shape, key
        np.testing.assert_allclose(got[key], want[key], rtol=1e-4, atol=1e-5, err_msg=key)


S = 4  # sequence length of the static graphs

_STATIC_OPS = [
    "rows_gemm",
    "heads",
    "softmax",
    "positions",
    "relu",
    "unsqueeze_squeeze",
    "flatten_back",
    "slice_all",
    "reduce_last",
    "transpose_back",
]


def _static_graph(seed: int, ops: list[str], cls: bool = False) -> onnx.ModelProto:
    """x[1,S,F] -> random chain whose shape constants hard-code the batch of 1, the way
    an exporter traced at batch 1 (and constant-folded) leaves them."""
    g = _Graph(seed)

    def shape(*dims: int) -> str:
        return g.const(np.array(dims, np.int64))

    v = "x"
    for kind in ops:
        if kind == "rows_gemm":  # ORT's MatMul+Add fusion: rows, Gemm, back
            rows = g.op("Reshape", [v, shape(S, F)])
            w = g.const(g.rng.standard_normal((F, F)).astype(np.float32) / 3)
            bias = g.const(g.rng.standard_normal(F).astype(np.float32))
            v = g.op("Reshape", [g.op("Gemm", [rows, w, bias]), shape(1, S, F)])
        elif kind == "heads":
            h = g.op("Reshape", [v, shape(1, S, 2, F // 2)])
            h = g.op("Transpose", [h], perm=[0, 2, 1, 3])
            h = g.op("Transpose", [h], perm=[0, 2, 1, 3])
            v = g.op("Reshape", [h, shape(1, S, F)])
        elif kind == "softmax":
            v = g.op("Softmax", [v], axis=-1)
        elif kind == "positions":
            v = g.op("Add", [v, g.const(g.rng.standard_normal((S, F)).astype(np.float32))])
        elif kind == "relu":
            v = g.op("Relu", [v])
        elif kind == "unsqueeze_squeeze":
            u = g.op("Unsqueeze", [v, g.const(np.array([1], np.int64))])
            v = g.op("Squeeze", [u, g.const(np.array([1], np.int64))])
        elif kind == "flatten_back":
            flat = g.op("Flatten", [v], axis=1)
            v = g.op("Reshape", [flat, shape(1, S, F)])
        elif kind == "slice_all":  # x[0:1] of the batch, as traced at batch 1
            v = g.op(
                "Slice",
                [
                    v,
                    g.const(np.array([0], np.int64)),
                    g.const(np.array([1], np.int64)),
                    g.const(np.array([0], np.int64)),
                ],
            )
        elif kind == "reduce_last":
            mean = g.op("ReduceMean", [v, g.const(np.array([-1], np.int64))], keepdims=1)
            v = g.op("Sub", [v, mean])
        elif kind == "transpose_back":
            t = g.op("Transpose", [v], perm=[1, 0, 2])
            v = g.op("Transpose", [t], perm=[1, 0, 2])
    if cls:  # a class token shared by every sample, put in front of each
        token = g.const(g.rng.standard_normal((1, 1, F)).astype(np.float32))
        v = g.op("Concat", [token, v], axis=1)
    graph = helper.make_graph(
        g.nodes,
        "random_static",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, S, F])],
        [helper.make_tensor_value_info(v, TensorProto.FLOAT, [1, S + cls, F])],
        g.inits,
    )
    # Opset 18: ReduceMean takes its axes as an input from 18 on (the onnx checker,
    # run on import, refuses the input at 17).
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**16),
    ops=st.lists(st.sampled_from(_STATIC_OPS), min_size=1, max_size=6),
    cls=st.booleans(),
    n=st.integers(1, 4),
    b=st.integers(1, 9),
)
def test_rebatched_static_graph_equals_stacked_batch1_runs(seed, ops, cls, n, b):
    model = _static_graph(seed, ops, cls)
    original = neuron_ir.import_model(model)
    rng = np.random.default_rng(seed + 1)
    x = rng.standard_normal((b, S, F)).astype(np.float32)
    per_sample = [neuron_ir.run(original, {"x": x[i : i + 1]}) for i in range(b)]
    cm = neuron_ir.compile(model, batch=n)
    got = cm.run({"x": x})
    for key in per_sample[0]:
        want = np.concatenate([p[key] for p in per_sample])
        np.testing.assert_allclose(got[key], want, rtol=1e-4, atol=1e-5, err_msg=key)
