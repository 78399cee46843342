"""neuron-ir: an MLIR-style compiler from ONNX to AWS Inferentia NeuronCores, on xDSL.

The public API is resolved lazily (PEP 562): importing a low layer such as
``neuron_ir.errors`` or ``neuron_ir.ir`` must not pull in the compiler, which sits at
the top and imports ``passes``, which imports those low layers back.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

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

__version__ = "0.1.0"

# public name -> module that defines it
_LAZY = {
    "CANONICAL_OPSET": "dialects.onnx",
    "ArtifactError": "neuron_ir.runtime.artifact",
    "CompiledModel": "neuron_ir.runtime.compiled",
    "DEFAULT_PIPELINE": "neuron_ir.compiler",
    "compile": "neuron_ir.compiler",
    "load": "neuron_ir.compiler",
    "import_model": "neuron_ir.importer",
    "Interpreter": "neuron_ir.interp",
    "run": "neuron_ir.interp",
    "make_context": "neuron_ir.ir",
    "parse_ir": "neuron_ir.ir",
    "print_ir": "neuron_ir.ir",
    "sweep_batch": "neuron_ir.sweep",
}

if TYPE_CHECKING:
    from dialects.onnx import CANONICAL_OPSET

    from .compiler import DEFAULT_PIPELINE, compile, load
    from .importer import import_model
    from .interp import Interpreter, run
    from .ir import make_context, parse_ir, print_ir
    from .runtime.artifact import ArtifactError
    from .runtime.compiled import CompiledModel
    from .sweep import sweep_batch


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'neuron_ir' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


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
