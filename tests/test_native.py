"""The compiled float32 kernels (neuron_ir.kernels.native): bit-identical to the numpy
code they replace, declined where they cannot take an array, and the decomposed Gelu
recognised in the interpreter's fused regions."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from onnx import TensorProto, helper, numpy_helper

import neuron_ir
from neuron_ir.interp import fusion
from neuron_ir.kernels import KERNELS, native, tensor

RNG = np.random.default_rng(7)

# Every float32 bit pattern class: NaN, +-inf, +-0, subnormals, and the erf clamp's edges.
SPECIALS = np.array(
    [
        np.nan,
        np.inf,
        -np.inf,
        0.0,
        -0.0,
        1e-45,
        -1e-45,
        1e-40,
        3.92,
        -3.92,
        3.9200001,
        4.0,
        1e30,
        3e38,
    ],
    dtype=np.float32,
)
floats32 = st.floats(width=32, allow_nan=True, allow_infinity=True, allow_subnormal=True)


def _bits(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a).view(np.uint32)


def test_extension_is_built():
    # pip install -e . builds it where a C compiler is present, as on every machine of
    # this project; without it everything still runs, on the numpy code.
    assert native.built(), "neuron_ir.kernels._native was not built (needs a C compiler)"


def _numpy_erf(x: np.ndarray) -> np.ndarray:
    with native.disabled():
        return tensor._erf32_chunk(x.reshape(-1)).reshape(x.shape)


@given(hnp.arrays(np.float32, st.integers(0, 300), elements=floats32))
@settings(max_examples=60, deadline=None)
def test_erf_is_the_numpy_code_bit_for_bit(x):
    x = np.concatenate([x, SPECIALS])
    out = np.empty_like(x)
    assert native.erf_f32(x, out)
    np.testing.assert_array_equal(_bits(out), _bits(_numpy_erf(x)))


def test_erf_on_a_dense_sweep_and_in_place():
    x = np.concatenate(
        [
            np.linspace(-5, 5, 400_001, dtype=np.float32),
            RNG.normal(0, 1e-3, 100_000).astype(np.float32),
            SPECIALS,
        ]
    )
    expected = _bits(_numpy_erf(x))
    out = np.empty_like(x)
    assert native.erf_f32(x, out)
    np.testing.assert_array_equal(_bits(out), expected)
    assert native.erf_f32(x, x)  # in place
    np.testing.assert_array_equal(_bits(x), expected)


def test_erf_walks_strided_views():
    base = RNG.normal(0, 2, (6, 5, 40)).astype(np.float32)
    view = base[::-2, 1:4, 3:37]  # outer axes strided (one backwards), last contiguous
    out = np.full((6, 5, 40), 7.0, np.float32)
    target = out[1:4, ::2, :34]
    assert native.erf_f32(view, target)
    np.testing.assert_array_equal(_bits(target), _bits(_numpy_erf(np.ascontiguousarray(view))))
    untouched = np.ones(out.shape, bool)
    untouched[1:4, ::2, :34] = False
    assert (out[untouched] == 7.0).all()


def _five_ops(x: np.ndarray, divide: bool, c, one, half, half_first=False) -> np.ndarray:
    """The decomposed Gelu through the interpreter's own kernels, numpy only."""
    c, one, half = (np.array(v, np.float32) for v in (c, one, half))
    with native.disabled():
        d = KERNELS["Div" if divide else "Mul"]([x, c], {}, 1)[0]
        e = KERNELS["Erf"]([d], {}, 1)[0]
        a = KERNELS["Add"]([e, one], {}, 1)[0]
        if half_first:
            m = KERNELS["Mul"]([a, half], {}, 1)[0]
            return KERNELS["Mul"]([x, m], {}, 1)[0]
        m = KERNELS["Mul"]([x, a], {}, 1)[0]
        return KERNELS["Mul"]([m, half], {}, 1)[0]


@given(
    hnp.arrays(np.float32, st.tuples(st.integers(1, 5), st.integers(1, 70)), elements=floats32),
    st.booleans(),
    st.sampled_from([1.4142135, 0.70710677, 3.0, -0.25]),
    st.sampled_from([1.0, 0.5]),
    st.sampled_from([0.5, 1.0, 3.0]),
    st.booleans(),
)
@settings(max_examples=80, deadline=None)
def test_gelu_in_place_is_the_five_ops_bit_for_bit(x, divide, c, one, half, half_first):
    expected = _five_ops(x, divide, c, one, half, half_first)
    y = x.copy()
    assert native.gelu_erf_in_place(y, divide, c, one, half, half_first)
    np.testing.assert_array_equal(_bits(y), _bits(expected))


def test_gelu_in_place_on_a_column_chunk_leaves_the_rest():
    # The fused region runs it on one core's columns of the product.
    full = np.concatenate([RNG.normal(0, 3, (64, 512)), np.tile(SPECIALS, (64, 1))], axis=1)
    full = full.astype(np.float32)
    before = full.copy()
    chunk = full[:, 100:300]
    assert native.gelu_erf_in_place(chunk, True, 1.4142135, 1.0, 0.5)
    expected = _five_ops(np.ascontiguousarray(before[:, 100:300]), True, 1.4142135, 1.0, 0.5)
    np.testing.assert_array_equal(_bits(full[:, 100:300]), _bits(expected))
    np.testing.assert_array_equal(_bits(full[:, :100]), _bits(before[:, :100]))
    np.testing.assert_array_equal(_bits(full[:, 300:]), _bits(before[:, 300:]))


@pytest.mark.parametrize(
    "array",
    [
        np.ones((4, 8), np.float64),  # not float32
        np.ones((4, 8), np.float32)[:, ::2],  # last axis strided
        np.ones((4, 8), np.float32).astype(">f4"),  # byte-swapped
    ],
    ids=["float64", "strided", "big-endian"],
)
def test_native_declines_what_it_cannot_take(array):
    before = array.copy()
    assert not native.gelu_erf_in_place(array, True, 1.4142135, 1.0, 0.5)
    assert not native.erf_f32(array, array)
    np.testing.assert_array_equal(array, before)


def test_native_declines_read_only_and_overlapping_arrays():
    x = np.linspace(-3, 3, 64, dtype=np.float32)
    x.flags.writeable = False
    assert not native.gelu_erf_in_place(x, True, 1.4142135, 1.0, 0.5)
    y = np.linspace(-3, 3, 64, dtype=np.float32)
    assert not native.erf_f32(y[:-1], y[1:])  # overlapping, not the same array


def test_disabled_runs_numpy():
    x = np.linspace(-3, 3, 64, dtype=np.float32)
    before = native.enabled()
    with native.disabled():
        assert not native.enabled()
        assert not native.gelu_erf_in_place(x.copy(), True, 1.4142135, 1.0, 0.5)
    assert native.enabled() == before


# ------------------------------------------------------------------ in fused regions


def _count_calls(monkeypatch, name: str) -> list:
    """The shapes ``native.<name>`` is called with from now on (it still runs)."""
    calls = []
    real = getattr(native, name)

    def counted(*args):
        calls.append(args[0].shape)
        return real(*args)

    monkeypatch.setattr(native, name, counted)
    return calls


# The decomposed Gelu's five ops (results d, e, a, g, y) in each form.
_GELU_FORMS = {
    "div": [  # torch.onnx.export's TorchScript exporter
        ("Div", ["h", "sqrt2"]),
        ("Erf", ["d"]),
        ("Add", ["e", "one"]),
        ("Mul", ["h", "a"]),
        ("Mul", ["g", "half"]),
    ],
    "dynamo": [  # torch.onnx.export(dynamo=True), opset 18
        ("Div", ["h", "sqrt2"]),
        ("Erf", ["d"]),
        ("Add", ["e", "one"]),
        ("Mul", ["half", "a"]),
        ("Mul", ["h", "g"]),
    ],
    "mul": [
        ("Mul", ["rsqrt2", "h"]),
        ("Erf", ["d"]),
        ("Add", ["one", "e"]),
        ("Mul", ["a", "h"]),
        ("Mul", ["half", "g"]),
    ],
}


def _gelu_model(form: str, seq: int = 64, hidden: int = 128, ffn: int = 512):
    """MatMul, bias Add and a decomposed Gelu, as the TorchScript exporter writes it
    (``div``) and the dynamo one (``dynamo``: the half times 1 + erf first), with
    every commutative operand swapped and x * (1/sqrt2) (``mul``), with Erf's result
    also a graph output (``erf_out``) or read again inside the region (``erf_inside``),
    or with the biased product read again after the Gelu (``x_later``)."""
    inits = [
        numpy_helper.from_array(RNG.normal(0, 0.2, (hidden, ffn)).astype(np.float32), "w"),
        numpy_helper.from_array(RNG.normal(0, 1, ffn).astype(np.float32), "b"),
        numpy_helper.from_array(np.array(1.4142135, np.float32), "sqrt2"),
        numpy_helper.from_array(np.array(0.70710677, np.float32), "rsqrt2"),
        numpy_helper.from_array(np.array(1.0, np.float32), "one"),
        numpy_helper.from_array(np.array(0.5, np.float32), "half"),
    ]
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["m"]),
        helper.make_node("Add", ["b", "m"], ["h"]),
    ]
    steps = _GELU_FORMS.get(form, _GELU_FORMS["div"])
    nodes += [
        helper.make_node(op, inputs, [out])
        for (op, inputs), out in zip(steps, ["d", "e", "a", "g", "y"], strict=True)
    ]
    outputs = ["y"]
    if form == "erf_out":
        outputs.append("e")
    if form in ("x_later", "erf_inside"):
        nodes.append(helper.make_node("Add", ["y", "h" if form == "x_later" else "e"], ["z"]))
        outputs = ["z"]

    def out(name: str, width: int):
        return helper.make_tensor_value_info(name, TensorProto.FLOAT, [1, seq, width])

    graph = helper.make_graph(
        nodes,
        "gelu",
        [out("x", hidden)],
        [out(name, ffn) for name in outputs],
        initializer=inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize(
    ("form", "compiled_calls"),
    [("div", 2), ("mul", 2), ("dynamo", 2), ("erf_out", 0), ("erf_inside", 0), ("x_later", 0)],
)
def test_decomposed_gelu_in_a_region_is_bit_identical(form, compiled_calls, monkeypatch):
    calls = _count_calls(monkeypatch, "gelu_erf_in_place")
    module = neuron_ir.import_model(_gelu_model(form))
    feeds = {"x": RNG.normal(0, 1, (1, 64, 128)).astype(np.float32)}
    fused = neuron_ir.Interpreter(module).run(feeds)
    # One compiled pass per core's chunk of columns where the pattern is whole and its
    # x is the region's to overwrite; else the five ops' kernels.
    assert len(calls) == compiled_calls
    with native.disabled():
        fused_numpy = neuron_ir.Interpreter(module).run(feeds)
    with fusion.disabled():
        unfused = neuron_ir.Interpreter(module).run(feeds)
    assert fused.keys() == unfused.keys()
    for name in unfused:
        np.testing.assert_array_equal(_bits(fused[name]), _bits(unfused[name]))
        np.testing.assert_array_equal(_bits(fused_numpy[name]), _bits(unfused[name]))


def test_gelu_match_needs_the_whole_pattern():
    module = neuron_ir.import_model(_gelu_model("div"))
    ops = [op for op in module.walk() if hasattr(op, "ONNX_TYPE")]
    erf = next(i for i, op in enumerate(ops) if op.ONNX_TYPE == "Erf")
    assert fusion._match_gelu_erf(ops, erf - 1) is not None
    for k in (erf - 2, erf, erf + 1):  # starting one op early or late
        assert fusion._match_gelu_erf(ops, k) is None
    assert fusion._match_gelu_erf(ops[: erf + 3], erf - 1) is None  # cut short


# ------------------------------------------------------------------ convolution tails


# (activation, alpha) of a convolution's tail: none, Relu, LeakyRelu (YOLO's 0.1, and
# the edges of the range max(v, v * alpha) covers)
ACTIVATIONS = [(None, 0.0), ("Relu", 0.0), ("LeakyRelu", 0.1), ("LeakyRelu", 0.0)]
ACTIVATIONS += [("LeakyRelu", 1.0)]


def _tail_steps(x, bias, residual, activation, alpha=0.0):
    """A convolution's bias, residual Add and activation as the unfused numpy steps (the
    ops' own kernels) do them."""
    y = x.copy()
    with native.disabled(), np.errstate(all="ignore"):
        if bias is not None:
            y += bias
        if residual is not None:
            np.add(y, residual, out=y)
        if activation is not None:
            y = KERNELS[activation]([y], {"alpha": alpha}, 1)[0]
    return y


def _same_values(a: np.ndarray, b: np.ndarray) -> None:
    """Equal, NaN where NaN, and the same sign on zeros (Relu makes -0.0 into +0.0)."""
    np.testing.assert_array_equal(a, b)
    numbers = ~np.isnan(a)
    np.testing.assert_array_equal(np.signbit(a[numbers]), np.signbit(b[numbers]))


@given(
    hnp.arrays(
        np.float32,
        st.tuples(st.integers(1, 2), st.integers(1, 6), st.integers(1, 5), st.integers(1, 20)),
        elements=floats32,
    ),
    st.booleans(),
    st.booleans(),
    st.sampled_from(ACTIVATIONS),
    st.data(),
)
@settings(max_examples=100, deadline=None)
def test_conv_tail_is_the_numpy_steps(x, with_bias, with_residual, activation, data):
    c = x.shape[1]
    bias = data.draw(hnp.arrays(np.float32, (c, 1, 1), elements=floats32)) if with_bias else None
    residual = (
        data.draw(hnp.arrays(np.float32, x.shape, elements=floats32)) if with_residual else None
    )
    expected = _tail_steps(x, bias, residual, *activation)
    y = x.copy()
    assert native.conv_tail_in_place(y, bias, residual, *activation)
    _same_values(y, expected)


def test_conv_tail_on_a_row_chunk_with_specials():
    x = RNG.normal(0, 1, (1, 8, 12, 16)).astype(np.float32)
    x[0, :, 0, : SPECIALS.size] = SPECIALS
    x[0, 0, 1, :4] = -0.0
    residual = RNG.normal(0, 1, x.shape).astype(np.float32)
    residual[0, :, 0, :3] = -0.0
    bias = RNG.normal(0, 1, (8, 1, 1)).astype(np.float32)
    bias[0] = -0.0
    chunk = (slice(None), slice(None), slice(3, 9))
    for b in (bias, None):
        for r in (residual[chunk], None):
            for activation in ACTIVATIONS:
                y = x.copy()
                assert native.conv_tail_in_place(y[chunk], b, r, *activation)
                expected = x.copy()
                expected[chunk] = _tail_steps(x[chunk], b, r, *activation)
                _same_values(y, expected)


def test_conv_tail_declines_what_it_cannot_take():
    x = np.ones((1, 4, 3, 5), np.float32)
    assert not native.conv_tail_in_place(x, np.ones((4, 1, 1)), None, "Relu")  # float64 bias
    assert not native.conv_tail_in_place(x, np.ones((4, 1, 2), np.float32), None, "Relu")
    assert not native.conv_tail_in_place(x, None, np.ones((1, 4, 3, 1), np.float32), "Relu")
    assert not native.conv_tail_in_place(x, None, x[:, :, :, ::-1], "Relu")  # overlaps x
    assert not native.conv_tail_in_place(x, None, None, "LeakyRelu", 1.5)  # not max(v, av)
    assert not native.conv_tail_in_place(x, None, None, "Elu")
    assert (x == 1).all()


def _conv_model(kind: str, size: int = 28, channels: int = 32) -> onnx.ModelProto:
    """A 3x3 Conv with its tail: bias, Add(residual), Relu (``add_relu``); BatchNorm then
    Relu (``bn_relu``); no bias, Relu (``relu``); bias, Add and LeakyRelu(0.1) (``leaky``)
    or LeakyRelu(2) (``leaky_steep``); bias and Add only (``add``); the Conv's
    result also a graph output (``read_twice``) or read again after the Relu (``reread``);
    the bias a graph input (``bias_input``)."""
    w = RNG.normal(0, 0.1, (channels, channels, 3, 3)).astype(np.float32)
    inits = [numpy_helper.from_array(w, "w")]
    conv_inputs = ["x", "w"]
    if kind != "relu":
        if kind != "bias_input":
            inits.append(
                numpy_helper.from_array(RNG.normal(0, 1, channels).astype(np.float32), "b")
            )
        conv_inputs.append("b")
    nodes = [helper.make_node("Conv", conv_inputs, ["c"], pads=[1, 1, 1, 1])]
    outputs = ["y"]
    if kind == "bn_relu":
        for name, mean in (("scale", 1.0), ("shift", 0.0), ("mean", 0.0), ("var", 1.0)):
            values = RNG.normal(mean, 0.1, channels)
            values = np.abs(values) if name == "var" else values
            inits.append(numpy_helper.from_array(values.astype(np.float32), name))
        nodes += [
            helper.make_node("BatchNormalization", ["c", "scale", "shift", "mean", "var"], ["n"]),
            helper.make_node("Relu", ["n"], ["y"]),
        ]
    elif kind == "relu":
        nodes.append(helper.make_node("Relu", ["c"], ["y"]))
    elif kind in ("leaky", "leaky_steep"):  # YOLO v3/v4's activation
        alpha = 0.1 if kind == "leaky" else 2.0
        nodes += [
            helper.make_node("Add", ["c", "r"], ["s"]),
            helper.make_node("LeakyRelu", ["s"], ["y"], alpha=alpha),
        ]
    elif kind == "add":
        nodes.append(helper.make_node("Add", ["r", "c"], ["y"]))
    else:
        nodes += [
            helper.make_node("Add", ["c", "r"], ["s"]),
            helper.make_node("Relu", ["s"], ["y"]),
        ]
        if kind == "read_twice":
            outputs.append("c")
        if kind == "reread":  # the Conv's result read again inside the region
            nodes[-1] = helper.make_node("Relu", ["s"], ["t"])
            nodes.append(helper.make_node("Add", ["t", "c"], ["y"]))
    shape = [1, channels, size, size]
    graph_inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)]
    if kind != "bn_relu" and kind != "relu":
        graph_inputs.append(helper.make_tensor_value_info("r", TensorProto.FLOAT, shape))
    if kind == "bias_input":
        graph_inputs.append(helper.make_tensor_value_info("b", TensorProto.FLOAT, [channels]))
    graph = helper.make_graph(
        nodes,
        "conv_tail",
        graph_inputs,
        [helper.make_tensor_value_info(o, TensorProto.FLOAT, shape) for o in outputs],
        initializer=inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize(
    ("kind", "size", "fused"),
    [
        ("add_relu", 28, True),  # split by output rows
        ("add_relu", 7, True),  # a tiny image: split by output channels
        ("bn_relu", 28, True),
        ("relu", 28, True),
        ("leaky", 28, True),
        ("leaky_steep", 28, True),  # the compiled pass declines alpha 2: the kernels run
        ("add", 14, True),
        ("read_twice", 28, False),
        ("reread", 28, False),
        ("bias_input", 28, False),
    ],
)
def test_conv_tail_in_a_region(kind, size, fused, monkeypatch):
    tails = _count_calls(monkeypatch, "conv_tail_in_place")
    products = []  # the compiled products' jobs
    real_run_parts = native.run_parts

    def counted_parts(parts):
        products.extend(job for part in parts for job in part if job[0] == native.CONV_JOB)
        return real_run_parts(parts)

    monkeypatch.setattr(native, "run_parts", counted_parts)
    channels = 128 if size == 7 else 64  # enough work to split
    module = neuron_ir.import_model(_conv_model(kind, size, channels))
    feeds = {
        "x": RNG.normal(0, 1, (1, channels, size, size)).astype(np.float32),
        "r": RNG.normal(0, 1, (1, channels, size, size)).astype(np.float32),
        "b": RNG.normal(0, 1, channels).astype(np.float32),
    }
    feeds = {name: feeds[name] for name in ("x", "r", "b") if name in _input_names(module)}
    result = neuron_ir.Interpreter(module).run(feeds)
    # One compiled pass per core's chunk (two here) where the tail is matched: in the
    # compiled product's epilogue where it runs and takes the activation, else after it.
    compiled = native.conv2d_enabled()
    in_product = fused and compiled and kind != "leaky_steep"
    assert len(tails) == (2 if fused and not in_product else 0)
    assert len(products) == (2 if compiled else 0)
    with native.disabled():
        numpy_result = neuron_ir.Interpreter(module).run(feeds)
    with fusion.disabled():
        unfused = neuron_ir.Interpreter(module).run(feeds)
    for name in unfused:
        if compiled:  # the compiled product sums in its own order (tests/test_native_conv)
            np.testing.assert_allclose(result[name], numpy_result[name], rtol=1e-5, atol=1e-4)
        else:
            _same_values(result[name], numpy_result[name])
        if kind == "bn_relu":  # the fold rounds the weights (tests/test_fusion.py)
            np.testing.assert_allclose(result[name], unfused[name], rtol=1e-4, atol=1e-5)
        else:
            _same_values(result[name], unfused[name])


def _input_names(module) -> set[str]:
    func = next(op for op in module.walk() if op.name == "func.func")
    return {attrs.data["onnx.name"].data for attrs in func.arg_attrs}


# ------------------------------------------------------------------ im2col


@given(
    st.integers(1, 5),  # channels
    st.integers(1, 12),  # height
    st.integers(1, 12),  # width
    st.tuples(st.integers(1, 4), st.integers(1, 4)),  # kernel
    st.integers(1, 3),  # row stride (the column stride is 1: see native.im2col)
    st.tuples(st.integers(1, 2), st.integers(1, 2)),  # dilations
    st.tuples(st.integers(0, 3), st.integers(0, 3), st.integers(0, 3), st.integers(0, 3)),
    st.data(),
)
@settings(max_examples=80, deadline=None)
def test_im2col_is_numpys_copy(c, h, w, kernel, sh, dil, pads, data):
    from neuron_ir.kernels import nn

    x = RNG.normal(0, 1, (2, c, h, w)).astype(np.float32)
    weight = np.ones((3, c, *kernel), np.float32)
    attrs = {"pads": list(pads), "strides": [sh, 1], "dilations": list(dil)}
    try:
        plan = nn.Conv2dPlan(x, weight, None, attrs)
    except ValueError:  # the windows do not fit: no output
        return
    if plan.pointwise:
        return
    oh = plan.shape[2]
    h0 = data.draw(st.integers(0, oh - 1))
    h1 = data.draw(st.integers(h0 + 1, oh))
    cols = plan._im2col(1, h0, h1)
    with native.disabled():
        expected = plan._im2col(1, h0, h1)
    np.testing.assert_array_equal(_bits(cols), _bits(expected))


def test_im2col_declines_strided_columns_and_other_types():
    image = np.ones((3, 8, 8), np.float32)
    args = ((3, 3), (1, 1), (1, 1), (1, 1), (0, 8), 8)
    assert native.im2col(image, *args) is not None
    assert native.im2col(image, (3, 3), (1, 2), (1, 1), (1, 1), (0, 4), 4) is None
    assert native.im2col(image.astype(np.float64), *args) is None
    assert native.im2col(image[:, :, ::2], (3, 3), (1, 1), (1, 1), (1, 1), (0, 4), 4) is None


def test_the_gelu_op_is_the_numpy_code_bit_for_bit():
    # onnx's own Gelu (opset 20, what the dynamo exporter writes from opset 20 on): the
    # compiled pass, then the float64 fix of the tail z < -2, as the numpy code does.
    values = np.concatenate([np.linspace(-12, 12, 200_000, dtype=np.float32), SPECIALS])
    x = np.resize(values, (len(values) // 5 + 1, 7))[:, 1:6]  # a strided view
    gelu = KERNELS["Gelu"]
    result = gelu([x], {}, 1)[0]
    with native.disabled():
        expected = gelu([x], {}, 1)[0]
    np.testing.assert_array_equal(_bits(result), _bits(expected))
