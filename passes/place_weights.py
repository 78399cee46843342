"""``nc-place-weights``: cache each stage's weights in its core's SBUF, the rest in HBM.

Runs per stage region of every ``nc.program`` (one stage a core), on the core's own
budget ``profile.sbuf_weight_bytes`` (the share of SBUF static weights may take; the
rest is the activation working set's). Weights are counted in the dtype they are
stored in on the device (``neuron_ir.target.cost.stored_weight_bytes``: bf16 for fp32 matmul
and conv weights under Neuron's default autocast; ``autocast=false`` turns that off).

* A table read only by gathers (a word embedding) stays in HBM: a gather reads just
  the rows it needs, which the cost model charges per inference, and caching the table
  would crowd out weights that are read whole.
* Every other weight is placed first-fit in the stage's op order: SBUF when it fits
  beside the weights already cached, HBM otherwise (a later, smaller weight may still
  fit). So the cached bytes never exceed the budget, and no weight left in HBM would
  fit in what is left. The pipeline pass gives every stage weights that fit whole
  when it can; the order then only matters for an over-full stage.

Then every compute op's ``reads`` names where each operand comes from ("hbm" for an
HBM weight, else "sbuf"); ``nc-estimate`` prices the result.
"""

from __future__ import annotations

from dataclasses import dataclass

from xdsl.context import Context
from xdsl.dialects.builtin import ArrayAttr, ModuleOp, StringAttr
from xdsl.ir import Block
from xdsl.passes import ModulePass

from dialects import nc
from neuron_ir.target import TargetProfile, get_target
from neuron_ir.target.cost import weight_cost


def place_stage(block: Block, profile: TargetProfile, autocast: bool = True) -> int:
    """Place the weights of one stage block; returns the SBUF bytes cached."""
    budget = profile.sbuf_weight_bytes
    cached = 0
    hbm = set()
    for op in block.ops:
        if not isinstance(op, nc.WeightOp):
            continue
        cost = weight_cost(op, profile, autocast)
        memory = "hbm"
        if not cost.gather_only and cached + cost.nbytes <= budget:
            memory = "sbuf"
            cached += cost.nbytes
        op.memory = StringAttr(memory)
        if memory == "hbm":
            hbm.add(op.results[0])
    for op in block.ops:
        if isinstance(op, nc.NcOp) and op.operands:
            op.reads = ArrayAttr([StringAttr("hbm" if v in hbm else "sbuf") for v in op.operands])
    return cached


def place_program(program: nc.ProgramOp, autocast: bool = True) -> list[int]:
    """Place every stage of ``program``; returns each stage's cached SBUF bytes."""
    profile = get_target(program.target.data)
    return [place_stage(region.block, profile, autocast) for region in program.stages]


@dataclass(frozen=True)
class PlaceWeightsPass(ModulePass):
    """Place the weights of every stage of every ``nc.program`` (SBUF or HBM)."""

    name = "nc-place-weights"

    autocast: bool = True
    """Count fp32 matmul/conv weights as bf16, as Neuron's default autocast stores them."""

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        for program in op.walk():
            if isinstance(program, nc.ProgramOp):
                place_program(program, self.autocast)
