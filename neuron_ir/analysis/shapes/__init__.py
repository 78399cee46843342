"""Static shape rules for the ``onnx`` dialect, one function per op family.

A rule sees what is known about each input (element type, shape with unknown dims,
and the value when it is a compile-time constant) and the node's explicit
attributes, and returns what is known about each output. Rules never guess: a dim
they cannot determine is ``None``, and a result whose size depends on runtime data
is flagged ``data_dependent``. The ``shape-inference`` pass (passes/shape_inference.py)
drives them, folds constants with the interpreter's kernels, and reports errors.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ...ir.tensor_info import Dim, Shape, TensorInfo

__all__ = ["Dim", "Shape", "TensorInfo"]


class ShapeError(Exception):
    """The node's inputs or attributes are inconsistent (e.g. mismatched dims)."""


@dataclass
class ShapeContext:
    op_type: str
    inputs: list[TensorInfo | None]
    """One entry per ONNX input position; None where an optional input is absent."""
    attrs: dict[str, Any]
    """Explicitly set attributes, as the kernels get them (defaults not applied)."""
    n_out: int

    def input(self, index: int) -> TensorInfo | None:
        return self.inputs[index] if index < len(self.inputs) else None

    def const(self, index: int) -> np.ndarray | None:
        info = self.input(index)
        return None if info is None else info.value

    def attr(self, name: str, default: Any = None) -> Any:
        return self.attrs.get(name, default)


Rule = Callable[[ShapeContext], Sequence[TensorInfo]]
RULES: dict[str, Rule] = {}


def shape_rule(*op_types: str) -> Callable[[Rule], Rule]:
    """Register ``fn`` as the shape rule of each of ``op_types``."""

    def register(fn: Rule) -> Rule:
        for op_type in op_types:
            if op_type in RULES:
                raise RuntimeError(f"two shape rules registered for {op_type}")
            RULES[op_type] = fn
        return fn

    return register


def unknown(ctx: ShapeContext) -> list[TensorInfo]:
    """Nothing known about any output: what ops without a rule get."""
    return [TensorInfo(None, None) for _ in range(ctx.n_out)]


def infer(ctx: ShapeContext) -> list[TensorInfo]:
    rule = RULES.get(ctx.op_type)
    if rule is None:
        return unknown(ctx)
    results = list(rule(ctx))
    if len(results) < ctx.n_out:
        results += [TensorInfo(None, None)] * (ctx.n_out - len(results))
    return results[: ctx.n_out]


def _load_families() -> None:
    from . import nn, tensor  # noqa: F401  (families register themselves)


_load_families()
