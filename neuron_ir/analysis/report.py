"""Placement report of a partitioned module, derived from the IR alone.

Ops inside ``func.func`` marked ``neuron.target`` run on the NeuronCore; every other
non-constant op runs on the CPU, with the reason the partition pass recorded.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from xdsl.dialects.builtin import IntegerAttr, ModuleOp, StringAttr, TensorType
from xdsl.dialects.func import CallOp, FuncOp
from xdsl.ir import Operation

from dialects.nc import ProgramOp, WeightOp

from ..ir.util import is_structural
from .flops import op_flops

TARGET_ATTR = "neuron.target"
REASON_ATTR = "neuron.cpu_reason"
# On the module once partition ran (even if it placed nothing on the NeuronCore).
PARTITIONED_ATTR = "neuron.partitioned"
# On @main: the compiled batch size, the symbol of the batch axis (its position in each
# argument's and result's onnx.dim_params) and whether run takes other client batches.
BATCH_ATTR = "neuron.batch"
BATCH_SYMBOL_ATTR = "neuron.batch_symbol"
DYNAMIC_BATCHING_ATTR = "neuron.dynamic_batching"


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
    batch: int | None = None
    batch_symbol: str | None = None

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
            *(
                [f"  compiled batch: {self.batch} (batch axis '{self.batch_symbol}')"]
                if self.batch is not None
                else []
            ),
            f"  subgraphs: {len(self.subgraphs)}"
            + (
                f" (sizes {', '.join(str(s.ops) for s in self.subgraphs)})"
                if self.subgraphs
                else ""
            ),
        ]
        if self.cpu_ops:
            lines.append(f"  on the CPU: {len(self.cpu_ops)} op(s)")
            for c in self.cpu_ops:
                label = f"{c.op} '{c.node}'" if c.node else c.op
                lines.append(f"    {label}: {c.reason.removeprefix(c.op + ': ')}")
        return "\n".join(lines) + "\n"


def _not_counted(op: Operation) -> bool:
    # Calls and programs are containers: their ops are counted where they are.
    return is_structural(op) or isinstance(op, CallOp | ProgramOp)


def partition_report(module: ModuleOp) -> PartitionReport:
    """The placement of every op of a partitioned (or not yet partitioned) module."""
    report = PartitionReport(target=None)
    for func in module.ops:
        if not isinstance(func, FuncOp):
            continue
        batch = func.attributes.get(BATCH_ATTR)
        if func.sym_name.data == "main" and isinstance(batch, IntegerAttr):
            report.batch = batch.value.data
            symbol = func.attributes.get(BATCH_SYMBOL_ATTR)
            report.batch_symbol = symbol.data if isinstance(symbol, StringAttr) else None
        target = func.attributes.get(TARGET_ATTR)
        if isinstance(target, StringAttr):
            report.target = target.data
            ops = [o for o in func.walk() if o is not func and not _not_counted(o)]
            report.subgraphs.append(
                Subgraph(func.sym_name.data, len(ops), sum(op_flops(o) for o in ops))
            )
            continue
        for op in func.walk():
            if op is func or _not_counted(op):
                continue
            reason = op.attributes.get(REASON_ATTR)
            node = op.attributes.get("onnx.name")
            report.cpu_ops.append(
                CpuOp(
                    op.name.removeprefix("onnx."),
                    node.data if isinstance(node, StringAttr) else None,
                    reason.data if isinstance(reason, StringAttr) else "not partitioned",
                )
            )
            report.cpu_flops += op_flops(op)
    return report


@dataclass
class DeviceMemoryFloor:
    """A lower bound of the device memory the NeuronCore programs need: every weight
    (``nc.weight``, SBUF or HBM: all of them live in device memory) plus the one op
    whose activation inputs and outputs together are largest (they must coexist while
    it runs). A batch whose floor exceeds a chip's memory cannot run at all, whatever
    the schedule."""

    weight_bytes: int
    op_bytes: int
    op: str | None  # that op, as "node 'name' (op)"

    @property
    def total(self) -> int:
        return self.weight_bytes + self.op_bytes


def device_memory_floor(module: ModuleOp) -> DeviceMemoryFloor:
    from ..ir.util import info_of_type

    def nbytes(value) -> int:
        info = info_of_type(value.type)
        if info.dtype is None or info.dtype.hasobject or info.shape is None:
            return 0
        count = 1
        for d in info.shape:
            count *= d if d is not None else 0
        return count * info.dtype.itemsize

    weights, biggest, where = 0, 0, None
    for op in module.walk():
        if isinstance(op, WeightOp):
            weights += nbytes(op.results[0])
            continue
        parent = op.parent_op()
        while parent is not None and not isinstance(parent, ProgramOp):
            parent = parent.parent_op()
        if parent is None or is_structural(op):
            continue
        size = sum(nbytes(v) for v in op.operands if not isinstance(v.owner, WeightOp))
        size += sum(nbytes(r) for r in op.results)
        if size > biggest:
            # nc ops keep no node name: say the op and the shape it produces.
            node = op.attributes.get("onnx.name")
            label = f"node '{node.data}' ({op.name})" if isinstance(node, StringAttr) else op.name
            if op.results and isinstance(op.results[0].type, TensorType):
                label += f" producing {_shape_text(op.results[0].type)}"
            biggest, where = size, label
    return DeviceMemoryFloor(weights, biggest, where)


def _shape_text(ttype: TensorType) -> str:
    return "x".join(str(d) for d in ttype.get_shape()) + f"x{ttype.element_type}"
