"""The public compile API: ONNX (or IR) in, a runnable, saveable ``CompiledModel`` out.

``compile`` imports the model and runs the default pipeline of pass objects
(:func:`passes.pipeline.default_pipeline`), the same passes that ``neuron-opt -p
default-pipeline{...}`` runs; :func:`DEFAULT_PIPELINE` is its flat text form.
"""

from __future__ import annotations

import gc
import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
from xdsl.dialects.builtin import IntegerAttr, IntegerType, ModuleOp

from passes.pipeline import (
    Dims,
    InputShapes,
    PipelineVerifyError,
    default_pipeline,
    dims_spec,
    input_shapes_spec,
    parse_pipeline,
    pipeline_text,
    run_passes,
)

from .bucketing import compile_bucketed
from .errors import BatchError, CompileError, NeuronIRError, UsageError
from .importer import import_model
from .runtime import artifact
from .runtime.buckets import BucketedModel
from .runtime.compiled import CompiledModel
from .target import TargetProfile, get_target
from .target.profiles import max_cores

__all__ = [
    "DEFAULT_PIPELINE",
    "CompiledModel",
    "check_batch",
    "compile",
    "input_shapes_spec",
    "load",
    "run_pipeline",
]


def DEFAULT_PIPELINE(
    target: str = "inf1",
    input_shapes: InputShapes = None,  # noqa: N802
    dims: Dims = None,
    batch: int | None = None,
    batch_dim: str | None = None,
    cores: int | str = 1,
    allow_hbm_weights: bool = False,
) -> str:
    """The default pipeline as the flat pass string ``neuron-opt -p`` accepts."""
    return pipeline_text(
        default_pipeline(target, input_shapes, dims, batch, batch_dim, cores, allow_hbm_weights)
    )


def check_batch(batch: Any) -> int:
    """``batch`` as a positive int, or a BatchError."""
    if isinstance(batch, bool) or not isinstance(batch, int | np.integer) or batch < 1:
        raise BatchError(f"batch must be a positive integer, not {batch!r}")
    return int(batch)


def run_pipeline(module: ModuleOp, pipeline: str) -> ModuleOp:
    """Run the flat pipeline text ``pipeline`` on ``module`` in place, verified after
    every pass."""
    return run_passes(module, parse_pipeline(pipeline))


@contextmanager
def imported_ir_frozen() -> Iterator[None]:
    """Keep the collector's full collections off what exists now (the imported IR)
    while the passes run.

    The IR is built of reference cycles, so every object in it is tracked; once the
    objects the passes make exceed a quarter of the long-lived ones, CPython walks them
    all (BERT-24: 60-80 ms, once; BERT-base stays under the threshold), and the time of
    a compile stops being linear in the model. ``gc.freeze`` parks the objects that
    exist now; ``gc.unfreeze`` returns them to the oldest generation afterwards, so
    what the passes erased is still collected, one collection later. Skipped when the
    process froze objects itself (a pre-fork server): our unfreeze would undo theirs.
    """
    if gc.get_freeze_count():
        yield
        return
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def _import(src: Any) -> ModuleOp:
    if isinstance(src, ModuleOp):
        # Never mutate the caller's module: the passes rewrite in place.
        return src.clone()
    return import_model(src)


def compile(
    src: Any,
    target: str | TargetProfile = "inf1",  # noqa: A001
    input_shapes: InputShapes = None,
    dims: Dims = None,
    *,
    batch: int | None = None,
    batch_dim: str | None = None,
    dynamic_batching: bool = True,
    cores: int | str = 1,
    replicas: int = 1,
    allow_hbm_weights: bool = False,
    pipeline: str | None = None,
    buckets: Mapping[str, Sequence[int] | str] | None = None,
    pad_values: Mapping[str, float] | None = None,
    size_samples: Sequence[int] | Mapping[str, Sequence[int]] | None = None,
    check_padding: bool = True,
) -> CompiledModel:
    """Import ``src`` (path, bytes, ``onnx.ModelProto`` or ``ModuleOp``) and run the
    default pipeline (or ``pipeline``, a flat pass string) for ``target``.

    ``batch=N`` compiles for batch N: the batch axis is the input symbol ``batch_dim``
    names, or one found (``batch``, ``batch_size``, ``N``, unnamed leading dims), or a
    static leading dim of 1, which ``rebatch`` rewrites and proves. ``run`` then takes
    any client batch, in chunks of N (``dynamic_batching=False``: exactly N).

    ``cores``: pipeline stages (one NeuronCore each) per NeuronCore program, or
    ``"auto"``, the fewest whose SBUFs cache every weight read whole
    (``pipeline-shard``). ``replicas``: data-parallel copies of the whole (pipelined)
    program on ``replicas x cores`` cores; throughput scales with it.

    ``buckets={"sequence": [32, 64, 128]}`` (or ``"auto:K"`` with ``size_samples``):
    one program per bucket in one model (:mod:`neuron_ir.bucketing`); ``run`` pads to the
    smallest bucket that fits (``pad_values`` per input, default 0) and slices back.
    """
    if pipeline is not None and not isinstance(pipeline, str):
        raise UsageError(f"pipeline must be a pass string, not {type(pipeline).__name__}")
    profile = get_target(target)
    if buckets is not None:
        if pipeline is not None:
            raise CompileError("buckets and pipeline= cannot be combined")
        source = _import(src)
        base_dims = dims_spec(dims)

        def compile_one(module: ModuleOp, sizes: dict[str, int]) -> CompiledModel:
            pins = ",".join(p for p in [base_dims, dims_spec(sizes)] if p)
            return compile(
                module,
                profile,
                input_shapes,
                pins or None,
                batch=batch,
                batch_dim=batch_dim,
                dynamic_batching=dynamic_batching,
                cores=cores,
                replicas=replicas,
                allow_hbm_weights=allow_hbm_weights,
            )

        return compile_bucketed(
            source, buckets, compile_one, pad_values, size_samples, check_padding
        )
    if pad_values is not None or size_samples is not None:
        raise CompileError("pad_values and size_samples need buckets=")
    if batch is not None:
        batch = check_batch(batch)
    elif batch_dim is not None:
        raise BatchError(f"batch_dim='{batch_dim}' needs batch=N")
    if not (
        cores == "auto" or (isinstance(cores, int) and not isinstance(cores, bool) and cores >= 1)
    ):
        raise CompileError(f"cores must be a positive integer or 'auto', not {cores!r}")
    if isinstance(replicas, bool) or not isinstance(replicas, int) or replicas < 1:
        raise CompileError(f"replicas must be a positive integer, not {replicas!r}")
    passes = (
        parse_pipeline(pipeline)
        if pipeline is not None
        else default_pipeline(
            profile.name, input_shapes, dims, batch, batch_dim, cores, allow_hbm_weights
        )
    )
    module = _import(src)
    # import_model verifies what it builds; a caller's ModuleOp is verified first.  The
    # passes' output is verified once, at the end; only if that fails does the pipeline
    # run again verifying after each pass, to name the pass that broke the IR.
    verified = not isinstance(src, ModuleOp)
    try:
        try:
            with imported_ir_frozen():
                run_passes(module, passes, verified=verified, verify_each=False)
        except PipelineVerifyError:
            run_passes(_import(src), passes, verified=verified)
            raise
    except NeuronIRError as exc:
        # A pass knows the node, not the file: name the model the caller gave.
        if exc.where is None and isinstance(src, str | os.PathLike):
            exc.where = os.fspath(src)
            exc.args = (f"{exc.where}: {exc.message}",)
        raise
    if batch is not None:
        _check_device_memory(module, profile, batch)
    if not dynamic_batching:
        from passes.rebatch import main_func

        from .analysis.report import DYNAMIC_BATCHING_ATTR

        main_func(module).attributes[DYNAMIC_BATCHING_ATTR] = IntegerAttr(0, IntegerType(1))
    model = CompiledModel(module, profile, pipeline_text(passes), replicas)
    used = model.cores * replicas
    limit = max_cores(profile)
    if used > limit:
        raise CompileError(
            f"{replicas} replica(s) of {model.cores} core(s) need {used} "
            f"NeuronCores but {profile.name} has at most {limit}"
        )
    return model


def _check_device_memory(module: ModuleOp, profile: TargetProfile, batch: int) -> None:
    """A BatchError when even the floor of the device memory the batch needs (weights +
    the largest op's tensors, :func:`neuron_ir.analysis.report.device_memory_floor`)
    exceeds one chip's memory; names the op and the largest batch the floor allows."""
    from .analysis.report import device_memory_floor

    floor = device_memory_floor(module)
    capacity = profile.dram_bytes_per_chip
    if floor.total <= capacity:
        return
    gib = 2**30
    per_sample = floor.op_bytes / batch
    fits = int((capacity - floor.weight_bytes) // per_sample) if per_sample else 0
    hint = (
        f"the largest batch this allows is about {fits}"
        if fits >= 1
        else "it does not fit even at batch 1"
    )
    raise BatchError(
        f"batch {batch} does not fit the device memory: weights "
        f"{floor.weight_bytes / gib:.2f} GiB plus {floor.op} with "
        f"{floor.op_bytes / gib:.2f} GiB of activations need "
        f"{floor.total / gib:.2f} GiB, but an {profile.name} chip has "
        f"{capacity / gib:.0f} GiB; {hint}"
    )


def load(path: str | os.PathLike) -> CompiledModel:
    """A saved artifact (one program, or one per bucket), runnable without recompiling."""
    if not isinstance(path, str | os.PathLike):
        raise UsageError(f"load() takes a path, not {type(path).__name__}")
    where = os.fspath(path)
    module, meta = artifact.read(where)
    if "buckets" in meta:
        try:
            return BucketedModel.from_artifact(module, meta, where)
        except (KeyError, TypeError, ValueError) as exc:
            raise artifact.ArtifactError(
                f"artifact bucket table is corrupt ({exc})", where=where
            ) from None
    return CompiledModel.from_artifact(module, meta, where)
