"""partition on graphs built to contain paths through CPU ops between supported ops.

A uniform random DAG rarely has the shape that breaks a clustering rule (two supported
groups joined by a path through a CPU op, in either direction, beside a direct edge or
an independent branch). This generator builds those motifs on purpose out of real ops:
supported ones (Add, Mul, Sub, Max, Neg, Abs, Tanh, Sigmoid) and ones the inf1 table
keeps on the CPU (Atan: no lowering; Mod with fmod=1: not on inf1). Each graph goes
through the whole default pipeline (``neuron_ir.compile``), and the test checks, on the
compiled module only:

* the contracted graph (each outlined subgraph call and each CPU op of @main as one
  node) is acyclic: @main's block order is a topological order of it;
* clusters are maximal: any two subgraph calls are joined by a path through another
  node (else they could have been one subgraph);
* every op is placed once, the CPU ops are exactly the unsupported ones;
* results equal onnxruntime's and the interpreter's on the uncompiled model.
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
from conftest import examples
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper
from xdsl.dialects.func import FuncOp

import neuron_ir

SHAPE = [2, 3]
_SUPPORTED_UNARY = ["Neg", "Abs", "Tanh", "Sigmoid"]
_SUPPORTED_BINARY = ["Add", "Mul", "Sub", "Max"]
_CPU = ("Atan", "Mod")


@st.composite
def cpu_path_graphs(draw):
    """Graphs made of motifs over the values built so far:

    - ``op``: one supported op;
    - ``cpu_path``: supported -> CPU -> supported, the last also reading an earlier
      value (a direct edge beside the path through the CPU op);
    - ``detour``: a value feeding both a supported op directly and a CPU op whose
      result joins it again later (the classic cycle if both ends were merged);
    - ``cpu``: one CPU op on any value;
    - ``deep_first`` / ``late_root``: a deep group early in block order and a shallow
      one late, joined from the late one through a CPU op (a merge check that looks
      only one way misses this path).
    """
    values = ["x", "y"]
    nodes: list = []
    cpu_nodes: list[str] = []
    count = [0]

    def pick(recent: bool = True) -> str:
        if recent and draw(st.booleans()):
            return values[-draw(st.integers(1, min(3, len(values))))]
        return draw(st.sampled_from(values))

    def add(op: str, ins: list[str], **attrs) -> str:
        out = f"v{count[0]}"
        name = f"n{count[0]}"
        count[0] += 1
        nodes.append(helper.make_node(op, ins, [out], name=name, **attrs))
        if op in _CPU:
            cpu_nodes.append(name)
        values.append(out)
        return out

    def supported(ins: list[str] | None = None) -> str:
        if ins is None or len(ins) == 1:
            if ins is None and draw(st.booleans()):
                return add(draw(st.sampled_from(_SUPPORTED_BINARY)), [pick(), pick(False)])
            return add(draw(st.sampled_from(_SUPPORTED_UNARY)), ins or [pick()])
        return add(draw(st.sampled_from(_SUPPORTED_BINARY)), ins)

    def cpu(src: str) -> str:
        if draw(st.booleans()):
            return add("Atan", [src])
        # fmod by a value that is never 0: 1.5 + sigmoid(...) is in (1.5, 2.5)
        return add("Mod", [src, divisor()], fmod=1)

    def divisor() -> str:
        if draw(st.booleans()):
            return "c15"
        s = add("Sigmoid", [pick(False)])
        return add("Add", [s, "c15"])

    def graph_input() -> str:
        return draw(st.sampled_from(["x", "y"]))

    nodes.append(
        helper.make_node(
            "Constant", [], ["c15"], value=helper.make_tensor("c15v", TensorProto.FLOAT, [], [1.5])
        )
    )
    for _ in range(draw(st.integers(2, 7))):
        motif = draw(
            st.sampled_from(["op", "cpu_path", "detour", "cpu", "deep_first", "late_root"])
        )
        if motif == "deep_first":
            # A supported op behind a CPU op, early in block order: its group is deep
            # but comes first, so a later shallow group may reach it through a CPU op.
            supported([cpu(graph_input())])
        elif motif == "late_root":
            # A supported op on the graph inputs (depth 0) placed late, whose path
            # through a CPU op ends in an op that also reads an earlier value.
            a = supported([graph_input()])
            supported([cpu(a), pick(False)])
        elif motif == "op":
            supported()
        elif motif == "cpu_path":
            a = supported()
            c = cpu(a)
            supported([c, pick(False)])
        elif motif == "detour":
            a = supported()
            direct = supported([a])
            around = cpu(a)
            if draw(st.booleans()):
                around = supported([around])
            supported([direct, around])
        else:
            cpu(pick())
    used = {i for n in nodes for i in n.input}
    outputs = [v for v in values[2:] if v not in used] or [values[-1]]
    graph = helper.make_graph(
        nodes,
        "cpu_paths",
        [helper.make_tensor_value_info(v, TensorProto.FLOAT, SHAPE) for v in ("x", "y")],
        [helper.make_tensor_value_info(v, TensorProto.FLOAT, SHAPE) for v in outputs],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    return model, cpu_nodes


def _main(module):
    return next(op for op in module.ops if isinstance(op, FuncOp) and op.sym_name.data == "main")


def _contracted(module):
    """@main's nodes (subgraph calls and CPU ops, constants and return left out) and,
    for each, the set of earlier nodes it reads; raises if a node reads a later one."""
    ops = [
        op
        for op in _main(module).body.block.ops
        if op.name not in ("func.return", "onnx.Constant", "arith.constant")
    ]
    position = {op: k for k, op in enumerate(ops)}
    preds: list[set[int]] = []
    for k, op in enumerate(ops):
        mine = set()
        for operand in op.operands:
            owner = operand.owner
            if owner in position:
                assert position[owner] < k, "@main reads a value defined after its use"
                mine.add(position[owner])
        preds.append(mine)
    return ops, preds


def _reach(preds: list[set[int]]) -> list[set[int]]:
    """reach[k]: every node with a path to k (ancestors), in block order."""
    out: list[set[int]] = []
    for k, ps in enumerate(preds):
        acc = set(ps)
        for p in ps:
            acc |= out[p]
        out.append(acc)
        assert k not in acc  # acyclic
    return out


@settings(max_examples=examples(120), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cpu_path_graphs(), st.integers(0, 1000))
def test_partition_through_cpu_paths_is_acyclic_maximal_and_exact(case, seed):
    model, cpu_nodes = case
    rng = np.random.default_rng(seed)
    feeds = {v: rng.standard_normal(SHAPE).astype(np.float32) for v in ("x", "y")}
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    want = dict(zip([o.name for o in session.get_outputs()], session.run(None, feeds), strict=True))
    compiled = neuron_ir.compile(model, input_shapes={v: SHAPE for v in feeds})
    module = compiled.module
    module.verify()

    ops, preds = _contracted(module)
    ancestors = _reach(preds)
    calls = [k for k, op in enumerate(ops) if op.name == "func.call"]
    cpu = [op for op in ops if op.name != "func.call"]
    # CPU ops are exactly the unsupported nodes (the partition placed each op once).
    cpu_names = sorted(op.attributes["onnx.name"].data for op in cpu)
    assert cpu_names == sorted(cpu_nodes)
    report = compiled.report
    assert report.nc_ops + len(report.cpu_ops) == sum(
        1 for n in model.graph.node if n.op_type != "Constant"
    )
    # Maximal: two subgraphs are both kept only if a path joins them through another
    # node (a CPU op), i.e. merging them would make a cycle.
    for i, a in enumerate(calls):
        for b in calls[i + 1 :]:
            via = [k for k in ancestors[b] if a in ancestors[k]]
            assert a in ancestors[b] and via, (
                f"subgraph calls {ops[a]} and {ops[b]} are not joined through another "
                "node: they should have been merged"
            )

    got = compiled.run(feeds)
    before = neuron_ir.run(neuron_ir.import_model(model), feeds)
    for name, value in want.items():
        np.testing.assert_allclose(before[name], value, rtol=1e-5, atol=1e-5, err_msg=name)
        np.testing.assert_allclose(got[name], value, rtol=1e-5, atol=1e-5, err_msg=name)


def test_late_shallow_group_reaching_an_early_deep_group_through_a_cpu_op():
    # n1 (depth 1, behind the CPU op n0) comes before n2 (depth 0); n2 reaches n4,
    # which joins n1's group, through the CPU op n3. Merging {n2} into {n1, n4} would
    # put the CPU op n3 both after and before the merged subgraph.
    nodes = [
        helper.make_node("Atan", ["x"], ["v0"], name="n0"),
        helper.make_node("Tanh", ["v0"], ["v1"], name="n1"),
        helper.make_node("Neg", ["y"], ["v2"], name="n2"),
        helper.make_node("Atan", ["v2"], ["v3"], name="n3"),
        helper.make_node("Add", ["v1", "v3"], ["v4"], name="n4"),
    ]
    graph = helper.make_graph(
        nodes,
        "late_root",
        [helper.make_tensor_value_info(v, TensorProto.FLOAT, SHAPE) for v in ("x", "y")],
        [helper.make_tensor_value_info("v4", TensorProto.FLOAT, SHAPE)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    feeds = {
        v: np.random.default_rng(5).standard_normal(SHAPE).astype(np.float32) for v in ("x", "y")
    }
    compiled = neuron_ir.compile(model, input_shapes={v: SHAPE for v in feeds})
    ops, preds = _contracted(compiled.module)
    _reach(preds)
    assert [op.name for op in ops].count("func.call") == 2
    want = neuron_ir.run(neuron_ir.import_model(model), feeds)
    np.testing.assert_allclose(compiled.run(feeds)["v4"], want["v4"], rtol=1e-6)
