"""The public compile API: ONNX (or IR) in, a runnable, saveable ``CompiledModel`` out.

``compile`` imports the model and runs the named default pipeline
(:func:`DEFAULT_PIPELINE`), a flat ``neuron-opt -p`` string, so that what the API does
is exactly what ``neuron-opt -p "$(DEFAULT_PIPELINE)"`` does. Later stages
(``lower-to-nc``, ``batching``, ``pipeline-shard``) plug in by appending to
:data:`PIPELINE_STAGES`; nothing else here needs to change.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
from xdsl.dialects.builtin import ModuleOp
from xdsl.passes import PassPipeline
from xdsl.utils.exceptions import ArgSpecParseError, DiagnosticException, VerifyException

from .errors import NeuronIRError, PassError, UsageError
from .importer import import_model
from .interpreter import Interpreter
from .ir import make_context
from .report import PartitionReport, partition_report
from .target import TargetProfile, get_target

InputShapes = Mapping[str, tuple[int, ...]] | str | None
Dims = Mapping[str, int] | str | None


def _int_dim(value: Any, what: str) -> int:
    """An exact integer, or a PassError: 4.5 must not quietly become 4."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise PassError(f"{what} must be an integer, not {value!r}")
    return int(value)


def _option_name(name: Any, option: str) -> str:
    if not isinstance(name, str) or not name:
        raise PassError(f"{option} names must be non-empty strings, not {name!r}")
    return name


def input_shapes_spec(input_shapes: InputShapes) -> str:
    """The ``input-shapes`` option text (``a:1x128,b:1x128``) of ``shape-inference``."""
    if input_shapes is None:
        return ""
    if isinstance(input_shapes, str):
        return input_shapes
    if not isinstance(input_shapes, Mapping):
        raise UsageError("input_shapes must be a mapping from input name to shape, or "
                         f"the option text 'a:1x128,...', not {type(input_shapes).__name__}")
    items = []
    for name, shape in input_shapes.items():
        name = _option_name(name, "input_shapes")
        if isinstance(shape, str) or not isinstance(shape, tuple | list):
            raise PassError(f"input_shapes['{name}'] must be a tuple of ints, not {shape!r}")
        dims = [_int_dim(d, f"input_shapes['{name}'] dim {k}") for k, d in enumerate(shape)]
        items.append(f"{name}:{'x'.join(map(str, dims))}")
    return ",".join(items)


def _dims_option(dims: Dims) -> str:
    if dims is None:
        return ""
    if isinstance(dims, str):
        return dims
    if not isinstance(dims, Mapping):
        raise UsageError("dims must be a mapping from symbol to size, or the option "
                         f"text 'batch:1,...', not {type(dims).__name__}")
    return ",".join(f"{_option_name(name, 'dims')}:{_int_dim(size, f'dims[{name!r}]')}"
                    for name, size in dims.items())


def _quoted(value: str) -> str:
    # The option text goes inside a quoted pass option: no character may end it early.
    bad = next((c for c in value if c in '"{}' or ord(c) < 0x20), None)
    if bad is not None:
        raise PassError(f"pipeline option value must not contain {bad!r}: {value!r}")
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
    lambda target, input_shapes, dims: "lower-to-nc",
]


def DEFAULT_PIPELINE(target: str = "inf1", input_shapes: InputShapes = None,  # noqa: N802
                     dims: Dims = None) -> str:
    """The default pipeline as the flat pass string ``neuron-opt -p`` accepts."""
    return ",".join(stage(target, input_shapes, dims) for stage in PIPELINE_STAGES)


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
    except RecursionError:
        raise PassError("the IR nests too deeply for the pass pipeline") from None
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
        if not isinstance(inputs, Mapping):
            raise UsageError(f"run takes a mapping from input name to array, "
                             f"not {type(inputs).__name__}")
        return self.interpreter.run(inputs)

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
            pipeline: str | None = None) -> CompiledModel:
    """Import ``src`` (path, bytes, ``onnx.ModelProto`` or ``ModuleOp``) and run the
    default pipeline (or ``pipeline``, a flat pass string) for ``target``."""
    if pipeline is not None and not isinstance(pipeline, str):
        raise UsageError(f"pipeline must be a pass string, not {type(pipeline).__name__}")
    profile = get_target(target)
    spec = pipeline if pipeline is not None else DEFAULT_PIPELINE(profile.name,
                                                                  input_shapes, dims)
    module = _import(src)
    try:
        run_pipeline(module, spec)
    except NeuronIRError as exc:
        # A pass knows the node, not the file: name the model the caller gave.
        if exc.where is None and isinstance(src, str | os.PathLike):
            exc.where = os.fspath(src)
            exc.args = (f"{exc.where}: {exc.message}",)
        raise
    return CompiledModel(module, profile, spec)


def load(path: str) -> CompiledModel:
    """A saved artifact, runnable without recompiling."""
    from .artifact import load as _load

    return _load(path)
