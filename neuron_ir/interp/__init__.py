"""The reference interpreter: runs ``@main`` of a module at any level on numpy inputs.

The handler tables of each dialect are assembled here, explicitly, in the manner of
``xdsl.interpreters``: the core knows no dialect, and no handler module imports this
package.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from xdsl.dialects.builtin import ModuleOp

from . import builtin_ops, core, fusion, nc_ops, onnx_ops
from .core import HandlerTable, Planner, io_names


def default_handlers() -> HandlerTable:
    """Every dialect the compiler emits: onnx, func/scf/tensor/arith, nc."""
    table: HandlerTable = {}
    for part in (onnx_ops.HANDLERS, builtin_ops.HANDLERS, nc_ops.HANDLERS):
        table.update(part)
    return table


_DEFAULT = default_handlers()


class Interpreter(core.Interpreter):
    """A module's ``@main`` (or ``entry``) prepared for repeated runs on numpy inputs."""

    def __init__(self, module: ModuleOp, entry: str = "main", handlers: HandlerTable | None = None):
        # Plan-time fusion of onnx op chains (fusion.disabled() plans the reference).
        super().__init__(
            module, _DEFAULT if handlers is None else handlers, entry, fuse=fusion.plan_fusions
        )


def run(module: Any, inputs: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Run ``@main`` of a module (any level) or a compiled model on named inputs."""
    if not isinstance(module, ModuleOp) and hasattr(module, "run"):
        return module.run(inputs)
    return Interpreter(module).run(inputs)


__all__ = ["HandlerTable", "Interpreter", "Planner", "default_handlers", "io_names", "run"]
