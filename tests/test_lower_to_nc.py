"""lower-to-nc: every zoo model and shipped HF export lowers completely (no onnx op
inside an nc.program), verifies, round-trips through the printer and computes what
it computed before lowering (a differential test of the pass and the nc interpreter)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import assert_same, pins
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper
from xdsl.context import Context
from xdsl.passes import PassPipeline

import neuron_ir
import neuron_ir.interp.nc_ops  # noqa: F401  (registers the nc handlers)
from neuron_ir import zoo
from neuron_ir.errors import PassError
from passes import available_passes
from passes.estimate import EstimatePass
from passes.lower_to_nc import LowerToNcPass
from passes.place_weights import PlaceWeightsPass

HF = sorted((Path(__file__).resolve().parent / "models" / "hf").glob("*/*.onnx"))


def _partition(source, feeds, target="inf1"):
    spec = (
        f'shape-inference{{input-shapes="{pins(feeds)}"}},lower-control-flow,'
        f"partition{{target={target}}}"
    )
    module = neuron_ir.import_model(source)
    PassPipeline.parse_spec(available_passes(), spec).apply(neuron_ir.make_context(), module)
    return module


def _programs(module):
    return [op for op in module.walk() if op.name == "nc.program"]


def _check(module, feeds) -> None:
    before = neuron_ir.run(module, feeds)
    LowerToNcPass().apply(Context(), module)
    PlaceWeightsPass().apply(Context(), module)
    EstimatePass().apply(Context(), module)
    module.verify()
    programs = _programs(module)
    assert programs, "no nc.program"
    for program in programs:
        inner = [op.name for op in program.walk() if op is not program]
        assert not [n for n in inner if not n.startswith("nc.")], inner
        for op in program.walk():
            if op.name not in ("nc.program", "nc.return", "nc.weight"):
                assert op.properties.get("est_time") is not None, op.name
                assert op.properties.get("reads") is not None, op.name
    assert_same(before, neuron_ir.run(module, feeds))
    text = neuron_ir.print_ir(module)
    assert neuron_ir.print_ir(neuron_ir.parse_ir(text)) == text


@pytest.mark.parametrize("name", zoo.names())
def test_zoo_model_lowers_to_nc_and_matches(name):
    feeds = zoo.example_inputs(name)
    _check(_partition(zoo.build(name), feeds), feeds)


@pytest.mark.parametrize("path", HF, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_exported_transformer_lowers_to_nc_and_matches(path):
    from test_real_models import _hf_inputs

    feeds = _hf_inputs(onnx.load(path), batch=2, seq=6)
    _check(_partition(path, feeds), feeds)


def test_unlowerable_op_names_the_node():
    text = """
func.func private @neuron_subgraph_0(%x : tensor<2x4xf32>) -> tensor<2x4xf32> attributes {neuron.target = "inf1"} {
  %y = "onnx.Hardmax"(%x) {onnx.name = "hm"} : (tensor<2x4xf32>) -> tensor<2x4xf32>
  func.return %y : tensor<2x4xf32>
}"""
    module = neuron_ir.parse_ir(text)
    with pytest.raises(PassError, match="onnx.Hardmax.*'hm'"):
        LowerToNcPass().apply(Context(), module)


# -- random small graphs ----------------------------------------------------------

_UNARY = ["Relu", "Tanh", "Sigmoid", "Erf", "Neg", "Abs", "Exp"]
_BINARY = ["Add", "Sub", "Mul", "Div", "Max", "Min"]


@st.composite
def _graphs(draw):
    shape = [draw(st.integers(1, 3)), draw(st.integers(1, 4)), draw(st.integers(2, 5))]
    in_shape = list(shape)
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    nodes, inits = [], []
    cur = "x"
    for k in range(draw(st.integers(1, 6))):
        out = f"t{k}"
        kind = draw(
            st.sampled_from(
                [
                    "unary",
                    "binary",
                    "scalar",
                    "MatMul",
                    "Softmax",
                    "LayerNormalization",
                    "Transpose",
                    "Reshape",
                    "ReduceMean",
                ]
            )
        )
        if kind == "unary":
            op = draw(st.sampled_from(_UNARY))
            if op == "Exp":  # keep values bounded
                nodes.append(helper.make_node("Tanh", [cur], [f"{out}_b"]))
                cur = f"{out}_b"
            nodes.append(helper.make_node(op, [cur], [out]))
        elif kind in ("binary", "scalar"):
            op = draw(st.sampled_from(_BINARY))
            cshape = [] if kind == "scalar" else shape[draw(st.integers(0, len(shape))) :]
            c = rng.uniform(0.5, 1.5, cshape).astype(np.float32)
            inits.append(numpy_helper.from_array(c, f"c{k}"))
            args = [cur, f"c{k}"] if draw(st.booleans()) else [f"c{k}", cur]
            nodes.append(helper.make_node(op, args, [out]))
        elif kind == "MatMul":
            n = draw(st.integers(1, 5))
            w = rng.standard_normal((shape[-1], n)).astype(np.float32)
            inits.append(numpy_helper.from_array(w, f"w{k}"))
            nodes.append(helper.make_node("MatMul", [cur, f"w{k}"], [out]))
            shape = [*shape[:-1], n]
        elif kind == "Softmax":
            axis = draw(st.integers(-len(shape), len(shape) - 1))
            nodes.append(helper.make_node("Softmax", [cur], [out], axis=axis))
        elif kind == "LayerNormalization":
            axis = draw(st.integers(-len(shape), len(shape) - 1))
            norm = shape[axis % len(shape) :]
            inits.append(
                numpy_helper.from_array(rng.uniform(0.5, 1.5, norm).astype(np.float32), f"s{k}")
            )
            inits.append(
                numpy_helper.from_array(rng.standard_normal(norm).astype(np.float32), f"b{k}")
            )
            nodes.append(
                helper.make_node(
                    "LayerNormalization", [cur, f"s{k}", f"b{k}"], [out], axis=axis, epsilon=1e-5
                )
            )
        elif kind == "Transpose":
            perm = draw(st.permutations(range(len(shape))))
            nodes.append(helper.make_node("Transpose", [cur], [out], perm=list(perm)))
            shape = [shape[p] for p in perm]
        elif kind == "Reshape":
            new = [int(np.prod(shape))] if len(shape) > 1 else [1, shape[0]]
            inits.append(numpy_helper.from_array(np.array(new, np.int64), f"r{k}"))
            nodes.append(helper.make_node("Reshape", [cur, f"r{k}"], [out]))
            shape = new
        else:
            axis = draw(st.integers(0, len(shape) - 1))
            inits.append(numpy_helper.from_array(np.array([axis], np.int64), f"a{k}"))
            nodes.append(helper.make_node("ReduceMean", [cur, f"a{k}"], [out], keepdims=1))
            shape = [1 if i == axis else d for i, d in enumerate(shape)]
        cur = out
    nodes.append(helper.make_node("Identity", [cur], ["y"]))
    graph = helper.make_graph(
        nodes,
        "random",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, None)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    return model, in_shape


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_graphs(), st.integers(0, 1000))
def test_random_graphs_lower_and_match(graph, seed):
    model, shape = graph
    feeds = {"x": np.random.default_rng(seed).standard_normal(shape).astype(np.float32)}
    _check(_partition(model, feeds), feeds)


# -- the lowerings real models need, with non-default attributes ---------------------

_RNG = np.random.default_rng(7)


def _rand(*shape, dtype=np.float32, low=-2.0, high=2.0):
    return _RNG.uniform(low, high, shape).astype(dtype)


def _one(
    op_type: str, feeds: dict, inits: dict | None = None, n_out: int = 1, opset: int = 21, **attrs
):
    """A one-node model reading ``feeds`` (runtime inputs) then ``inits`` (weights)."""
    inits = inits or {}
    names = list(feeds) + [k if v is not None else "" for k, v in inits.items()]
    outs = [f"y{k}" for k in range(n_out)]
    node = helper.make_node(op_type, names, outs, **attrs)
    graph = helper.make_graph(
        [node],
        op_type.lower(),
        [
            helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(v.dtype), v.shape)
            for n, v in feeds.items()
        ],
        [helper.make_tensor_value_info(o, TensorProto.UNDEFINED, None) for o in outs],
        [numpy_helper.from_array(v, k) for k, v in inits.items() if v is not None],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)]), feeds


def _x(*shape, **kw):
    return {"x": _rand(*shape, **kw)}


# id -> (model, feeds, nc ops the lowering must use)
NEW_LOWERINGS = {
    "split_three_used": (
        *_one("Split", _x(2, 9, 4), {"split": np.array([2, 3, 4], np.int64)}, n_out=3, axis=1),
        {"nc.slice"},
    ),
    "maxpool_ceil_pads": (
        *_one(
            "MaxPool",
            _x(1, 2, 7, 8),
            kernel_shape=[3, 3],
            strides=[2, 2],
            pads=[1, 0, 0, 1],
            ceil_mode=1,
        ),
        {"nc.pool"},
    ),
    "maxpool_dilated": (
        *_one("MaxPool", _x(1, 2, 9, 9), kernel_shape=[2, 3], dilations=[2, 1], strides=[1, 2]),
        {"nc.pool"},
    ),
    "avgpool_ceil_include_pad": (
        *_one(
            "AveragePool",
            _x(1, 3, 7, 6),
            kernel_shape=[3, 2],
            strides=[2, 2],
            pads=[0, 1, 1, 0],
            ceil_mode=1,
            count_include_pad=1,
        ),
        {"nc.pool"},
    ),
    "clip": (
        *_one(
            "Clip", _x(3, 5), {"lo": np.array(-0.3, np.float32), "hi": np.array(0.7, np.float32)}
        ),
        {"nc.tensor_scalar"},
    ),
    "clip_int_max_only": (
        *_one(
            "Clip",
            {"x": _RNG.integers(-9, 9, (4, 5)).astype(np.int32)},
            {"": None, "hi": np.array(3, np.int32)},
        ),
        {"nc.tensor_tensor"},
    ),
    "prelu": (
        *_one("PRelu", _x(2, 3, 4, 4), {"slope": _rand(3, 1, 1, low=0.05, high=0.9)}),
        {"nc.select", "nc.tensor_tensor"},
    ),
    "logsoftmax_axis1": (*_one("LogSoftmax", _x(2, 5, 3), axis=1), {"nc.reduce", "nc.activation"}),
    "layernorm_axis1_stats": (
        *_one(
            "LayerNormalization",
            _x(2, 3, 4),
            {"s": _rand(3, 4, low=0.5, high=1.5), "b": _rand(3, 4)},
            n_out=3,
            axis=1,
            epsilon=1e-3,
        ),
        {"nc.reduce"},
    ),
    "sum_broadcast": (
        *_one("Sum", {"a": _rand(2, 3), "b": _rand(3), "c": _rand(2, 1)}),
        {"nc.tensor_tensor"},
    ),
    "mean_three": (
        *_one("Mean", {"a": _rand(2, 3), "b": _rand(2, 3), "c": _rand(1, 3)}),
        {"nc.tensor_scalar"},
    ),
    "max_three": (
        *_one("Max", {"a": _rand(4), "b": _rand(3, 4), "c": _rand(3, 1)}),
        {"nc.tensor_tensor"},
    ),
    "min_one": (*_one("Min", {"a": _rand(3, 4)}, {"b": _rand(4)}), {"nc.tensor_tensor"}),
    "pad_constant_negative": (
        *_one(
            "Pad",
            _x(1, 2, 4, 5),
            {"pads": np.array([0, 0, 2, -1, 0, 1, 1, 2], np.int64), "v": np.array(1.5, np.float32)},
        ),
        {"nc.pad"},
    ),
    "pad_reflect": (
        *_one(
            "Pad",
            _x(1, 2, 4, 5),
            {"pads": np.array([0, 0, 2, 1, 0, 0, 1, 3], np.int64)},
            mode="reflect",
        ),
        {"nc.slice", "nc.concat"},
    ),
    "resize_nearest_asymmetric": (
        *_one(
            "Resize",
            _x(1, 2, 3, 4),
            {"": None, "scales": np.array([1, 1, 2, 1.5], np.float32)},
            coordinate_transformation_mode="asymmetric",
            nearest_mode="floor",
        ),
        {"nc.gather"},
    ),
    "resize_linear_sizes": (
        *_one(
            "Resize",
            _x(1, 2, 4, 5),
            {"": None, " ": None, "sizes": np.array([1, 2, 7, 3], np.int64)},
            mode="linear",
        ),
        {"nc.gather", "nc.tensor_tensor"},
    ),
    "convtranspose_groups_strides": (
        *_one(
            "ConvTranspose",
            _x(1, 4, 5, 4),
            {"w": _rand(4, 3, 3, 2), "b": _rand(6)},
            group=2,
            strides=[2, 3],
            pads=[1, 0, 0, 1],
            output_padding=[1, 2],
            dilations=[1, 2],
        ),
        {"nc.conv", "nc.pad"},
    ),
    "convtranspose_output_shape": (
        *_one(
            "ConvTranspose",
            _x(1, 2, 3, 3),
            {"w": _rand(2, 3, 3, 3)},
            strides=[2, 2],
            output_shape=[6, 7],
        ),
        {"nc.conv"},
    ),
    "hardsigmoid": (
        *_one("HardSigmoid", _x(3, 4, low=-5, high=5), alpha=0.3, beta=0.4),
        {"nc.activation"},
    ),
    "hardswish": (*_one("HardSwish", _x(3, 4, low=-5, high=5)), {"nc.activation"}),
    "selu": (*_one("Selu", _x(3, 4), alpha=1.2, gamma=0.9), {"nc.activation"}),
    "softsign": (*_one("Softsign", _x(3, 4)), {"nc.activation"}),
    "trilu_lower_k1": (
        *_one("Trilu", _x(2, 4, 5), {"k": np.array(1, np.int64)}, upper=0),
        {"nc.select"},
    ),
    "instancenorm": (
        *_one(
            "InstanceNormalization",
            _x(2, 3, 4, 5),
            {"s": _rand(3, low=0.5, high=1.5), "b": _rand(3)},
            epsilon=1e-3,
        ),
        {"nc.reduce"},
    ),
    "groupnorm": (
        *_one(
            "GroupNormalization",
            _x(2, 4, 3, 3),
            {"s": _rand(4, low=0.5, high=1.5), "b": _rand(4)},
            num_groups=2,
            epsilon=1e-2,
        ),
        {"nc.reduce"},
    ),
    "mod_fmod_float": (
        *_one("Mod", {"a": _rand(3, 4, low=-9, high=9), "b": _rand(3, 4, low=0.5, high=3)}, fmod=1),
        {"nc.tensor_tensor"},
    ),
    "mod_int": (
        *_one(
            "Mod",
            {
                "a": _RNG.integers(-20, 20, (3, 4)).astype(np.int32),
                "b": _RNG.integers(1, 7, (3, 4)).astype(np.int32),
            },
        ),
        {"nc.tensor_tensor"},
    ),
    "depth_to_space_crd": (
        *_one("DepthToSpace", _x(1, 8, 2, 3), blocksize=2, mode="CRD"),
        {"nc.transpose"},
    ),
    "depth_to_space_dcr": (*_one("DepthToSpace", _x(1, 8, 2, 3), blocksize=2), {"nc.transpose"}),
    "space_to_depth": (*_one("SpaceToDepth", _x(1, 2, 4, 6), blocksize=2), {"nc.transpose"}),
    "dropout_mask_used": (
        *_one("Dropout", _x(2, 3), {"r": np.array(0.3, np.float32)}, n_out=2),
        {"nc.weight"},
    ),
    "tile": (*_one("Tile", _x(2, 3), {"r": np.array([2, 3], np.int64)}), {"nc.broadcast"}),
    "lpnorm_p1": (*_one("LpNormalization", _x(3, 4), axis=0, p=1), {"nc.reduce"}),
    "isnan": (
        *_one("IsNaN", {"x": np.array([1.0, np.nan, -np.inf, 0.0], np.float32)}),
        {"nc.tensor_tensor"},
    ),
}


def _range_plus_x():
    nodes = [
        helper.make_node("Range", ["s", "l", "d"], ["r"]),
        helper.make_node("Add", ["x", "r"], ["y"]),
    ]
    inits = [
        numpy_helper.from_array(np.array(v, np.float32), n)
        for n, v in (("s", 1.5), ("l", 6.0), ("d", 1.25))
    ]
    graph = helper.make_graph(
        nodes,
        "range",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])


NEW_LOWERINGS["range_constant"] = (_range_plus_x(), {"x": _rand(4)}, {"nc.tensor_tensor"})


def _big_constant_plus_x(op_type: str, inits: dict, n: int):
    # Bigger than shape-inference's fold limit, so the lowering folds it.
    nodes = [
        helper.make_node(
            op_type,
            list(inits),
            ["r"],
            **(
                {"value": numpy_helper.from_array(np.array([0.25], np.float32))}
                if op_type == "ConstantOfShape"
                else {}
            ),
        ),
        helper.make_node("Add", ["x", "r"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "big",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [n])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(v, k) for k, v in inits.items()],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])


_N = 70_000
NEW_LOWERINGS["range_unfolded"] = (
    _big_constant_plus_x(
        "Range",
        {
            "s": np.array(-3.0, np.float32),
            "l": np.array(-3.0 + 0.5 * _N, np.float32),
            "d": np.array(0.5, np.float32),
        },
        _N,
    ),
    {"x": _rand(_N)},
    {"nc.weight"},
)
NEW_LOWERINGS["constant_of_shape_unfolded"] = (
    _big_constant_plus_x("ConstantOfShape", {"shape": np.array([_N], np.int64)}, _N),
    {"x": _rand(_N)},
    {"nc.weight"},
)
NEW_LOWERINGS["batchnorm_constant_stats"] = (
    *_one(
        "BatchNormalization",
        _x(2, 3, 4),
        {
            "s": _rand(3, low=0.5, high=1.5),
            "b": _rand(3),
            "m": _rand(3),
            "v": _rand(3, low=0.2, high=2),
        },
        epsilon=1e-2,
    ),
    {"nc.tensor_tensor"},
)
NEW_LOWERINGS["cumsum_exclusive_reverse"] = (
    *_one("CumSum", _x(3, 5), {"axis": np.array(0, np.int64)}, exclusive=1, reverse=1),
    {"nc.matmul"},
)
for _op in (
    "ReduceL1",
    "ReduceL2",
    "ReduceLogSumExp",
    "ReduceProd",
    "ReduceSumSquare",
    "ReduceMax",
    "ReduceMin",
    "ReduceMean",
    "ReduceSum",
):
    NEW_LOWERINGS[f"{_op.lower()}_axes"] = (
        *_one(
            _op, _x(2, 3, 4, low=0.5, high=1.5), {"axes": np.array([0, -1], np.int64)}, keepdims=0
        ),
        {"nc.reduce"},
    )


NEW_LOWERINGS.update(
    {
        "reshape_minus_one": (
            *_one("Reshape", _x(2, 3, 4), {"s": np.array([4, -1], np.int64)}),
            {"nc.reshape"},
        ),
        "expand": (
            *_one("Expand", _x(3, 1), {"s": np.array([2, 3, 4], np.int64)}),
            {"nc.broadcast"},
        ),
        "slice_negative_step": (
            *_one(
                "Slice",
                _x(5, 6),
                {
                    "st": np.array([4, 1], np.int64),
                    "en": np.array([0, 6], np.int64),
                    "ax": np.array([0, 1], np.int64),
                    "sp": np.array([-2, 2], np.int64),
                },
            ),
            {"nc.slice"},
        ),
        "squeeze": (*_one("Squeeze", _x(2, 1, 3), {"a": np.array([1], np.int64)}), {"nc.reshape"}),
        "unsqueeze": (
            *_one("Unsqueeze", _x(2, 3), {"a": np.array([0, 3], np.int64)}),
            {"nc.reshape"},
        ),
    }
)


# inf1 takes remainder (fmod=0) only; fmod=1 is inf2's.
INF2_ONLY = {"mod_fmod_float"}


@pytest.mark.parametrize("case", sorted(NEW_LOWERINGS))
def test_new_lowering_matches_the_interpreter(case):
    model, feeds, engine_ops = NEW_LOWERINGS[case]
    module = _partition(model, feeds, "inf2" if case in INF2_ONLY else "inf1")
    cpu = [op.name for op in module.walk() if op.attributes.get("neuron.cpu_reason")]
    assert not cpu, f"{cpu} stayed on the CPU"
    _check(module, feeds)
    names = {op.name for op in module.walk()}
    assert engine_ops <= names, names
