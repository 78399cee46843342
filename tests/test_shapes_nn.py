"""Tests of the "nn" family of static shape rules (neuron_ir/shapes/nn.py).

Sources of truth:
* the onnx backend node test cases of every op with a rule here: the rule, given the
  actual inputs, must predict each actual output's shape and dtype;
* the numpy kernels (neuron_ir.kernels.KERNELS), run on random data for
  hypothesis-drawn Conv/ConvTranspose/pooling/MatMul/Gemm/Resize/Pad configurations;
* the rule itself: with less knowledge (unknown batch dims, unknown ranks, withheld
  constants) it may say less but never something different, and never fails.
"""

from __future__ import annotations

import functools
import random
import warnings
from dataclasses import dataclass, replace

import numpy as np
import onnx
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from onnx import helper, numpy_helper, version_converter

from neuron_ir.analysis.shapes import RULES, ShapeContext, ShapeError, TensorInfo, infer
from neuron_ir.kernels import KERNELS

OPSET = 28
NN_RULES = {op for op, fn in RULES.items() if fn.__module__ == "neuron_ir.analysis.shapes.nn"}

# (case name, input mode) -> why the rule's answer legitimately differs.
EXPECTED_MISMATCHES: dict[tuple[str, str], str] = {}

# The family covers at least these ops (a rule lost in a refactor shows up here).
COVERED = """
Conv ConvTranspose ConvInteger QLinearConv DeformConv CausalConvWithState MatMul
MatMulInteger QLinearMatMul Gemm Einsum BatchNormalization InstanceNormalization
LayerNormalization GroupNormalization RMSNormalization LpNormalization LRN
MeanVarianceNormalization Softmax LogSoftmax Hardmax MaxPool AveragePool LpPool
GlobalAveragePool GlobalMaxPool GlobalLpPool MaxRoiPool MaxUnpool RoiAlign Resize Upsample
Pad Dropout TopK CumSum CumProd NonMaxSuppression DepthToSpace SpaceToDepth GridSample AffineGrid
Col2Im CenterCropPad Attention LinearAttention RotaryEmbedding RNN GRU LSTM
DequantizeLinear QuantizeLinear DynamicQuantizeLinear ImageDecoder TfIdfVectorizer
NegativeLogLikelihoodLoss SoftmaxCrossEntropyLoss
""".split()


def test_family_registered():
    assert set(COVERED) <= NN_RULES, sorted(set(COVERED) - NN_RULES)


# --------------------------------------------------------------------------- helpers


def _array(value) -> np.ndarray:
    if isinstance(value, onnx.TensorProto):
        return numpy_helper.to_array(value)
    return np.asarray(value)


def _attr_value(attr: onnx.AttributeProto):
    """An attribute as the kernels and rules get it (str, list, numpy for tensors)."""
    value = helper.get_attribute_value(attr)
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, onnx.TensorProto):
        return numpy_helper.to_array(value)
    if isinstance(value, list):
        return [v.decode() if isinstance(v, bytes) else v for v in value]
    return value


@dataclass
class Case:
    name: str
    node: onnx.NodeProto
    attrs: dict
    data_sets: list  # [(inputs by node position (None for ''), outputs by position)]


@functools.lru_cache(maxsize=1)
def _cases() -> tuple[Case, ...]:
    """Every one-node backend test case of an op with an nn rule, at opset 28."""
    from neuron_ir.testing.conformance import node_cases

    out = []
    for case in node_cases():
        model = case.model
        if len(model.graph.node) != 1 or model.graph.node[0].op_type not in NN_RULES:
            continue
        version = next(
            (o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), OPSET
        )
        if version < OPSET:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                converted = version_converter.convert_version(model, OPSET)
            # Old Dropout (opset 11) converts to Constant + Dropout and Upsample to
            # Constant + Resize: check the original node then (its rule reads both forms).
            if len(converted.graph.node) == 1:
                model = converted
        node = model.graph.node[0]
        inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
        in_names = [i.name for i in model.graph.input if i.name not in inits]
        data_sets = []
        for inputs, outputs in case.data_sets:
            feeds = dict(inits)
            feeds.update({n: _array(v) for n, v in zip(in_names, inputs, strict=False)})
            ins = [feeds[n] if n else None for n in node.input]
            data_sets.append((ins, [_array(v) for v in outputs]))
        attrs = {a.name: _attr_value(a) for a in node.attribute}
        out.append(Case(case.name, node, attrs, data_sets))
    return tuple(out)


def _context(case: Case, infos: list[TensorInfo | None]) -> ShapeContext:
    return ShapeContext(case.node.op_type, infos, dict(case.attrs), len(case.node.output))


def _infos(inputs, limit: int | None) -> list[TensorInfo | None]:
    """TensorInfos of actual inputs; values only for inputs of <= ``limit`` elements."""
    return [
        None if a is None else TensorInfo.of_array(a, with_value=limit is None or a.size <= limit)
        for a in inputs
    ]


def _contradiction(weak: TensorInfo, strong: TensorInfo) -> str | None:
    """Why ``weak`` (from less knowledge) says something ``strong`` does not."""
    if weak.dtype is not None and weak.dtype != strong.dtype:
        return f"dtype {weak.dtype} vs {strong.dtype}"
    if weak.shape is None:
        return None
    if strong.shape is None or len(weak.shape) != len(strong.shape):
        return f"shape {weak.shape} vs {strong.shape}"
    for a, b in zip(weak.shape, strong.shape, strict=True):
        if a is not None and a != b:
            return f"shape {weak.shape} vs {strong.shape}"
    return None


# ---------------------------------------------------------------- backend node test cases


def _node_case_failures(case: Case, mode: str) -> list[str]:
    failures = []
    limit = None if mode == "all" else 64
    for inputs, outputs in case.data_sets:
        results = infer(_context(case, _infos(inputs, limit)))
        for i, (name, want) in enumerate(zip(case.node.output, outputs, strict=False)):
            if not name:
                continue
            got = TensorInfo(want.dtype, want.shape)
            why = _contradiction(results[i], got)
            if results[i].dtype is None:
                why = why or "dtype unknown"
            elif results[i].shape is None:
                why = why or "rank unknown"
            elif None in results[i].shape and not results[i].data_dependent:
                why = why or f"unknown dims {results[i].shape} (actual {want.shape})"
            if why:
                failures.append(f"output {i}: {why}")
    return failures


def test_node_cases():
    """Each output's shape and dtype as the backend test data has them. Values of
    every input are known ("all"), then only of inputs of <= 64 elements, as
    compile-time constants usually are ("small"): in these cases those are all the
    value inputs (scales, pads, K, axes, ...), so nothing may stay unknown but
    data-dependent dims."""
    checked, failures, per_op = 0, {}, {}
    for case in _cases():
        per_op[case.node.op_type] = per_op.get(case.node.op_type, 0) + 1
        for mode in ("all", "small"):
            found = _node_case_failures(case, mode)
            if found:
                failures[(case.name, mode)] = found
            checked += 1
    unexpected = {k: v for k, v in failures.items() if k not in EXPECTED_MISMATCHES}
    assert not unexpected
    stale = set(EXPECTED_MISMATCHES) - set(failures)
    assert not stale, f"expected mismatches that now agree: {sorted(stale)}"
    # 568 cases (onnx 1.23.2), each checked twice; every covered op but MaxRoiPool and
    # GlobalLpPool (tested below) has node tests.
    assert checked == 2 * 568, checked
    assert set(COVERED) - set(per_op) == {"MaxRoiPool", "GlobalLpPool"}


# --------------------------------------------------------------------- partial knowledge


def _degraded(case: Case, inputs, rng: random.Random) -> list[tuple[str, list]]:
    """Variants of the full-knowledge input infos that know less."""
    full = _infos(inputs, None)
    variants = [("no values", [None if t is None else replace(t, value=None) for t in full])]

    def dims_none(t, pick):
        if t is None or not t.shape:
            return t
        return TensorInfo(t.dtype, tuple(None if pick(i) else d for i, d in enumerate(t.shape)))

    variants.append(("batch dims None", [dims_none(t, lambda i: i == 0) for t in full]))
    variants.append(
        ("random dims None", [dims_none(t, lambda i: rng.random() < 0.4) for t in full])
    )
    variants.append(("all unknown", [None if t is None else TensorInfo(None, None) for t in full]))
    for k, t in enumerate(full):
        if t is not None:
            unknown_rank = list(full)
            unknown_rank[k] = TensorInfo(t.dtype, None)
            variants.append((f"input {k} rank unknown", unknown_rank))
    return variants


def test_partial_knowledge_never_contradicts():
    rng = random.Random(0)
    n = 0
    for case in _cases():
        inputs, _ = case.data_sets[0]
        strong = infer(_context(case, _infos(inputs, None)))
        for what, infos in _degraded(case, inputs, rng):
            try:
                weak = infer(_context(case, infos))
            except ShapeError as exc:  # less knowledge never makes a valid node invalid
                pytest.fail(f"{case.name} ({what}): {exc}")
            for i, (w, s) in enumerate(zip(weak, strong, strict=True)):
                why = _contradiction(w, s)
                assert why is None, f"{case.name} ({what}) output {i}: {why}"
                n += 1
    assert n > 2000


# ------------------------------------------------------------- rules vs numpy kernels

_HYP = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


def _check_against_kernel(
    op: str, inputs: list, attrs: dict, n_out: int = 1, const: tuple[int, ...] = ()
) -> None:
    """The rule's outputs equal the kernel's on ``inputs``; also when only the
    inputs at ``const`` positions carry values and the batch dim is unknown."""
    with np.errstate(all="ignore"):
        outs = KERNELS[op](inputs, attrs, n_out)
    infos = [
        None if a is None else TensorInfo.of_array(a, with_value=i in const)
        for i, a in enumerate(inputs)
    ]
    got = infer(ShapeContext(op, infos, attrs, n_out))
    for i, (g, y) in enumerate(zip(got, outs, strict=True)):
        assert g.shape == y.shape and g.dtype == y.dtype, (op, attrs, i, g, y.shape, y.dtype)
    # Batch dims unknown (first dim of the data input): the rest must still agree.
    x = infos[0]
    if x is not None and x.shape:
        infos[0] = TensorInfo(x.dtype, (None, *x.shape[1:]))
        for g, y in zip(infer(ShapeContext(op, infos, attrs, n_out)), outs, strict=True):
            assert _contradiction(g, TensorInfo(y.dtype, y.shape)) is None, (op, attrs, g)


def _rand(rng: np.random.Generator, shape, dtype=np.float32) -> np.ndarray:
    return rng.standard_normal(shape).astype(dtype)


@st.composite
def _window_config(draw, *, pool: bool):
    """nd, strides, dilations, kernel, pads, auto_pad and input sizes that fit."""
    nd = draw(st.integers(1, 3))
    k = [draw(st.integers(1, 3)) for _ in range(nd)]
    s = [draw(st.integers(1, 3)) for _ in range(nd)]
    d = [draw(st.integers(1, 2)) for _ in range(nd)]
    dk = [(k[i] - 1) * d[i] + 1 for i in range(nd)]
    auto_pad = draw(st.sampled_from(["NOTSET", "NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID"]))
    # Pooling pads stay below the kernel extent (the spec's requirement).
    pads = [draw(st.integers(0, dk[i % nd] - 1 if pool else 2)) for i in range(2 * nd)]
    sizes = []
    for i in range(nd):
        need = dk[i] - (pads[i] + pads[nd + i] if auto_pad == "NOTSET" else 0)
        sizes.append(max(1, need) + draw(st.integers(0, 4)))
    attrs = {"auto_pad": auto_pad} if auto_pad != "NOTSET" or draw(st.booleans()) else {}
    if auto_pad == "NOTSET" and any(pads):
        attrs["pads"] = pads
    if any(v != 1 for v in s) or draw(st.booleans()):
        attrs["strides"] = s
    if any(v != 1 for v in d):
        attrs["dilations"] = d
    return nd, k, sizes, attrs


@_HYP
@given(
    _window_config(pool=False),
    st.integers(1, 2),
    st.integers(1, 3),
    st.integers(1, 2),
    st.integers(1, 3),
    st.booleans(),
    st.booleans(),
    st.integers(0, 2**31),
)
def test_conv_matches_kernel(cfg, n, group, cg, mg, bias, kernel_attr, seed):
    nd, k, sizes, attrs = cfg
    rng = np.random.default_rng(seed)
    x = _rand(rng, (n, cg * group, *sizes))
    w = _rand(rng, (mg * group, cg, *k))
    attrs = dict(attrs)
    if group > 1:
        attrs["group"] = group
    if kernel_attr:
        attrs["kernel_shape"] = k
    b = _rand(rng, (mg * group,)) if bias else None
    _check_against_kernel("Conv", [x, w, b] if bias else [x, w], attrs)


@_HYP
@given(st.integers(1, 2), st.data(), st.integers(0, 2**31))
def test_conv_transpose_matches_kernel(nd, data, seed):
    rng = np.random.default_rng(seed)
    draw = data.draw
    group = draw(st.integers(1, 2))
    c, mg = group * draw(st.integers(1, 2)), draw(st.integers(1, 2))
    k = [draw(st.integers(1, 3)) for _ in range(nd)]
    s = [draw(st.integers(1, 3)) for _ in range(nd)]
    d = [draw(st.integers(1, 2)) for _ in range(nd)]
    sizes = [draw(st.integers(1, 4)) for _ in range(nd)]
    # output_padding must stay below the stride or the dilation.
    op = [draw(st.integers(0, max(s[i], d[i]) - 1)) for i in range(nd)]
    natural = [s[i] * (sizes[i] - 1) + op[i] + (k[i] - 1) * d[i] + 1 for i in range(nd)]
    attrs: dict = {"strides": s, "dilations": d}
    if any(op):
        attrs["output_padding"] = op
    if group > 1:
        attrs["group"] = group
    how = draw(st.sampled_from(["pads", "output_shape", "SAME_UPPER", "SAME_LOWER", "VALID"]))
    if how == "pads":
        pads = [draw(st.integers(0, 2)) for _ in range(2 * nd)]
        assume(all(natural[i] - pads[i] - pads[nd + i] >= 1 for i in range(nd)))
        attrs["pads"] = pads
    elif how == "output_shape":
        attrs["output_shape"] = [max(1, v + draw(st.integers(-2, 2))) for v in natural]
    else:
        attrs["auto_pad"] = how
    x = _rand(rng, (draw(st.integers(1, 2)), c, *sizes))
    w = _rand(rng, (c, mg, *k))
    _check_against_kernel("ConvTranspose", [x, w], attrs)


@_HYP
@given(
    _window_config(pool=True),
    st.sampled_from(["MaxPool", "AveragePool", "LpPool"]),
    st.booleans(),
    st.integers(1, 2),
    st.integers(0, 2**31),
)
def test_pool_matches_kernel(cfg, op, ceil_mode, n_out, seed):
    nd, k, sizes, attrs = cfg
    rng = np.random.default_rng(seed)
    attrs = dict(attrs, kernel_shape=k)
    if ceil_mode:
        attrs["ceil_mode"] = 1
    x = _rand(rng, (2, 2, *sizes))
    _check_against_kernel(op, [x], attrs, n_out if op == "MaxPool" else 1)


@_HYP
@given(
    hnp.mutually_broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=3, max_side=3),
    st.integers(1, 4),
    st.integers(1, 4),
    st.integers(1, 4),
    st.booleans(),
    st.booleans(),
    st.sampled_from([np.float32, np.int32]),
    st.integers(0, 2**31),
)
def test_matmul_matches_kernel(batch, m, kk, n, a_vec, b_vec, dtype, seed):
    rng = np.random.default_rng(seed)
    ba, bb = batch.input_shapes
    a_shape = (kk,) if a_vec else (*ba, m, kk)
    b_shape = (kk,) if b_vec else (*bb, kk, n)
    a = rng.integers(-3, 3, a_shape).astype(dtype)
    b = rng.integers(-3, 3, b_shape).astype(dtype)
    _check_against_kernel("MatMul", [a, b], {})


@_HYP
@given(
    st.integers(1, 4),
    st.integers(1, 4),
    st.integers(1, 4),
    st.booleans(),
    st.booleans(),
    st.sampled_from(["none", "scalar", "row", "col", "full", "1xN"]),
    st.integers(0, 2**31),
)
def test_gemm_matches_kernel(m, kk, n, ta, tb, c_kind, seed):
    rng = np.random.default_rng(seed)
    a = _rand(rng, (kk, m) if ta else (m, kk))
    b = _rand(rng, (n, kk) if tb else (kk, n))
    c_shape = {"scalar": (), "row": (n,), "col": (m, 1), "full": (m, n), "1xN": (1, n)}
    inputs = [a, b] if c_kind == "none" else [a, b, _rand(rng, c_shape[c_kind])]
    attrs = {"transA": int(ta), "transB": int(tb)}
    _check_against_kernel("Gemm", inputs, attrs)


@_HYP
@given(st.lists(st.integers(1, 5), min_size=1, max_size=4), st.data(), st.integers(0, 2**31))
def test_resize_matches_kernel(shape, data, seed):
    draw = data.draw
    rng = np.random.default_rng(seed)
    r = len(shape)
    axes = None
    if draw(st.booleans()):
        axes = sorted(draw(st.sets(st.integers(0, r - 1), min_size=1)))
    naxes = r if axes is None else len(axes)
    attrs: dict = {}
    if axes is not None:
        # Negative entries count from the back.
        attrs["axes"] = [a - r if draw(st.booleans()) else a for a in axes]
    x = _rand(rng, shape)
    if draw(st.booleans()):
        factors = st.sampled_from([0.5, 0.6, 0.75, 1.0, 1.3, 1.5, 2.0, 2.7, 3.0, 1 / 3])
        scales = np.array([draw(factors) for _ in range(naxes)], dtype=np.float32)
        inputs = [x, None, scales]
        const = (2,)
    else:
        sizes = np.array([draw(st.integers(1, 7)) for _ in range(naxes)], dtype=np.int64)
        policy = draw(st.sampled_from(["stretch", "not_larger", "not_smaller"]))
        if policy != "stretch":
            attrs["keep_aspect_ratio_policy"] = policy
        inputs = [x, None, None, sizes]
        const = (3,)
    _check_against_kernel("Resize", inputs, attrs, const=const)


@_HYP
@given(st.lists(st.integers(1, 4), min_size=1, max_size=4), st.data(), st.integers(0, 2**31))
def test_pad_matches_kernel(shape, data, seed):
    draw = data.draw
    rng = np.random.default_rng(seed)
    r = len(shape)
    axes = None
    if draw(st.booleans()):
        axes = draw(
            st.lists(st.integers(-r, r - 1), min_size=1, max_size=r, unique_by=lambda a: a % r)
        )
    ax = list(range(r)) if axes is None else [a % r for a in axes]
    mode = draw(st.sampled_from(["constant", "edge", "reflect"]))
    pads = []
    for _side in range(2):
        for a in ax:
            # Cropping never goes past the data; reflect pads stay below the dim.
            hi = shape[a] - 1 if mode == "reflect" else 2
            pads.append(draw(st.integers(-1 if shape[a] > 2 else 0, max(hi, 0))))
    for i, a in enumerate(ax):
        assume(shape[a] + pads[i] + pads[len(ax) + i] >= 1)
    x = _rand(rng, shape)
    inputs = [x, np.array(pads, dtype=np.int64)]
    if axes is not None:
        inputs += [None, np.array(axes, dtype=np.int64)]
    attrs = {} if mode == "constant" else {"mode": mode}
    _check_against_kernel("Pad", inputs, attrs, const=(1, 3))


# --------------------------------------------------------- ops without node test cases


def test_max_roi_pool_matches_onnxruntime():
    # Neither a kernel nor onnx.reference implements MaxRoiPool; onnxruntime does up to
    # opset 21 (opset 22 only added bfloat16).
    import onnxruntime as ort

    rng = np.random.default_rng(0)
    x = _rand(rng, (2, 3, 6, 5))
    rois = np.array([[0, 0, 0, 3, 3], [1, 1, 1, 4, 5], [0, 2, 0, 4, 2]], dtype=np.float32)
    attrs = {"pooled_shape": [2, 3]}
    node = helper.make_node("MaxRoiPool", ["x", "rois"], ["y"], **attrs)
    graph = helper.make_graph(
        [node],
        "g",
        [
            helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, x.shape),
            helper.make_tensor_value_info("rois", onnx.TensorProto.FLOAT, rois.shape),
        ],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)], ir_version=10)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    [y] = session.run(None, {"x": x, "rois": rois})
    [info] = infer(
        ShapeContext("MaxRoiPool", [TensorInfo.of_array(x), TensorInfo.of_array(rois)], attrs, 1)
    )
    assert info.shape == y.shape == (3, 3, 2, 3) and info.dtype == y.dtype


@pytest.mark.parametrize("shape", [(2, 3), (2, 3, 4), (1, 2, 3, 4, 5)])
def test_global_lp_pool_matches_kernel(shape):
    x = _rand(np.random.default_rng(0), shape)
    _check_against_kernel("GlobalLpPool", [x], {"p": 3})


# ----------------------------------------------------------------- rule-only behaviours


def _infer(op: str, inputs: list, attrs: dict | None = None, n_out: int = 1):
    """Run a rule on shapes (tuples), dtypes-with-shapes or arrays (constants)."""
    infos = []
    for item in inputs:
        if item is None or isinstance(item, TensorInfo):
            infos.append(item)
        elif isinstance(item, np.ndarray):
            infos.append(TensorInfo.of_array(item))
        else:
            infos.append(TensorInfo(np.dtype(np.float32), item))
    return infer(ShapeContext(op, infos, attrs or {}, n_out))


def _shapes(results) -> list:
    return [r.shape for r in results]


def test_conv_same_padding_needs_no_kernel_size():
    # SAME output size is ceil(in / stride) whatever the (unknown) kernel.
    [y] = _infer(
        "Conv",
        [(1, 3, 10, 11), TensorInfo(np.dtype(np.float32), None)],
        {"auto_pad": "SAME_UPPER", "strides": [2, 3]},
    )
    assert y.shape == (1, None, 5, 4)


def test_unknown_dims_stay_unknown():
    assert _shapes(_infer("MatMul", [(None, 4, 5), (5, None)])) == [(None, 4, None)]
    assert _shapes(_infer("MatMul", [(None, 4, 5), None])) == [None]
    assert _shapes(_infer("MatMul", [(3, 1, 4, 5), (None, 5, 2)])) == [(3, None, 4, 2)]
    # Scales not constant: the resized dims are unknown, the others are not.
    scales = TensorInfo(np.dtype(np.float32), (2,))
    assert _shapes(_infer("Resize", [(1, 3, 8, 8), None, scales], {"axes": [2, 3]})) == [
        (1, 3, None, None)
    ]
    pads = TensorInfo(np.dtype(np.int64), (2,))
    axes = np.array([1], dtype=np.int64)
    assert _shapes(_infer("Pad", [(2, 3, 4), pads, None, axes])) == [(2, None, 4)]
    k = TensorInfo(np.dtype(np.int64), (1,))
    assert _shapes(_infer("TopK", [(5, 9), k], {"axis": 1}, 2)) == [(5, None)] * 2


def test_rank_from_constants_when_input_rank_unknown():
    x = TensorInfo(np.dtype(np.float32), None)
    sizes = np.array([1, 3, 16, 16], dtype=np.int64)
    assert _shapes(_infer("Resize", [x, None, None, sizes])) == [(1, 3, 16, 16)]
    pads = np.array([0, 1, 0, 2], dtype=np.int64)
    assert _shapes(_infer("Pad", [x, pads])) == [(None, None)]


def test_output_dtypes():
    f16, i8, u8 = np.dtype(np.float16), np.dtype(np.int8), np.dtype(np.uint8)
    x16 = TensorInfo(f16, (2, 4))
    ln = _infer("LayerNormalization", [x16, TensorInfo(f16, (4,))], {"axis": 1}, 3)
    assert [r.dtype for r in ln] == [f16, np.float32, np.float32]
    assert [r.shape for r in ln] == [(2, 4), (2, 1), (2, 1)]
    q = _infer("QuantizeLinear", [(3,), (), TensorInfo(i8, ())])
    assert q[0].dtype == i8
    assert _infer("QuantizeLinear", [(3,), ()])[0].dtype == u8
    assert (
        _infer("QuantizeLinear", [(3,), ()], {"output_dtype": onnx.TensorProto.INT8})[0].dtype == i8
    )
    dq = _infer("DequantizeLinear", [TensorInfo(i8, (3,)), TensorInfo(f16, ())])
    assert dq[0].dtype == f16
    mp = _infer("MaxPool", [(1, 1, 4, 4)], {"kernel_shape": [2, 2]}, 2)
    assert mp[1].dtype == np.int64 and mp[1].shape == (1, 1, 3, 3)
    assert _infer("Dropout", [(2, 3)], {}, 2)[1].dtype == np.bool_


def test_data_dependent_outputs():
    boxes, scores = (1, 6, 4), (1, 2, 6)
    [nms] = _infer("NonMaxSuppression", [boxes, scores, np.array([3], dtype=np.int64)])
    assert nms.shape == (None, 3) and nms.dtype == np.int64 and nms.data_dependent
    # No max_output_boxes_per_class: nothing is selected.
    [none] = _infer("NonMaxSuppression", [boxes, scores])
    assert none.shape == (0, 3) and not none.data_dependent
    [img] = _infer(
        "ImageDecoder", [TensorInfo(np.dtype(np.uint8), (100,))], {"pixel_format": "Grayscale"}
    )
    assert img.shape == (None, None, 1) and img.data_dependent


def test_attention_layouts():
    q3, k3, v3 = (2, 5, 8 * 4), (2, 7, 2 * 4), (2, 7, 2 * 6)
    past = (2, 2, 3, 4), (2, 2, 3, 6)
    outs = _infer("Attention", [q3, k3, v3, None, *past], {"q_num_heads": 8, "kv_num_heads": 2}, 4)
    assert _shapes(outs) == [(2, 5, 48), (2, 2, 10, 4), (2, 2, 10, 6), (2, 8, 5, 10)]
    outs = _infer("Attention", [(2, 8, 5, 4), (2, 2, 7, 4), (2, 2, 7, 6)], {}, 4)
    assert _shapes(outs) == [(2, 8, 5, 6), (2, 2, 7, 4), (2, 2, 7, 6), (2, 8, 5, 7)]


@pytest.mark.parametrize("layout", [0, 1])
def test_lstm_layouts(layout):
    x = (7, 2, 3) if layout == 0 else (2, 7, 3)
    outs = _infer(
        "LSTM", [x, (2, 20, 3), (2, 20, 5)], {"direction": "bidirectional", "layout": layout}, 3
    )
    if layout == 0:
        assert _shapes(outs) == [(7, 2, 2, 5), (2, 2, 5), (2, 2, 5)]
    else:
        assert _shapes(outs) == [(2, 7, 2, 5), (2, 2, 5), (2, 2, 5)]


def test_einsum_equations():
    def es(eq, *shapes):
        return _infer("Einsum", list(shapes), {"equation": eq})[0].shape

    assert es("...ij,...jk", (5, 1, 2, 3), (4, 3, 4)) == (5, 4, 2, 4)
    assert es("ij,jk->ik", (2, None), (None, 4)) == (2, 4)
    assert es("ii->i", (3, 3)) == (3,)
    assert es("ba", (2, 3)) == (3, 2)  # implicit output: labels sorted
    assert es("bij, bjk -> bik", (2, 3, 4), (2, 4, 5)) == (2, 3, 5)
    assert es("i,i", (3,), (3,)) == ()
    assert es("...i->...", TensorInfo(np.dtype(np.float32), None)) is None
    # A size-1 label broadcasts against an operand of unknown rank: unknown.
    assert es("ij,jk->ik", TensorInfo(np.dtype(np.float32), None), (1, 4)) == (None, 4)
    assert es("ij,kj->ikj", (2, 1), TensorInfo(np.dtype(np.float32), None)) == (2, None, None)


def test_upsample_scales_attribute():
    # Opset 7 Upsample takes its scales as an attribute.
    [y] = _infer("Upsample", [(1, 2, 3, 4)], {"scales": [1.0, 1.0, 2.0, 1.5]})
    assert y.shape == (1, 2, 6, 6)


# ---------------------------------------------------------------------------- ShapeError


SHAPE_ERRORS = [
    ("Conv", [(1, 4, 8, 8), (6, 3, 3, 3)], {}, "channels"),
    ("Conv", [(1, 6, 8, 8), (6, 3, 3, 3)], {"group": 4}, "divisible"),
    ("Conv", [(1, 4, 8, 8), (6, 4, 3, 3), (5,)], {}, "bias"),
    ("Conv", [(1, 4, 2, 8), (6, 4, 3, 3)], {}, "larger than the padded input"),
    ("Conv", [(1, 4, 8, 8), (6, 4, 3, 3)], {"pads": [1, 1]}, "pads"),
    ("Conv", [(1, 4, 8, 8), (6, 4, 3, 3)], {"kernel_shape": [3, 5]}, "kernel_shape"),
    ("Conv", [(1, 4, 8), (6, 4, 3, 3)], {}, "rank"),
    ("ConvTranspose", [(1, 4, 8, 8), (3, 2, 3, 3)], {}, "weight dim 0"),
    ("MatMul", [(2, 3, 4), (5, 6)], {}, "inner dims"),
    ("MatMul", [(2, 3, 4), (3, 4, 6)], {}, "broadcast"),
    ("MatMul", [(), (3,)], {}, "scalars"),
    ("Gemm", [(3, 4), (5, 6)], {}, "inner dim"),
    ("Gemm", [(3, 4), (5, 6)], {"transB": 1}, "inner dim"),
    ("Gemm", [(3, 4), (4, 6), (3, 5)], {}, "broadcast"),
    ("Gemm", [(3, 4, 1), (4, 6)], {}, "rank"),
    ("BatchNormalization", [(2, 3, 4), (3,), (3,), (4,), (3,)], {}, "length"),
    ("GroupNormalization", [(2, 6, 4), (6,), (6,)], {"num_groups": 4}, "groups"),
    ("LayerNormalization", [(2, 3), (3,)], {"axis": 2}, "out of range"),
    ("Softmax", [(2, 3)], {"axis": -3}, "out of range"),
    ("MaxPool", [(1, 1, 4, 4)], {}, "kernel_shape"),
    ("MaxPool", [(1, 1, 4, 4)], {"kernel_shape": [2]}, "rank"),
    ("AveragePool", [(1, 1, 4, 4)], {"kernel_shape": [2, 2], "strides": [1]}, "strides"),
    ("Resize", [(1, 3, 4, 4), None, np.array([1, 2], np.float32)], {}, "scales has 2"),
    ("Resize", [(1, 3, 4, 4)], {}, "one of scales and sizes"),
    ("Pad", [(2, 3), np.array([1, 1, 1], np.int64)], {}, "pads"),
    ("Pad", [(2, 3), np.array([0, -3, 0, -1], np.int64)], {}, "below zero"),
    ("TopK", [(2, 3), np.array([4], np.int64)], {}, "exceeds"),
    ("DepthToSpace", [(1, 6, 2, 2)], {"blocksize": 2}, "divisible"),
    ("SpaceToDepth", [(1, 6, 3, 4)], {"blocksize": 2}, "divisible"),
    ("Einsum", [(2, 3), (4, 5)], {"equation": "ij,jk->ik"}, "broadcast"),
    ("Einsum", [(2, 3)], {"equation": "ijk->i"}, "rank"),
    ("Einsum", [(2, 3)], {"equation": "ij->ik"}, "label"),
    ("GridSample", [(1, 3, 4, 4), (1, 5, 5, 3)], {}, "last dim"),
    ("Attention", [(2, 8, 5, 4), (2, 3, 7, 4), (2, 3, 7, 6)], {}, "multiple"),
    ("Attention", [(2, 5, 32), (2, 7, 8), (2, 7, 12)], {}, "q_num_heads"),
    ("LSTM", [(7, 2, 3), (1, 20, 3), (1, 20, 5)], {"direction": "bidirectional"}, "expected 2"),
    ("GRU", [(7, 2, 3), (1, 20, 3), (1, 20, 5)], {}, "divisible"),
    ("Col2Im", [(1, 10, 9), np.array([5, 5]), np.array([2, 2])], {}, "divisible"),
    ("Col2Im", [(1, 8, 9), np.array([5, 5]), np.array([2, 2])], {}, "blocks"),
    ("RoiAlign", [(1, 3, 8, 8), (4, 4), (5,)], {}, "num_rois"),
]


@pytest.mark.parametrize(
    ("op", "inputs", "attrs", "match"), SHAPE_ERRORS, ids=[f"{e[0]}-{e[3]}" for e in SHAPE_ERRORS]
)
def test_shape_errors(op, inputs, attrs, match):
    with pytest.raises(ShapeError, match=match):
        _infer(op, inputs, attrs)
