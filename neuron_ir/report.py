"""Placement report of a partitioned module, derived from the IR alone.

Ops inside ``func.func`` marked ``neuron.target`` run on the NeuronCore; every other
non-constant op runs on the CPU, with the reason the partition pass recorded.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from xdsl.dialects.builtin import ModuleOp, StringAttr
from xdsl.dialects.func import FuncOp

from .flops import op_flops

_NOT_COUNTED = {"func.return", "func.call", "onnx.yield", "scf.yield", "scf.condition",
                "onnx.Constant", "arith.constant", "nc.program", "nc.return", "nc.weight"}
TARGET_ATTR = "neuron.target"
# On the module once partition ran (even if it placed nothing on the NeuronCore).
PARTITIONED_ATTR = "neuron.partitioned"
REASON_ATTR = "neuron.cpu_reason"


@dataclass
class Subgraph:
    name: str
    ops: int
    flops: int


@dataclass
class CpuOp:
    op: str
    node: str | None
    reason: str


@dataclass
class PartitionReport:
    target: str | None
    subgraphs: list[Subgraph] = field(default_factory=list)
    cpu_ops: list[CpuOp] = field(default_factory=list)
    cpu_flops: int = 0

    @property
    def nc_ops(self) -> int:
        return sum(s.ops for s in self.subgraphs)

    @property
    def nc_flops(self) -> int:
        return sum(s.flops for s in self.subgraphs)

    @property
    def op_share(self) -> float:
        total = self.nc_ops + len(self.cpu_ops)
        return self.nc_ops / total if total else 0.0

    @property
    def flop_share(self) -> float:
        total = self.nc_flops + self.cpu_flops
        return self.nc_flops / total if total else 0.0

    def text(self) -> str:
        lines = [
            f"partition report (target {self.target}):",
            f"  NeuronCore: {self.nc_ops} of {self.nc_ops + len(self.cpu_ops)} ops "
            f"({100 * self.op_share:.1f}%), {self.nc_flops:,} of "
            f"{self.nc_flops + self.cpu_flops:,} FLOPs ({100 * self.flop_share:.1f}%)",
            f"  subgraphs: {len(self.subgraphs)}"
            + (f" (sizes {', '.join(str(s.ops) for s in self.subgraphs)})"
               if self.subgraphs else ""),
        ]
        if self.cpu_ops:
            lines.append(f"  on the CPU: {len(self.cpu_ops)} op(s)")
            for c in self.cpu_ops:
                label = f"{c.op} '{c.node}'" if c.node else c.op
                lines.append(f"    {label}: {c.reason.removeprefix(c.op + ': ')}")
        return "\n".join(lines) + "\n"


def partition_report(module: ModuleOp) -> PartitionReport:
    """The placement of every op of a partitioned (or not yet partitioned) module."""
    report = PartitionReport(target=None)
    for func in module.ops:
        if not isinstance(func, FuncOp):
            continue
        target = func.attributes.get(TARGET_ATTR)
        if isinstance(target, StringAttr):
            report.target = target.data
            ops = [o for o in func.walk() if o is not func and o.name not in _NOT_COUNTED]
            report.subgraphs.append(Subgraph(func.sym_name.data, len(ops),
                                             sum(op_flops(o) for o in ops)))
            continue
        for op in func.walk():
            if op is func or op.name in _NOT_COUNTED:
                continue
            reason = op.attributes.get(REASON_ATTR)
            node = op.attributes.get("onnx.name")
            report.cpu_ops.append(CpuOp(
                op.name.removeprefix("onnx."),
                node.data if isinstance(node, StringAttr) else None,
                reason.data if isinstance(reason, StringAttr) else "not partitioned"))
            report.cpu_flops += op_flops(op)
    return report
