"""The one legality table (neuron_ir.target.legality) and the lowering patterns of lower-to-nc
agree: every op type the table sends to a NeuronCore has a pattern and every pattern's
op types are in the table (``test_table_and_patterns_agree``); walking every entry over
the ONNX node tests (and the lowering cases of test_lower_to_nc), each case the table
calls legal lowers, and each lowering is reached by some case."""

from __future__ import annotations

import functools
import re
import warnings

import numpy as np
import pytest
from conftest import pins
from xdsl.passes import PassPipeline

import neuron_ir
from dialects import onnx as onnx_dialect
from neuron_ir.analysis.report import TARGET_ATTR
from neuron_ir.errors import NeuronIRError, PassError
from neuron_ir.target.legality import TABLE, TARGETS, unsupported_reason
from neuron_ir.testing.conformance import case_input_shapes, node_case_list
from passes import available_passes
from passes.lower_to_nc import PATTERNS, LowerToNcPass, lowered_types

# Goes wherever its users go; never placed on its own.
_NOT_PLACED = {"Constant"}
LOWERED = sorted(
    n for n, e in TABLE.items() if e.lowers and (e.inf1 or e.inf2) and n not in _NOT_PLACED
)


def test_table_and_patterns_agree():
    assert set(LOWERED) == set(lowered_types()), (
        f"table only: {sorted(set(LOWERED) - lowered_types())}; "
        f"patterns only: {sorted(lowered_types() - set(LOWERED))}"
    )
    # Every pattern lowers ops that exist, and no two patterns claim one op type.
    seen: set[str] = set()
    for pattern in PATTERNS:
        for name in pattern.TYPES:
            assert hasattr(onnx_dialect, f"{name}Op"), name
            assert name not in seen, f"{name} claimed twice"
            seen.add(name)


def test_entries_without_a_lowering_say_so():
    for name, entry in TABLE.items():
        if not entry.lowers:
            assert name not in lowered_types()


@functools.cache
def _cases_by_type() -> dict[str, list]:
    index: dict[str, list] = {}
    for case in node_case_list():
        for t in {n.op_type for n in case.model.graph.node}:
            index.setdefault(t, []).append(case)
    return index


def _corpus(op_type: str, limit: int):
    """(label, model, input shapes) of cases using ``op_type``."""
    from test_lower_to_nc import NEW_LOWERINGS

    out = []
    for name, (model, feeds, _) in sorted(NEW_LOWERINGS.items()):
        if any(n.op_type == op_type for n in model.graph.node):
            out.append((name, model, pins(feeds)))
    snake = re.sub(r"(?<!^)(?=[A-Z])", "_", op_type).lower()
    # The op's own tests first (not the function expansions of other ops).
    cases = sorted(
        _cases_by_type().get(op_type, []),
        key=lambda c: (snake not in c.name, "expanded" in c.name, c.name),
    )
    for case in cases[:limit]:
        out.append((case.name, case.model, case_input_shapes(case)))
    return out


def _placed_on_nc(model, shapes, target: str, op_type: str) -> bool | None:
    """Whether ``op_type`` landed in a NeuronCore subgraph (None: the case does not
    compile for reasons before partitioning). Lowering failures propagate."""
    from neuron_ir.compiler import input_shapes_spec

    spec = (
        f'shape-inference{{input-shapes="{input_shapes_spec(shapes)}"}},'
        f"lower-control-flow,partition{{target={target}}}"
    )
    try:
        module = neuron_ir.import_model(model)
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            PassPipeline.parse_spec(available_passes(), spec).apply(
                neuron_ir.make_context(), module
            )
    except NeuronIRError:
        return None
    placed = False
    for func in module.ops:
        if func.attributes.get(TARGET_ATTR) is None:
            continue
        for op in func.walk():
            if getattr(op, "ONNX_TYPE", None) == op_type:
                assert unsupported_reason(op, target) is None
                placed = True
    # Each case the table calls legal lowers (a PassError here fails the test).
    LowerToNcPass().apply(neuron_ir.make_context(), module)
    return placed


def _walk(op_type: str, limit: int) -> None:
    entry = TABLE[op_type]
    corpus = _corpus(op_type, limit)
    reached = []
    for label, model, shapes in corpus:
        for target in TARGETS:
            if not entry.supports(target):
                continue
            try:
                if _placed_on_nc(model, shapes, target, op_type):
                    reached.append((label, target))
            except PassError as exc:
                pytest.fail(f"{label} on {target}: the table calls it legal but {exc}")
    if op_type in LOWERED:
        assert reached, f"no case puts {op_type} on a NeuronCore: its lowering is unreached"


@pytest.mark.parametrize("op_type", sorted(set(TABLE) - _NOT_PLACED))
def test_every_entry_lowers_what_it_allows(op_type):
    _walk(op_type, limit=2)


@pytest.mark.slow
@pytest.mark.parametrize("op_type", sorted(set(TABLE) - _NOT_PLACED))
def test_every_entry_over_all_node_cases(op_type):
    _walk(op_type, limit=10_000)


def test_lowering_limits_send_the_op_to_the_cpu_with_the_reason():
    from onnx import TensorProto
    from test_support import F32, _model, _single

    def reasons(model):
        op = _single(model)
        return {t: unsupported_reason(op, t) for t in TARGETS}

    x = [("x", F32, [2, 3, 4])]
    scale = {"s": np.ones((4,), np.float32)}
    stash = reasons(_model("LayerNormalization", x, inits=scale, stash_type=11))
    assert all("stash_type" in r for r in stash.values())
    assert reasons(_model("LayerNormalization", x, inits=scale)) == {"inf1": None, "inf2": None}
    # The Indices output of MaxPool has no lowering: used, it keeps MaxPool on the CPU.
    pool = reasons(
        _model(
            "MaxPool",
            [("x", F32, [1, 1, 4, 4])],
            n_outputs=2,
            out_type=TensorProto.UNDEFINED,
            kernel_shape=[2, 2],
        )
    )
    assert all("output 'Indices' is used" in r for r in pool.values())
    # inf2 supports select_last_index, the lowering does not.
    last = reasons(
        _model(
            "ArgMax", [("x", F32, [2, 5])], out_type=TensorProto.INT64, axis=1, select_last_index=1
        )
    )
    assert "select_last_index=1 has no lowering" in last["inf2"]
    nd = reasons(
        _model("GatherND", [("d", F32, [2, 3, 4]), ("i", TensorProto.INT64, [2, 1])], batch_dims=1)
    )
    assert all("batch_dims" in r for r in nd.values())
    einsum = reasons(
        _model("Einsum", [("a", F32, [2, 3]), ("b", F32, [3, 4])], equation="ij,jk->ik")
    )
    assert all("lower-to-nc has no lowering" in r for r in einsum.values())
