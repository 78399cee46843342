"""``nc-estimate``: the cost model's time on every op of every ``nc.program`` stage.

Each stage is priced on its own core at the program's compiled ``batch`` by
``neuron_ir.target.cost.price_program`` (weights where ``nc-place-weights`` put them, an
activation working set beyond the SBUF left beside them spilling to HBM,
``nc.send``/``nc.recv`` as DMA on a chip or NeuronLink across chips) and each op's
``est_time`` (seconds per execution, i.e. per compiled batch) is set. A stage's time
is the sum of its ops' ``est_time``; the report, the timeline and the throughput
figures read them back, so they agree with the passes that decided the placement.
"""

from __future__ import annotations

from dataclasses import dataclass

from xdsl.context import Context
from xdsl.dialects.builtin import Float64Type, FloatAttr, ModuleOp
from xdsl.passes import ModulePass

from dialects import nc
from neuron_ir.ir.util import is_structural
from neuron_ir.target import get_target
from neuron_ir.target.cost import ProgramPrice, price_program, stage_costs


def estimate_program(program: nc.ProgramOp, autocast: bool = True) -> ProgramPrice:
    """Set ``est_time`` on every op of ``program``; returns the program's price."""
    profile = get_target(program.target.data)
    price = price_program(
        stage_costs(program, profile, autocast), profile, program.batch.value.data
    )
    for region, stage in zip(program.stages, price.stages, strict=True):
        ops = [op for op in region.block.ops if not is_structural(op)]
        for op, seconds in zip(ops, stage.op_times, strict=True):
            op.est_time = FloatAttr(seconds, Float64Type())
    return price


@dataclass(frozen=True)
class EstimatePass(ModulePass):
    """Price every op of every ``nc.program`` with the one cost model."""

    name = "nc-estimate"

    autocast: bool = True
    """Count fp32 matmul/conv weights as bf16, as Neuron's default autocast stores them."""

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        for program in op.walk():
            if isinstance(program, nc.ProgramOp):
                estimate_program(program, self.autocast)
