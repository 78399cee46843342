"""Control flow, differentially: If with a constant condition of either value, Loops
whose body reads the iteration number (unrolled and as scf.while), and random graphs
with If/Loop nodes, each compiled (``lower-control-flow`` by name, and the whole
default pipeline) and compared with onnxruntime and with the interpreter before."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from conftest import examples, pins
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper
from xdsl.passes import PassPipeline

import neuron_ir
from passes import available_passes

SHAPE = [2, 3]


def _vi(name, dtype=TensorProto.FLOAT, shape=None):
    return helper.make_tensor_value_info(name, dtype, shape)


def _const(name, array):
    return helper.make_node(
        "Constant", [], [name], value=numpy_helper.from_array(np.asarray(array), name + "_v")
    )


def _ort(model, feeds):
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(None, feeds), strict=True))


def _apply(model, feeds, spec):
    module = neuron_ir.import_model(model)
    PassPipeline.parse_spec(available_passes(), spec).apply(neuron_ir.make_context(), module)
    module.verify()
    return module


def _same(got, want, rtol=1e-5, atol=1e-5):
    assert got.keys() == want.keys()
    for name in want:
        assert got[name].shape == want[name].shape, name
        np.testing.assert_allclose(got[name], want[name], rtol=rtol, atol=atol, err_msg=name)


def check(model, feeds, max_unroll=64):
    """The model after lower-control-flow and after the whole default pipeline
    computes what onnxruntime computes. Returns the lowered module's text."""
    want = _ort(model, feeds)
    _same(neuron_ir.run(neuron_ir.import_model(model), feeds), want)
    spec = (
        f'shape-inference{{input-shapes="{pins(feeds)}"}},lower-control-flow'
        f"{{max-unroll={max_unroll}}}"
    )
    lowered = _apply(model, feeds, spec)
    _same(neuron_ir.run(lowered, feeds), want)
    compiled = neuron_ir.compile(model, input_shapes={k: v.shape for k, v in feeds.items()})
    _same(compiled.run(feeds), want)
    return neuron_ir.print_ir(lowered)


# -- If ----------------------------------------------------------------------------------


def _if_model(cond_value=None):
    """y = If(cond) then x*2+1 else (x-3)*x; cond constant, or x's sum > 0."""
    then_nodes = [
        _const("two", np.float32(2.0)),
        _const("one", np.float32(1.0)),
        helper.make_node("Mul", ["x", "two"], ["t0"]),
        helper.make_node("Add", ["t0", "one"], ["t_out"]),
    ]
    else_nodes = [
        _const("three", np.float32(3.0)),
        helper.make_node("Sub", ["x", "three"], ["e0"]),
        helper.make_node("Mul", ["e0", "x"], ["e_out"]),
    ]
    then_g = helper.make_graph(then_nodes, "then", [], [_vi("t_out", shape=SHAPE)])
    else_g = helper.make_graph(else_nodes, "else", [], [_vi("e_out", shape=SHAPE)])
    nodes = []
    if cond_value is None:
        nodes += [
            helper.make_node("ReduceSum", ["x"], ["s"], keepdims=0),
            _const("zero", np.float32(0.0)),
            helper.make_node("Greater", ["s", "zero"], ["cond"]),
        ]
    else:
        nodes.append(_const("cond", np.array(cond_value)))
    nodes.append(helper.make_node("If", ["cond"], ["y"], then_branch=then_g, else_branch=else_g))
    graph = helper.make_graph(nodes, "if", [_vi("x", shape=SHAPE)], [_vi("y", shape=SHAPE)])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


@pytest.mark.parametrize("cond", [True, False])
def test_constant_if_inlines_the_taken_branch(cond):
    x = np.random.default_rng(0).standard_normal(SHAPE).astype(np.float32)
    text = check(_if_model(cond), {"x": x})
    assert "onnx.If" not in text and "scf.if" not in text  # inlined, not kept
    taken, dropped = ("onnx.Add", "onnx.Sub") if cond else ("onnx.Sub", "onnx.Add")
    assert taken in text and dropped not in text


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_data_dependent_if_takes_either_branch(sign):
    x = (np.abs(np.random.default_rng(1).standard_normal(SHAPE)) * sign).astype(np.float32)
    text = check(_if_model(None), {"x": x})
    assert "scf.if" in text


# -- Loop ----------------------------------------------------------------------------------


def _loop_model(trip, with_cond_input=True, early_exit_at=None):
    """acc' = acc * 0.5 + x * i (i the iteration number); scans i*i and acc'."""
    body_nodes = [
        helper.make_node("Cast", ["i"], ["fi"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["x", "fi"], ["xi"]),
        _const("half", np.float32(0.5)),
        helper.make_node("Mul", ["acc", "half"], ["acc_h"]),
        helper.make_node("Add", ["acc_h", "xi"], ["acc_out"]),
        helper.make_node("Mul", ["fi", "fi"], ["sq"]),
        helper.make_node("Identity", ["acc_out"], ["acc_scan"]),
    ]
    if early_exit_at is None:
        body_nodes.append(helper.make_node("Identity", ["cond_in"], ["cond_out"]))
    else:
        body_nodes += [
            _const("stop", np.array(early_exit_at, np.int64)),
            helper.make_node("Less", ["i", "stop"], ["cond_out"]),
        ]
    body = helper.make_graph(
        body_nodes,
        "body",
        [
            _vi("i", TensorProto.INT64, []),
            _vi("cond_in", TensorProto.BOOL, []),
            _vi("acc", shape=SHAPE),
        ],
        [
            _vi("cond_out", TensorProto.BOOL, []),
            _vi("acc_out", shape=SHAPE),
            _vi("sq", shape=[]),
            _vi("acc_scan", shape=SHAPE),
        ],
    )
    nodes = [_const("M", np.array(trip, np.int64))]
    ins = ["M", ""]
    if with_cond_input:
        nodes.append(_const("c0", np.array(True)))
        ins[1] = "c0"
    nodes.append(
        helper.make_node("Loop", [*ins, "a0"], ["acc_final", "squares", "accs"], body=body)
    )
    graph = helper.make_graph(
        nodes,
        "loop",
        [_vi("x", shape=SHAPE), _vi("a0", shape=SHAPE)],
        [_vi("acc_final", shape=SHAPE), _vi("squares", shape=None), _vi("accs", shape=None)],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def _loop_feeds(seed=2):
    rng = np.random.default_rng(seed)
    return {
        "x": rng.standard_normal(SHAPE).astype(np.float32),
        "a0": rng.standard_normal(SHAPE).astype(np.float32),
    }


@pytest.mark.parametrize("trip", [0, 1, 4])
@pytest.mark.parametrize("with_cond", [True, False])
def test_unrolled_loop_reads_the_iteration_number(trip, with_cond):
    text = check(_loop_model(trip, with_cond), _loop_feeds())
    assert "onnx.Loop" not in text and "scf.while" not in text  # unrolled


@pytest.mark.parametrize("trip", [3, 5])
def test_while_loop_reads_the_iteration_number(trip):
    text = check(_loop_model(trip), _loop_feeds(), max_unroll=2)
    assert "scf.while" in text


def test_loop_with_early_exit_stays_a_while_and_stops_where_onnx_stops():
    text = check(_loop_model(6, early_exit_at=2), _loop_feeds(3))
    assert "scf.while" in text


# -- random graphs with control flow -----------------------------------------------------------

_ELEMENTWISE = ["Add", "Mul", "Sub", "Max"]


@st.composite
def _cf_graphs(draw):
    """A chain of steps on a [2, 3] value: element-wise ops with non-trivial constants,
    Ifs (constant or data-dependent condition, different branches) and counted Loops
    whose body reads the iteration number."""
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    nodes, cur, counter = [], "x", [0]

    def fresh(prefix):
        counter[0] += 1
        return f"{prefix}{counter[0]}"

    def const(array):
        name = fresh("c")
        nodes.append(_const(name, array))
        return name

    def elementwise(into, src):
        op = draw(st.sampled_from(_ELEMENTWISE))
        c = const(rng.uniform(-2.0, 2.0, SHAPE).astype(np.float32))
        out = fresh("e")
        into.append(helper.make_node(op, [src, c] if draw(st.booleans()) else [c, src], [out]))
        return out

    for _ in range(draw(st.integers(1, 5))):
        kind = draw(st.sampled_from(["elementwise", "if", "loop"]))
        if kind == "elementwise":
            cur = elementwise(nodes, cur)
        elif kind == "if":
            if draw(st.booleans()):
                cond = const(np.array(draw(st.booleans())))
            else:
                s, zero, cond = fresh("s"), const(np.float32(0.0)), fresh("cond")
                nodes += [
                    helper.make_node("ReduceMean", [cur], [s], keepdims=0),
                    helper.make_node("Greater", [s, zero], [cond]),
                ]
            branches = []
            for tag in ("then", "else"):
                inner: list = []
                k = rng.uniform(0.5, 1.5)
                kname = fresh("k")
                inner.append(_const(kname, np.float32(k if tag == "then" else -k)))
                out = fresh(tag)
                inner.append(
                    helper.make_node("Mul" if tag == "then" else "Add", [cur, kname], [out])
                )
                branches.append(helper.make_graph(inner, tag, [], [_vi(out, shape=SHAPE)]))
            out = fresh("if")
            nodes.append(
                helper.make_node(
                    "If", [cond], [out], then_branch=branches[0], else_branch=branches[1]
                )
            )
            cur = out
        else:
            trip = draw(st.integers(0, 4))
            m = const(np.array(trip, np.int64))
            i, c_in, acc = fresh("i"), fresh("cin"), fresh("acc")
            fi, step, acc_out, c_out = fresh("fi"), fresh("step"), fresh("ao"), fresh("co")
            w = fresh("w")
            body = helper.make_graph(
                [
                    helper.make_node("Cast", [i], [fi], to=TensorProto.FLOAT),
                    _const(w, rng.uniform(-1, 1, SHAPE).astype(np.float32)),
                    helper.make_node("Mul", [w, fi], [step]),
                    helper.make_node("Add", [acc, step], [acc_out]),
                    helper.make_node("Identity", [c_in], [c_out]),
                ],
                "body",
                [
                    _vi(i, TensorProto.INT64, []),
                    _vi(c_in, TensorProto.BOOL, []),
                    _vi(acc, shape=SHAPE),
                ],
                [_vi(c_out, TensorProto.BOOL, []), _vi(acc_out, shape=SHAPE)],
            )
            out = fresh("loop")
            nodes.append(helper.make_node("Loop", [m, "", cur], [out], body=body))
            cur = out
        if draw(st.booleans()):
            cur = elementwise(nodes, cur)
    nodes.append(helper.make_node("Identity", [cur], ["y"]))
    graph = helper.make_graph(nodes, "random_cf", [_vi("x", shape=SHAPE)], [_vi("y", shape=SHAPE)])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


@settings(max_examples=examples(25), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_cf_graphs(), st.integers(0, 1000))
def test_random_graphs_with_control_flow_compile_and_match(model, seed):
    x = np.random.default_rng(seed).standard_normal(SHAPE).astype(np.float32)
    check(model, {"x": x}, max_unroll=draw_free_unroll(seed))


def draw_free_unroll(seed: int) -> int:
    # Half the examples unroll every loop, half keep loops of more than 2 as scf.while.
    return 64 if seed % 2 else 2
