"""Graphviz DOT of a (partitioned) module: one node per op, coloured by placement.

NeuronCore subgraphs are drawn as boxes holding their ops (green); ops left on the
CPU are orange, with their reason as a tooltip. Calls are drawn through: edges go
from the producer of a call operand to the subgraph ops that read it.
"""

from __future__ import annotations

from xdsl.dialects.builtin import ModuleOp, StringAttr
from xdsl.dialects.func import CallOp, FuncOp
from xdsl.ir import BlockArgument, Operation, SSAValue

from ..ir.util import is_structural
from .report import REASON_ATTR, TARGET_ATTR

NC_COLOUR = "#7fc97f"
CPU_COLOUR = "#fdae61"


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def to_dot(module: ModuleOp) -> str:
    funcs = {f.sym_name.data: f for f in module.ops if isinstance(f, FuncOp)}
    ids: dict[Operation, str] = {}
    lines = [
        "digraph neuron_ir {",
        "  rankdir=TB;",
        '  node [shape=box, style="rounded,filled", fontname="Helvetica", fontsize=10];',
    ]

    def node_id(op: Operation) -> str:
        if op not in ids:
            ids[op] = f"n{len(ids)}"
        return ids[op]

    def label(op: Operation) -> str:
        name = op.attributes.get("onnx.name")
        text = op.name.removeprefix("onnx.")
        return text + (f"\\n{name.data}" if isinstance(name, StringAttr) else "")

    main = funcs.get("main")
    if main is None:
        return "digraph neuron_ir {}\n"
    for k, arg in enumerate(main.body.block.args):
        lines.append(
            f"  in{k} [label={_quote(arg.name_hint or f'arg{k}')}, shape=ellipse, "
            'fillcolor="#ffffff"];'
        )
    # Subgraph boxes.
    for name, func in funcs.items():
        if not isinstance(func.attributes.get(TARGET_ATTR), StringAttr):
            continue
        target = func.attributes[TARGET_ATTR].data  # type: ignore[union-attr]
        lines.append(f"  subgraph cluster_{name} {{")
        lines.append(f'    label={_quote(f"{name} ({target})")}; style=filled; color="#e5f5e0";')
        for op in func.body.block.ops:
            if not is_structural(op):
                lines.append(
                    f'    {node_id(op)} [label={_quote(label(op))}, fillcolor="{NC_COLOUR}"];'
                )
        lines.append("  }")
    for op in main.walk():
        if op is main or is_structural(op) or isinstance(op, CallOp):
            continue
        reason = op.attributes.get(REASON_ATTR)
        tooltip = reason.data if isinstance(reason, StringAttr) else "CPU"
        lines.append(
            f'  {node_id(op)} [label={_quote(label(op))}, fillcolor="{CPU_COLOUR}", '
            f"tooltip={_quote(tooltip)}];"
        )

    def sources(value: SSAValue) -> list[str]:
        """The drawn nodes a value comes from, looking through calls and args."""
        owner = value.owner
        if isinstance(owner, CallOp):
            callee = funcs[owner.callee.root_reference.data]
            ret = callee.body.block.last_op
            index = list(owner.results).index(value)  # type: ignore[arg-type]
            return sources(ret.operands[index])  # type: ignore[union-attr]
        if isinstance(value, BlockArgument):
            block = value.block
            if block is main.body.block:
                return [f"in{value.index}"]
            parent = block.parent_op()
            if isinstance(parent, FuncOp):
                found = []
                for call in main.walk():
                    if (
                        isinstance(call, CallOp)
                        and call.callee.root_reference.data == parent.sym_name.data
                    ):
                        found += sources(call.operands[value.index])
                return found
            return []
        if isinstance(owner, Operation) and not is_structural(owner):
            return [node_id(owner)]
        return []

    edges: set[tuple[str, str]] = set()
    for func in funcs.values():
        for op in func.walk():
            if op is func or is_structural(op) or isinstance(op, CallOp):
                continue
            for value in op.operands:
                for src in sources(value):
                    edges.add((src, node_id(op)))
    for k, value in enumerate(main.body.block.last_op.operands):  # type: ignore[union-attr]
        lines.append(f'  out{k} [label="result {k}", shape=ellipse, fillcolor="#ffffff"];')
        for src in sources(value):
            edges.add((src, f"out{k}"))
    lines += [f"  {a} -> {b};" for a, b in sorted(edges)]
    lines.append("}")
    return "\n".join(lines) + "\n"
