"""Tests of the "tensor" kernel family (neuron_ir/kernels/tensor.py).

Two sources of truth:
* onnx's backend node test cases for every op of the family (one-node models, converted
  to the canonical opset when older), with each case's own tolerances;
* onnx.reference.ReferenceEvaluator on one-node models, with hypothesis drawing shapes,
  broadcasting, attributes and values.
"""

from __future__ import annotations

import math
import warnings

import ml_dtypes
import numpy as np
import onnx
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from neuron_ir.kernels import KERNELS

OPSET = 28

TENSOR_OPS = """
Add Sub Mul Div Pow Mod BitShift BitwiseAnd BitwiseOr BitwiseXor BitwiseNot And Or Xor Not
Equal Less LessOrEqual Greater GreaterOrEqual PRelu Max Min Sum Mean
Abs Neg Ceil Floor Round Sign Reciprocal Sqrt Exp Log Sin Cos Tan Asin Acos Atan Sinh Cosh
Asinh Acosh Atanh Erf IsNaN IsInf Sigmoid HardSigmoid Tanh Relu LeakyRelu Elu Selu Celu
Softplus Softsign HardSwish Mish Gelu ThresholdedRelu Shrink Clip Identity Cast CastLike Where
ReduceSum ReduceMean ReduceMax ReduceMin ReduceProd ReduceL1 ReduceL2 ReduceLogSum
ReduceLogSumExp ReduceSumSquare ArgMax ArgMin
Reshape Transpose Flatten Concat Split Slice Gather GatherElements GatherND ScatterElements
ScatterND Squeeze Unsqueeze Expand Shape Size ConstantOfShape Range Tile OneHot NonZero Unique
Trilu EyeLike Compress ReverseSequence Constant
""".split()


def test_family_registered():
    for op in TENSOR_OPS:
        assert op in KERNELS, op
        assert KERNELS[op].__module__ == "neuron_ir.kernels.tensor", op


# --------------------------------------------------------------------------- helpers


def _attr_value(a: onnx.AttributeProto):
    v = helper.get_attribute_value(a)
    if isinstance(v, bytes):
        return v.decode()
    if isinstance(v, TensorProto):
        return numpy_helper.to_array(v)
    if isinstance(v, list) and v and isinstance(v[0], bytes):
        return [s.decode() for s in v]
    return v


def run_kernel(node: onnx.NodeProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    attrs = {a.name: _attr_value(a) for a in node.attribute}
    inputs = [feeds[name] if name else None for name in node.input]
    before = [a.copy() if isinstance(a, np.ndarray) else None for a in inputs]
    outs = KERNELS[node.op_type](inputs, attrs, len(node.output))
    for a, b in zip(inputs, before, strict=True):  # kernels never write to their inputs
        if b is not None:
            assert a.dtype == b.dtype and a.shape == b.shape
            assert a.tobytes() == b.tobytes(), f"{node.op_type} modified an input"
    assert isinstance(outs, list) and len(outs) == len(node.output)
    for o in outs:
        # Identity also passes sequences (lists) and empty optionals (None) through.
        assert isinstance(o, np.ndarray) or (
            node.op_type == "Identity" and not isinstance(o, np.generic)
        ), type(o)
    return outs


def run_reference(node: onnx.NodeProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    feeds = {k: v for k, v in feeds.items() if k}
    if node.op_type in ("Gelu",):
        # Ops the reference runs through their function body need typed inputs.
        ins = [
            helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(feeds[n].dtype), None)
            for n in node.input
        ]
        outs = [
            helper.make_tensor_value_info(n, ins[0].type.tensor_type.elem_type, None)
            for n in node.output
        ]
        proto = helper.make_model(
            helper.make_graph([node], "g", ins, outs),
            opset_imports=[helper.make_opsetid("", OPSET)],
        )
    else:
        proto = node
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ReferenceEvaluator(proto).run(None, feeds)


def run_onnxruntime(node: onnx.NodeProto, feeds: dict[str, np.ndarray], out_dtype) -> list:
    """Second oracle, for ops where onnx.reference departs from the spec or is limited.

    Built at opset 21 (the newest this onnxruntime loads); only used for ops whose
    definition has not changed since.
    """
    ort = pytest.importorskip("onnxruntime")
    names = [n for n in node.input if n]
    ins = [
        helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(feeds[n].dtype), None)
        for n in names
    ]
    dts = out_dtype if isinstance(out_dtype, list) else [out_dtype] * len(node.output)
    outs = [
        helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(np.dtype(d)), None)
        for n, d in zip(node.output, dts, strict=False)
    ]
    model = helper.make_model(
        helper.make_graph([node], "g", ins, outs), opset_imports=[helper.make_opsetid("", 21)]
    )
    model.ir_version = 10
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {n: feeds[n] for n in names})


def _comparable(a: np.ndarray) -> np.ndarray:
    # ml_dtypes (bfloat16, float8, int4, ...) compare through float64.
    if a.dtype.kind == "V":
        return a.astype(np.float64)
    return a


def assert_same(got, want, rtol: float, atol: float, what: str = ""):
    if isinstance(want, list) or want is None:  # sequence / optional values
        assert type(got) is type(want), f"{what}: {type(got)} != {type(want)}"
        for i, (g, w) in enumerate(zip(got or [], want or [], strict=True)):
            assert_same(g, w, rtol, atol, f"{what}[{i}]")
        return
    want = np.asarray(want)
    assert got.dtype == want.dtype, f"{what}: dtype {got.dtype} != {want.dtype}"
    assert got.shape == want.shape, f"{what}: shape {got.shape} != {want.shape}"
    g, w = _comparable(got), _comparable(want)
    if g.dtype.kind in "fc":
        np.testing.assert_allclose(g, w, rtol=rtol, atol=atol, equal_nan=True, err_msg=what)
    else:
        np.testing.assert_array_equal(g, w, err_msg=what)


def check_against_reference(node, feeds, rtol=1e-5, atol=1e-6, ref_feeds=None, dtype=None):
    """Kernel vs onnx.reference; ``dtype`` states the spec's output dtype where the
    reference is known to return another one (its values are then cast to it)."""
    got = run_kernel(node, feeds)
    want = run_reference(node, feeds if ref_feeds is None else ref_feeds)
    if dtype is not None:
        want = [np.asarray(w).astype(dtype) for w in want]
    assert len(got) == len(want)
    for i, (g, w) in enumerate(zip(got, want, strict=True)):
        assert_same(g, w, rtol, atol, f"{node.op_type} output {i}")


def _tol(dtype) -> tuple[float, float]:
    dtype = np.dtype(dtype)
    if dtype == np.float16:
        return 4e-3, 4e-3
    if dtype == np.float32:
        return 2e-5, 1e-6
    return 1e-10, 1e-12


# ------------------------------------------------------------- backend node test cases

# Cases known not to pass, with the reason.  Currently none: every single-node case of the
# family passes, including the string ones (Equal on strings works on object arrays).
# name -> (why, the exception the case must raise, a pattern its message must match);
# see test_kernels_nn.py. Empty: every tensor-kernel case passes.
XFAIL: dict[str, tuple[str, type[BaseException], str]] = {}


def _load_cases():
    from onnx.backend.test.case.node import collect_testcases
    from onnx.version_converter import convert_version

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cases = collect_testcases()
    params = []
    for case in cases:
        graph = case.model.graph
        if len(graph.node) != 1 or graph.node[0].op_type not in TENSOR_OPS:
            continue
        if graph.node[0].domain not in ("", "ai.onnx"):
            continue
        params.append(pytest.param(case, id=case.name))
    return params, convert_version


_CASES, _convert_version = _load_cases()


def _case_node(case) -> onnx.NodeProto:
    model = case.model
    version = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    if version < OPSET:
        model = _convert_version(model, OPSET)
    return model.graph.node[0]


def _to_array(v):
    if isinstance(v, TensorProto):
        return numpy_helper.to_array(v)
    if isinstance(v, list) or v is None:  # sequence / optional inputs stay as they are
        return v if v is None else [_to_array(e) for e in v]
    return np.asarray(v)


@pytest.mark.parametrize("case", _CASES)
def test_backend_node_case(case):
    if case.name not in XFAIL:
        _run_backend_case(case)
        return
    why, exc, pattern = XFAIL[case.name]
    with pytest.raises(exc, match=pattern):
        _run_backend_case(case)
    pytest.xfail(why)


def _run_backend_case(case):
    node = _case_node(case)
    graph = case.model.graph
    for inputs, outputs in case.data_sets:
        feeds = {vi.name: _to_array(v) for vi, v in zip(graph.input, inputs, strict=True)}
        got = run_kernel(node, feeds)
        for i, (g, w) in enumerate(zip(got, outputs, strict=True)):
            assert_same(g, _to_array(w), case.rtol, case.atol, f"{case.name} output {i}")


def test_backend_cases_found():
    assert len(_CASES) > 500


# ------------------------------------------------------------------- hypothesis tests

_SEEDS = st.integers(0, 2**32 - 1)
_FLOATS = [np.float32, np.float16, np.float64]
_INTS = [np.int8, np.int32, np.int64, np.uint8]
_SPECIALS = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0])


def _values(rng, shape, dtype, lo=-5.0, hi=5.0, specials=False):
    dtype = np.dtype(dtype)
    if dtype == np.bool_:
        return rng.random(shape) < 0.5
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        lo, hi = max(int(lo), int(info.min)), min(int(hi), int(info.max))
        return rng.integers(lo, hi, size=shape, endpoint=True, dtype=dtype)
    x = rng.uniform(lo, hi, shape).astype(dtype)
    if specials and x.size:
        flat = x.reshape(-1)
        pick = rng.random(flat.size) < 0.15
        flat[pick] = rng.choice(_SPECIALS, int(pick.sum())).astype(dtype)
    return x


def _node(op, n_in, n_out=1, **attrs):
    """One-node NodeProto with inputs x0, x1, ...; n_in is a count or a list of input
    positions where -1 marks an omitted optional input."""
    positions = n_in if isinstance(n_in, list) else list(range(n_in))
    names = [f"x{i}" if i >= 0 else "" for i in positions]
    return helper.make_node(op, names, [f"y{i}" for i in range(n_out)], **attrs)


def _feeds(*arrays):
    return {f"x{i}": a for i, a in enumerate(arrays) if a is not None}


@st.composite
def _binary_case(draw):
    op = draw(
        st.sampled_from(
            "Add Sub Mul Div Pow Mod Max Min Sum Mean Equal Less LessOrEqual Greater "
            "GreaterOrEqual PRelu".split()
        )
    )
    float_only = op in ("Mean", "PRelu")
    dtype = np.dtype(draw(st.sampled_from(_FLOATS if float_only else _FLOATS + _INTS)))
    rng = np.random.default_rng(draw(_SEEDS))
    n = draw(st.integers(1, 3)) if op in ("Max", "Min", "Sum", "Mean") else 2
    shapes = draw(hnp.mutually_broadcastable_shapes(num_shapes=n, max_dims=4, max_side=4))
    shapes = list(shapes.input_shapes)
    if op == "PRelu":  # slope broadcasts unidirectionally to X
        shapes[1] = draw(hnp.broadcastable_shapes(shapes[0], max_dims=len(shapes[0])))
    specials = dtype.kind == "f" and op != "Pow"
    xs = [_values(rng, s, dtype, specials=specials) for s in shapes]
    if op == "PRelu":
        # Finite slopes: for x = 0 the spec gives x, the reference 0 * slope (NaN for a
        # NaN slope).
        xs[1] = _values(rng, shapes[1], dtype)
    attrs = {}
    if op in ("Div", "Mod") and dtype.kind in "iu":
        xs[1][xs[1] == 0] = 1  # integer division by zero is undefined
    if op == "Mod":
        attrs["fmod"] = draw(st.integers(0, 1))
    if op == "Pow":
        if dtype.kind == "f":
            xs[0] = _values(rng, shapes[0], dtype, 0.1, 3.0)
            edt = draw(st.sampled_from([dtype, np.dtype(np.int64), np.dtype(np.float32)]))
            xs[1] = _values(rng, shapes[1], edt, -3, 3)
        else:
            xs[0] = _values(rng, shapes[0], dtype, -3, 3)
            xs[1] = _values(rng, shapes[1], draw(st.sampled_from([dtype, np.int64])), 0, 4)
    return op, xs, attrs


@settings(max_examples=600, deadline=None)
@given(_binary_case())
def test_binary_matches_reference(case):
    op, xs, attrs = case
    rtol, atol = _tol(xs[0].dtype)
    ref = None
    if op == "Mean" and len(xs) > 1:
        # onnx.reference's Mean accumulates in place into a copy of the first input, so it
        # cannot broadcast that one: hand it the first input already broadcast.
        full = np.broadcast_shapes(*(x.shape for x in xs))
        ref = _feeds(np.broadcast_to(xs[0], full).copy(), *xs[1:])
    check_against_reference(_node(op, len(xs), **attrs), _feeds(*xs), rtol, atol, ref)


@st.composite
def _bitwise_case(draw):
    op = draw(
        st.sampled_from(
            "And Or Xor BitwiseAnd BitwiseOr BitwiseXor BitShift Not BitwiseNot".split()
        )
    )
    rng = np.random.default_rng(draw(_SEEDS))
    shapes = draw(hnp.mutually_broadcastable_shapes(num_shapes=2, max_dims=4, max_side=4))
    logical = op in ("And", "Or", "Xor", "Not")
    dtype = np.dtype(np.bool_ if logical else draw(st.sampled_from(_INTS + [np.uint64])))
    info = None if logical else np.iinfo(dtype)
    lo, hi = (0, 1) if logical else (info.min, info.max)
    xs = [_values(rng, s, dtype, lo, hi) for s in shapes.input_shapes]
    attrs = {}
    if op == "BitShift":
        attrs["direction"] = draw(st.sampled_from(["LEFT", "RIGHT"]))
        bits = info.bits
        lo = -2 if dtype.kind == "i" else 0  # counts < 0 and >= width have defined results
        xs[1] = _values(rng, shapes.input_shapes[1], dtype, lo, bits + 2)
    if op in ("Not", "BitwiseNot"):
        xs = xs[:1]
    return op, xs, attrs


@settings(max_examples=250, deadline=None)
@given(_bitwise_case())
def test_bitwise_matches_reference(case):
    op, xs, attrs = case
    check_against_reference(_node(op, len(xs), **attrs), _feeds(*xs))


_UNARY_FLOAT = (
    "Abs Neg Ceil Floor Round Sign Reciprocal Sqrt Exp Log Sin Cos Tan Asin Acos Atan Sinh "
    "Cosh Asinh Acosh Atanh Erf IsNaN IsInf Sigmoid HardSigmoid Tanh Relu LeakyRelu Elu Selu "
    "Celu Softplus Softsign HardSwish Mish Gelu ThresholdedRelu Shrink Clip Identity"
).split()
_UNARY_INT = "Abs Neg Sign Relu Clip Identity Shrink".split()
_ALPHA = st.floats(0.0625, 3.0, width=32)


@st.composite
def _unary_case(draw):
    op = draw(st.sampled_from(_UNARY_FLOAT))
    dtypes = _FLOATS + ([np.int32, np.int8] if op in _UNARY_INT else [])
    dtype = np.dtype(draw(st.sampled_from(dtypes)))
    rng = np.random.default_rng(draw(_SEEDS))
    shape = draw(hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=5))
    scale = draw(st.sampled_from([1.0, 6.0, 30.0]))
    x = _values(rng, shape, dtype, -scale, scale, specials=dtype.kind == "f")
    if op == "Round" and dtype.kind == "f":
        x = (np.round(x * 2) / 2).astype(dtype)  # exercise ties: half to even
    attrs, extra = {}, []
    if op in ("LeakyRelu", "Elu", "Celu", "ThresholdedRelu") and draw(st.booleans()):
        attrs["alpha"] = draw(_ALPHA)
    if op == "Selu" and draw(st.booleans()):
        attrs.update(alpha=draw(_ALPHA), gamma=draw(_ALPHA))
    if op == "HardSigmoid" and draw(st.booleans()):
        attrs.update(alpha=draw(_ALPHA), beta=draw(st.floats(-1, 1, width=32)))
    if op == "Shrink" and draw(st.booleans()):
        attrs.update(lambd=draw(st.floats(0, 3, width=32)), bias=draw(st.floats(-2, 2, width=32)))
        if dtype.kind in "iu":
            attrs = {k: float(int(v)) for k, v in attrs.items()}  # keep integer results exact
    if op == "Gelu":
        attrs["approximate"] = draw(st.sampled_from(["none", "tanh"]))
    if op == "IsInf":
        attrs["detect_negative"] = draw(st.integers(0, 1))
        attrs["detect_positive"] = draw(st.integers(0, 1))
    if op == "Clip":
        for _ in range(2):
            extra.append(_values(rng, (), dtype, -scale, scale) if draw(st.booleans()) else None)
    return op, x, extra, attrs


@settings(max_examples=800, deadline=None)
@given(_unary_case())
def test_unary_matches_reference(case):
    op, x, extra, attrs = case
    inputs = [x, *extra]
    while inputs and inputs[-1] is None:
        inputs.pop()
    names = [i if a is not None else -1 for i, a in enumerate(inputs)]
    rtol, atol = _tol(x.dtype)
    if x.dtype == np.float16 and op in ("Tan", "Sinh", "Cosh", "Exp", "Reciprocal"):
        rtol = 1e-2  # half precision evaluated differently near poles / overflow
    if x.dtype == np.float64 and op in ("Erf", "Gelu"):
        # The reference's erf rounds through float32 (exactness: test_erf_accuracy).
        big = float(np.max(np.abs(x), initial=0.0, where=np.isfinite(x)))
        rtol, atol = 2e-7, 1e-7 * (1.0 + big)
    node, feeds = _node(op, names, **attrs), _feeds(*inputs)
    if x.ndim == 0:
        # Several reference unary ops fail on rank-0 arrays: give it shape (1,).
        (want,) = run_reference(node, dict(feeds, x0=x.reshape(1)))
        (got,) = run_kernel(node, feeds)
        assert_same(got, want.reshape(()), rtol, atol, op)
    else:
        check_against_reference(node, feeds, rtol, atol)


_REDUCE_OPS = (
    "ReduceSum ReduceMean ReduceMax ReduceMin ReduceProd ReduceL1 ReduceL2 ReduceLogSum "
    "ReduceLogSumExp ReduceSumSquare"
).split()


@st.composite
def _reduce_case(draw):
    op = draw(st.sampled_from(_REDUCE_OPS))
    int_ok = op in (
        "ReduceSum",
        "ReduceMax",
        "ReduceMin",
        "ReduceProd",
        "ReduceL1",
        "ReduceSumSquare",
    )
    dtype = np.dtype(draw(st.sampled_from(_FLOATS + ([np.int32, np.int64] if int_ok else []))))
    shape = draw(hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=4))
    rng = np.random.default_rng(draw(_SEEDS))
    lo, hi = (0.1, 3.0) if op == "ReduceLogSum" else (-2.0, 2.0)
    x = _values(rng, shape, dtype, lo, hi)
    ndim = len(shape)
    axes = None
    mode = draw(st.sampled_from(["none", "empty", "some"]))
    if mode == "empty":
        axes = np.zeros(0, dtype=np.int64)
    elif mode == "some" and ndim:
        chosen = draw(st.lists(st.integers(0, ndim - 1), min_size=1, max_size=ndim, unique=True))
        axes = np.array([a - ndim if draw(st.booleans()) else a for a in chosen], dtype=np.int64)
    attrs = {"keepdims": draw(st.integers(0, 1))}
    if draw(st.booleans()):
        attrs["noop_with_empty_axes"] = draw(st.integers(0, 1))
    return op, x, axes, attrs


@settings(max_examples=600, deadline=None)
@given(_reduce_case())
def test_reduce_matches_reference(case):
    op, x, axes, attrs = case
    assume(not (op == "ReduceLogSumExp" and x.ndim == 0))  # the reference fails on rank 0
    node = _node(op, 1 if axes is None else 2, **attrs)
    rtol, atol = _tol(x.dtype)
    if x.dtype == np.float16:
        rtol, atol = 1e-2, 1e-2  # the reference accumulates in float16, the kernel in float32
    # The reference widens some integer results (e.g. rank-0 ReduceSumSquare) to int64;
    # the spec keeps the input type.
    check_against_reference(node, _feeds(x, axes), rtol, atol, dtype=x.dtype)


@settings(max_examples=200, deadline=None)
@given(
    op=st.sampled_from(["ArgMax", "ArgMin"]),
    shape=hnp.array_shapes(min_dims=1, max_dims=4, min_side=1, max_side=5),
    dtype=st.sampled_from([np.float32, np.int32]),
    data=st.data(),
    seed=_SEEDS,
)
def test_argreduce_matches_reference(op, shape, dtype, data, seed):
    x = _values(np.random.default_rng(seed), shape, dtype, -2, 2)  # small range: many ties
    x = np.round(x).astype(dtype)
    attrs = {}
    if data.draw(st.booleans()):
        attrs["axis"] = data.draw(st.integers(-len(shape), len(shape) - 1))
    for name in ("keepdims", "select_last_index"):
        if data.draw(st.booleans()):
            attrs[name] = data.draw(st.integers(0, 1))
    check_against_reference(_node(op, 1, **attrs), _feeds(x))


_BIG = 2**63 - 1


@settings(max_examples=500, deadline=None)
@given(shape=hnp.array_shapes(min_dims=1, max_dims=4, min_side=0, max_side=5), data=st.data())
def test_slice_matches_reference(shape, data):
    ndim = len(shape)
    x = np.arange(math.prod(shape), dtype=np.float32).reshape(shape)
    axes = data.draw(st.lists(st.integers(0, ndim - 1), min_size=1, max_size=ndim, unique=True))
    bound = st.one_of(st.integers(-8, 8), st.sampled_from([_BIG, -_BIG - 1]))
    starts = [data.draw(bound) for _ in axes]
    ends = [data.draw(bound) for _ in axes]
    steps = [data.draw(st.sampled_from([-3, -2, -1, 1, 2, 3])) for _ in axes]
    axes = [a - ndim if data.draw(st.booleans()) else a for a in axes]
    i64 = lambda v: np.array(v, dtype=np.int64)  # noqa: E731
    inputs = [x, i64(starts), i64(ends)]
    default_axes = axes == list(range(len(axes)))
    if not default_axes or data.draw(st.booleans()):
        inputs.append(i64(axes))
    all_ones = all(s == 1 for s in steps)
    if not all_ones or data.draw(st.booleans()):
        if len(inputs) == 3:
            inputs.append(None)
        inputs.append(i64(steps))
    names = [i if a is not None else -1 for i, a in enumerate(inputs)]
    node, feeds = _node("Slice", names), _feeds(*inputs)
    # onnx.reference slices with Python semantics: a negative-step start below -dim makes
    # an empty slice there, whereas the spec clamps it to 0 (element 0 is included).  The
    # reference gets the equivalent start -dim, which it resolves to 0 too.
    ref_starts = [
        max(s, -shape[a]) if st_ < 0 else s for s, st_, a in zip(starts, steps, axes, strict=True)
    ]
    ref_feeds = dict(feeds, x1=i64(ref_starts))
    check_against_reference(node, feeds, ref_feeds=ref_feeds)


_SHAPES_1_3 = hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=4)


def _indices(rng, shape, dim, neg=True):
    idx = rng.integers(0, dim, size=shape, endpoint=False) if dim else np.zeros(shape, int)
    if neg and dim:
        flip = rng.random(shape) < 0.3
        idx = np.where(flip, idx - dim, idx)
    return idx.astype(rng.choice([np.int64, np.int32]))


@settings(max_examples=250, deadline=None)
@given(shape=_SHAPES_1_3, data=st.data(), seed=_SEEDS)
def test_gather_matches_reference(shape, data, seed):
    rng = np.random.default_rng(seed)
    x = _values(rng, shape, np.float32)
    axis = data.draw(st.integers(-len(shape), len(shape) - 1))
    ishape = data.draw(hnp.array_shapes(min_dims=0, max_dims=2, min_side=0, max_side=3))
    idx = _indices(rng, ishape, shape[axis])
    check_against_reference(_node("Gather", 2, axis=axis), _feeds(x, idx))


@settings(max_examples=250, deadline=None)
@given(shape=_SHAPES_1_3, data=st.data(), seed=_SEEDS)
def test_gather_elements_matches_reference(shape, data, seed):
    rng = np.random.default_rng(seed)
    x = _values(rng, shape, np.int32)
    axis = data.draw(st.integers(-len(shape), len(shape) - 1))
    # Index shape: any size along axis, at most the data's size elsewhere.
    ishape = tuple(
        data.draw(st.integers(0, 4)) if d == axis % len(shape) else data.draw(st.integers(1, n))
        for d, n in enumerate(shape)
    )
    idx = _indices(rng, ishape, shape[axis])
    node, feeds = _node("GatherElements", 2, axis=axis), _feeds(x, idx)
    ax = axis % len(shape)
    if all(ishape[d] == shape[d] for d in range(len(shape)) if d != ax) and axis >= 0:
        check_against_reference(node, feeds)
    else:
        # onnx.reference needs the index shape to match the data off the axis; the spec
        # (and onnxruntime) only need it to be no larger.
        (want,) = run_onnxruntime(node, feeds, x.dtype)
        assert_same(run_kernel(node, feeds)[0], want, 0, 0, "GatherElements")


@settings(max_examples=250, deadline=None)
@given(shape=hnp.array_shapes(min_dims=1, max_dims=4, max_side=3), data=st.data(), seed=_SEEDS)
def test_gather_nd_matches_reference(shape, data, seed):
    rng = np.random.default_rng(seed)
    x = _values(rng, shape, np.float32)
    b = data.draw(st.integers(0, len(shape) - 1))
    k = data.draw(st.integers(1, len(shape) - b))
    qshape = data.draw(hnp.array_shapes(min_dims=0, max_dims=2, min_side=1, max_side=3))
    cols = [_indices(rng, shape[:b] + qshape + (1,), shape[b + j]) for j in range(k)]
    idx = np.concatenate(cols, axis=-1).astype(np.int64)
    check_against_reference(_node("GatherND", 2, batch_dims=b), _feeds(x, idx))


_REDUCTIONS = st.sampled_from(["none", "add", "mul", "max", "min"])


@settings(max_examples=300, deadline=None)
@given(
    shape=hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=4),
    reduction=_REDUCTIONS,
    dtype=st.sampled_from([np.float32, np.int64]),
    data=st.data(),
    seed=_SEEDS,
)
def test_scatter_elements_matches_reference(shape, reduction, dtype, data, seed):
    rng = np.random.default_rng(seed)
    x = _values(rng, shape, dtype, -3, 3)
    ndim = len(shape)
    axis = data.draw(st.integers(-ndim, ndim - 1))
    ax = axis % ndim
    ishape = tuple(data.draw(st.integers(1, n)) for n in shape)
    if reduction == "none":
        # Distinct targets along the axis so the result does not depend on write order.
        full = list(ishape)
        full[ax] = shape[ax]
        order = np.argsort(rng.random(full), axis=ax)
        idx = np.take(order, np.arange(ishape[ax]), axis=ax)
        idx = np.where(rng.random(idx.shape) < 0.3, idx - shape[ax], idx)
    else:
        idx = _indices(rng, ishape, shape[ax])
    upd = _values(rng, ishape, dtype, -3, 3)
    node = _node("ScatterElements", 3, axis=axis, reduction=reduction)
    feeds = _feeds(x, idx, upd)
    before = {k: v.copy() for k, v in feeds.items()}
    check_against_reference(node, feeds)
    for k, v in feeds.items():  # inputs untouched
        np.testing.assert_array_equal(v, before[k])


@settings(max_examples=300, deadline=None)
@given(
    shape=hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=4),
    reduction=_REDUCTIONS,
    data=st.data(),
    seed=_SEEDS,
)
def test_scatter_nd_matches_reference(shape, reduction, data, seed):
    rng = np.random.default_rng(seed)
    x = _values(rng, shape, np.float32, -3, 3)
    k = data.draw(st.integers(1, len(shape)))
    n_pos = math.prod(shape[:k])
    n = data.draw(st.integers(1, n_pos if reduction == "none" else 2 * n_pos))
    if reduction == "none":
        flat = rng.permutation(n_pos)[:n]  # distinct targets
    else:
        flat = rng.integers(0, n_pos, n)
    idx = np.stack(np.unravel_index(flat, shape[:k]), axis=-1)
    idx = np.where(rng.random(idx.shape) < 0.3, idx - np.array(shape[:k]), idx).astype(np.int64)
    upd = _values(rng, (n,) + shape[k:], np.float32, -3, 3)
    node = _node("ScatterND", 3, reduction=reduction)
    feeds = _feeds(x, idx, upd)
    before = x.copy()
    check_against_reference(node, feeds)
    np.testing.assert_array_equal(x, before)


@settings(max_examples=250, deadline=None)
@given(shape=hnp.array_shapes(min_dims=1, max_dims=3, min_side=0, max_side=7), data=st.data())
def test_split_matches_reference(shape, data):
    x = np.arange(math.prod(shape), dtype=np.float32).reshape(shape)
    ndim = len(shape)
    axis = data.draw(st.integers(-ndim, ndim - 1))
    dim = shape[axis]
    if data.draw(st.booleans()):
        n = data.draw(st.integers(1, 4))
        cuts = sorted(data.draw(st.lists(st.integers(0, dim), min_size=n - 1, max_size=n - 1)))
        sizes = np.diff([0, *cuts, dim]).astype(np.int64)
        node = _node("Split", 2, n_out=len(sizes), axis=axis)
        check_against_reference(node, _feeds(x, sizes))
    else:
        assume(dim > 0)
        n = data.draw(st.integers(1, dim))
        chunk = -(-dim // n)
        assume(chunk * (n - 1) < dim)  # every output non-empty: the spec's valid range
        node = _node("Split", 1, n_out=n, axis=axis, num_outputs=n)
        check_against_reference(node, _feeds(x))


@settings(max_examples=250, deadline=None)
@given(shape=hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=4), data=st.data())
def test_reshape_matches_reference(shape, data):
    x = np.arange(math.prod(shape), dtype=np.int32).reshape(shape)
    # Target: a random grouping of the dims, optionally padded with 1s.
    dims = list(shape)
    target = []
    while dims:
        k = data.draw(st.integers(1, len(dims)))
        target.append(math.prod(dims[:k]))
        dims = dims[k:]
    for _ in range(data.draw(st.integers(0, 2))):
        target.insert(data.draw(st.integers(0, len(target))), 1)
    # A zero-size target needs literal zeros (allowzero=1): with allowzero=0 a 0 copies.
    allowzero = 1 if x.size == 0 else data.draw(st.integers(0, 1))
    if not allowzero:
        for i in range(min(len(target), len(shape))):
            if target[i] == shape[i] and data.draw(st.booleans()):
                target[i] = 0  # 0 copies the input dim
    if x.size and target and data.draw(st.booleans()):
        target[data.draw(st.integers(0, len(target) - 1))] = -1
    node = _node("Reshape", 2, allowzero=allowzero)
    check_against_reference(node, _feeds(x, np.array(target, dtype=np.int64)))


@settings(max_examples=100, deadline=None)
@given(shape=hnp.array_shapes(min_dims=0, max_dims=5, min_side=1, max_side=3), data=st.data())
def test_transpose_matches_reference(shape, data):
    x = np.arange(math.prod(shape), dtype=np.float32).reshape(shape)
    attrs = {}
    if shape and data.draw(st.booleans()):
        attrs["perm"] = data.draw(st.permutations(range(len(shape))))
    check_against_reference(_node("Transpose", 1, **attrs), _feeds(x))


@settings(max_examples=300, deadline=None)
@given(shape=_SHAPES_1_3, data=st.data(), seed=_SEEDS)
def test_misc_shape_ops_match_reference(shape, data, seed):
    rng = np.random.default_rng(seed)
    x = np.round(_values(rng, shape, np.float32, -2, 2))
    ndim = len(shape)
    op = data.draw(
        st.sampled_from(
            "Where Expand Tile Concat Trilu Unique OneHot Unsqueeze Squeeze Cast".split()
        )
    )
    attrs, extra = {}, []
    if op == "Where":
        cshape = data.draw(hnp.broadcastable_shapes(shape, max_dims=ndim))
        extra = [x * 0 + 7]
        x, extra = rng.random(cshape) < 0.5, [x, *extra]
    elif op == "Expand":
        extra = [np.array(data.draw(hnp.broadcastable_shapes(shape)), dtype=np.int64)]
    elif op == "Tile":
        extra = [rng.integers(0, 3, ndim).astype(np.int64)]
    elif op == "Concat":
        attrs["axis"] = data.draw(st.integers(-ndim, ndim - 1))
        other = list(shape)
        other[attrs["axis"]] = data.draw(st.integers(0, 3))
        extra = [_values(rng, tuple(other), np.float32)]
    elif op == "Trilu":
        attrs["upper"] = data.draw(st.integers(0, 1))
        x = _values(rng, shape + (data.draw(st.integers(1, 4)),), np.float32)
        if data.draw(st.booleans()):
            extra = [np.array(data.draw(st.integers(-5, 5)), dtype=np.int64)]
    elif op == "Unique":
        attrs["sorted"] = data.draw(st.integers(0, 1))
        if data.draw(st.booleans()):
            attrs["axis"] = data.draw(st.integers(-ndim, ndim - 1))
        x = np.round(x / 2)  # duplicates
        node = _node(op, 1, n_out=data.draw(st.integers(1, 4)), **attrs)
        if attrs["sorted"]:
            check_against_reference(node, _feeds(x))
        else:
            # onnx.reference mishandles sorted=0 (sorted Y with one output, errors with
            # an axis); onnxruntime implements first-occurrence order.
            want = run_onnxruntime(node, _feeds(x), [x.dtype] + [np.int64] * 3)
            for i, (g, w) in enumerate(zip(run_kernel(node, _feeds(x)), want, strict=True)):
                assert_same(g, w, 0, 0, f"Unique output {i}")
        return
    elif op == "OneHot":
        depth = data.draw(st.integers(1, 5))
        x = rng.integers(-depth - 1, depth + 1, shape).astype(np.int64)
        attrs["axis"] = data.draw(st.integers(-ndim - 1, ndim))
        extra = [np.array(depth, dtype=np.int64), np.array([2, 5], dtype=np.int32)]
    elif op == "Unsqueeze":
        k = data.draw(st.integers(1, 3))
        axes = data.draw(
            st.lists(st.integers(0, ndim + k - 1), min_size=k, max_size=k, unique=True)
        )
        extra = [np.array([a - (ndim + k) if data.draw(st.booleans()) else a for a in axes])]
    elif op == "Squeeze":
        x = x.reshape(tuple(d for s in shape for d in (s, 1)))
        ones = [i for i, s in enumerate(x.shape) if s == 1]
        if data.draw(st.booleans()):
            extra = [np.array(data.draw(st.lists(st.sampled_from(ones), min_size=1, unique=True)))]
    elif op == "Cast":
        to = data.draw(
            st.sampled_from(
                [
                    TensorProto.FLOAT16,
                    TensorProto.DOUBLE,
                    TensorProto.INT32,
                    TensorProto.INT8,
                    TensorProto.UINT8,
                    TensorProto.BOOL,
                    TensorProto.BFLOAT16,
                    TensorProto.FLOAT8E4M3FN,
                ]
            )
        )
        attrs["to"] = to
        x = x * 37.5
        if to in (TensorProto.UINT8,):
            x = np.abs(x)
    check_against_reference(_node(op, 1 + len(extra), **attrs), _feeds(x, *extra))


def test_dtype_preservation():
    """Half precision and narrow ints keep their dtype through attribute arithmetic."""
    for dt in (np.float16, ml_dtypes.bfloat16):
        x = np.array([-2.0, -0.5, 0.0, 0.5, 2.0], dtype=dt)
        for op, attrs in (
            ("LeakyRelu", {"alpha": 0.1}),
            ("Elu", {}),
            ("Gelu", {}),
            ("Sigmoid", {}),
            ("HardSwish", {}),
            ("Erf", {}),
            ("Mish", {}),
        ):
            (y,) = KERNELS[op]([x], attrs, 1)
            assert y.dtype == x.dtype, (op, dt)
        for op in ("ReduceSum", "ReduceMean", "ReduceLogSumExp", "ReduceL2"):
            (y,) = KERNELS[op]([x, None], {}, 1)
            assert y.dtype == x.dtype and y.shape == (1,), op
        (y,) = KERNELS["Mean"]([x, x], {}, 1)
        assert y.dtype == x.dtype
    xi = np.array([[1, -2], [3, 4]], dtype=np.int32)
    (y,) = KERNELS["ReduceSum"]([xi, None], {"keepdims": 0}, 1)
    assert y.dtype == np.int32 and y.shape == () and isinstance(y, np.ndarray)
    (y,) = KERNELS["Add"]([np.array(1, np.int8), np.array(2, np.int8)], {}, 1)
    assert isinstance(y, np.ndarray) and y.dtype == np.int8
    (y,) = KERNELS["Size"]([xi], {}, 1)
    assert y.dtype == np.int64 and y.shape == ()
    (y,) = KERNELS["ArgMax"]([xi], {"axis": 1}, 1)
    assert y.dtype == np.int64


def test_integer_div_mod_semantics():
    a = np.array([7, -7, 7, -7], dtype=np.int32)
    b = np.array([2, 2, -2, -2], dtype=np.int32)
    (q,) = KERNELS["Div"]([a, b], {}, 1)
    np.testing.assert_array_equal(q, [3, -3, -3, 3])
    (m,) = KERNELS["Mod"]([a, b], {}, 1)
    np.testing.assert_array_equal(m, [1, 1, -1, -1])
    (m,) = KERNELS["Mod"]([a, b], {"fmod": 1}, 1)
    np.testing.assert_array_equal(m, [1, -1, 1, -1])
    big = np.array([2**62 + 1], dtype=np.int64)
    (q,) = KERNELS["Div"]([big, np.array([-1], np.int64)], {}, 1)
    assert q[0] == -(2**62 + 1)


def test_empty_reductions_follow_spec():
    x = np.zeros((0, 3), dtype=np.float32)
    ax = np.array([0], dtype=np.int64)
    expect = {
        "ReduceMax": -np.inf,
        "ReduceMin": np.inf,
        "ReduceSum": 0,
        "ReduceProd": 1,
        "ReduceLogSum": -np.inf,
        "ReduceLogSumExp": -np.inf,
        "ReduceL1": 0,
        "ReduceL2": 0,
        "ReduceSumSquare": 0,
    }
    for op, v in expect.items():
        (y,) = KERNELS[op]([x, ax], {}, 1)
        assert y.shape == (1, 3) and y.dtype == np.float32
        np.testing.assert_array_equal(y, np.full((1, 3), v, np.float32), err_msg=op)
    (y,) = KERNELS["ReduceMean"]([x, ax], {"keepdims": 0}, 1)
    assert y.shape == (3,) and np.isnan(y).all()


def test_erf_accuracy():
    rng = np.random.default_rng(0)
    x = np.concatenate(
        [
            rng.standard_normal(200_000).astype(np.float32) * 3,
            np.linspace(-6, 6, 50_001, dtype=np.float32),
            np.float32(10.0) ** np.linspace(-30, 1, 2000, dtype=np.float32),
            np.array([0.0, -0.0, np.inf, -np.inf, np.nan], dtype=np.float32),
        ]
    )
    (y,) = KERNELS["Erf"]([x], {}, 1)
    want = np.array([math.erf(v) for v in x.astype(np.float64).tolist()])
    assert y.dtype == np.float32
    np.testing.assert_array_equal(np.isnan(y), np.isnan(want))
    ok = ~np.isnan(want)
    err = np.abs(y[ok].astype(np.float64) - want[ok])
    # float32 runs the fast rational form: a few ulp (its rounding bound is 7).
    assert err.max() < 5e-7
    ulps = err / np.spacing(np.abs(want[ok]).astype(np.float32)).astype(np.float64)
    assert ulps.max() <= 8.0
    assert np.nanmax(np.abs(y)) <= 1.0
    # float16 keeps the float64 evaluation rounded once: exact to within an ulp.
    x16 = x[np.abs(x) < 60000].astype(np.float16)
    (y16,) = KERNELS["Erf"]([x16], {}, 1)
    want16 = np.array([math.erf(v) for v in x16.astype(np.float64).tolist()])
    ok16 = ~np.isnan(want16)
    err16 = np.abs(y16[ok16].astype(np.float64) - want16[ok16])
    assert (err16 <= np.spacing(np.abs(want16[ok16]).astype(np.float16))).all()
    assert np.signbit(y[x == 0]).tolist() == np.signbit(x[x == 0]).tolist()
    (y64,) = KERNELS["Erf"]([x.astype(np.float64)], {}, 1)
    np.testing.assert_array_equal(y64[ok], want[ok])


def test_slice_views_and_identity_do_not_copy_needlessly():
    x = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    (y,) = KERNELS["Reshape"]([x, np.array([6, -1], np.int64)], {}, 1)
    assert np.shares_memory(x, y)
    (y,) = KERNELS["Transpose"]([x], {}, 1)
    assert np.shares_memory(x, y) and y.shape == (4, 3, 2)
    (y,) = KERNELS["Identity"]([x], {}, 1)
    assert y is x


def test_relu_against_the_cached_zeros():
    from neuron_ir.kernels.tensor import relu

    x = np.array([-1.5, -0.0, 0.0, 2.0, np.nan, np.inf, -np.inf], dtype=np.float32)
    want = np.array([0.0, 0.0, 0.0, 2.0, np.nan, np.inf, 0.0], dtype=np.float32)
    np.testing.assert_array_equal(relu(x), want)
    big = np.linspace(-3, 3, 300_000, dtype=np.float64).reshape(3, -1)[:, ::2]  # strided
    np.testing.assert_array_equal(relu(big), np.where(big > 0, big, 0.0))
    y = big.copy()
    assert relu(y, out=y) is y and (y >= 0).all()
    assert relu(np.arange(-3, 3, dtype=np.int8)).tolist() == [0, 0, 0, 0, 1, 2]
    assert relu(np.float32(-2.0) * np.ones((), np.float32)).shape == ()
