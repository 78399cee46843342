"""The one cost model: an op's work on a target, in seconds.

The batching and pipeline passes, the automatic core count and the simulated timeline
all price work here and nowhere else, so their decisions agree with each other.

The model is a roofline with a fixed issue cost::

    time = max(compute, memory) + dispatch_overhead_s

* compute: Tensor engine ``flops / peak_flops[dtype]`` (fp32 matmuls at the
  autocast dtype's rate, as the Neuron compilers do by default); Vector, Scalar and
  GpSimd ``elements / engine_throughput``; DMA ops compute nothing.
* memory: bytes that cross device memory (HBM/DRAM) for this op, at this core's share
  of the chip's DRAM bandwidth (``dram_bandwidth / cores_per_chip``: every core of a
  chip is assumed busy, which is what the pipeline and batching passes arrange).
  Weights cached in SBUF (static weights) cost nothing per inference; weights in HBM
  are streamed once per execution of the op, i.e. once per compiled batch. Activations
  live in SBUF unless ``spills`` says they go through HBM, in which case their bytes
  are streamed too.

Compute and data movement overlap (DMA queues run beside the engines), hence the max.
Pure functions of their arguments: no global state, deterministic.

The second half of the module prices whole ``nc.program`` stages, batch- and
stage-aware (:func:`stage_costs`, :func:`price_stage`, :func:`price_program`); the
placement, estimation and pipeline passes, the batch sweep and the timeline all call
it. Its assumptions are stated on each function; in short:

* A program's tensor shapes are those of one compiled batch of ``nc.program``'s
  ``batch`` inferences. Pricing it at another batch ``n`` scales every activation
  quantity (FLOPs, elements, activation bytes, gathered rows, transfers) by
  ``n / batch`` and keeps weight traffic per batch: a weight is read once per batch.
* Weights are counted in the dtype stored on the device: fp32 weights read by the
  Tensor engine (matmul, conv) are stored in the profile's autocast dtype (bf16) unless
  autocast is off; others in their own dtype. Activations keep the model's dtype.
* A table read only by gathers stays in HBM and pays for the rows it gathers (the
  gather's result bytes), per inference, but never for more than the table itself
  per execution (a row gathered twice in one execution is fetched once).
* The activation working set of a stage is its schedule's peak live activation bytes
  at the priced batch; it must fit the SBUF left beside the cached weights. Beyond it,
  the excess fraction of every op's activation traffic goes through HBM, and that
  traffic is added to the op's time (not overlapped: the engines wait for data that
  is not on chip). So throughput against batch has a knee at the largest batch that
  does not spill.
* A core runs its ops one after another: a stage's time is the sum of its ops' times
  (engines overlap inside an op's roofline, not across ops), plus its transfers.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any

from xdsl.traits import ConstantLike, IsTerminator

from .profiles import DTYPES, ENGINES, TargetProfile

DTYPE_BYTES: dict[str, int] = {"bf16": 2, "fp16": 2, "fp32": 4, "int8": 1}
WEIGHT_LOCATIONS = ("sbuf", "hbm")
TRANSFER_KINDS = ("dma", "link")


@dataclass(frozen=True)
class OpWork:
    """What one op asks of a core.

    ``flops`` counts a multiply-add as 2 and is priced on the Tensor engine only;
    ``elements`` is the elementwise work priced on the Vector/Scalar/GpSimd engines.
    ``bytes_in``/``bytes_out`` are the op's activations; ``spills`` says they are read
    from / written to HBM rather than kept in SBUF. For a ``dma`` op, the bytes moved
    are ``max(bytes_in, bytes_out)``.
    """

    engine: str
    flops: float = 0.0
    elements: float = 0.0
    bytes_in: float = 0.0
    bytes_out: float = 0.0
    weight_bytes: float = 0.0
    weight_location: str = "sbuf"
    dtype: str = "bf16"
    spills: bool = False

    def __post_init__(self) -> None:
        if self.engine not in ENGINES:
            raise ValueError(f"unknown engine {self.engine!r}; engines: {', '.join(ENGINES)}")
        if self.dtype not in DTYPES:
            raise ValueError(f"unknown dtype {self.dtype!r}; dtypes: {', '.join(DTYPES)}")
        if self.weight_location not in WEIGHT_LOCATIONS:
            raise ValueError(
                f"weight_location must be 'sbuf' or 'hbm', not {self.weight_location!r}"
            )
        for name in ("flops", "elements", "bytes_in", "bytes_out", "weight_bytes"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, not {getattr(self, name)}")


def _tensor_peak(dtype: str, profile: TargetProfile) -> float:
    # The compilers autocast fp32 matmuls by default ([CAST1]/[CAST2] in target.py),
    # so fp32 is priced at the autocast dtype's rate when the profile says so.
    if dtype == "fp32" and profile.matmul_autocast is not None:
        dtype = profile.matmul_autocast
    try:
        return profile.peak_flops[dtype]
    except KeyError:
        raise ValueError(f"{profile.name} has no Tensor-engine rate for {dtype}") from None


def compute_time(work: OpWork, profile: TargetProfile) -> float:
    """Seconds the op keeps its engine busy, ignoring data movement and overhead."""
    if work.engine == "tensor":
        return work.flops / _tensor_peak(work.dtype, profile)
    if work.engine == "dma":
        return 0.0
    return work.elements / profile.engine_throughput[work.engine]


def core_dram_bandwidth(profile: TargetProfile) -> float:
    """One core's share of its chip's device-memory bandwidth, bytes/s."""
    return profile.dram_bandwidth / profile.cores_per_chip


def memory_time(work: OpWork, profile: TargetProfile) -> float:
    """Seconds of device-memory traffic the op causes (weights in HBM, spills, DMA)."""
    if work.engine == "dma":
        # A DMA op is pure data movement on the core's share of the chip's DMA engines.
        return max(work.bytes_in, work.bytes_out) / (profile.dma_bandwidth / profile.cores_per_chip)
    hbm_bytes = work.weight_bytes if work.weight_location == "hbm" else 0.0
    if work.spills:
        hbm_bytes += work.bytes_in + work.bytes_out
    return hbm_bytes / core_dram_bandwidth(profile)


def op_time(work: OpWork, profile: TargetProfile) -> float:
    """Seconds one op takes on one core: ``max(compute, memory) + dispatch_overhead_s``.

    Compute and memory overlap (the DMA queues run beside the engines); the fixed
    dispatch overhead does not. Always >= ``profile.dispatch_overhead_s`` and
    non-decreasing in flops, elements, weight bytes and (when they move) activation
    bytes.
    """
    return (
        max(compute_time(work, profile), memory_time(work, profile)) + profile.dispatch_overhead_s
    )


def transfer_time(nbytes: float, profile: TargetProfile, kind: str = "dma") -> float:
    """Seconds to move ``nbytes`` between memories or cores.

    ``dma``: on-chip movement (HBM<->SBUF, or core to core on one chip, which goes
    through device memory by DMA: an assumption, there is no published direct path)
    at the chip's DMA bandwidth. ``link``: send/recv between chips over NeuronLink at
    its per-chip bandwidth. One transfer is assumed to have its path to itself. Zero
    bytes cost nothing; otherwise the kind's fixed latency plus bytes / bandwidth, so
    the time is affine in ``nbytes`` (linear in the bandwidth term).
    """
    if kind not in TRANSFER_KINDS:
        raise ValueError(f"transfer kind must be 'dma' or 'link', not {kind!r}")
    if nbytes < 0:
        raise ValueError(f"nbytes must be >= 0, not {nbytes}")
    if nbytes == 0:
        return 0.0
    if kind == "dma":
        return profile.dma_latency_s + nbytes / profile.dma_bandwidth
    return profile.link_latency_s + nbytes / profile.link_bandwidth


def weights_fit(weight_bytes: float, profile: TargetProfile, cores: int) -> bool:
    """Whether ``weight_bytes`` of static weights can be cached in the SBUF of
    ``cores`` cores, keeping each core's activation reserve
    (``1 - sbuf_weight_fraction``) free. Assumes the weights split evenly."""
    if cores < 1:
        raise ValueError(f"need at least one core, not {cores}")
    if weight_bytes < 0:
        raise ValueError(f"weight_bytes must be >= 0, not {weight_bytes}")
    return weight_bytes <= profile.sbuf_weight_bytes * cores


def dtype_bytes(dtype: str) -> int:
    """Bytes per element of a cost-model dtype."""
    try:
        return DTYPE_BYTES[dtype]
    except KeyError:
        raise ValueError(f"unknown dtype {dtype!r}; dtypes: {', '.join(DTYPES)}") from None


# -- nc programs: batch- and stage-aware pricing ---------------------------------

_COST_DTYPE = {"float16": "fp16", "bfloat16": "bf16", "int8": "int8", "uint8": "int8"}
# Layout ops that only reinterpret a buffer cost their dispatch, no engine time.
_FREE_OPS = frozenset({"nc.reshape"})
_TRANSFER_OPS = frozenset({"nc.send", "nc.recv"})


def stored_weight_bytes(
    nelements: int,
    itemsize: int,
    tensor_engine: bool,
    profile: TargetProfile,
    autocast: bool = True,
) -> int:
    """Bytes a weight takes on the device.

    Assumption: Neuron's compilers cast matmul operands to bf16 by default
    (``--auto-cast matmult``, [CAST1]/[CAST2] in target.py), so a 4-byte float weight read
    only by the Tensor engine is stored in the profile's autocast dtype; every other
    weight (biases, norm scales, gathered tables) keeps its own dtype. The reference
    interpreter still computes in the model's dtype.
    """
    if tensor_engine and autocast and itemsize == 4 and profile.matmul_autocast is not None:
        return nelements * dtype_bytes(profile.matmul_autocast)
    return nelements * itemsize


@dataclass(frozen=True)
class WeightCost:
    """One ``nc.weight`` of a stage: its stored bytes, placement and how it is read."""

    nbytes: int
    memory: str
    gather_only: bool  # every use is the table operand of an ``nc.gather``
    name: str = ""


@dataclass(frozen=True)
class OpCost:
    """One op of a stage at its compiled batch (the IR's shapes).

    ``weights`` index the stage's whole-read weights; ``gathered`` pairs a gather-only
    table with the bytes of rows this op gathers. ``transfer`` is the bytes an
    ``nc.send``/``nc.recv`` moves and ``link`` whether it crosses chips.
    """

    name: str
    engine: str
    dtype: str = "fp32"
    flops: float = 0.0
    elements: float = 0.0
    act_in: float = 0.0
    act_out: float = 0.0
    weights: tuple[int, ...] = ()
    gathered: tuple[tuple[int, float], ...] = ()
    transfer: float = 0.0
    link: bool = False


@dataclass(frozen=True)
class StageCost:
    """What a stage asks of its core, independent of placement and batch."""

    ops: tuple[OpCost, ...]
    weights: tuple[WeightCost, ...]
    peak_activation: float  # peak live activation bytes of the schedule, compiled batch


@dataclass(frozen=True)
class StagePrice:
    time: float  # seconds per compiled-size batch at the priced batch
    op_times: tuple[float, ...]
    sbuf_weight_bytes: int
    hbm_weight_bytes: int  # whole-read weights streamed from HBM, per batch
    gather_bytes: float  # table rows gathered from HBM, per batch
    activation_bytes: float  # working set at the priced batch
    spill_fraction: float
    spill_bytes: float  # activation bytes through HBM, per batch
    transfer_bytes: float


def op_seconds(
    op: OpCost,
    weights: tuple[WeightCost, ...],
    profile: TargetProfile,
    scale: float = 1.0,
    spill_fraction: float = 0.0,
) -> float:
    """Seconds ``op`` takes with the stage's weights where ``weights`` says.

    ``scale`` is priced batch / compiled batch: activation work scales with it, a
    whole-read HBM weight is streamed once per execution whatever the batch.
    ``spill_fraction`` of the op's activation bytes go through HBM, after the roofline
    (see the module docstring), so a stage's spill time is additive over its ops.
    ``nc.send``/``nc.recv`` take :func:`transfer_time` of their bytes (DMA on a chip,
    NeuronLink across chips); the transfer latency stands in for the dispatch cost.
    """
    if op.name in _TRANSFER_OPS:
        return transfer_time(op.transfer * scale, profile, "link" if op.link else "dma")
    hbm = sum(weights[w].nbytes for w in op.weights if weights[w].memory == "hbm")
    gathered = sum(min(nbytes * scale, weights[k].nbytes) for k, nbytes in op.gathered)
    work = OpWork(
        engine=op.engine,
        flops=op.flops * scale,
        elements=op.elements * scale,
        bytes_in=op.act_in * scale,
        bytes_out=op.act_out * scale,
        weight_bytes=float(hbm + gathered),
        weight_location="hbm" if hbm + gathered else "sbuf",
        dtype=op.dtype,
    )
    spilled = spill_fraction * (op.act_in + op.act_out) * scale
    return op_time(work, profile) + spilled / core_dram_bandwidth(profile)


def activation_budget(stage: StageCost, profile: TargetProfile) -> float:
    """SBUF bytes left for activations beside the weights cached in SBUF."""
    cached = sum(w.nbytes for w in stage.weights if w.memory == "sbuf")
    return max(0.0, float(profile.sbuf_bytes - cached))


def spill_fraction(stage: StageCost, profile: TargetProfile, scale: float = 1.0) -> float:
    """Share of activation traffic that goes through HBM at ``scale`` x compiled batch:
    ``1 - free / working_set`` when the working set exceeds the free SBUF, else 0."""
    working = stage.peak_activation * scale
    free = activation_budget(stage, profile)
    return 0.0 if working <= free else 1.0 - free / working


def largest_unspilled_batch(stage: StageCost, profile: TargetProfile, batch: int) -> int:
    """The largest batch whose working set fits (0: not even one inference fits)."""
    per_inference = stage.peak_activation / batch
    if per_inference <= 0:
        return 2**31 - 1
    return int(activation_budget(stage, profile) // per_inference)


def price_stage(stage: StageCost, profile: TargetProfile, scale: float = 1.0) -> StagePrice:
    """Price one stage at ``scale`` x its compiled batch (see the module docstring)."""
    frac = spill_fraction(stage, profile, scale)
    times = tuple(op_seconds(op, stage.weights, profile, scale, frac) for op in stage.ops)
    hbm = sum(
        stage.weights[w].nbytes
        for op in stage.ops
        for w in op.weights
        if stage.weights[w].memory == "hbm"
    )
    acts = sum(op.act_in + op.act_out for op in stage.ops if op.name not in _TRANSFER_OPS)
    return StagePrice(
        time=float(sum(times)),
        op_times=times,
        sbuf_weight_bytes=sum(w.nbytes for w in stage.weights if w.memory == "sbuf"),
        hbm_weight_bytes=hbm,
        gather_bytes=sum(
            min(n * scale, stage.weights[k].nbytes) for op in stage.ops for k, n in op.gathered
        ),
        activation_bytes=stage.peak_activation * scale,
        spill_fraction=frac,
        spill_bytes=frac * acts * scale,
        transfer_bytes=sum(op.transfer for op in stage.ops) * scale,
    )


@dataclass(frozen=True)
class ProgramPrice:
    """One program priced at ``batch`` (inferences per execution)."""

    batch: int
    stages: tuple[StagePrice, ...]

    @property
    def bottleneck(self) -> float:
        return max(s.time for s in self.stages)

    @property
    def latency(self) -> float:
        """Seconds one batch takes through every stage (stages run one after another)."""
        return sum(s.time for s in self.stages)

    def throughput(self, replicas: int = 1) -> float:
        """Inferences per second in steady state: stage k serves batch i while k+1
        serves batch i-1, so one batch leaves every bottleneck seconds, per replica."""
        return self.batch * replicas / self.bottleneck if self.bottleneck > 0 else 0.0

    @property
    def ideal(self) -> float:
        """Total time over the stage count: the bottleneck of a perfect split."""
        return self.latency / len(self.stages)


def price_program(
    stages: list[StageCost] | tuple[StageCost, ...],
    profile: TargetProfile,
    compiled_batch: int,
    batch: int | None = None,
) -> ProgramPrice:
    """Price a program's stages (from :func:`stage_costs`) at ``batch`` without
    recompiling: activation work scales by ``batch / compiled_batch``."""
    batch = compiled_batch if batch is None else batch
    if batch < 1 or compiled_batch < 1:
        raise ValueError(f"batch must be positive, not {batch}")
    scale = batch / compiled_batch
    return ProgramPrice(batch, tuple(price_stage(s, profile, scale) for s in stages))


def stage_costs(program: Any, profile: TargetProfile, autocast: bool = True) -> list[StageCost]:
    """The :class:`StageCost` of every stage of an ``nc.program`` op, read off the IR
    (weights' ``memory`` as placed; ``reads`` and ``est_time`` are not consulted)."""
    return [block_cost(region.block, profile, autocast) for region in program.regions]


@functools.lru_cache(maxsize=4096)
def type_bytes(ttype: Any) -> float:
    """Bytes of a static tensor type (0 for anything else); cached: passes ask often."""
    from ..ir.util import info_of_type

    info = info_of_type(ttype)
    if info.shape is None or info.dtype is None or info.dtype.hasobject:
        return 0.0
    return float(math.prod(info.shape) * info.dtype.itemsize)


def _nbytes(value: Any) -> float:
    return type_bytes(value.type)


@functools.lru_cache(maxsize=4096)
def _type_elements(ttype: Any) -> float:
    return float(math.prod(ttype.get_shape()))


def _elements(value: Any) -> float:
    return _type_elements(value.type)


def weight_cost(op: Any, profile: TargetProfile, autocast: bool = True) -> WeightCost:
    """Stored bytes and read pattern of one ``nc.weight`` op (see
    :func:`stored_weight_bytes`)."""
    from ..ir.util import dtype_of

    result = op.results[0]
    uses = [(u.operation, u.index) for u in result.uses]
    gather_only = bool(uses) and all(o.name == "nc.gather" and i == 0 for o, i in uses)
    tensor = bool(uses) and all(getattr(o, "ENGINE", "") == "tensor" for o, _ in uses)
    dtype = dtype_of(result.type.element_type)
    nbytes = stored_weight_bytes(int(_elements(result)), dtype.itemsize, tensor, profile, autocast)
    name = op.attributes.get("onnx.name")
    return WeightCost(
        nbytes, op.memory.data, gather_only, getattr(name, "data", "") if name is not None else ""
    )


def block_cost(
    block: Any, profile: TargetProfile, autocast: bool = True, stage: int | None = None
) -> StageCost:
    """The :class:`StageCost` of one stage block (ops in block order)."""
    from ..analysis.flops import op_flops
    from ..ir.util import dtype_of

    if stage is None:
        parent = block.parent
        stage = (
            parent.parent_op().regions.index(parent)
            if parent is not None and parent.parent_op() is not None
            else 0
        )
    index: dict[Any, int] = {}
    weights: list[WeightCost] = []
    ops: list[OpCost] = []
    body = [op for op in block.ops if not op.has_trait(IsTerminator)]
    for op in body:
        if op.has_trait(ConstantLike):  # nc.weight
            index[op.results[0]] = len(weights)
            weights.append(weight_cost(op, profile, autocast))
            continue
        acts = [v for v in op.operands if v not in index]
        whole = tuple(
            dict.fromkeys(
                index[v] for v in op.operands if v in index and not weights[index[v]].gather_only
            )
        )
        gathered = tuple(
            (index[v], _nbytes(op.results[0]))
            for v in op.operands
            if v in index and weights[index[v]].gather_only
        )
        out = op.results[0] if op.results else None
        dtype = dtype_of(out.type.element_type) if out is not None else None
        engine = getattr(op, "ENGINE", "vector")
        transfer, link = 0.0, False
        if op.name in _TRANSFER_OPS:
            transfer = _nbytes(op.operands[0] if op.name == "nc.send" else out)
            other = int((op.to_stage if op.name == "nc.send" else op.from_stage).value.data)
            link = other // profile.cores_per_chip != stage // profile.cores_per_chip
        ops.append(
            OpCost(
                name=op.name,
                engine=engine,
                dtype=_COST_DTYPE.get(dtype.name, "fp32") if dtype is not None else "fp32",
                flops=float(op_flops(op)) if engine == "tensor" else 0.0,
                elements=0.0 if op.name in _FREE_OPS or out is None else _elements(out),
                act_in=sum(_nbytes(v) for v in acts),
                act_out=sum(_nbytes(r) for r in op.results),
                weights=whole,
                gathered=gathered,
                transfer=transfer,
                link=link,
            )
        )
    return StageCost(tuple(ops), tuple(weights), peak_live_bytes(body, set(index)))


def peak_live_bytes(ops: list[Any], weights: set[Any]) -> float:
    """Peak bytes of live activations over a schedule: a value is live from its
    definition (block arguments: from the start) to its last use; weights excluded."""
    position = {op: k for k, op in enumerate(ops)}
    last: dict[Any, int] = {}
    start: dict[Any, int] = {}
    end = len(ops)
    for k, op in enumerate(ops):
        for v in op.operands:
            if v in weights:
                continue
            start.setdefault(v, k if v.owner in position else 0)
        for r in op.results:
            if r not in weights:
                start.setdefault(r, k)
    for v in start:
        uses = [position.get(u.operation, end) for u in v.uses]
        last[v] = max(uses, default=start[v])
    delta = [0.0] * (end + 2)
    for v, s in start.items():
        size = _nbytes(v)
        delta[s] += size
        delta[last[v] + 1] -= size
    peak = live = 0.0
    for d in delta:
        live += d
        peak = max(peak, live)
    return peak
