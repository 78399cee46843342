"""neuron-ir: an MLIR-style compiler from ONNX to AWS Inferentia NeuronCores, on xDSL."""

from __future__ import annotations

from dialects.onnx import CANONICAL_OPSET

from .compiler import DEFAULT_PIPELINE, CompiledModel, compile, load
from .errors import (
    BatchError,
    ExternalDataError,
    InterpreterError,
    IRParseError,
    ModelImportError,
    ModelLoadError,
    NeuronIRError,
    PassError,
)
from .importer import import_model
from .interp import Interpreter, run
from .ir import make_context, parse_ir, print_ir
from .runtime.artifact import ArtifactError
from .sweep import sweep_batch

__version__ = "0.1.0"

__all__ = [
    "ArtifactError",
    "BatchError",
    "CANONICAL_OPSET",
    "CompiledModel",
    "DEFAULT_PIPELINE",
    "compile",
    "load",
    "ExternalDataError",
    "IRParseError",
    "InterpreterError",
    "ModelImportError",
    "ModelLoadError",
    "NeuronIRError",
    "PassError",
    "Interpreter",
    "import_model",
    "make_context",
    "parse_ir",
    "print_ir",
    "run",
    "sweep_batch",
]
