"""A simulated timeline of a stream of requests, priced by the one cost model
(``neuron_ir.target.cost``).

Ops inside ``@neuron_subgraph_K`` (functions marked ``neuron.target``) run on
NeuronCores; every other op of ``@main`` on a "cpu" track (the host). A lowered
``nc.program`` runs stage k on its own core; a core runs its ops one after another,
each for its ``est_time`` (set by ``nc-estimate``), so a stage's time is the sum of its
ops' times, as the pipeline pass assumed when it cut. Stage k of request i starts when
stage k-1 of request i has sent its values (at its end) and stage k has finished
request i-1: with K requests queued at time 0, stage k serves request i while stage
k+1 serves request i-1. The latency is request 0's end to end; the steady-state
bottleneck is the slowest stage (or the host's share of a request, if slower).

Subgraphs not lowered to nc yet are priced op by op (engine by ONNX op type,
:func:`engine_of`; static weights in SBUF while they fit one core, greedily in program
order) on core 0's engine tracks, independent engines overlapping. CPU ops cost
``max(flops, elements) / CPU_FLOPS_PER_S`` (an assumption: one host core's sustained
numpy throughput). Ops with regions (loops, branches left on the CPU) are simulated as
one pass over each region: trip counts are unknown statically.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from xdsl.dialects.builtin import ModuleOp, StringAttr
from xdsl.dialects.func import FuncOp
from xdsl.ir import Operation, SSAValue
from xdsl.traits import ConstantLike

from dialects.nc import NcOp, ProgramOp

from ..analysis.flops import op_flops
from ..analysis.report import TARGET_ATTR
from ..ir.util import info_of_type, is_structural
from ..target import TargetProfile, get_target
from ..target.cost import OpWork, op_time, price_program, weights_fit

CPU_FLOPS_PER_S = 50e9  # assumption: one host core running the reference kernels
TRACKS = ("tensor", "vector", "scalar", "gpsimd", "dma", "cpu")

_TENSOR = {
    "MatMul",
    "Gemm",
    "Conv",
    "ConvTranspose",
    "Einsum",
    "MatMulInteger",
    "ConvInteger",
    "QLinearMatMul",
    "QLinearConv",
}
_SCALAR = {
    "Relu",
    "LeakyRelu",
    "PRelu",
    "Elu",
    "Selu",
    "Celu",
    "Sigmoid",
    "HardSigmoid",
    "HardSwish",
    "Tanh",
    "Erf",
    "Gelu",
    "Exp",
    "Log",
    "Softplus",
    "Softsign",
    "Sqrt",
    "Reciprocal",
    "Sin",
    "Cos",
    "Mish",
    "ThresholdedRelu",
}
_GPSIMD = {"Gather", "GatherElements", "GatherND"}
# Pure metadata changes: no data moves on the NeuronCore, so no time and no event.
_FREE = {"Reshape", "Squeeze", "Unsqueeze", "Flatten", "Identity", "Constant"}
_DTYPE = {"float32": "fp32", "float16": "fp16", "bfloat16": "bf16", "int8": "int8", "uint8": "int8"}


@dataclass(frozen=True)
class Event:
    name: str
    track: str
    start: float  # seconds from the start of the stream
    duration: float  # seconds
    args: dict[str, Any] = field(default_factory=dict, compare=False)
    core: int = 0  # NeuronCore of device events (host events: ignored)
    request: int = 0


@dataclass
class Timeline:
    events: list[Event]
    latency: float  # seconds: when request 0's last result is ready
    target: str
    bottleneck: float = 0.0  # seconds between two requests leaving, in steady state
    requests: int = 1
    makespan: float = 0.0  # seconds until the last request's results are ready

    def busy(self) -> dict[str, float]:
        """Seconds each track is busy."""
        out: dict[str, float] = {}
        for e in self.events:
            out[e.track] = out.get(e.track, 0.0) + e.duration
        return out

    def to_chrome_trace(self) -> dict:
        return to_chrome_trace(self.events)


def op_type(op: Operation) -> str:
    if op.name == "onnx.custom":
        kind = op.properties.get("op_type") or op.attributes.get("op_type")
        if isinstance(kind, StringAttr):
            return kind.data
    return op.name.removeprefix("onnx.")


def engine_of(op: Operation) -> str | None:
    """The NeuronCore engine of an onnx op not yet lowered to nc (None: costs nothing).

    Lowered nc ops carry their engine themselves (``NcOp.ENGINE``)."""
    kind = op_type(op)
    if kind in _FREE:
        return None
    if kind in _TENSOR:
        return "tensor"
    if kind in _SCALAR:
        return "scalar"
    if kind in _GPSIMD:
        return "gpsimd"
    return "vector"


def _elements(value: SSAValue) -> int:
    shape = info_of_type(value.type).shape
    if shape is None or any(d is None for d in shape):
        return 0
    return math.prod(shape)


def _nbytes(value: SSAValue) -> int:
    info = info_of_type(value.type)
    if info.dtype is None or info.dtype.hasobject:
        return 0
    return _elements(value) * info.dtype.itemsize


def _is_weight(value: SSAValue) -> bool:
    owner = value.owner
    return isinstance(owner, Operation) and owner.has_trait(ConstantLike)


def _label(op: Operation, request: int = 0) -> dict[str, Any]:
    node = op.attributes.get("onnx.name")
    args: dict[str, Any] = {"op": op_type(op), "request": request}
    if isinstance(node, StringAttr):
        args["node"] = node.data
    return args


class _Simulator:
    def __init__(self, module: ModuleOp, profile: TargetProfile, cpu_flops_per_s: float):
        self.profile = profile
        self.cpu_rate = cpu_flops_per_s
        self.funcs = {op.sym_name.data: op for op in module.ops if isinstance(op, FuncOp)}
        self.ready: dict[SSAValue, float] = {}
        self.free = {t: 0.0 for t in TRACKS}
        self.events: list[Event] = []
        self.weight_loc: dict[SSAValue, str] = {}
        self.cached = 0
        self.request = 0
        self.core_free: dict[int, float] = {}
        self.first_core: dict[Operation, int] = {}  # program -> its stage 0's core
        self.stage_times: list[float] = []  # request 0's stages
        self.cpu_busy = 0.0  # request 0's host time

    def _ready(self, values) -> float:
        return max((self.ready.get(v, 0.0) for v in values), default=0.0)

    def _weight_location(self, value: SSAValue) -> str:
        loc = self.weight_loc.get(value)
        if loc is None:
            size = _nbytes(value)
            if weights_fit(self.cached + size, self.profile, 1):
                self.cached += size
                loc = "sbuf"
            else:
                loc = "hbm"
            self.weight_loc[value] = loc
        return loc

    def _device_time(self, op: Operation, engine: str) -> float:
        weights = [v for v in op.operands if _is_weight(v)]
        acts = [v for v in op.operands if not _is_weight(v)]
        locs = {self._weight_location(w) for w in weights}
        dtype = "fp32"
        if op.operands:
            info = info_of_type(op.operands[0].type)
            if info.dtype is not None:
                dtype = _DTYPE.get(info.dtype.name, "fp32")
        work = OpWork(
            engine=engine,
            flops=float(op_flops(op)) if engine == "tensor" else 0.0,
            elements=float(sum(_elements(r) for r in op.results)),
            bytes_in=float(sum(_nbytes(v) for v in acts)),
            bytes_out=float(sum(_nbytes(r) for r in op.results)),
            weight_bytes=float(sum(_nbytes(w) for w in weights)),
            weight_location="hbm" if "hbm" in locs else "sbuf",
            dtype=dtype,
        )
        return op_time(work, self.profile)

    def _cpu_time(self, op: Operation) -> float:
        work = max(op_flops(op), sum(_elements(r) for r in op.results))
        return work / self.cpu_rate

    def _emit(self, op: Operation, track: str, duration: float) -> None:
        start = max(self._ready(op.operands), self.free[track])
        self.free[track] = start + duration
        self.events.append(
            Event(
                op_type(op), track, start, duration, _label(op, self.request), request=self.request
            )
        )
        if track == "cpu" and self.request == 0:
            self.cpu_busy += duration
        for r in op.results:
            self.ready[r] = start + duration

    def block(self, ops, on_device: bool) -> None:
        for op in ops:
            self.op(op, on_device)

    def program(self, op: Operation) -> None:
        """Stages on consecutive cores, each after its predecessor and its own previous
        request; a core runs its ops back to back."""
        if op not in self.first_core:
            self.first_core[op] = sum(len(p.regions) for p in self.first_core)
        end = self._ready(op.operands)
        for k, region in enumerate(op.regions):
            core = self.first_core[op] + k
            t = begin = max(end, self.core_free.get(core, 0.0))
            for inner in region.block.ops:
                if is_structural(inner):
                    continue
                est = inner.properties.get("est_time")
                seconds = float(est.value.data) if est is not None else 0.0  # type: ignore
                engine = getattr(inner, "ENGINE", "vector")
                self.events.append(
                    Event(
                        op_type(inner),
                        engine,
                        t,
                        seconds,
                        {**_label(inner, self.request), "stage": k},
                        core,
                        self.request,
                    )
                )
                t += seconds
            self.core_free[core] = end = t
            if self.request == 0:
                self.stage_times.append(t - begin)
        for r in op.results:
            self.ready[r] = end

    def op(self, op: Operation, on_device: bool) -> None:
        if is_structural(op):
            t = self._ready(op.operands)
            for r in op.results:
                self.ready[r] = t
            return
        if op.name == "func.call":
            self.call(op)
            return
        if isinstance(op, ProgramOp):
            self.program(op)
            return
        if op.regions:
            # One pass over every region, starting when the op's inputs are ready.
            start = self._ready(op.operands)
            end = start
            for region in op.regions:
                for block in region.blocks:
                    for arg in block.args:
                        self.ready[arg] = start
                    self.block(block.ops, on_device)
                    for inner in block.ops:
                        end = max([end] + [self.ready.get(r, start) for r in inner.results])
            for r in op.results:
                self.ready[r] = end
            return
        if not on_device:
            self._emit(op, "cpu", self._cpu_time(op))
            return
        if isinstance(op, NcOp):
            est = op.est_time
            self._emit(op, op.ENGINE, float(est.value.data) if est is not None else 0.0)
            return
        engine = engine_of(op)
        if engine is None:
            t = self._ready(op.operands)
            for r in op.results:
                self.ready[r] = t
            return
        self._emit(op, engine, self._device_time(op, engine))

    def call(self, op: Operation) -> None:
        callee = self.funcs.get(
            op.properties["callee"].root_reference.data
            if "callee" in op.properties
            else op.attributes["callee"].root_reference.data
        )
        if callee is None or not callee.body.blocks:
            self._emit(op, "cpu", 0.0)
            return
        on_device = isinstance(callee.attributes.get(TARGET_ATTR), StringAttr)
        block = callee.body.block
        for arg, operand in zip(block.args, op.operands, strict=False):
            self.ready[arg] = self.ready.get(operand, 0.0)
        self.block(block.ops, on_device)
        ret = block.last_op
        if ret is not None and ret.name == "func.return":
            for res, value in zip(op.results, ret.operands, strict=False):
                self.ready[res] = self.ready.get(value, 0.0)


def simulate(
    module: ModuleOp,
    target: str | TargetProfile = "inf1",
    cpu_flops_per_s: float = CPU_FLOPS_PER_S,
    requests: int = 1,
) -> Timeline:
    """The simulated timeline of ``requests`` runs of ``@main`` queued at time 0."""
    if requests < 1:
        raise ValueError(f"requests must be >= 1, not {requests}")
    profile = get_target(target)
    sim = _Simulator(module, profile, cpu_flops_per_s)
    main = sim.funcs.get("main")
    latency = makespan = 0.0
    if main is not None and main.body.blocks:
        block = main.body.block
        ret = block.last_op
        outs = list(ret.operands) if ret is not None else []
        for i in range(requests):
            sim.request = i
            sim.ready = {}
            sim.block(block.ops, on_device=False)
            done = max(
                [sim._ready(outs)] + [e.start + e.duration for e in sim.events if e.request == i]
            )
            if i == 0:
                latency = done
            makespan = max(makespan, done)
    # Device ops not lowered to nc overlap across engines: their share of a request is
    # the busiest engine track's.
    loose: dict[str, float] = {}
    for e in sim.events:
        if e.request == 0 and e.track != "cpu" and "stage" not in e.args:
            loose[e.track] = loose.get(e.track, 0.0) + e.duration
    bottleneck = max([*sim.stage_times, sim.cpu_busy, *loose.values()], default=0.0)
    return Timeline(sim.events, latency, profile.name, bottleneck, requests, makespan)


def to_chrome_trace(events: list[Event]) -> dict:
    """Chrome trace event format (opens in Perfetto / chrome://tracing): one process per
    NeuronCore ("NeuronCore k", pid k) with a thread per engine, and the host CPU as
    the process after the last core. Each event's args name its request."""
    tids = {t: i for i, t in enumerate(TRACKS)}
    cores = sorted({e.core for e in events if e.track != "cpu"}) or [0]
    host = max(cores) + 1
    meta: list[dict] = [
        {"name": "process_name", "ph": "M", "pid": c, "args": {"name": f"NeuronCore {c}"}}
        for c in cores
    ]
    meta.append({"name": "process_name", "ph": "M", "pid": host, "args": {"name": "Host CPU"}})
    threads = sorted({(host if e.track == "cpu" else e.core, e.track) for e in events})
    for pid, t in threads:
        meta.append(
            {"name": "thread_name", "ph": "M", "pid": pid, "tid": tids[t], "args": {"name": t}}
        )
        meta.append(
            {
                "name": "thread_sort_index",
                "ph": "M",
                "pid": pid,
                "tid": tids[t],
                "args": {"sort_index": tids[t]},
            }
        )
    trace = [
        {
            "name": e.name,
            "ph": "X",
            "ts": e.start * 1e6,
            "dur": e.duration * 1e6,
            "pid": host if e.track == "cpu" else e.core,
            "tid": tids[e.track],
            "cat": e.track,
            "args": {**e.args, "request": e.request},
        }
        for e in events
    ]
    return {"traceEvents": meta + trace, "displayTimeUnit": "ns"}


@dataclass
class StageRow:
    program: str  # the function holding the nc.program
    stage: int
    core: int
    ops: int  # compute ops (sends, receives, weights and the return aside)
    transfers: int  # nc.send + nc.recv ops
    flops: int
    weight_bytes: int  # stored bytes of the weights the stage reads whole
    table_bytes: int  # stored bytes of the tables it only gathers from (left in HBM)
    sbuf_weight_bytes: int
    activation_bytes: float  # working set at the compiled batch
    sbuf_bytes: int  # the core's SBUF
    spill_bytes: float
    time: float  # seconds per compiled batch: the sum of its ops' est_time
    transfer_time: float = 0.0  # of which nc.send / nc.recv

    @property
    def sbuf_use(self) -> float:
        """Share of the core's SBUF held by cached weights and the working set."""
        return (
            min(self.sbuf_weight_bytes + self.activation_bytes, self.sbuf_bytes) / self.sbuf_bytes
        )


@dataclass
class StageReport:
    target: str
    batch: int
    replicas: int
    rows: list[StageRow]

    @property
    def cores(self) -> int:
        return len(self.rows)

    @property
    def total(self) -> float:
        return sum(r.time for r in self.rows)

    @property
    def bottleneck(self) -> float:
        return max((r.time for r in self.rows), default=0.0)

    @property
    def ideal(self) -> float:
        """The work of one core (the stages' times without their transfers) / cores:
        the bottleneck of a perfect split with free transfers."""
        work = sum(r.time - r.transfer_time for r in self.rows)
        return work / self.cores if self.rows else 0.0

    @property
    def ratio(self) -> float:
        """Bottleneck / ideal (1.0: perfectly balanced)."""
        return self.bottleneck / self.ideal if self.ideal > 0 else 1.0

    def text(self) -> str:
        mb = 1e6
        lines = [
            f"pipeline report ({self.target}, batch {self.batch}, {self.cores} core(s)"
            f" x {self.replicas} replica(s)):",
            "  stage core   ops  xfer      GFLOP  weights MB  tables MB  "
            "SBUF MB (use)  spill MB   time us",
        ]
        slow = self.bottleneck
        for r in self.rows:
            mark = "  <- bottleneck" if r.time == slow and self.cores > 1 else ""
            lines.append(
                f"  {r.stage:5d} {r.core:4d} {r.ops:5d} {r.transfers:5d} "
                f"{r.flops / 1e9:10.3f} {r.weight_bytes / mb:11.2f} "
                f"{r.table_bytes / mb:10.2f} "
                f"{(r.sbuf_weight_bytes + r.activation_bytes) / mb:8.2f} "
                f"({100 * r.sbuf_use:3.0f}%) {r.spill_bytes / mb:9.2f} "
                f"{r.time * 1e6:9.1f}{mark}"
            )
        lines.append(
            f"  bottleneck {slow * 1e6:.1f} us, ideal (total/{self.cores}) "
            f"{self.ideal * 1e6:.1f} us, ratio {self.ratio:.3f}; total {self.total * 1e6:.1f} us"
        )
        return "\n".join(lines) + "\n"


def stage_report(
    module: ModuleOp, target: str | TargetProfile = "inf1", replicas: int = 1
) -> StageReport:
    """Every stage of every ``nc.program`` of ``module``, priced by the cost model
    (times are the ops' ``est_time``, as ``nc-estimate`` set them)."""
    from ..target.cost import stage_costs

    profile = get_target(target)
    rows: list[StageRow] = []
    batch = 1
    for func in module.ops:
        if not isinstance(func, FuncOp):
            continue
        for program in func.walk():
            if not isinstance(program, ProgramOp):
                continue
            batch = program.batch.value.data
            costs = stage_costs(program, profile)
            price = price_program(costs, profile, batch)
            for k, (region, cost, p) in enumerate(
                zip(program.stages, costs, price.stages, strict=True)
            ):
                ops = [o for o in region.block.ops if not is_structural(o)]
                moves = [o for o in ops if o.name in ("nc.send", "nc.recv")]
                est = [o.properties.get("est_time") for o in ops]
                moved = [o.properties.get("est_time") for o in moves]
                rows.append(
                    StageRow(
                        func.sym_name.data,
                        k,
                        len(rows),
                        len(ops) - len(moves),
                        len(moves),
                        sum(op_flops(o) for o in ops),
                        sum(w.nbytes for w in cost.weights if not w.gather_only),
                        sum(w.nbytes for w in cost.weights if w.gather_only),
                        p.sbuf_weight_bytes,
                        p.activation_bytes,
                        profile.sbuf_bytes,
                        p.spill_bytes,
                        sum(float(e.value.data) for e in est if e is not None),  # type: ignore
                        sum(float(e.value.data) for e in moved if e is not None),
                    )
                )  # type: ignore
    return StageReport(profile.name, batch, replicas, rows)
