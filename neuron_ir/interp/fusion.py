"""Plan-time fusion of the interpreter: chains of ops run as one step.

A chain starts at a producer (Conv, MatMul, Gemm) and follows its result while that
result has exactly one use, by the next op of the same block:

* ``BatchNormalization`` (inference mode, constant statistics) right after a Conv whose
  weight and bias are constants is folded into the Conv: w' = w k, b' = (b - mean) k +
  bias with k = scale / sqrt(var + eps), computed once in float64 and rounded to the
  weight type (what onnxruntime does).  This is the only rewrite that changes rounding:
  the fused result differs from the unfused one by a few float32 ulp of the output,
  which ``tests/test_fusion.py`` bounds.
* elementwise epilogues (``Relu``, and float ``Add``/``Sub``/``Mul``/``Div`` with an
  operand that broadcasts into the chain's value) run in place on the producer's fresh
  output, with the same ufunc and operand order as their kernels: bit-identical to the
  unfused ops, minus one allocation and one pass of memory traffic each.

The fused step runs where the chain's last op stood.  That is valid because every
intermediate has its single use inside the chain, and every other operand of a chain
op is defined before that op, hence before the last one; the planner counts the chain's
operand reads at that position so nothing is freed early.

The onnx-level interpreter stays the reference: ``disabled()`` plans without fusion,
and the tests compare both plans on the same inputs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from xdsl.ir import Operation, SSAValue

from dialects.onnx import ConstantOp, OnnxOp

from ..errors import InterpreterError
from ..ir.attrs import constant_array, describe_op, onnx_attrs
from ..kernels import KERNELS
from .onnx_ops import _onnx_handler

_PRODUCERS = frozenset({"Conv", "MatMul", "Gemm"})
_BINARY = {"Add": np.add, "Sub": np.subtract, "Mul": np.multiply, "Div": np.divide}

_enabled = True


@contextmanager
def disabled() -> Iterator[None]:
    """Interpreters planned inside the block run every op by itself (the reference)."""
    global _enabled
    before, _enabled = _enabled, False
    try:
        yield
    finally:
        _enabled = before


@dataclass
class Group:
    """One fused chain: the producer, an optional folded BatchNormalization, epilogues."""

    ops: list[Operation]
    batchnorm: Operation | None = None
    epilogues: list[Operation] = field(default_factory=list)

    @property
    def kinds(self) -> list[str]:
        return [_type(op) for op in self.ops]


def _type(op: Operation) -> str:
    return op.ONNX_TYPE if isinstance(op, OnnxOp) else op.name


def _single_user(value: SSAValue, block_ops: set[Operation]) -> Operation | None:
    uses = list(value.uses)
    if len(uses) != 1:
        return None
    user = uses[0].operation
    return user if user in block_ops else None


def _constant(value: SSAValue | None) -> np.ndarray | None:
    if value is None:
        return None
    owner = value.owner
    if isinstance(owner, ConstantOp):
        return constant_array(owner.properties["value"])
    return None


def _foldable_batchnorm(conv: Operation, bn: Operation) -> bool:
    inputs = bn.onnx_inputs()  # type: ignore[attr-defined]
    if inputs[0] is not conv.results[0] or len(inputs) != 5:
        return False
    if int(onnx_attrs(bn).get("training_mode", 0)):
        return False
    if any(r is not None and r.uses for r in bn.onnx_outputs()[1:]):  # type: ignore
        return False
    conv_in = conv.onnx_inputs()  # type: ignore[attr-defined]
    w = _constant(conv_in[1])
    if w is None or w.dtype not in (np.float32, np.float64):
        return False
    if len(conv_in) > 2 and conv_in[2] is not None and _constant(conv_in[2]) is None:
        return False
    stats = [_constant(v) for v in inputs[1:]]
    return all(s is not None and s.shape == (w.shape[0],) for s in stats)


def _epilogue_ok(op: Operation, value: SSAValue) -> bool:
    kind = _type(op)
    if kind == "Relu":
        return True
    if kind in _BINARY:
        operands = op.onnx_inputs()  # type: ignore[attr-defined]
        return len(operands) == 2 and sum(v is value for v in operands) == 1
    return False


def find_groups(ops: Sequence[Operation]) -> list[Group]:
    """The fusable chains among one block's ops (each op in at most one chain)."""
    block_ops = set(ops)
    taken: set[Operation] = set()
    groups = []
    for op in ops:
        if op in taken or not isinstance(op, OnnxOp) or _type(op) not in _PRODUCERS:
            continue
        if len(op.results) != 1:
            continue
        group = Group([op])
        value = op.results[0]
        user = _single_user(value, block_ops)
        if (
            _type(op) == "Conv"
            and user is not None
            and _type(user) == "BatchNormalization"
            and _foldable_batchnorm(op, user)
        ):
            group.batchnorm = user
            group.ops.append(user)
            value = user.results[0]
            user = _single_user(value, block_ops)
        while (
            user is not None
            and user not in taken
            and _epilogue_ok(user, value)
            and _same_static_type(value, user.results[0])
        ):
            group.epilogues.append(user)
            group.ops.append(user)
            value = user.results[0]
            user = _single_user(value, block_ops)
        if len(group.ops) > 1:
            groups.append(group)
            taken.update(group.ops)
    return groups


@dataclass
class Fusions:
    """What the planner needs: each fused op's step (None if absorbed) and the index
    (in the block) where its chain runs."""

    steps: dict[Operation, Callable | None] = field(default_factory=dict)
    anchor: dict[Operation, int] = field(default_factory=dict)
    groups: list[Group] = field(default_factory=list)


def plan_fusions(planner: Any, ops: Sequence[Operation]) -> Fusions:
    """Fused steps for the chains of one block (none when fusion is disabled)."""
    fusions = Fusions()
    if not _enabled:
        return fusions
    index = {op: i for i, op in enumerate(ops)}
    for group in find_groups(ops):
        last = index[group.ops[-1]]
        for op in group.ops:
            fusions.steps[op] = None
            fusions.anchor[op] = last
        fusions.steps[group.ops[-1]] = _group_step(planner, group)
        fusions.groups.append(group)
    return fusions


def _folded_conv_inputs(conv: Operation, bn: Operation) -> tuple[np.ndarray, np.ndarray]:
    conv_in = conv.onnx_inputs()  # type: ignore[attr-defined]
    w = _constant(conv_in[1])
    b = _constant(conv_in[2]) if len(conv_in) > 2 else None
    scale, bias, mean, var = (
        _constant(v).astype(np.float64)  # type: ignore[union-attr]
        for v in bn.onnx_inputs()[1:]
    )  # type: ignore[attr-defined]
    eps = float(onnx_attrs(bn).get("epsilon", 1e-5))
    k = scale / np.sqrt(var + eps)
    w64 = w.astype(np.float64) * k.reshape((-1,) + (1,) * (w.ndim - 1))  # type: ignore
    b64 = (np.zeros_like(k) if b is None else b.astype(np.float64)) - mean
    b64 = b64 * k + bias
    return w64.astype(w.dtype), b64.astype(w.dtype)  # type: ignore[union-attr]


class _Unfusable(Exception):
    """A run-time case the fused step does not cover: the unfused steps run instead."""


def _same_static_type(a: SSAValue, b: SSAValue) -> bool:
    """False only when both types are known and differ (the epilogue would broadcast
    the chain's value to a bigger shape, or change its type)."""
    from xdsl.dialects.builtin import TensorType

    ta, tb = a.type, b.type
    if isinstance(ta, TensorType) and isinstance(tb, TensorType):
        return ta == tb
    return True


def _group_step(planner: Any, group: Group) -> Callable:
    producer = group.ops[0]
    kernel = KERNELS[_type(producer)]
    attrs = onnx_attrs(producer)
    in_values = producer.onnx_inputs()  # type: ignore[attr-defined]
    if group.batchnorm is not None:
        w, b = _folded_conv_inputs(producer, group.batchnorm)
        in_slots = [planner.slot(in_values[0])]
        folded: list[np.ndarray | None] = [w, b]
    else:
        in_slots = planner.operand_slots(in_values)
        folded = []
    epilogues = []
    value = group.ops[1].results[0] if group.batchnorm is not None else producer.results[0]
    for op in group.epilogues:
        operands = op.onnx_inputs()  # type: ignore[attr-defined]
        if _type(op) == "Relu":
            epilogues.append((None, -1, False))
        else:
            first = operands[0] is value
            other = operands[1] if first else operands[0]
            epilogues.append((_BINARY[_type(op)], planner.slot(other), first))
        value = op.results[0]
    out_slot = planner.slot(group.ops[-1].results[0])
    label = describe_op(group.ops[-1])
    # The unfused steps (each with its own onnx.reference fallback) for what the
    # fused kernels do not cover.
    unfused = [_onnx_handler(planner, op) for op in group.ops]

    def fused(env: list) -> np.ndarray:
        args = [env[s] for s in in_slots] + folded
        y = kernel(args, attrs, 1)[0]
        if not y.flags.writeable or any(a is not None and np.may_share_memory(y, a) for a in args):
            y = y.copy()  # the epilogues write in place into a fresh array only
        for ufunc, slot, first in epilogues:
            if ufunc is None:  # Relu
                if y.dtype.kind not in "fi":
                    raise _Unfusable
                np.maximum(y, y.dtype.type(0), out=y)
                continue
            other = env[slot]
            if (
                y.dtype.kind != "f"
                or other.dtype != y.dtype
                or other.ndim > y.ndim
                or np.broadcast_shapes(y.shape, other.shape) != y.shape
            ):
                raise _Unfusable
            with np.errstate(all="ignore"):
                if first:
                    ufunc(y, other, out=y)
                else:
                    ufunc(other, y, out=y)
        return y

    def step(env: list) -> None:
        try:
            env[out_slot] = fused(env)
            return
        except (NotImplementedError, _Unfusable):
            pass
        except InterpreterError:
            raise
        except Exception as exc:
            raise InterpreterError(f"{label} failed: {type(exc).__name__}: {exc}") from exc
        for unfused_step in unfused:
            unfused_step(env)

    return step
