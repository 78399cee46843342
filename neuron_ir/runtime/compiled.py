"""``CompiledModel``: a module that went through the pipeline, with its target, ready to
run, simulate and save."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np
from xdsl.dialects.builtin import ModuleOp
from xdsl.dialects.func import FuncOp

from ..analysis.report import PartitionReport, partition_report
from ..errors import NeuronIRError
from ..interp import Interpreter, io_names
from ..target import TargetProfile, get_target
from . import artifact
from .timeline import CPU_FLOPS_PER_S, Timeline, simulate


class CompiledModel:
    """A module that went through the pipeline, with its target, ready to run."""

    def __init__(self, module: ModuleOp, target: str | TargetProfile = "inf1",
                 pipeline: str | None = None):
        self.module = module
        self.profile = get_target(target)
        self.target = self.profile.name
        self.pipeline = pipeline
        self._interpreter: Interpreter | None = None
        self._report: PartitionReport | None = None
        self._timeline: Timeline | None = None

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

    def run(self, inputs: Mapping[str, Any]) -> dict[str, np.ndarray]:
        return self.interpreter.run(inputs)

    def timeline(self, cpu_flops_per_s: float | None = None) -> Timeline:
        """The simulated timeline (see :mod:`neuron_ir.runtime.timeline`)."""
        rate = CPU_FLOPS_PER_S if cpu_flops_per_s is None else cpu_flops_per_s
        if rate == CPU_FLOPS_PER_S and self._timeline is not None:
            return self._timeline
        result = simulate(self.module, self.profile, cpu_flops_per_s=rate)
        if rate == CPU_FLOPS_PER_S:
            self._timeline = result
        return result

    @property
    def simulated_latency(self) -> float:
        """Seconds one inference takes in the simulated timeline."""
        return self.timeline().latency

    def save(self, path: str | os.PathLike) -> None:
        """One file: IR text plus weights in binary (:mod:`neuron_ir.runtime.artifact`)."""
        artifact.write(path, self.module, {
            "target": self.target,
            "pipeline": self.pipeline,
            "inputs": self.input_names,
            "outputs": self.output_names,
        })

    @classmethod
    def load(cls, path: str | os.PathLike) -> CompiledModel:
        """A saved artifact, runnable without recompiling."""
        module, meta = artifact.read(path)
        try:
            return cls(module, meta["target"], meta.get("pipeline"))
        except (KeyError, TypeError):
            raise artifact.ArtifactError("artifact metadata is corrupt (no target)",
                                         where=os.fspath(path)) from None
        except NeuronIRError as exc:
            raise artifact.ArtifactError(exc.message, where=os.fspath(path)) from None

    def __repr__(self) -> str:
        return f"<CompiledModel target={self.target} subgraphs={len(self.report.subgraphs)}>"


def main_io_names(module: ModuleOp) -> tuple[list[str], list[str]]:
    """The input and output names of ``@main``."""
    for op in module.ops:
        if isinstance(op, FuncOp) and op.sym_name.data == "main":
            ftype = op.function_type
            return (io_names(op, op.arg_attrs, len(ftype.inputs.data), "arg"),
                    io_names(op, op.res_attrs, len(ftype.outputs.data), "result"))
    return [], []
