"""A simulated timeline of one inference, priced by the one cost model (``neuron_ir.target.cost``).

Ops inside ``@neuron_subgraph_K`` (functions marked ``neuron.target``) run on the
NeuronCore's engines; every other op of ``@main`` on a "cpu" track. Each op starts
once its inputs are ready and its track is free (list scheduling in program order,
one queue a track), so independent engines overlap.

Provisional until the nc dialect assigns engines: the engine is chosen by ONNX op type
(:func:`engine_of`). Static weights (constants feeding subgraph ops) stay in SBUF
while they fit (``cost.weights_fit`` on one core, greedily in program order), the rest
are streamed from HBM. CPU ops cost ``max(flops, elements) / CPU_FLOPS_PER_S`` (an
assumption: one host core's sustained numpy throughput) plus nothing else.
Ops with regions (loops, branches left on the CPU) are simulated as one pass over each
region: trip counts are unknown statically.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from xdsl.dialects.builtin import ModuleOp, StringAttr
from xdsl.dialects.func import FuncOp
from xdsl.ir import Operation, SSAValue

from dialects.nc import NcOp

from ..analysis.flops import op_flops
from ..analysis.report import TARGET_ATTR
from ..ir.util import info_of_type
from ..target import TargetProfile, get_target
from ..target.cost import OpWork, op_time, weights_fit

CPU_FLOPS_PER_S = 50e9  # assumption: one host core running the reference kernels
TRACKS = ("tensor", "vector", "scalar", "gpsimd", "dma", "cpu")

_TENSOR = {"MatMul", "Gemm", "Conv", "ConvTranspose", "Einsum", "MatMulInteger",
           "ConvInteger", "QLinearMatMul", "QLinearConv"}
_SCALAR = {"Relu", "LeakyRelu", "PRelu", "Elu", "Selu", "Celu", "Sigmoid", "HardSigmoid",
           "HardSwish", "Tanh", "Erf", "Gelu", "Exp", "Log", "Softplus", "Softsign",
           "Sqrt", "Reciprocal", "Sin", "Cos", "Mish", "ThresholdedRelu"}
_GPSIMD = {"Gather", "GatherElements", "GatherND"}
# Pure metadata changes: no data moves on the NeuronCore, so no time and no event.
_FREE = {"Reshape", "Squeeze", "Unsqueeze", "Flatten", "Identity", "Constant"}
_NOT_OPS = {"func.return", "onnx.yield", "scf.yield", "scf.condition", "arith.constant",
            "nc.return", "nc.weight"}
_DTYPE = {"float32": "fp32", "float16": "fp16", "bfloat16": "bf16", "int8": "int8",
          "uint8": "int8"}


@dataclass(frozen=True)
class Event:
    name: str
    track: str
    start: float  # seconds from the start of the inference
    duration: float  # seconds
    args: dict[str, Any] = field(default_factory=dict, compare=False)


@dataclass
class Timeline:
    events: list[Event]
    latency: float  # seconds: when the last result is ready
    target: str

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
    return isinstance(owner, Operation) and owner.name in ("onnx.Constant", "arith.constant")


def _label(op: Operation) -> dict[str, Any]:
    node = op.attributes.get("onnx.name")
    args: dict[str, Any] = {"op": op_type(op)}
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
        self.events.append(Event(op_type(op), track, start, duration, _label(op)))
        for r in op.results:
            self.ready[r] = start + duration

    def block(self, ops, on_device: bool) -> None:
        for op in ops:
            self.op(op, on_device)

    def op(self, op: Operation, on_device: bool) -> None:
        if op.name in _NOT_OPS or op.name == "onnx.Constant":
            t = self._ready(op.operands)
            for r in op.results:
                self.ready[r] = t
            return
        if op.name == "func.call":
            self.call(op)
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
            # Lowered code: the op names its engine, and lower-to-nc already asked the
            # cost model for its time.
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
        callee = self.funcs.get(op.properties["callee"].root_reference.data
                                if "callee" in op.properties
                                else op.attributes["callee"].root_reference.data)
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


def simulate(module: ModuleOp, target: str | TargetProfile = "inf1",
             cpu_flops_per_s: float = CPU_FLOPS_PER_S) -> Timeline:
    """The simulated timeline of one run of ``@main``."""
    profile = get_target(target)
    sim = _Simulator(module, profile, cpu_flops_per_s)
    main = sim.funcs.get("main")
    latency = 0.0
    if main is not None and main.body.blocks:
        block = main.body.block
        sim.block(block.ops, on_device=False)
        ret = block.last_op
        outs = list(ret.operands) if ret is not None else []
        latency = max([sim._ready(outs)] + [e.start + e.duration for e in sim.events])
    return Timeline(sim.events, latency, profile.name)


def to_chrome_trace(events: list[Event]) -> dict:
    """Chrome trace event format (opens in Perfetto / chrome://tracing): one process
    "NeuronCore 0" with a thread per engine, and the host CPU as a second process."""
    tids = {t: i for i, t in enumerate(TRACKS)}
    used = [t for t in TRACKS if any(e.track == t for e in events)]
    meta: list[dict] = [
        {"name": "process_name", "ph": "M", "pid": 0, "args": {"name": "NeuronCore 0"}},
        {"name": "process_name", "ph": "M", "pid": 1, "args": {"name": "Host CPU"}},
    ]
    for t in used:
        pid = 1 if t == "cpu" else 0
        meta.append({"name": "thread_name", "ph": "M", "pid": pid, "tid": tids[t],
                     "args": {"name": t}})
        meta.append({"name": "thread_sort_index", "ph": "M", "pid": pid, "tid": tids[t],
                     "args": {"sort_index": tids[t]}})
    trace = [{"name": e.name, "ph": "X", "ts": e.start * 1e6, "dur": e.duration * 1e6,
              "pid": 1 if e.track == "cpu" else 0, "tid": tids[e.track], "cat": e.track,
              "args": dict(e.args)} for e in events]
    return {"traceEvents": meta + trace, "displayTimeUnit": "ns"}
