"""``pipeline-shard{cores=N}``: cut an ``nc.program`` into N pipeline stages, one a core.

The program's ops (its ``nc.weight`` values aside) are cut into N contiguous runs of a
topological order; run k becomes stage region k, placed on core k (core k sits on chip
``k // cores_per_chip``: 4 cores a chip on inf1, 2 on inf2). A value used after the
cut it was defined before is forwarded stage to stage: the stage before the cut
``nc.send``s it, the stage after ``nc.recv``s it (and forwards it again if a later
stage still needs it). Each stage gets its own copy of every weight its ops read; the
weights are then placed per stage (``nc-place-weights``) and priced (``nc-estimate``).

**Which order.** The program's own op order. The lowering emits ops in the ONNX
graph's order, which exporters and the zoo write module by module, so a layer's ops
are contiguous and what crosses a cut is what crosses a layer boundary (the residual
stream and the attention mask in a transformer, one feature map in a ResNet). Any
other topological order interleaves independent work and can only add to what is live
across a cut; trying several orders would multiply the pass time for no gain on these
models.

**The cut is exact for that order.** Stage k over ops ``[i, j)`` costs (seconds per
compiled batch, :func:`segment_cost`)::

    sum of its ops' cost-model times (weights in SBUF, gathered rows from HBM)
  + its receives at cut i and sends at cut j (per value: DMA latency + bytes / DMA
    bandwidth on one chip, NeuronLink's across chips)
  + (bytes of the whole-read weights it reads - one core's SBUF weight budget)+ /
    the core's HBM bandwidth  (weights that do not fit are streamed once per batch)

and a dynamic programme over (stage, cut position) finds the split minimising the
slowest stage exactly (chains-on-chains; transfers make a stage's cost non-monotone
in its end, so a greedy probe would not be exact). The DP runs on whole rows of a
precomputed cost matrix, O(N n^2) in numpy. The activation working set is not part of
the cut's objective (it is priced afterwards by ``nc-estimate``); nor are spills.

``cores=auto``: the fewest stages whose whole-read weights each fit one core's SBUF
weight budget (stored bytes, bf16 under autocast). For a fixed order that count is what
a greedy pack gives: "fits" only gets harder as a stage grows, so ending every stage
as late as possible is never worse. Then the min-max split under that bound. A table
read only by gathers stays in HBM and does not count. One op whose weights alone
exceed the budget is an error naming it (with ``allow_hbm_weights=true`` it gets a
stage of its own and streams). More cores than the target has is an error.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field

import numpy as np
from xdsl.context import Context
from xdsl.dialects.builtin import IntegerAttr, ModuleOp, StringAttr, i64
from xdsl.ir import Block, Operation, Region, SSAValue
from xdsl.passes import ModulePass
from xdsl.rewriter import Rewriter

from dialects import nc
from neuron_ir.errors import PassError
from neuron_ir.target import TargetProfile, get_target
from neuron_ir.target.cost import core_dram_bandwidth, op_seconds, type_bytes
from neuron_ir.target.profiles import max_cores

from .estimate import estimate_program
from .place_weights import place_stage

_MB = 1e6


@dataclass
class ChainModel:
    """The numbers the cut is made on, for ops ``0..n-1`` in order.

    ``op_time[p]``: seconds of op p with its weights in SBUF. ``weight_uses[p]``:
    (weight id, stored bytes) of the whole-read weights op p reads. ``cross_bytes[c]`` /
    ``cross_count[c]``: bytes and number of values live across cut c (between ops c-1
    and c), at the compiled batch; cut 0 and cut n carry nothing. ``live[p]``: bytes of
    activations live at op p (defined at or before p, used at or after it), so a
    stage's working set is the maximum over its ops; ``act_traffic[p]``: the bytes op p
    reads and writes, which spill in proportion when the working set does not fit.
    """

    op_time: list[float]
    weight_uses: list[list[tuple[int, int]]]
    cross_bytes: list[float]
    cross_count: list[int]
    budget: float
    profile: TargetProfile
    ops: list[Operation] = field(default_factory=list)  # to name one in an error
    act_traffic: list[float] = field(default_factory=list)  # op p's activation bytes
    live: list[float] = field(default_factory=list)  # activation bytes live at op p

    @property
    def n(self) -> int:
        return len(self.op_time)


def _kind(sender: int, profile: TargetProfile) -> str:
    """Transfer kind from stage ``sender`` to ``sender + 1``: NeuronLink when the next
    core is on another chip (stages sit on consecutive cores from core 0)."""
    return "link" if (sender + 1) % profile.cores_per_chip == 0 else "dma"


def _cut_time(model: ChainModel, c: int, kind: str) -> float:
    if c <= 0 or c >= model.n or model.cross_count[c] == 0:
        return 0.0
    profile = model.profile
    latency = profile.dma_latency_s if kind == "dma" else profile.link_latency_s
    bandwidth = profile.dma_bandwidth if kind == "dma" else profile.link_bandwidth
    return model.cross_count[c] * latency + model.cross_bytes[c] / bandwidth


def stage_weight_bytes(model: ChainModel, i: int, j: int) -> int:
    """Stored bytes of the distinct whole-read weights ops ``[i, j)`` read."""
    seen: dict[int, int] = {}
    for p in range(i, j):
        for w, nbytes in model.weight_uses[p]:
            seen[w] = nbytes
    return sum(seen.values())


def _spill_fraction(working: float, weights: float, model: ChainModel) -> float:
    free = model.profile.sbuf_bytes - min(weights, model.budget)
    return 0.0 if working <= free else 1.0 - free / working


def segment_cost(model: ChainModel, k: int, i: int, j: int) -> float:
    """Seconds of stage ``k`` holding ops ``[i, j)`` (see the module docstring)."""
    ops = math.fsum(model.op_time[i:j])
    weights = stage_weight_bytes(model, i, j)
    overflow = max(0.0, weights - model.budget)
    spill = 0.0
    if model.live:
        frac = _spill_fraction(max(model.live[i:j]), weights, model)
        spill = frac * math.fsum(model.act_traffic[i:j])
    recv = _cut_time(model, i, _kind(k - 1, model.profile)) if k > 0 else 0.0
    send = _cut_time(model, j, _kind(k, model.profile))
    return ops + (overflow + spill) / core_dram_bandwidth(model.profile) + recv + send


def fits(model: ChainModel, i: int, j: int, allow_hbm_weights: bool = False) -> bool:
    """Whether ops ``[i, j)`` may form a stage under the memory bound of ``auto``."""
    return stage_weight_bytes(model, i, j) <= model.budget or (allow_hbm_weights and j == i + 1)


# -- the vectorised cost matrices ------------------------------------------------


def _weight_matrix(model: ChainModel) -> np.ndarray:
    """``W[i, j]``: distinct whole-read weight bytes of ops ``[i, j)``, 0 <= i, j <= n.

    A use of weight w at op p counts for ``[i, j)`` when i <= p < j and the previous use
    of w is before i (so each weight counts once)."""
    n = model.n
    a = np.zeros((n + 1, n + 1))
    last: dict[int, int] = {}
    for p, uses in enumerate(model.weight_uses):
        for w, nbytes in dict(uses).items():
            prev = last.get(w, -1)
            a[prev + 1 : p + 1, p + 1] += nbytes
            last[w] = p
    return np.cumsum(a, axis=1)


def _base_matrix(
    model: ChainModel, allow_hbm: bool, fit_only: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Op time + HBM overflow of every segment ``[i, j)`` (inf where i >= j, or where
    the weights do not fit when ``fit_only``), and the weight matrix."""
    n = model.n
    prefix = np.concatenate([[0.0], np.cumsum(model.op_time)])
    w = _weight_matrix(model)
    base = prefix[None, :] - prefix[:, None]
    hbm = np.maximum(0.0, w - model.budget)
    if model.live:
        # Working set of [i, j): the running maximum of live bytes along each row.
        live = np.asarray(model.live, dtype=float)
        working = np.zeros((n + 1, n + 1))
        for i0 in range(n):
            working[i0, i0 + 1 :] = np.maximum.accumulate(live[i0:])
        traffic = np.concatenate([[0.0], np.cumsum(model.act_traffic)])
        free = model.profile.sbuf_bytes - np.minimum(w, model.budget)
        frac = np.where(working > free, 1.0 - free / np.maximum(working, 1.0), 0.0)
        hbm = hbm + frac * (traffic[None, :] - traffic[:, None])
    base += hbm / core_dram_bandwidth(model.profile)
    i, j = np.indices((n + 1, n + 1))
    invalid = j <= i
    if fit_only:
        fit = w <= model.budget
        if allow_hbm:
            fit |= j == i + 1
        invalid |= ~fit
    base[invalid] = np.inf
    return base, w


def _cut_vector(model: ChainModel, kind: str) -> np.ndarray:
    return np.array([_cut_time(model, c, kind) for c in range(model.n + 1)])


def min_max_split(
    model: ChainModel, cores: int, fit_only: bool = False, allow_hbm_weights: bool = False
) -> tuple[list[int], float]:
    """The cut positions ``[0, b1, ..., n]`` of the ``cores``-stage split minimising
    the slowest :func:`segment_cost`, and that bottleneck (exact: a DP over cuts).

    With ``fit_only`` a stage must also :func:`fits`; ``math.inf`` if none can."""
    n = model.n
    if not 1 <= cores <= n:
        raise ValueError(f"cannot cut {n} op(s) into {cores} non-empty stage(s)")
    base, _ = _base_matrix(model, allow_hbm_weights, fit_only)
    recv = {kind: _cut_vector(model, kind) for kind in ("dma", "link")}
    send = recv
    # One matrix per (receive kind, send kind): stage 0 receives nothing.
    mats: dict[tuple[str | None, str], np.ndarray] = {}

    def matrix(k: int) -> np.ndarray:
        rk = _kind(k - 1, model.profile) if k > 0 else None
        sk = _kind(k, model.profile)
        key = (rk, sk)
        if key not in mats:
            m = base + send[sk][None, :]
            if rk is not None:
                m = m + recv[rk][:, None]
            mats[key] = m
        return mats[key]

    dp = matrix(0)[0].copy()  # dp[j]: best bottleneck of ops [0, j) in k+1 stages
    choices: list[np.ndarray] = []
    for k in range(1, cores):
        m = (
            np.maximum(dp[:, None], matrix(k))
            if k < cores - 1
            else np.maximum(dp, matrix(k)[:, n])[:, None]
        )
        arg = np.argmin(m, axis=0)
        dp = m[arg, np.arange(m.shape[1])]
        choices.append(arg)
    # The last stage ends at n: its column was the only one computed.
    best = float(dp[n] if cores == 1 else dp[0])
    if cores == 1:
        return [0, n], float(dp[n])
    cuts = [n]
    j_col = 0  # the last DP had one column, for j = n
    for k in range(cores - 1, 0, -1):
        i = int(choices[k - 1][j_col])
        cuts.append(i)
        j_col = i
    cuts.append(0)
    return cuts[::-1], best


def fewest_fitting_stages(model: ChainModel, allow_hbm_weights: bool = False) -> list[int]:
    """Greedy pack along the order: each stage takes ops while its whole-read weights
    fit. Minimal for the order because fitting is monotone (a sub-run of a fitting run
    fits). Returns the cut positions. Raises ``PassError`` for an op too big alone."""
    n = model.n
    for p in range(n):
        nbytes = stage_weight_bytes(model, p, p + 1)
        if nbytes > model.budget and not allow_hbm_weights:
            name = f"op #{p}"
            if model.ops:
                op = model.ops[p]
                name += f" '{op.name}' ({', '.join(str(v.type) for v in op.operands)})"
            raise PassError(
                f"pipeline-shard: {name} reads {nbytes} bytes ({nbytes / _MB:.2f} MB) of "
                f"weights but one {model.profile.name} core's SBUF weight budget is "
                f"{int(model.budget)} bytes ({model.budget / _MB:.2f} MB); "
                "pass allow_hbm_weights=true to stream it from HBM"
            )
    _, w = _base_matrix(model, allow_hbm_weights, False)
    cuts, i = [0], 0
    while i < n:
        row = w[i, i + 1 :] <= model.budget  # row[t]: ops [i, i + 1 + t) fit
        j = i + int(np.argmin(row)) if not row.all() else n
        j = max(j, i + 1)  # an oversized op alone (allow_hbm_weights)
        cuts.append(j)
        i = j
    return cuts


# -- reading the program ------------------------------------------------------------


@dataclass
class _Order:
    ops: list[Operation]
    weights: dict[SSAValue, Operation]
    ret: Operation
    # value -> (defining position, last use position; n for the stage's return)
    spans: dict[SSAValue, tuple[int, int]]


def _read_order(block: Block) -> _Order:
    ret = block.last_op
    assert isinstance(ret, nc.ReturnOp)
    ops = [op for op in block.ops if not isinstance(op, nc.WeightOp | nc.ReturnOp)]
    weights = {op.results[0]: op for op in block.ops if isinstance(op, nc.WeightOp)}
    position = {op: p for p, op in enumerate(ops)}
    n = len(ops)
    spans = {}
    for p, op in enumerate(ops):
        for r in op.results:
            last = max((position.get(u.operation, n) for u in r.uses), default=p)
            spans[r] = (p, last)
    return _Order(ops, weights, ret, spans)


def _nbytes(value: SSAValue) -> float:
    return type_bytes(value.type)


def chain_model(program: nc.ProgramOp, autocast: bool = True) -> tuple[ChainModel, _Order]:
    """The :class:`ChainModel` of a one-stage program, from the one cost model."""
    from neuron_ir.target.cost import block_cost

    profile = get_target(program.target.data)
    block = program.stages[0].block
    order = _read_order(block)
    cost = block_cost(block, profile, autocast, stage=0)
    # Price every op with every weight in SBUF: streaming is the overflow term's job.
    cached = tuple(type(w)(w.nbytes, "sbuf", w.gather_only, w.name) for w in cost.weights)
    times = [op_seconds(op, cached, profile) for op in cost.ops]
    # block_cost numbers weights in block order, as order.weights does.
    uses = [[(w, cost.weights[w].nbytes) for w in op.weights] for op in cost.ops]
    n = len(order.ops)
    nbytes = np.zeros(n + 2)
    count = np.zeros(n + 2, dtype=np.int64)
    for v, (d, last) in order.spans.items():
        size = _nbytes(v)
        if last > d and size > 0:  # crosses cuts d+1 .. last
            nbytes[d + 1] += size
            nbytes[last + 1] -= size
            count[d + 1] += 1
            count[last + 1] -= 1
    # Live bytes at each op (block arguments from the start to their last use).
    live = np.zeros(n + 2)
    position = {op: p for p, op in enumerate(order.ops)}
    args = [
        (
            a,
            (
                0,
                max(
                    (
                        position.get(u.operation, n)
                        for u in a.uses
                        if u.operation in position or u.operation is order.ret
                    ),
                    default=-1,
                ),
            ),
        )
        for a in block.args
    ]
    for v, (d, last) in [*order.spans.items(), *args]:
        live[d] += _nbytes(v)
        live[min(last, n - 1) + 1] -= _nbytes(v)
    cross_b = np.cumsum(nbytes)[: n + 1]
    cross_c = np.cumsum(count)[: n + 1]
    cross_b[0] = cross_b[n] = 0.0
    cross_c[0] = cross_c[n] = 0
    return ChainModel(
        times,
        uses,
        cross_b.tolist(),
        [int(c) for c in cross_c],
        float(profile.sbuf_weight_bytes),
        profile,
        order.ops,
        [op.act_in + op.act_out for op in cost.ops],
        np.cumsum(live)[:n].tolist(),
    ), order


# -- rewriting ------------------------------------------------------------------------


@functools.lru_cache(maxsize=1024)
def _int(value: int) -> IntegerAttr:
    return IntegerAttr(value, i64)


def _build_stages(program: nc.ProgramOp, order: _Order, cuts: list[int]) -> list[Block]:
    n = len(order.ops)
    in_types = [v.type for v in program.inputs]
    old_args = list(program.stages[0].block.args)
    crossing: dict[int, list[SSAValue]] = {c: [] for c in cuts[1:-1]}
    for v, (d, last) in order.spans.items():
        for c in cuts[1:-1]:
            if d < c <= last:
                crossing[c].append(v)
    channel: dict[tuple[int, SSAValue], int] = {}
    for c in cuts[1:-1]:
        for v in crossing[c]:
            channel[(c, v)] = len(channel)
    blocks = []
    stages = len(cuts) - 1
    for k in range(stages):
        i, j = cuts[k], cuts[k + 1]
        block = Block(arg_types=in_types)
        local: dict[SSAValue, SSAValue] = {}
        for old, new in zip(old_args, block.args, strict=True):
            local[old] = new
            new.name_hint = old.name_hint
        if k > 0:
            for v in crossing[i]:
                recv = nc.RecvOp.build(
                    result_types=[v.type],
                    properties={"from_stage": _int(k - 1), "channel": _int(channel[(i, v)])},
                )
                recv.results[0].name_hint = v.name_hint
                block.add_op(recv)
                local[v] = recv.results[0]

        def local_value(
            v: SSAValue, block: Block = block, local: dict[SSAValue, SSAValue] = local
        ) -> SSAValue:
            if v in local:
                return local[v]
            if v in order.weights:  # each stage caches its own copy of a weight
                clone = order.weights[v].clone()
                clone.results[0].name_hint = v.name_hint
                block.add_op(clone)
                local[v] = clone.results[0]
                return local[v]
            return v  # defined earlier in this stage

        for op in order.ops[i:j]:
            new_operands = [local_value(v) for v in op.operands]
            op.detach()
            if any(a is not b for a, b in zip(new_operands, op.operands, strict=True)):
                op.operands = new_operands
            block.add_op(op)
        if k < stages - 1:
            for v in crossing[j]:
                block.add_op(
                    nc.SendOp.build(
                        operands=[local_value(v)],
                        properties={"to_stage": _int(k + 1), "channel": _int(channel[(j, v)])},
                    )
                )
            block.add_op(nc.ReturnOp.build(operands=[[]]))
        else:
            block.add_op(nc.ReturnOp.build(operands=[[local_value(v) for v in order.ret.operands]]))
        blocks.append(block)
    assert cuts[-1] == n
    return blocks


def shard_program(
    program: nc.ProgramOp, cores: int | str, allow_hbm_weights: bool = False, autocast: bool = True
) -> nc.ProgramOp:
    """Cut ``program`` (one stage) into pipeline stages; returns the new program."""
    profile = get_target(program.target.data)
    if program.cores.value.data != 1:
        raise PassError(
            f"pipeline-shard: the program already has "
            f"{program.cores.value.data} stages; it cuts one-stage programs"
        )
    limit = max_cores(profile)
    model, order = chain_model(program, autocast)
    if model.n == 0:
        raise PassError("pipeline-shard: the program has no ops to cut")
    if cores == "auto":
        count = len(fewest_fitting_stages(model, allow_hbm_weights)) - 1
        if count > limit:
            raise PassError(
                f"pipeline-shard: the weights need {count} cores to fit in SBUF "
                f"but {profile.name} has at most {limit} NeuronCores"
            )
        cuts, _ = min_max_split(model, count, fit_only=True, allow_hbm_weights=allow_hbm_weights)
    else:
        if isinstance(cores, str) or cores < 1:
            raise PassError(
                f"pipeline-shard: cores must be a positive integer or 'auto', not {cores!r}"
            )
        if cores > limit:
            raise PassError(
                f"pipeline-shard: cores={cores} but {profile.name} has at most {limit} NeuronCores"
            )
        if cores > model.n:
            raise PassError(f"pipeline-shard: cannot cut {model.n} op(s) into {cores} stages")
        if cores == 1:
            return program
        cuts, _ = min_max_split(model, cores)
    blocks = _build_stages(program, order, cuts)
    new = nc.ProgramOp.build(
        operands=[list(program.inputs)],
        result_types=[[r.type for r in program.outputs]],
        properties={
            "target": StringAttr(profile.name),
            "batch": program.batch,
            "cores": _int(len(blocks)),
        },
        regions=[[Region(b) for b in blocks]],
    )
    Rewriter.replace_op(program, new)
    for block in blocks:
        place_stage(block, profile, autocast)
    estimate_program(new, autocast)
    return new


@dataclass(frozen=True)
class PipelineShardPass(ModulePass):
    """Cut every one-stage ``nc.program`` into ``cores`` pipeline stages (or ``auto``)."""

    name = "pipeline-shard"

    cores: int | str = 1
    """Number of stages (one a NeuronCore), or "auto": the fewest whose weights fit."""

    allow_hbm_weights: bool = False
    """Let an op whose weights exceed one core's SBUF stream them from HBM."""

    autocast: bool = True
    """Count fp32 matmul/conv weights as bf16, as Neuron's default autocast stores them."""

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        programs = [p for p in op.walk() if isinstance(p, nc.ProgramOp)]
        used = 0
        for program in programs:
            new = shard_program(program, self.cores, self.allow_hbm_weights, self.autocast)
            used += new.cores.value.data
        if programs:
            profile = get_target(programs[0].target.data)
            if used > max_cores(profile):
                raise PassError(
                    f"pipeline-shard: {len(programs)} programs need {used} "
                    f"cores but {profile.name} has at most "
                    f"{max_cores(profile)} NeuronCores"
                )
