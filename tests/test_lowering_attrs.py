"""Every lowering, with non-default attributes, compiled end to end and compared with
onnxruntime (an oracle that shares no code with the interpreter's kernels).

Each case is one ONNX op with attributes away from their defaults (Gemm's alpha/beta/
transA, Pad's constant value, CumSum's exclusive/reverse, Slice steps, ...) on inputs
that are not all ones, compiled with ``neuron_ir.compile`` (the default pipeline down
to ``nc.program``). The test asserts that the op really went to the NeuronCore (no CPU
op left, an nc op in the program), so a lowering that silently falls back cannot pass,
and that the result equals onnxruntime's.
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import neuron_ir

RNG_SEED = 1234


def _model(nodes, inputs, output_shapes, inits=(), opset=18, out_dtype=TensorProto.FLOAT):
    graph = helper.make_graph(
        nodes,
        "case",
        [
            helper.make_tensor_value_info(name, _onnx_dtype(a), list(a.shape))
            for name, a in inputs.items()
        ],
        [
            helper.make_tensor_value_info(name, out_dtype, shape)
            for name, shape in output_shapes.items()
        ],
        [numpy_helper.from_array(np.asarray(a), name) for name, a in dict(inits).items()],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _onnx_dtype(a: np.ndarray) -> int:
    return helper.np_dtype_to_tensor_dtype(a.dtype)


def compile_and_compare(model, feeds, rtol=1e-5, atol=1e-5):
    """Compile ``model`` for inf1, assert every op went to the NeuronCore, and compare
    the compiled run with onnxruntime. Returns the compiled model."""
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    expected = dict(zip(names, session.run(None, feeds), strict=True))
    compiled = neuron_ir.compile(model, input_shapes={k: v.shape for k, v in feeds.items()})
    report = compiled.report
    assert not report.cpu_ops, [(c.node, c.reason) for c in report.cpu_ops]
    programs = [op for op in compiled.module.walk() if op.name == "nc.program"]
    assert programs, "nothing was lowered to nc"
    got = compiled.run(feeds)
    assert got.keys() == expected.keys()
    for name, want in expected.items():
        assert got[name].shape == want.shape, name
        assert got[name].dtype == want.dtype, name
        np.testing.assert_allclose(got[name], want, rtol=rtol, atol=atol, err_msg=name)
    return compiled


def _rand(*shape, scale=1.0, seed=0, low=None):
    rng = np.random.default_rng(RNG_SEED + seed)
    if low is not None:
        return rng.uniform(low, low + scale, shape).astype(np.float32)
    return (rng.standard_normal(shape) * scale).astype(np.float32)


# -- Gemm ------------------------------------------------------------------------------

GEMM = [
    # (alpha, beta, transA, transB, C: "const" | "input" | None)
    (0.7, 1.0, 0, 0, "const"),
    (1.0, 1.3, 0, 0, "const"),
    (-2.0, 0.5, 1, 0, "const"),
    (0.25, 2.0, 0, 1, "input"),
    (1.5, 0.0, 1, 1, "const"),
    (3.0, 1.0, 1, 0, None),
]


@pytest.mark.parametrize("alpha,beta,trans_a,trans_b,c_kind", GEMM)
def test_gemm_attributes(alpha, beta, trans_a, trans_b, c_kind):
    m, k, n = 3, 4, 5
    a = _rand(*((k, m) if trans_a else (m, k)), seed=1)
    b = _rand(*((n, k) if trans_b else (k, n)), seed=2)
    c = _rand(1, n, seed=3)
    feeds = {"a": a}
    inits = {"b": b}
    ins = ["a", "b"]
    if c_kind == "const":
        inits["c"] = c
        ins.append("c")
    elif c_kind == "input":
        feeds["c"] = c
        ins.append("c")
    node = helper.make_node(
        "Gemm", ins, ["y"], alpha=alpha, beta=beta, transA=trans_a, transB=trans_b
    )
    compile_and_compare(_model([node], feeds, {"y": [m, n]}, inits), feeds)


# -- Pad ---------------------------------------------------------------------------------


@pytest.mark.parametrize("value,axes", [(2.5, None), (-7.0, [1]), (None, None), (0.5, [-1, 0])])
def test_pad_constant_value(value, axes):
    x = _rand(2, 3, seed=4)
    inits = {}
    ins = ["x", "pads"]
    if axes is None:
        pads = [1, 0, 2, 3]
        out = [2 + 1 + 2, 3 + 0 + 3]
    else:
        pads = [1, 2] if len(axes) == 1 else [2, 1, 0, 3]
        shape = [2, 3]
        full = [0, 0, 0, 0]
        for i, ax in enumerate(axes):
            full[ax % 2], full[2 + ax % 2] = pads[i], pads[len(axes) + i]
        out = [shape[d] + full[d] + full[2 + d] for d in range(2)]
    inits["pads"] = np.array(pads, np.int64)
    if value is not None or axes is not None:
        inits["v"] = np.array(0.0 if value is None else value, np.float32)
        ins.append("v")
    if axes is not None:
        inits["axes"] = np.array(axes, np.int64)
        ins.append("axes")
    node = helper.make_node("Pad", ins, ["y"], mode="constant")
    compile_and_compare(_model([node], {"x": x}, {"y": out}, inits), {"x": x})


# -- pooling -------------------------------------------------------------------------------


@pytest.mark.parametrize("op", ["AveragePool", "MaxPool"])
@pytest.mark.parametrize("include_pad", [0, 1])
def test_pooling_with_strides_and_pads(op, include_pad):
    x = _rand(1, 2, 5, 6, seed=5)
    attrs = dict(kernel_shape=[3, 2], strides=[2, 2], pads=[1, 0, 1, 1])
    if op == "AveragePool":
        attrs["count_include_pad"] = include_pad
    node = helper.make_node(op, ["x"], ["y"], **attrs)
    compile_and_compare(_model([node], {"x": x}, {"y": [1, 2, 3, 3]}), {"x": x})


@pytest.mark.parametrize("op", ["GlobalMaxPool", "GlobalAveragePool"])
def test_global_pooling(op):
    x = _rand(2, 3, 4, 5, seed=6)
    node = helper.make_node(op, ["x"], ["y"])
    compile_and_compare(_model([node], {"x": x}, {"y": [2, 3, 1, 1]}), {"x": x})


# -- arg and reductions ----------------------------------------------------------------------


@pytest.mark.parametrize("op", ["ArgMin", "ArgMax"])
@pytest.mark.parametrize("axis,keepdims", [(1, 0), (-1, 1), (0, 1)])
def test_arg_reductions(op, axis, keepdims):
    x = _rand(3, 4, 5, seed=7)
    shape = [3, 4, 5]
    out = [1 if d == axis % 3 else s for d, s in enumerate(shape)]
    if not keepdims:
        out.pop(axis % 3)
    node = helper.make_node(op, ["x"], ["y"], axis=axis, keepdims=keepdims)
    model = _model([node], {"x": x}, {"y": out}, out_dtype=TensorProto.INT64)
    compile_and_compare(model, {"x": x})


REDUCE = [
    "ReduceProd",
    "ReduceMin",
    "ReduceMax",
    "ReduceSum",
    "ReduceMean",
    "ReduceSumSquare",
    "ReduceLogSumExp",
]


@pytest.mark.parametrize("op", REDUCE)
@pytest.mark.parametrize("axes,keepdims", [([1], 0), ([0, 2], 1), (None, 0)])
def test_reductions(op, axes, keepdims):
    # Values around 1 keep ReduceProd finite; the spread keeps min/max unique.
    x = _rand(2, 3, 4, scale=1.0, low=0.5, seed=8)
    if op == "ReduceLogSumExp":
        x = x * 60.0  # large logits: a log-sum-exp without the max shift overflows
    shape = [2, 3, 4]
    red = range(3) if axes is None else [a % 3 for a in axes]
    out = [1 if d in red else s for d, s in enumerate(shape)]
    if not keepdims:
        out = [s for d, s in enumerate(shape) if d not in red]
    inits = {}
    ins = ["x"]
    if axes is not None:
        inits["axes"] = np.array(axes, np.int64)
        ins.append("axes")
    node = helper.make_node(op, ins, ["y"], keepdims=keepdims)
    compile_and_compare(_model([node], {"x": x}, {"y": out}, inits), {"x": x}, rtol=1e-5)


# -- activations ------------------------------------------------------------------------------

ACTIVATIONS = [
    ("Log", {}, "positive"),
    ("Sqrt", {}, "positive"),
    ("Reciprocal", {}, "positive"),
    ("Softplus", {}, "wide"),
    ("Elu", {"alpha": 0.4}, "normal"),
    ("Elu", {}, "normal"),
    ("Sin", {}, "wide"),
    ("Cos", {}, "wide"),
    ("LeakyRelu", {"alpha": 0.3}, "normal"),
    ("LeakyRelu", {}, "normal"),
    ("Sigmoid", {}, "wide"),
    ("Tanh", {}, "wide"),
    ("Erf", {}, "normal"),
    ("Exp", {}, "normal"),
    ("Abs", {}, "normal"),
    ("Neg", {}, "normal"),
    ("Relu", {}, "normal"),
    ("Sign", {}, "normal"),
    ("Floor", {}, "wide"),
    ("Ceil", {}, "wide"),
    ("Round", {}, "halves"),
    ("Gelu", {}, "normal"),
    ("Gelu", {"approximate": "tanh"}, "normal"),
]


@pytest.mark.parametrize(
    "op,attrs,kind",
    ACTIVATIONS,
    ids=[f"{o}-{'-'.join(f'{k}={v}' for k, v in a.items())}" for o, a, _ in ACTIVATIONS],
)
def test_activations(op, attrs, kind):
    if kind == "positive":
        x = _rand(3, 7, low=0.2, scale=5.0, seed=9)
    elif kind == "wide":
        x = _rand(3, 7, scale=6.0, seed=9)
    elif kind == "halves":
        x = (np.arange(-10, 11, dtype=np.float32) / 2.0).reshape(3, 7)  # ties round to even
    else:
        x = _rand(3, 7, seed=9)
    opset = 20 if op == "Gelu" else 18
    node = helper.make_node(op, ["x"], ["y"], **attrs)
    compile_and_compare(
        _model([node], {"x": x}, {"y": [3, 7]}, opset=opset), {"x": x}, rtol=1e-5, atol=1e-6
    )


# -- Softmax-like on large logits ---------------------------------------------------------------


@pytest.mark.parametrize("axis", [-1, 0, 1])
def test_softmax_large_logits(axis):
    x = _rand(3, 4, 6, scale=100.0, seed=10)  # logits near 100: exp overflows unshifted
    node = helper.make_node("Softmax", ["x"], ["y"], axis=axis)
    compile_and_compare(_model([node], {"x": x}, {"y": [3, 4, 6]}), {"x": x}, rtol=1e-5, atol=1e-6)


def test_layernorm_large_values_and_non_unit_scale():
    x = _rand(2, 3, 8, scale=50.0, seed=11) + 300.0
    scale = _rand(8, seed=12, low=0.5, scale=2.0)
    bias = _rand(8, seed=13)
    node = helper.make_node("LayerNormalization", ["x", "s", "b"], ["y"], axis=-1, epsilon=1e-3)
    model = _model([node], {"x": x}, {"y": [2, 3, 8]}, {"s": scale, "b": bias}, opset=18)
    compile_and_compare(model, {"x": x}, rtol=1e-4, atol=1e-4)


# -- CumSum -------------------------------------------------------------------------------------


@pytest.mark.parametrize("exclusive", [0, 1])
@pytest.mark.parametrize("reverse", [0, 1])
@pytest.mark.parametrize("axis", [0, 1, -1])
def test_cumsum_flags(exclusive, reverse, axis):
    x = _rand(3, 4, 5, seed=14)
    node = helper.make_node("CumSum", ["x", "axis"], ["y"], exclusive=exclusive, reverse=reverse)
    model = _model([node], {"x": x}, {"y": [3, 4, 5]}, {"axis": np.array(axis, np.int64)})
    compile_and_compare(model, {"x": x}, rtol=1e-5, atol=1e-5)


# -- Resize -------------------------------------------------------------------------------------


def _resize_model(ctm, nearest, factor, x):
    scales = np.array([1, 1, factor, factor], np.float32)
    node = helper.make_node(
        "Resize",
        ["x", "", "scales"],
        ["y"],
        mode="nearest",
        coordinate_transformation_mode=ctm,
        nearest_mode=nearest,
    )
    return _model([node], {"x": x}, {"y": [1, 2, 3 * factor, 4 * factor]}, {"scales": scales})


@pytest.mark.parametrize(
    "ctm,nearest,factor",
    [
        ("asymmetric", "floor", 3),
        ("half_pixel", "round_prefer_floor", 2),
        ("half_pixel", "round_prefer_ceil", 2),
        ("pytorch_half_pixel", "round_prefer_floor", 2),
        ("asymmetric", "floor", 2),
    ],
)
def test_resize_nearest_flags(ctm, nearest, factor):
    x = _rand(1, 2, 3, 4, seed=15)
    compile_and_compare(_resize_model(ctm, nearest, factor, x), {"x": x})


@pytest.mark.parametrize("ctm", ["half_pixel", "pytorch_half_pixel"])
def test_resize_half_pixel_floor_is_not_a_repeat(ctm):
    # With half_pixel coordinates and nearest_mode=floor, output 2 of a 2x upsampling
    # reads input floor(0.75) = 0, not 1: a repeat lowering once gave wrong values here.
    # The gather-based Resize lowering must get it right, on the NeuronCore.
    x = _rand(1, 2, 3, 4, seed=15)
    compile_and_compare(_resize_model(ctm, "floor", 2, x), {"x": x})


# -- Slice with steps ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "starts,ends,axes,steps",
    [
        ([0, 1], [6, 5], [0, 1], [2, 3]),
        ([-1], [-100], [1], [-1]),
        ([5, 4], [0, -9], [1, 0], [-2, -3]),
        ([1], [2**62], [0], [2]),
    ],
)
def test_slice_with_steps(starts, ends, axes, steps):
    x = _rand(7, 6, seed=16)
    inits = {
        "starts": np.array(starts, np.int64),
        "ends": np.array(ends, np.int64),
        "axes": np.array(axes, np.int64),
        "steps": np.array(steps, np.int64),
    }
    want = x
    for s, e, a, st in zip(starts, ends, axes, steps, strict=True):
        index = [slice(None)] * 2
        index[a] = slice(s, None if e >= 2**62 else e, st)
        if e <= -len(x.shape) * 10 and st < 0:
            index[a] = slice(s, None, st)
        want = want[tuple(index)]
    node = helper.make_node("Slice", ["x", "starts", "ends", "axes", "steps"], ["y"])
    model = _model([node], {"x": x}, {"y": list(want.shape)}, inits)
    compile_and_compare(model, {"x": x})


# -- a few more layouts with non-trivial values ------------------------------------------------


def test_matmul_non_square_weights_and_operand_order():
    x = _rand(2, 3, seed=17)
    w = _rand(3, 4, seed=18)
    nodes = [
        helper.make_node("MatMul", ["w2", "x"], ["t"]),  # constant on the left
        helper.make_node("Sub", ["c", "t"], ["y"]),
    ]  # constant first, not commutative
    inits = {"w2": _rand(5, 2, seed=19), "c": _rand(5, 3, seed=20)}
    del w
    compile_and_compare(_model(nodes, {"x": x}, {"y": [5, 3]}, inits), {"x": x})


@pytest.mark.parametrize(
    "op,left",
    [("Sub", True), ("Div", True), ("Pow", False), ("Sub", False), ("Div", False), ("Max", True)],
)
def test_scalar_constant_operand(op, left):
    x = _rand(2, 5, low=0.5, scale=2.0, seed=21)
    node = helper.make_node(op, ["c", "x"] if left else ["x", "c"], ["y"])
    model = _model([node], {"x": x}, {"y": [2, 5]}, {"c": np.array(1.7, np.float32)})
    compile_and_compare(model, {"x": x})


def test_conv_with_bias_strides_pads_groups():
    x = _rand(1, 4, 6, 6, seed=22)
    w = _rand(6, 2, 3, 3, seed=23)
    b = _rand(6, seed=24)
    node = helper.make_node(
        "Conv", ["x", "w", "b"], ["y"], strides=[2, 1], pads=[1, 0, 1, 2], group=2
    )
    model = _model([node], {"x": x}, {"y": [1, 6, 3, 6]}, {"w": w, "b": b})
    compile_and_compare(model, {"x": x}, rtol=1e-4, atol=1e-5)


def test_batchnorm_with_statistics():
    x = _rand(2, 3, 4, 4, seed=25)
    stats = {
        "s": _rand(3, seed=26),
        "b": _rand(3, seed=27),
        "m": _rand(3, seed=28),
        "v": _rand(3, low=0.3, scale=2.0, seed=29),
    }
    node = helper.make_node("BatchNormalization", ["x", "s", "b", "m", "v"], ["y"], epsilon=1e-2)
    compile_and_compare(
        _model([node], {"x": x}, {"y": [2, 3, 4, 4]}, stats), {"x": x}, rtol=1e-4, atol=1e-5
    )


@pytest.mark.parametrize("op,axis", [("Gather", 1), ("Gather", 0)])
def test_gather_axis(op, axis):
    x = _rand(4, 5, seed=30)
    idx = np.array([[3, 0], [1, -1]], np.int64)
    out = [2, 2, 5] if axis == 0 else [4, 2, 2]
    node = helper.make_node(op, ["x", "i"], ["y"], axis=axis)
    compile_and_compare(_model([node], {"x": x}, {"y": out}, {"i": idx}), {"x": x})


@pytest.mark.parametrize("perm", [[2, 0, 1], [1, 2, 0], None])
def test_transpose_perm(perm):
    x = _rand(2, 3, 4, seed=31)
    out = [4, 3, 2] if perm is None else [[2, 3, 4][p] for p in perm]
    attrs = {} if perm is None else {"perm": perm}
    node = helper.make_node("Transpose", ["x"], ["y"], **attrs)
    compile_and_compare(_model([node], {"x": x}, {"y": out}), {"x": x})


def test_expand_where_not_and_shape_folding():
    # Expand to a shape computed in the graph (Shape folded at compile time), a Where on
    # a computed condition, and a Not of it.
    x = _rand(3, 1, seed=32)
    z = _rand(2, 3, 4, seed=33)
    nodes = [
        helper.make_node("Shape", ["z"], ["s"]),
        helper.make_node("Expand", ["x", "s"], ["e"]),
        helper.make_node("Greater", ["e", "z"], ["g"]),
        helper.make_node("Not", ["g"], ["ng"]),
        helper.make_node("Where", ["ng", "e", "z"], ["y"]),
        helper.make_node("Cast", ["ng"], ["m"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["y", "m"], ["out"]),
    ]
    feeds = {"x": x, "z": z}
    compile_and_compare(_model(nodes, feeds, {"out": [2, 3, 4]}), feeds)


def test_range_and_constant_of_shape_fold_into_weights():
    x = _rand(2, 5, seed=34)
    nodes = [
        helper.make_node("Range", ["start", "limit", "delta"], ["r"]),
        helper.make_node(
            "ConstantOfShape",
            ["shape"],
            ["k"],
            value=numpy_helper.from_array(np.array([0.75], np.float32)),
        ),
        helper.make_node("Mul", ["x", "r"], ["t"]),
        helper.make_node("Add", ["t", "k"], ["y"]),
    ]
    inits = {
        "start": np.array(1.5, np.float32),
        "limit": np.array(4.0, np.float32),
        "delta": np.array(0.5, np.float32),
        "shape": np.array([2, 5], np.int64),
    }
    compile_and_compare(_model(nodes, {"x": x}, {"y": [2, 5]}, inits), {"x": x})
