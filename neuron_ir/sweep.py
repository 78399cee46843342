"""The batch sweep: compile a model for several batch sizes and compare what the one cost
model says about each (``neuron_ir.sweep_batch``; ``neuron-sweep-batch`` on the command
line).

Per batch N: simulated latency of one compiled batch, throughput (inferences per
second, steady state), the SBUF held by cached weights, the activation working set,
and the bytes spilled to HBM. The best throughput is marked, among the batches whose
latency is within ``latency_bound`` when one is given.

Every figure comes from the compiled model (:func:`memory_figures` is the one place
that reads the memory figures; see there for what it reads), never from a second model.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .compiler import CompiledModel, Dims, InputShapes, _import, check_batch, compile
from .errors import BatchError
from .target import TargetProfile, get_target

DEFAULT_BATCHES = (1, 2, 4, 8, 16, 32, 64)


@dataclass(frozen=True)
class Memory:
    """SBUF and HBM figures of one compiled model, in bytes (None: not priced)."""

    sbuf_weight_bytes: int
    hbm_weight_bytes: int
    activation_bytes: float | None = None
    spill_bytes: float | None = None


def memory_figures(model: CompiledModel) -> Memory:
    """Weights by placement, the activation working set and the spill, summed over the
    stages of the batch-aware cost model's report (``CompiledModel.stage_report``)."""
    rows = model.stage_report().rows
    total_weights = sum(r.weight_bytes for r in rows)
    sbuf = sum(r.sbuf_weight_bytes for r in rows)
    return Memory(
        sbuf,
        total_weights - sbuf,
        sum(r.activation_bytes for r in rows),
        sum(r.spill_bytes for r in rows),
    )


def simulated_throughput(model: CompiledModel, batch: int) -> float:
    """Inferences per second in steady state: the model's own figure when it has one
    (``CompiledModel.simulated_throughput``, pipelined stages and replicas counted),
    else one compiled batch per simulated latency (a single core, nothing overlapped)."""
    own = getattr(type(model), "simulated_throughput", None)
    if own is not None:
        return float(model.simulated_throughput)  # type: ignore[attr-defined]
    latency = model.simulated_latency
    return batch / latency if latency > 0 else 0.0


@dataclass
class BatchPoint:
    batch: int
    latency: float  # seconds per compiled batch
    throughput: float  # inferences per second
    memory: Memory

    @property
    def weight_bytes_per_inference(self) -> float:
        """HBM weight traffic one inference pays (HBM weights are read once a batch)."""
        return self.memory.hbm_weight_bytes / self.batch


@dataclass
class BatchSweep:
    target: str
    points: list[BatchPoint]
    latency_bound: float | None = None
    best: int | None = None  # index into points
    notes: list[str] = field(default_factory=list)

    @property
    def best_batch(self) -> int | None:
        return None if self.best is None else self.points[self.best].batch

    def text(self) -> str:
        bound = (
            f", latency bound {self.latency_bound * 1e3:.3g} ms"
            if self.latency_bound is not None
            else ""
        )
        lines = [
            f"batch sweep ({self.target}{bound}):",
            f"  {'batch':>5}  {'latency ms':>10}  {'inf/s':>10}  {'SBUF weights':>12}  "
            f"{'HBM weights':>11}  {'activations':>11}  {'spill':>9}",
        ]
        for k, p in enumerate(self.points):
            mark = "  <- best" if k == self.best else ""
            if self.latency_bound is not None and p.latency > self.latency_bound:
                mark = "  (over the bound)"
            m = p.memory
            lines.append(
                f"  {p.batch:>5}  {p.latency * 1e3:>10.4f}  {p.throughput:>10.1f}  "
                f"{_mb(m.sbuf_weight_bytes):>12}  {_mb(m.hbm_weight_bytes):>11}  "
                f"{_mb(m.activation_bytes):>11}  {_mb(m.spill_bytes):>9}{mark}"
            )
        if self.best is None:
            lines.append("  no batch meets the latency bound")
        lines.extend(f"  note: {n}" for n in self.notes)
        return "\n".join(lines) + "\n"


def _mb(value: float | None) -> str:
    return "n/a" if value is None else f"{value / 2**20:.2f} MiB"


def sweep_batch(
    src: Any,
    target: str | TargetProfile = "inf1",
    batches: Iterable[int] = DEFAULT_BATCHES,
    *,
    latency_bound: float | None = None,
    input_shapes: InputShapes = None,
    dims: Dims = None,
    batch_dim: str | None = None,
    compile_options: Mapping[str, Any] | None = None,
) -> BatchSweep:
    """Compile ``src`` for each batch in ``batches`` and price each with the cost model.

    ``latency_bound`` (seconds per compiled batch) restricts the best to the batches
    whose simulated latency is within it. The model is imported once."""
    profile = get_target(target)
    sizes = sorted({check_batch(b) for b in batches})
    if not sizes:
        raise BatchError("batches must name at least one batch size")
    if latency_bound is not None and not latency_bound > 0:
        raise BatchError(
            f"latency_bound must be a positive number of seconds, not {latency_bound!r}"
        )
    module = _import(src)
    points = []
    for batch in sizes:
        model = compile(
            module,
            profile,
            input_shapes,
            dims,
            batch=batch,
            batch_dim=batch_dim,
            **dict(compile_options or {}),
        )
        points.append(
            BatchPoint(
                batch,
                model.simulated_latency,
                simulated_throughput(model, batch),
                memory_figures(model),
            )
        )
    eligible = [
        k for k, p in enumerate(points) if latency_bound is None or p.latency <= latency_bound
    ]
    best = max(eligible, key=lambda k: points[k].throughput, default=None)
    return BatchSweep(profile.name, points, latency_bound, best)


__all__ = [
    "BatchPoint",
    "BatchSweep",
    "DEFAULT_BATCHES",
    "Memory",
    "memory_figures",
    "simulated_throughput",
    "sweep_batch",
]
