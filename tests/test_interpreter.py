"""The reference interpreter: run-time input checking, no mutation, plans, fallback."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

import neuron_ir


def _module(nodes, inputs, outputs, inits=(), opset=17):
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(inits))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    return neuron_ir.import_model(model)


@pytest.fixture(scope="module")
def mlp():
    w = numpy_helper.from_array(np.arange(12, dtype=np.float32).reshape(4, 3), "w")
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Relu", ["h"], ["y"])]
    return _module(
        nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 3])],
        [w],
    )


def test_dynamic_dims_take_their_size_from_the_inputs(mlp):
    interp = neuron_ir.Interpreter(mlp)
    for n in (1, 5):
        x = np.random.default_rng(n).standard_normal((n, 4)).astype(np.float32)
        y = interp.run({"x": x})["y"]
        np.testing.assert_allclose(y, np.maximum(x @ np.arange(12).reshape(4, 3), 0), rtol=1e-5)


@pytest.mark.parametrize(
    "feeds, message",
    [
        ({}, "missing input 'x'"),
        ({"x": np.zeros((1, 4), np.float32), "z": np.zeros(1)}, "unknown input 'z'"),
        ({"x": np.zeros((1, 4), np.float64)}, "input 'x': expected dtype float32, got float64"),
        ({"x": np.zeros((1, 5), np.float32)}, r"input 'x': expected shape \?x4, got 1x5"),
        ({"x": np.zeros((4,), np.float32)}, r"input 'x': expected shape \?x4, got 4"),
    ],
)
def test_bad_inputs_are_named(mlp, feeds, message):
    with pytest.raises(neuron_ir.InterpreterError, match=message):
        neuron_ir.run(mlp, feeds)


def test_inputs_are_never_modified():
    # Ops that are easy to implement in place: the caller's arrays must survive.
    x = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)
    idx = np.array([[0], [2]], np.int64)
    nodes = [
        helper.make_node("Relu", ["x"], ["r"]),
        helper.make_node("ScatterND", ["x", "idx", "upd"], ["s"]),
        helper.make_node("Clip", ["x", "lo"], ["c"]),
        helper.make_node("Identity", ["x"], ["i"]),
    ]
    inits = [
        numpy_helper.from_array(np.zeros((2, 4), np.float32), "upd"),
        numpy_helper.from_array(np.array(0.5, np.float32), "lo"),
    ]
    module = _module(
        nodes,
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 4]),
            helper.make_tensor_value_info("idx", TensorProto.INT64, [2, 1]),
        ],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, [3, 4]) for n in "rsci"],
        inits,
    )
    before_x, before_idx = x.copy(), idx.copy()
    out = neuron_ir.run(module, {"x": x, "idx": idx})
    assert np.array_equal(x, before_x) and np.array_equal(idx, before_idx)
    assert np.array_equal(out["s"][[0, 2]], np.zeros((2, 4), np.float32))


def test_op_without_kernel_falls_back_to_onnx_reference():
    from neuron_ir.kernels import KERNELS

    assert "HammingWindow" not in KERNELS
    module = _module(
        [helper.make_node("HammingWindow", ["n"], ["y"])],
        [helper.make_tensor_value_info("n", TensorProto.INT64, [])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None])],
    )
    y = neuron_ir.run(module, {"n": np.array(8, np.int64)})["y"]
    n = np.arange(8)
    np.testing.assert_allclose(y, 25 / 46 - 21 / 46 * np.cos(2 * np.pi * n / 8), atol=1e-6)


def test_values_are_freed_after_their_last_use(mlp):
    interp = neuron_ir.Interpreter(mlp)
    seen = []
    original = interp.function.plan.steps

    def spy(env):
        seen.append(sum(v is not None for v in env))

    interp.function.plan.steps = [s for step in original for s in (step, spy)]
    interp.run({"x": np.ones((2, 4), np.float32)})
    # x, w, h, y at most; h and x are dropped once the last op has read them
    assert max(seen) <= 4 and seen[-1] <= 2


def test_loop_with_zero_iterations_gives_empty_scan_outputs():
    body = helper.make_graph(
        [
            helper.make_node("Identity", ["c"], ["c_out"]),
            helper.make_node("Add", ["v", "one"], ["v_out"]),
            helper.make_node("Identity", ["v"], ["scan"]),
        ],
        "body",
        [
            helper.make_tensor_value_info("i", TensorProto.INT64, []),
            helper.make_tensor_value_info("c", TensorProto.BOOL, []),
            helper.make_tensor_value_info("v", TensorProto.FLOAT, [2]),
        ],
        [
            helper.make_tensor_value_info("c_out", TensorProto.BOOL, []),
            helper.make_tensor_value_info("v_out", TensorProto.FLOAT, [2]),
            helper.make_tensor_value_info("scan", TensorProto.FLOAT, [2]),
        ],
    )
    one = numpy_helper.from_array(np.ones(2, np.float32), "one")
    module = _module(
        [helper.make_node("Loop", ["m", "", "v0"], ["v_final", "scans"], body=body)],
        [
            helper.make_tensor_value_info("m", TensorProto.INT64, []),
            helper.make_tensor_value_info("v0", TensorProto.FLOAT, [2]),
        ],
        [
            helper.make_tensor_value_info("v_final", TensorProto.FLOAT, [2]),
            helper.make_tensor_value_info("scans", TensorProto.FLOAT, [None, 2]),
        ],
        [one],
    )
    v0 = np.array([1.0, 2.0], np.float32)
    out = neuron_ir.run(module, {"m": np.array(0, np.int64), "v0": v0})
    assert out["scans"].shape == (0, 2) and np.array_equal(out["v_final"], v0)
    out = neuron_ir.run(module, {"m": np.array(3, np.int64), "v0": v0})
    assert out["scans"].shape == (3, 2) and np.array_equal(out["v_final"], v0 + 3)


@pytest.mark.parametrize("indices_used", [False, True])
def test_unused_optional_outputs_are_not_computed(monkeypatch, indices_used):
    """MaxPool's Indices cost ~15x its Y on ResNet's stem: computed only when read."""
    from neuron_ir.kernels import KERNELS

    seen = []
    original = KERNELS["MaxPool"]

    def recording(inputs, attrs, n_out):
        seen.append(n_out)
        return original(inputs, attrs, n_out)

    monkeypatch.setitem(KERNELS, "MaxPool", recording)
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)]
    if indices_used:
        outputs.append(helper.make_tensor_value_info("i", TensorProto.INT64, None))
    graph = helper.make_graph(
        [helper.make_node("MaxPool", ["x"], ["y", "i"], kernel_shape=[3, 3], strides=[2, 2])],
        "pool",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 9, 9])],
        outputs,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    x = np.random.default_rng(0).normal(size=(1, 2, 9, 9)).astype(np.float32)
    got = neuron_ir.Interpreter(neuron_ir.import_model(model)).run({"x": x})
    assert seen == [2 if indices_used else 1]
    want = x[:, :, :7:2, :7:2].copy()
    for dy in range(3):
        for dx in range(3):
            want = np.maximum(want, x[:, :, dy : dy + 7 : 2, dx : dx + 7 : 2])
    np.testing.assert_array_equal(got["y"], want)
