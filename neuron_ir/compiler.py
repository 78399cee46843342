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
    PipelineVerifyError,
    default_pipeline,
    input_shapes_spec,
    parse_pipeline,
    pipeline_text,
    run_passes,
)

from .importer import import_model
from .runtime.compiled import CompiledModel
from .target import TargetProfile, get_target

__all__ = ["DEFAULT_PIPELINE", "CompiledModel", "compile", "input_shapes_spec", "load",
           "run_pipeline"]


def DEFAULT_PIPELINE(target: str = "inf1", input_shapes: InputShapes = None,  # noqa: N802
                     dims: Dims = None) -> str:
    """The default pipeline as the flat pass string ``neuron-opt -p`` accepts."""
    return pipeline_text(default_pipeline(target, input_shapes, dims))


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
            pipeline: str | None = None) -> CompiledModel:
    """Import ``src`` (path, bytes, ``onnx.ModelProto`` or ``ModuleOp``) and run the
    default pipeline (or ``pipeline``, a flat pass string) for ``target``."""
    profile = get_target(target)
    passes = (parse_pipeline(pipeline) if pipeline is not None
              else default_pipeline(profile.name, input_shapes, dims))
    module = _import(src)
    # import_model verifies what it builds; a caller's ModuleOp is verified first.  The
    # passes' output is verified once, at the end; only if that fails does the pipeline
    # run again verifying after each pass, to name the pass that broke the IR.
    verified = not isinstance(src, ModuleOp)
    try:
        run_passes(module, passes, verified=verified, verify_each=False)
    except PipelineVerifyError:
        run_passes(_import(src), passes, verified=verified)
        raise
    return CompiledModel(module, profile, pipeline_text(passes))


def load(path: str | os.PathLike) -> CompiledModel:
    """A saved artifact, runnable without recompiling."""
    return CompiledModel.load(path)
