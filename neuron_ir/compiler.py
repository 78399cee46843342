"""The public compile API: ONNX (or IR) in, a runnable, saveable ``CompiledModel`` out.

``compile`` imports the model and runs the default pipeline of pass objects
(:func:`passes.pipeline.default_pipeline`), the same passes that ``neuron-opt -p
default-pipeline{...}`` runs; :func:`DEFAULT_PIPELINE` is its flat text form.
"""

from __future__ import annotations

import os
from typing import Any

from xdsl.dialects.builtin import ModuleOp

from passes.pipeline import (
    Dims,
    InputShapes,
    default_pipeline,
    input_shapes_spec,
    parse_pipeline,
    pipeline_text,
    run_passes,
)

from .errors import CompileError
from .importer import import_model
from .runtime.compiled import CompiledModel
from .target import TargetProfile, get_target
from .target.profiles import max_cores

__all__ = ["DEFAULT_PIPELINE", "CompiledModel", "compile", "input_shapes_spec", "load",
           "run_pipeline"]


def DEFAULT_PIPELINE(target: str = "inf1", input_shapes: InputShapes = None,  # noqa: N802
                     dims: Dims = None, batch: int = 1, cores: int | str = 1,
                     allow_hbm_weights: bool = False) -> str:
    """The default pipeline as the flat pass string ``neuron-opt -p`` accepts."""
    return pipeline_text(default_pipeline(target, input_shapes, dims, batch, cores,
                                          allow_hbm_weights))


def run_pipeline(module: ModuleOp, pipeline: str) -> ModuleOp:
    """Run the flat pipeline text ``pipeline`` on ``module`` in place, verified after
    every pass."""
    return run_passes(module, parse_pipeline(pipeline))


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
    passes = (parse_pipeline(pipeline) if pipeline is not None
              else default_pipeline(profile.name, input_shapes, dims, batch, cores,
                                    allow_hbm_weights))
    module = _import(src)
    run_passes(module, passes)
    model = CompiledModel(module, profile, pipeline_text(passes), replicas)
    used = model.cores * replicas
    limit = max_cores(profile)
    if used > limit:
        raise CompileError(f"{replicas} replica(s) of {model.cores} core(s) need {used} "
                           f"NeuronCores but {profile.name} has at most {limit}")
    return model


def load(path: str | os.PathLike) -> CompiledModel:
    """A saved artifact, runnable without recompiling."""
    return CompiledModel.load(path)
