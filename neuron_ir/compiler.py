"""The public compile API: ONNX (or IR) in, a runnable, saveable ``CompiledModel`` out.

``compile`` imports the model and runs the named default pipeline
(:func:`DEFAULT_PIPELINE`), a flat ``neuron-opt -p`` string, so that what the API does
is exactly what ``neuron-opt -p "$(DEFAULT_PIPELINE)"`` does. Later stages
(``lower-to-nc``, ``batching``, ``pipeline-shard``) plug in by appending to
:data:`PIPELINE_STAGES`; nothing else here needs to change.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from xdsl.dialects.builtin import IntegerAttr, IntegerType, ModuleOp
from xdsl.passes import PassPipeline
from xdsl.utils.exceptions import ArgSpecParseError, DiagnosticException, VerifyException

from .errors import BatchError, NeuronIRError, PassError
from .importer import import_model
from .interpreter import Interpreter
from .ir import make_context
from .report import PartitionReport, partition_report
from .target import TargetProfile, get_target

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


@dataclass(frozen=True)
class PipelineOptions:
    """The compile options the pipeline stages turn into pass specs. A deployment
    option (batch, cores, buckets) adds a field here and reads it in its stage."""

    target: str = "inf1"
    input_shapes: InputShapes = None
    dims: Dims = None
    batch: int | None = None
    """Compiled batch size; None compiles the model as it is, without a batch axis."""
    batch_symbol: str | None = None
    """The symbol of the batch axis after ``rebatch`` (``passes.rebatch.plan_batch``)."""
    batch_dim: str | None = None
    """The batch symbol the user named, if any."""


def _dims_with_batch(o: PipelineOptions) -> Dims:
    """The user's ``dims`` plus the batch symbol pinned to the compiled batch."""
    if o.batch is None or not o.batch_symbol:
        return o.dims
    text = _dims_option(o.dims)
    pinned = {}
    for item in (p.strip() for p in text.replace(";", ",").split(",")):
        name, sep, value = item.rpartition(":")
        if sep and name:
            pinned[name] = value
    if o.batch_symbol in pinned and pinned[o.batch_symbol].strip() != str(o.batch):
        raise BatchError(f"dims pins the batch symbol '{o.batch_symbol}' to "
                         f"{pinned[o.batch_symbol]}, but batch={o.batch}")
    pinned[o.batch_symbol] = str(o.batch)
    return ",".join(f"{k}:{v}" for k, v in pinned.items())


def _rebatch(o: PipelineOptions) -> str:
    if o.batch is None:
        return ""
    symbol = f" batch-dim={_quoted(o.batch_dim)}" if o.batch_dim else ""
    return f"rebatch{{batch={o.batch}{symbol}}}"


def _shape_inference(o: PipelineOptions) -> str:
    opts = []
    shapes, dim_text = input_shapes_spec(o.input_shapes), _dims_option(_dims_with_batch(o))
    if shapes:
        opts.append(f"input-shapes={_quoted(shapes)}")
    if dim_text:
        opts.append(f"dims={_quoted(dim_text)}")
    return "shape-inference" + (f"{{{' '.join(opts)}}}" if opts else "")


def _lower_to_nc(o: PipelineOptions) -> str:
    return "lower-to-nc" if o.batch is None else f"lower-to-nc{{batch={o.batch}}}"


# One entry a stage, in order; each turns the compile options into one pass spec (or
# "" to leave the stage out). Later stages (pipeline-shard, buckets) go in here.
PIPELINE_STAGES: list[Callable[[PipelineOptions], str]] = [
    _rebatch,
    _shape_inference,
    lambda o: "lower-control-flow",
    lambda o: f"partition{{target={o.target}}}",
    _lower_to_nc,
]


def DEFAULT_PIPELINE(target: str = "inf1", input_shapes: InputShapes = None,  # noqa: N802
                     dims: Dims = None, batch: int | None = None,
                     batch_symbol: str | None = None, batch_dim: str | None = None) -> str:
    """The default pipeline as the flat pass string ``neuron-opt -p`` accepts."""
    options = PipelineOptions(target, input_shapes, dims, batch, batch_symbol, batch_dim)
    return ",".join(spec for stage in PIPELINE_STAGES if (spec := stage(options)))


def check_batch(batch: Any) -> int:
    """``batch`` as a positive int, or a BatchError."""
    if isinstance(batch, bool) or not isinstance(batch, int | np.integer) or batch < 1:
        raise BatchError(f"batch must be a positive integer, not {batch!r}")
    return int(batch)


def batch_symbol_of(module: ModuleOp, batch_dim: str | None) -> str:
    """The symbol ``@main``'s batch axis has after ``rebatch`` (or a BatchError)."""
    from passes.rebatch import main_func, plan_batch

    return plan_batch(main_func(module), batch_dim).symbol


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
                 pipeline: str | None = None):
        self.module = module
        self.profile = get_target(target)
        self.target = self.profile.name
        self.pipeline = pipeline
        self._interpreter: Interpreter | None = None
        self._report: PartitionReport | None = None
        self._timeline = None
        self._batching = None

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

    @property
    def batching(self):
        """The batch spec (``neuron_ir.runtime.batching.BatchSpec``) recorded on @main
        by ``rebatch``, or None for a model compiled without ``batch``."""
        if self._batching is None:
            from .runtime.batching import BatchSpec

            self._batching = BatchSpec.from_module(self.module) or False
        return self._batching or None

    @property
    def batch(self) -> int | None:
        """The compiled batch size (None: compiled without ``batch``)."""
        spec = self.batching
        return spec.size if spec is not None else None

    def run(self, inputs: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """Run on named inputs; with a compiled batch, any client batch (see
        :mod:`neuron_ir.runtime.batching`)."""
        spec = self.batching
        if spec is None:
            return self.interpreter.run(inputs)
        from .runtime.batching import run_batched

        return run_batched(spec, self.interpreter.run, inputs)

    def timeline(self, cpu_flops_per_s: float | None = None):
        """The simulated timeline (see :mod:`neuron_ir.timeline`)."""
        from .timeline import CPU_FLOPS_PER_S, simulate

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
            batch: int | None = None, batch_dim: str | None = None,
            dynamic_batching: bool = True,
            pipeline: str | None = None) -> CompiledModel:
    """Import ``src`` (path, bytes, ``onnx.ModelProto`` or ``ModuleOp``) and run the
    default pipeline (or ``pipeline``, a flat pass string) for ``target``.

    ``batch=N`` compiles for batch N: the batch axis is the input symbol ``batch_dim``
    names, or one found (``batch``, ``batch_size``, ``N``, unnamed leading dims), or a
    static leading dim of 1, which ``rebatch`` rewrites and proves. ``run`` then takes
    any client batch, in chunks of N (``dynamic_batching=False``: exactly N)."""
    profile = get_target(target)
    if batch is not None:
        batch = check_batch(batch)
    elif batch_dim is not None:
        raise BatchError(f"batch_dim='{batch_dim}' needs batch=N")
    module = _import(src)
    symbol = batch_symbol_of(module, batch_dim) if batch is not None else None
    spec = pipeline if pipeline is not None else DEFAULT_PIPELINE(
        profile.name, input_shapes, dims, batch, symbol, batch_dim)
    run_pipeline(module, spec)
    if batch is not None:
        _check_device_memory(module, profile, batch)
    if not dynamic_batching:
        from passes.rebatch import main_func

        from .report import DYNAMIC_BATCHING_ATTR

        main_func(module).attributes[DYNAMIC_BATCHING_ATTR] = IntegerAttr(0, IntegerType(1))
    return CompiledModel(module, profile, spec)


def _check_device_memory(module: ModuleOp, profile: TargetProfile, batch: int) -> None:
    """A BatchError when even the floor of the device memory the batch needs (weights +
    the largest op's tensors, :func:`neuron_ir.report.device_memory_floor`) exceeds one
    chip's memory; names the op and the largest batch the floor allows."""
    from .report import device_memory_floor

    floor = device_memory_floor(module)
    capacity = profile.dram_bytes_per_chip
    if floor.total <= capacity:
        return
    gib = 2 ** 30
    per_sample = floor.op_bytes / batch
    fits = int((capacity - floor.weight_bytes) // per_sample) if per_sample else 0
    hint = (f"the largest batch this allows is about {fits}" if fits >= 1 else
            "it does not fit even at batch 1")
    raise BatchError(f"batch {batch} does not fit the device memory: weights "
                     f"{floor.weight_bytes / gib:.2f} GiB plus {floor.op} with "
                     f"{floor.op_bytes / gib:.2f} GiB of activations need "
                     f"{floor.total / gib:.2f} GiB, but an {profile.name} chip has "
                     f"{capacity / gib:.0f} GiB; {hint}")


def load(path: str) -> CompiledModel:
    """A saved artifact, runnable without recompiling."""
    from .artifact import load as _load

    return _load(path)
