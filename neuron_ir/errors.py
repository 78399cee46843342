"""The library's error classes.

Every error that bad input can cause is one of these, carrying where it happened
(file, node, value) so that the tools can print a single ``error:`` line.
"""

from __future__ import annotations


class NeuronIRError(Exception):
    """Base class of every error neuron-ir raises on bad input."""

    def __init__(self, message: str, *, where: str | None = None):
        self.message = message
        self.where = where
        super().__init__(f"{where}: {message}" if where else message)


class ModelLoadError(NeuronIRError):
    """The model file is missing, empty, truncated or not an ONNX protobuf."""


class ModelImportError(NeuronIRError):
    """The ONNX graph is malformed or uses something the importer cannot represent."""


class ExternalDataError(ModelImportError):
    """An initializer's external data is missing or lies outside the model's folder."""


class IRParseError(NeuronIRError):
    """IR text that does not parse or verify."""


class PassError(NeuronIRError):
    """A pass rejected its input (for example a dynamic shape left unpinned)."""


class InterpreterError(NeuronIRError):
    """Running a module failed: bad inputs, or an op the interpreter cannot run."""


class UsageError(NeuronIRError, TypeError):
    """The library was called with an argument of the wrong kind (``compile(None)``).

    Also a ``TypeError``, so that callers catching that keep working."""


class CompileError(NeuronIRError):
    """Compile options that cannot be honoured (cores, replicas, batch)."""


class BatchError(NeuronIRError):
    """Bad batch options, or a client batch the compiled model cannot take (names the
    input or output, its size and the compiled batch)."""
