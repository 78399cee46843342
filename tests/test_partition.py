"""The partition pass: clustering properties on random DAGs with random support masks,
results unchanged, determinism, and the placement report."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from conftest import examples
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper
from xdsl.context import Context
from xdsl.dialects.func import FuncOp

import neuron_ir
import neuron_ir.target.legality
from neuron_ir.analysis.report import partition_report
from neuron_ir.ir.util import used_values
from passes.partition import PartitionPass, _clusters

OPS = ["Relu", "Neg", "Add", "Mul", "Sub", "Abs"]


@st.composite
def dags(draw):
    n = draw(st.integers(2, 14))
    nodes = []
    values = ["x", "y"]
    for k in range(n):
        op = draw(st.sampled_from(OPS))
        arity = 1 if op in ("Relu", "Neg", "Abs") else 2
        ins = [draw(st.sampled_from(values)) for _ in range(arity)]
        out = f"v{k}"
        nodes.append(helper.make_node(op, ins, [out], name=f"n{k}"))
        values.append(out)
    used = {i for node in nodes for i in node.input}
    outs = [v for v in values[2:] if v not in used] or [values[-1]]
    graph = helper.make_graph(
        nodes,
        "dag",
        [helper.make_tensor_value_info(v, TensorProto.FLOAT, [2, 3]) for v in ("x", "y")],
        [helper.make_tensor_value_info(v, TensorProto.FLOAT, [2, 3]) for v in outs],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    unsupported = draw(st.sets(st.sampled_from([f"n{k}" for k in range(n)])))
    return model, unsupported


def _mask(unsupported):
    def reason(op, target):
        name = op.attributes.get("onnx.name")
        if name is not None and name.data in unsupported:
            return "masked out by the test"
        return None

    return reason


def _nodes(module):
    main = next(op for op in module.ops if isinstance(op, FuncOp))
    return [op for op in main.body.block.ops if op.name not in ("func.return", "onnx.Constant")]


def _reaches(nodes, groups) -> dict[int, set[int]]:
    """Group-level successor closure of the contracted graph."""
    index = {n: k for k, n in enumerate(nodes)}
    group = {}
    for g, members in enumerate(groups):
        for m in members:
            group[m] = g
    succ: dict[int, set[int]] = {g: set() for g in range(len(groups))}
    for node in nodes:
        for value in used_values(node):
            owner = value.owner
            if owner in index and group[owner] != group[node]:
                succ[group[owner]].add(group[node])
    closure = {}
    for g in succ:
        seen, stack = set(), list(succ[g])
        while stack:
            s = stack.pop()
            if s not in seen:
                seen.add(s)
                stack.extend(succ[s])
        closure[g] = seen
    return closure


@settings(max_examples=examples(150), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(dags())
def test_clusters_are_exact_acyclic_maximal_and_deterministic(case):
    model, unsupported = case
    module = neuron_ir.import_model(model)
    nodes = _nodes(module)
    reasons = {n: _mask(unsupported)(n, "inf1") for n in nodes}
    clusters = _clusters(nodes, reasons)
    assert clusters == _clusters(nodes, reasons)  # deterministic
    placed = [n for c in clusters for n in c]
    assert len(placed) == len(set(placed))  # each op in one place
    assert set(placed) == {n for n in nodes if reasons[n] is None}
    # The contracted graph (clusters + unsupported singletons) is acyclic...
    singles = [[n] for n in nodes if reasons[n] is not None]
    groups = clusters + singles
    closure = _reaches(nodes, groups)
    assert all(g not in closure[g] for g in closure)
    # ...and maximal: merging any two clusters would create a cycle.
    for a, b in itertools.combinations(range(len(clusters)), 2):
        merged = (
            [clusters[a] + clusters[b]]
            + [c for k, c in enumerate(clusters) if k not in (a, b)]
            + singles
        )
        merged_closure = _reaches(nodes, merged)
        assert any(g in merged_closure[g] for g in merged_closure), (a, b)


@settings(max_examples=examples(60), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(dags())
def test_partitioned_module_computes_the_same_and_prints_the_same(case):
    model, unsupported = case
    rng = np.random.default_rng(0)
    feeds = {v: rng.standard_normal((2, 3)).astype(np.float32) for v in ("x", "y")}
    before = neuron_ir.run(neuron_ir.import_model(model), feeds)
    texts = []
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(neuron_ir.target.legality, "unsupported_reason", _mask(unsupported))
        for _ in range(2):
            module = neuron_ir.import_model(model)
            PartitionPass().apply(Context(), module)
            module.verify()
            texts.append(neuron_ir.print_ir(module))
    assert texts[0] == texts[1]
    after = neuron_ir.run(neuron_ir.parse_ir(texts[0]), feeds)
    for name in before:
        np.testing.assert_array_equal(after[name], before[name])
    report = partition_report(neuron_ir.parse_ir(texts[0]))
    assert len(report.cpu_ops) == len(unsupported)
    assert report.nc_ops + len(report.cpu_ops) == len(model.graph.node)


def test_min_subgraph_size_keeps_small_islands_on_the_cpu(monkeypatch):
    nodes = [
        helper.make_node("Relu", ["x"], ["a"], name="a"),
        helper.make_node("Neg", ["a"], ["b"], name="b"),
        helper.make_node("Abs", ["b"], ["c"], name="c"),
        helper.make_node("Relu", ["c"], ["d"], name="d"),
    ]
    graph = helper.make_graph(
        nodes,
        "chain",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("d", TensorProto.FLOAT, [2])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    monkeypatch.setattr(neuron_ir.target.legality, "unsupported_reason", _mask({"b"}))
    module = neuron_ir.import_model(model)
    PartitionPass(min_subgraph_size=2).apply(Context(), module)
    report = partition_report(module)
    # {a} is alone before the unsupported b; {c, d} reaches the minimum.
    assert [s.ops for s in report.subgraphs] == [2]
    reasons = {c.node: c.reason for c in report.cpu_ops}
    assert reasons["b"] == "masked out by the test"
    assert "below min-subgraph-size=2" in reasons["a"]
