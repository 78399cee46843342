"""The deployment planner: every (batch, cores per copy, copies) that fits an instance,
priced by the one cost model, its Pareto frontier, and the best under a latency budget.

A plan compiles the expensive front of the pipeline once (import, shape inference,
control flow, partition, lower-to-nc), then for each core count runs only
``pipeline-shard`` + placement + estimation on a copy, and prices every batch with
:meth:`CompiledModel.price` (no recompile): a point costs microseconds, a core count
well under a second even for BERT-base.

Assumptions, beyond the cost model's own:
- host (CPU-placed) work scales linearly with the batch and runs on one host core per
  copy; a copy's steady-state rate is one batch per max(slowest stage, host time);
- copies are independent (data parallel), so throughput adds up and latency does not
  change with the number of copies;
- core counts tried: 1 to 8, then powers of two and the instance's total, plus the
  fewest cores that cache every weight (``cores="auto"``), so the frontier is dense
  where it bends and the sweep stays fast on 64-core instances.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from xdsl.dialects.builtin import ModuleOp

from dialects.nc import ProgramOp
from passes.estimate import EstimatePass
from passes.pipeline import Dims, InputShapes, default_pipeline, pipeline_text, run_passes
from passes.pipeline_shard import PipelineShardPass
from passes.place_weights import PlaceWeightsPass

from .compiler import _import
from .errors import NeuronIRError
from .runtime.compiled import CompiledModel
from .target import TargetProfile
from .target.cost import StageCost, price_program, stage_costs
from .target.profiles import Instance, get_instance

DEFAULT_BATCHES = (1, 2, 4, 8, 16, 32, 64)
MiB = 1024 * 1024


class PlanError(NeuronIRError):
    """No deployment of the model fits the instance, or a bad plan option."""


@dataclass(frozen=True)
class PlanPoint:
    batch: int
    cores: int  # NeuronCores per copy (pipeline stages)
    replicas: int  # copies
    latency: float  # seconds for one batch end to end
    throughput: float  # inferences per second, all copies
    sbuf_use: float  # fullest core's SBUF (weights + activations, at most all) / SBUF size
    spill_bytes: float  # activation bytes through HBM per batch
    hbm_weight_bytes: float  # whole-read weights streamed from HBM per batch

    @property
    def total_cores(self) -> int:
        return self.cores * self.replicas


@dataclass
class Plan:
    instance: Instance
    points: list[PlanPoint]
    latency_budget: float | None
    skipped: dict[int, str] = field(default_factory=dict)  # cores -> why not

    @property
    def frontier(self) -> list[PlanPoint]:
        """Points no other point beats on both latency and throughput, fastest first."""
        ordered = sorted(self.points, key=lambda p: (p.latency, -p.throughput, p.total_cores))
        out: list[PlanPoint] = []
        best = -1.0
        for p in ordered:
            if p.throughput > best:
                out.append(p)
                best = p.throughput
        return out

    @property
    def choice(self) -> PlanPoint | None:
        """The highest throughput within the latency budget (ties: lower latency, then
        fewer cores); None if nothing meets the budget."""
        fits = [
            p
            for p in self.points
            if self.latency_budget is None or p.latency <= self.latency_budget
        ]
        if not fits:
            return None
        return max(fits, key=lambda p: (p.throughput, -p.latency, -p.total_cores))

    def command(self, model: str, point: PlanPoint, extra: Sequence[str] = ()) -> str:
        """The ``neuron-compile`` line that builds ``point``."""
        stem = model.rsplit("/", 1)[-1].rsplit(".", 1)[0]
        parts = [
            "neuron-compile",
            model,
            "--target",
            self.instance.target,
            *extra,
            "--batch",
            str(point.batch),
            "--cores",
            str(point.cores),
            "--replicas",
            str(point.replicas),
            "-o",
            f"{stem}.nir",
        ]
        return " ".join(parts)

    def table(self) -> str:
        frontier = set(self.frontier)
        choice = self.choice
        lines = [
            f"{'batch':>5} {'cores':>5} {'copies':>6} {'latency ms':>10} "
            f"{'inf/s':>10} {'SBUF use':>8} {'spill MiB':>9}  "
        ]
        for p in sorted(self.points, key=lambda p: (p.cores, p.replicas, p.batch)):
            mark = ("* chosen" if p == choice else "frontier") if p in frontier else ""
            lines.append(
                f"{p.batch:>5} {p.cores:>5} {p.replicas:>6} {p.latency * 1e3:>10.3f} "
                f"{p.throughput:>10.1f} {p.sbuf_use:>8.0%} "
                f"{p.spill_bytes / MiB:>9.2f}  {mark}".rstrip()
            )
        return "\n".join(lines)


def _core_counts(total: int) -> list[int]:
    counts = set(range(1, min(8, total) + 1)) | {total}
    p = 16
    while p < total:
        counts.add(p)
        p *= 2
    return sorted(counts)


@dataclass(frozen=True)
class _Priced:
    """What pricing one compiled core count at any batch needs, read off its IR once."""

    programs: list[tuple[list[StageCost], int]]  # (stage costs, compiled batch)
    profile: TargetProfile
    cores: int
    compiled_batch: int
    host_time: float  # seconds of CPU-placed work per compiled batch

    @classmethod
    def of(cls, model: CompiledModel) -> _Priced:
        programs = [
            (stage_costs(op, model.profile), op.batch.value.data)
            for op in model.module.walk()
            if isinstance(op, ProgramOp)
        ]
        host = model.timeline().busy().get("cpu", 0.0)
        return cls(programs, model.profile, model.cores, model.batch, host)


def _points(priced: _Priced, batch: int, replicas: range) -> list[PlanPoint]:
    """One batch priced once, then every number of copies (they share the price)."""
    prices = [
        price_program(costs, priced.profile, compiled, batch) for costs, compiled in priced.programs
    ]
    sbuf = priced.profile.sbuf_bytes
    device_latency = sum(p.latency for p in prices)
    host = priced.host_time * batch / priced.compiled_batch
    bottleneck = max([host, *(p.bottleneck for p in prices)])
    stages = [s for p in prices for s in p.stages]
    # Activations fill what the cached weights leave; beyond that they spill.
    sbuf_use = max(
        [min(1.0, (s.sbuf_weight_bytes + s.activation_bytes) / sbuf) for s in stages],
        default=0.0,
    )
    spill = sum(s.spill_bytes for s in stages)
    hbm = sum(s.hbm_weight_bytes for s in stages)
    return [
        PlanPoint(
            batch=batch,
            cores=priced.cores,
            replicas=r,
            latency=device_latency + host,
            throughput=batch * r / bottleneck if bottleneck > 0 else 0.0,
            sbuf_use=sbuf_use,
            spill_bytes=spill,
            hbm_weight_bytes=hbm,
        )
        for r in replicas
    ]


def plan(
    src: Any,
    instance: str | Instance,
    input_shapes: InputShapes = None,
    dims: Dims = None,
    *,
    batches: Sequence[int] = DEFAULT_BATCHES,
    latency_budget: float | None = None,
    allow_hbm_weights: bool = False,
    progress: Callable[[str], None] | None = None,
) -> Plan:
    """Sweep batch x cores x copies for ``instance`` (``"inf1.6xlarge"``, ...)."""
    inst = get_instance(instance) if isinstance(instance, str) else instance
    if not batches or any(isinstance(b, bool) or not isinstance(b, int) or b < 1 for b in batches):
        raise PlanError(f"batches must be positive integers, not {list(batches)!r}")
    if latency_budget is not None and not latency_budget > 0:
        raise PlanError(f"the latency budget must be positive, not {latency_budget!r}")
    say = progress or (lambda _msg: None)
    front = default_pipeline(inst.target, input_shapes, dims)[:-2]  # through lower-to-nc
    say(f"compiling the front of the pipeline for {inst.target}")
    base = _import(src)
    run_passes(base, front)
    counts = _core_counts(inst.cores)
    result = Plan(inst, [], latency_budget)
    for n in counts:
        say(f"pricing {n} core(s) a copy")
        module: ModuleOp = base.clone()
        tail = (
            (PipelineShardPass(cores=n, allow_hbm_weights=allow_hbm_weights),) if n > 1 else ()
        ) + (PlaceWeightsPass(), EstimatePass())
        try:
            run_passes(module, tail)
        except NeuronIRError as exc:
            result.skipped[n] = exc.message if hasattr(exc, "message") else str(exc)
            continue
        model = CompiledModel(module, inst.target, pipeline_text((*front, *tail)))
        if model.cores != n:  # fewer ops than cores
            result.skipped[n] = f"the program has {model.cores} stage(s)"
            continue
        priced = _Priced.of(model)
        copies = range(1, inst.cores // n + 1)
        for batch in batches:
            result.points.extend(_points(priced, batch, copies))
    if not result.points:
        reasons = "; ".join(f"{n} core(s): {why}" for n, why in result.skipped.items())
        raise PlanError(f"no deployment fits {inst.name}: {reasons}")
    return result


def draw(result: Plan, path: str, title: str = "") -> None:
    """Latency against throughput, the frontier highlighted and the choice marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5.5), dpi=120)
    pts = result.points
    sc = ax.scatter(
        [p.throughput for p in pts],
        [p.latency * 1e3 for p in pts],
        c=[p.cores for p in pts],
        cmap="viridis",
        s=18,
        alpha=0.6,
        label="deployments",
    )
    fig.colorbar(sc, ax=ax, label="NeuronCores per copy (pipeline stages)")
    front = result.frontier
    ax.plot(
        [p.throughput for p in front],
        [p.latency * 1e3 for p in front],
        "-o",
        color="tab:red",
        ms=4,
        lw=1.5,
        label="Pareto frontier",
    )
    if result.latency_budget is not None:
        ax.axhline(
            result.latency_budget * 1e3,
            color="gray",
            ls="--",
            lw=1,
            label=f"latency budget {result.latency_budget * 1e3:g} ms",
        )
    choice = result.choice
    if choice is not None:
        ax.scatter(
            [choice.throughput],
            [choice.latency * 1e3],
            marker="*",
            s=260,
            color="gold",
            edgecolor="black",
            zorder=5,
            label=(f"chosen: batch {choice.batch}, {choice.cores} core(s) x {choice.replicas}"),
        )
    ax.set_xlabel("throughput (inferences / s, all copies)")
    ax.set_ylabel("latency of one batch (ms)")
    ax.set_yscale("log")
    from matplotlib.ticker import ScalarFormatter

    ax.yaxis.set_major_formatter(ScalarFormatter())
    ax.yaxis.set_minor_formatter(ScalarFormatter())
    ax.set_title(
        title or f"deployments on {result.instance.name} ({result.instance.cores} NeuronCores)"
    )
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
