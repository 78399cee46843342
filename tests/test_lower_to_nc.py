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


def _partition(source, feeds):
    spec = (f'shape-inference{{input-shapes="{pins(feeds)}"}},lower-control-flow,'
            "partition{target=inf1}")
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
        kind = draw(st.sampled_from(["unary", "binary", "scalar", "MatMul", "Softmax",
                                     "LayerNormalization", "Transpose", "Reshape",
                                     "ReduceMean"]))
        if kind == "unary":
            op = draw(st.sampled_from(_UNARY))
            if op == "Exp":  # keep values bounded
                nodes.append(helper.make_node("Tanh", [cur], [f"{out}_b"]))
                cur = f"{out}_b"
            nodes.append(helper.make_node(op, [cur], [out]))
        elif kind in ("binary", "scalar"):
            op = draw(st.sampled_from(_BINARY))
            cshape = [] if kind == "scalar" else shape[draw(st.integers(0, len(shape))):]
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
            norm = shape[axis % len(shape):]
            inits.append(numpy_helper.from_array(rng.uniform(0.5, 1.5, norm).astype(np.float32),
                                                 f"s{k}"))
            inits.append(numpy_helper.from_array(rng.standard_normal(norm).astype(np.float32),
                                                 f"b{k}"))
            nodes.append(helper.make_node("LayerNormalization", [cur, f"s{k}", f"b{k}"], [out],
                                          axis=axis, epsilon=1e-5))
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
        nodes, "random", [helper.make_tensor_value_info("x", TensorProto.FLOAT, None)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    return model, in_shape


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_graphs(), st.integers(0, 1000))
def test_random_graphs_lower_and_match(graph, seed):
    model, shape = graph
    feeds = {"x": np.random.default_rng(seed).standard_normal(shape).astype(np.float32)}
    _check(_partition(model, feeds), feeds)
