"""``CompiledModel``: a module that went through the pipeline, with its target, ready to
run, simulate and save."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np
from xdsl.dialects.builtin import ModuleOp
from xdsl.dialects.func import FuncOp

from dialects.nc import ProgramOp

from ..analysis.report import PartitionReport, partition_report
from ..errors import CompileError, NeuronIRError, UsageError
from ..interp import Interpreter, io_names
from ..target import TargetProfile, get_target
from ..target.cost import ProgramPrice, price_program, stage_costs
from . import artifact
from .batching import BatchSpec, run_batched
from .timeline import CPU_FLOPS_PER_S, StageReport, Timeline, simulate, stage_report


class CompiledModel:
    """A module that went through the pipeline, with its target, ready to run."""

    def __init__(
        self,
        module: ModuleOp,
        target: str | TargetProfile = "inf1",
        pipeline: str | None = None,
        replicas: int = 1,
    ):
        if isinstance(replicas, bool) or not isinstance(replicas, int) or replicas < 1:
            raise CompileError(f"replicas must be a positive integer, not {replicas!r}")
        self.module = module
        self.replicas = replicas
        self.profile = get_target(target)
        self.target = self.profile.name
        self.pipeline = pipeline
        self._interpreter: Interpreter | None = None
        self._report: PartitionReport | None = None
        self._timeline: Timeline | None = None
        self._batching: BatchSpec | bool | None = None

    # Lazy, so that load() stays cheap and a model that is only saved never plans.
    @property
    def interpreter(self) -> Interpreter:
        if self._interpreter is None:
            self._interpreter = Interpreter(self.module)
        return self._interpreter

    # Read off @main's signature, so that naming the I/O never plans the module.
    @property
    def input_names(self) -> list[str]:
        return main_io_names(self.module)[0]

    @property
    def output_names(self) -> list[str]:
        return main_io_names(self.module)[1]

    @property
    def report(self) -> PartitionReport:
        if self._report is None:
            self._report = partition_report(self.module)
        return self._report

    @property
    def batching(self) -> BatchSpec | None:
        """The compiled batch and the batch axis of each input and output, recorded on
        @main by ``rebatch`` (None: compiled without ``batch``)."""
        if self._batching is None:
            self._batching = BatchSpec.from_module(self.module) or False
        return self._batching or None

    @property
    def batch(self) -> int:
        """Inferences per compiled run: the batch ``compile(batch=N)`` recorded, else
        that of the NeuronCore programs (1 unless lower-to-nc was told otherwise).
        Whether ``run`` batches is ``batching`` (None: it runs inputs as given)."""
        spec = self.batching
        if spec is not None:
            return spec.size
        for op in self.module.walk():
            if isinstance(op, ProgramOp):
                return op.batch.value.data
        return 1

    def run(self, inputs: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """Run on named inputs; with a compiled batch, any client batch, in chunks
        (:mod:`neuron_ir.runtime.batching`)."""
        if not isinstance(inputs, Mapping):
            raise UsageError(
                f"run takes a mapping from input name to array, not {type(inputs).__name__}"
            )
        spec = self.batching
        if spec is None:
            return self.interpreter.run(inputs)
        return run_batched(spec, self.interpreter.run, inputs)

    def timeline(self, cpu_flops_per_s: float | None = None, requests: int = 1) -> Timeline:
        """The simulated timeline of ``requests`` queued requests (see
        :mod:`neuron_ir.runtime.timeline`)."""
        rate = CPU_FLOPS_PER_S if cpu_flops_per_s is None else cpu_flops_per_s
        default = rate == CPU_FLOPS_PER_S and requests == 1
        if default and self._timeline is not None:
            return self._timeline
        result = simulate(self.module, self.profile, cpu_flops_per_s=rate, requests=requests)
        if default:
            self._timeline = result
        return result

    @property
    def simulated_latency(self) -> float:
        """Seconds one request (one compiled batch) takes end to end in the simulated
        timeline: host ops plus every stage of every NeuronCore program in turn."""
        return self.timeline().latency

    @property
    def simulated_throughput(self) -> float:
        """Inferences per second in steady state: ``batch x replicas / bottleneck``,
        where the bottleneck is the slowest pipeline stage (or the host's share of a
        request, when that is slower; one host core a replica is assumed)."""
        bottleneck = self.timeline().bottleneck
        return self.batch * self.replicas / bottleneck if bottleneck > 0 else 0.0

    @property
    def cores(self) -> int:
        """NeuronCores one replica uses (the stages of every program)."""
        return self.stage_report().cores

    def price(self, batch: int | None = None) -> list[ProgramPrice]:
        """Every NeuronCore program priced by the cost model at ``batch`` (default: as
        compiled) without recompiling, with placement as compiled (it does not depend
        on the batch)."""
        if batch is not None and (
            isinstance(batch, bool) or not isinstance(batch, int) or batch < 1
        ):
            raise CompileError(f"batch must be a positive integer, not {batch!r}")
        return [
            price_program(stage_costs(op, self.profile), self.profile, op.batch.value.data, batch)
            for op in self.module.walk()
            if isinstance(op, ProgramOp)
        ]

    def stage_report(self) -> StageReport:
        """Per stage: ops, FLOPs, weight MB, SBUF use, time; bottleneck and ideal."""
        return stage_report(self.module, self.profile, self.replicas)

    def save(self, path: str | os.PathLike) -> None:
        """One file: IR text plus weights in binary (:mod:`neuron_ir.runtime.artifact`)."""
        artifact.write(
            path,
            self.module,
            {
                "target": self.target,
                "pipeline": self.pipeline,
                "replicas": self.replicas,
                "batch": self.batch,
                "inputs": self.input_names,
                "outputs": self.output_names,
            },
        )

    @classmethod
    def from_artifact(cls, module: ModuleOp, meta: Mapping[str, Any], where: str) -> CompiledModel:
        """The model :func:`artifact.read` gave back (see ``neuron_ir.load``)."""
        try:
            return cls(module, meta["target"], meta.get("pipeline"), int(meta.get("replicas", 1)))
        except (KeyError, TypeError, ValueError):
            raise artifact.ArtifactError(
                "artifact metadata is corrupt (no target)", where=where
            ) from None
        except NeuronIRError as exc:
            raise artifact.ArtifactError(exc.message, where=where) from None

    def __repr__(self) -> str:
        return f"<CompiledModel target={self.target} subgraphs={len(self.report.subgraphs)}>"


def main_io_names(module: ModuleOp) -> tuple[list[str], list[str]]:
    """The input and output names of ``@main``."""
    for op in module.ops:
        if isinstance(op, FuncOp) and op.sym_name.data == "main":
            ftype = op.function_type
            return (
                io_names(op, op.arg_attrs, len(ftype.inputs.data), "arg"),
                io_names(op, op.res_attrs, len(ftype.outputs.data), "result"),
            )
    return [], []
