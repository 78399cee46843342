"""The public compile API: ONNX (or IR) in, a runnable, saveable ``CompiledModel`` out.

``compile`` imports the model and runs the named default pipeline
(:func:`DEFAULT_PIPELINE`), a flat ``neuron-opt -p`` string, so that what the API does
is exactly what ``neuron-opt -p "$(DEFAULT_PIPELINE)"`` does. Later stages
(``lower-to-nc``, ``batching``, ``pipeline-shard``) plug in by appending to
:data:`PIPELINE_STAGES`; nothing else here needs to change.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
from xdsl.dialects.builtin import ModuleOp
from xdsl.passes import PassPipeline
from xdsl.utils.exceptions import ArgSpecParseError, DiagnosticException, VerifyException

from .errors import CompileError, NeuronIRError, PassError
from .importer import import_model
from .interpreter import Interpreter
from .ir import make_context
from .report import PartitionReport, partition_report
from .target import TargetProfile, get_target, max_cores

InputShapes = Mapping[str, tuple[int, ...]] | str | None
Dims = Mapping[str, int] | str | None


def input_shapes_spec(input_shapes: InputShapes) -> str:
    """The ``input-shapes`` option text (``a:1x128,b:1x128``) of ``shape-inference``."""
    if input_shapes is None:
        return ""
    if isinstance(input_shapes, str):
        return input_shapes
    return ",".join(f"{name}:{'x'.join(str(int(d)) for d in shape)}"
                    for name, shape in input_shapes.items())


def _dims_option(dims: Dims) -> str:
    if dims is None:
        return ""
    if isinstance(dims, str):
        return dims
    return ",".join(f"{name}:{int(size)}" for name, size in dims.items())


def _quoted(value: str) -> str:
    if '"' in value:
        raise PassError(f"pipeline option value must not contain '\"': {value!r}")
    return f'"{value}"'


def _shape_inference(target: str, input_shapes: InputShapes, dims: Dims) -> str:
    opts = []
    shapes, dim_text = input_shapes_spec(input_shapes), _dims_option(dims)
    if shapes:
        opts.append(f"input-shapes={_quoted(shapes)}")
    if dim_text:
        opts.append(f"dims={_quoted(dim_text)}")
    return "shape-inference" + (f"{{{' '.join(opts)}}}" if opts else "")


# One entry a stage, in order; each turns the compile options into one pass spec.
# Later stages (batching, pipeline-shard) go in here, in order.
PIPELINE_STAGES: list[Callable[[str, InputShapes, Dims], str]] = [
    _shape_inference,
    lambda target, input_shapes, dims: "lower-control-flow",
    lambda target, input_shapes, dims: f"partition{{target={target}}}",
]


def _deployment(batch: int, cores: int | str, allow_hbm_weights: bool) -> list[str]:
    """lower-to-nc, then (for several cores) pipeline-shard, then placement and
    estimation per stage: the NeuronCore half of the pipeline."""
    passes = ["lower-to-nc" + (f"{{batch={int(batch)}}}" if batch != 1 else "")]
    if cores != 1:
        opts = [f"cores={cores}"] + (["allow_hbm_weights=true"] if allow_hbm_weights else [])
        passes.append(f"pipeline-shard{{{' '.join(opts)}}}")
    return [*passes, "nc-place-weights", "nc-estimate"]


def DEFAULT_PIPELINE(target: str = "inf1", input_shapes: InputShapes = None,  # noqa: N802
                     dims: Dims = None, batch: int = 1, cores: int | str = 1,
                     allow_hbm_weights: bool = False) -> str:
    """The default pipeline as the flat pass string ``neuron-opt -p`` accepts."""
    return ",".join([*(stage(target, input_shapes, dims) for stage in PIPELINE_STAGES),
                     *_deployment(batch, cores, allow_hbm_weights)])


def run_pipeline(module: ModuleOp, pipeline: str) -> ModuleOp:
    """Run ``pipeline`` on ``module`` in place, verifying after every pass."""
    from passes import available_passes

    def verify(_prev: Any, mod: ModuleOp, pass_: Any) -> None:
        try:
            mod.verify()
        except VerifyException as exc:
            name = getattr(pass_, "name", "?")
            raise PassError(f"IR fails to verify after pass '{name}': "
                            f"{str(exc).strip().splitlines()[0]}") from None

    try:
        spec = PassPipeline.parse_spec(available_passes(), pipeline, verify)
    except ArgSpecParseError as exc:  # a BaseException in xDSL 0.74
        raise PassError(f"bad pipeline '{pipeline}': {exc}") from None
    except (ValueError, KeyError) as exc:
        raise PassError(f"bad pipeline '{pipeline}': {exc}") from None
    try:
        spec.apply(make_context(), module)
    except NeuronIRError:
        raise
    except (DiagnosticException, VerifyException) as exc:
        raise PassError(" ".join(str(exc).split())) from None
    return module


class CompiledModel:
    """A module that went through the pipeline, with its target, ready to run."""

    def __init__(self, module: ModuleOp, target: str | TargetProfile = "inf1",
                 pipeline: str | None = None, replicas: int = 1):
        if not isinstance(replicas, int) or replicas < 1:
            raise CompileError(f"replicas must be a positive integer, not {replicas!r}")
        self.module = module
        self.replicas = replicas
        self.profile = get_target(target)
        self.target = self.profile.name
        self.pipeline = pipeline
        self._interpreter: Interpreter | None = None
        self._report: PartitionReport | None = None
        self._timeline = None

    # Lazy, so that load() stays cheap and a model that is only saved never plans.
    @property
    def interpreter(self) -> Interpreter:
        if self._interpreter is None:
            self._interpreter = Interpreter(self.module)
        return self._interpreter

    # Read off @main's signature, so that naming the I/O never plans the module.
    @property
    def input_names(self) -> list[str]:
        return _io_names(self.module)[0]

    @property
    def output_names(self) -> list[str]:
        return _io_names(self.module)[1]

    @property
    def report(self) -> PartitionReport:
        if self._report is None:
            self._report = partition_report(self.module)
        return self._report

    def run(self, inputs: Mapping[str, Any]) -> dict[str, np.ndarray]:
        return self.interpreter.run(inputs)

    def timeline(self, cpu_flops_per_s: float | None = None, requests: int = 1):
        """The simulated timeline of ``requests`` queued requests (see
        :mod:`neuron_ir.timeline`)."""
        from .timeline import CPU_FLOPS_PER_S, simulate

        rate = CPU_FLOPS_PER_S if cpu_flops_per_s is None else cpu_flops_per_s
        default = rate == CPU_FLOPS_PER_S and requests == 1
        if default and self._timeline is not None:
            return self._timeline
        result = simulate(self.module, self.profile, cpu_flops_per_s=rate,
                          requests=requests)
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
        timeline = self.timeline()
        bottleneck = timeline.bottleneck
        return self.batch * self.replicas / bottleneck if bottleneck > 0 else 0.0

    @property
    def batch(self) -> int:
        """Inferences per request: the compiled batch of the NeuronCore programs."""
        from dialects.nc import ProgramOp

        for op in self.module.walk():
            if isinstance(op, ProgramOp):
                return op.batch.value.data
        return 1

    @property
    def cores(self) -> int:
        """NeuronCores one replica uses (the stages of every program)."""
        return self.stage_report().cores

    def price(self, batch: int | None = None) -> list:
        """Every NeuronCore program priced by the cost model at ``batch`` (default: as
        compiled) without recompiling: ``neuron_ir.cost.ProgramPrice`` objects, with
        placement as compiled (it does not depend on the batch)."""
        from dialects.nc import ProgramOp

        from .cost import price_program, stage_costs

        if batch is not None and (not isinstance(batch, int) or batch < 1):
            raise CompileError(f"batch must be a positive integer, not {batch!r}")
        return [price_program(stage_costs(op, self.profile), self.profile,
                              op.batch.value.data, batch)
                for op in self.module.walk() if isinstance(op, ProgramOp)]

    def stage_report(self):
        """Per stage: ops, FLOPs, weight MB, SBUF use, time; bottleneck and ideal
        (:class:`neuron_ir.timeline.StageReport`)."""
        from .timeline import stage_report

        return stage_report(self.module, self.profile, self.replicas)

    def save(self, path: str) -> None:
        from .artifact import save

        save(self, path)

    def __repr__(self) -> str:
        return f"<CompiledModel target={self.target} subgraphs={len(self.report.subgraphs)}>"


def _io_names(module: ModuleOp) -> tuple[list[str], list[str]]:
    from xdsl.dialects.func import FuncOp

    from .interpreter import _names

    for op in module.ops:
        if isinstance(op, FuncOp) and op.sym_name.data == "main":
            ftype = op.function_type
            return (_names(op, op.arg_attrs, len(ftype.inputs.data), "arg"),
                    _names(op, op.res_attrs, len(ftype.outputs.data), "result"))
    return [], []


def _import(src: Any) -> ModuleOp:
    if isinstance(src, ModuleOp):
        # Never mutate the caller's module: the passes rewrite in place.
        return src.clone()
    return import_model(src)


def compile(src: Any, target: str | TargetProfile = "inf1",  # noqa: A001
            input_shapes: InputShapes = None, dims: Dims = None, *,
            pipeline: str | None = None, batch: int = 1, cores: int | str = 1,
            replicas: int = 1, allow_hbm_weights: bool = False) -> CompiledModel:
    """Import ``src`` (path, bytes, ``onnx.ModelProto`` or ``ModuleOp``) and run the
    default pipeline (or ``pipeline``, a flat pass string) for ``target``.

    ``cores``: pipeline stages (one NeuronCore each) per NeuronCore program, or
    ``"auto"``, the fewest whose SBUFs cache every weight read whole
    (``pipeline-shard``). ``replicas``: data-parallel copies of the whole (pipelined)
    program on ``replicas x cores`` cores; throughput scales with it.
    """
    profile = get_target(target)
    if not (cores == "auto" or (isinstance(cores, int) and cores >= 1)):
        raise CompileError(f"cores must be a positive integer or 'auto', not {cores!r}")
    if not isinstance(replicas, int) or replicas < 1:
        raise CompileError(f"replicas must be a positive integer, not {replicas!r}")
    if not isinstance(batch, int) or batch < 1:
        raise CompileError(f"batch must be a positive integer, not {batch!r}")
    spec = pipeline if pipeline is not None else DEFAULT_PIPELINE(
        profile.name, input_shapes, dims, batch, cores, allow_hbm_weights)
    module = _import(src)
    run_pipeline(module, spec)
    model = CompiledModel(module, profile, spec, replicas)
    used = model.cores * replicas
    limit = max_cores(profile)
    if used > limit:
        raise CompileError(f"{replicas} replica(s) of {model.cores} core(s) need {used} "
                           f"NeuronCores but {profile.name} has at most {limit}")
    return model


def load(path: str) -> CompiledModel:
    """A saved artifact, runnable without recompiling."""
    from .artifact import load as _load

    return _load(path)
