"""Interpreter handlers of xDSL's own dialects that the compiler emits:
``func.call``/``func.return`` (partitioned modules), ``scf.if``/``scf.while``
(lowered control flow), ``tensor.extract`` and ``arith.constant``."""

from __future__ import annotations

import numpy as np
from xdsl.dialects import arith, func, scf, tensor
from xdsl.dialects.builtin import FloatAttr, IntegerAttr
from xdsl.ir import Operation

from ..ir.attrs import constant_array
from .core import Env, HandlerTable, Planner, Step, implements
from .onnx_ops import branch_step

HANDLERS: HandlerTable = {}


def _impl(*op_types):
    return implements(HANDLERS, *op_types)


@_impl(scf.YieldOp, scf.ConditionOp, func.ReturnOp)
def _terminator(planner: Planner, op: Operation) -> None:
    return None


@_impl(arith.ConstantOp)
def _arith_constant(planner: Planner, op: Operation) -> None:
    value = op.value  # type: ignore[attr-defined]
    if isinstance(value, IntegerAttr):
        array = np.array(value.value.data, dtype=np.int64)
    elif isinstance(value, FloatAttr):
        array = np.array(value.value.data, dtype=np.float64)
    else:
        array = constant_array(value)
    planner.constants[planner.slot(op.results[0])] = array
    return None


@_impl(tensor.ExtractOp)
def _tensor_extract(planner: Planner, op: Operation) -> Step:
    source = planner.slot(op.operands[0])
    indices = planner.operand_slots(list(op.operands[1:]))
    out = planner.slot(op.results[0])

    def step(env: Env) -> None:
        index = tuple(int(env[s]) for s in indices)
        env[out] = np.asarray(env[source][index])

    return step


@_impl(scf.IfOp)
def _scf_if(planner: Planner, op: Operation) -> Step:
    return branch_step(planner, op, op.regions[0], op.regions[1])


@_impl(scf.WhileOp)
def _scf_while(planner: Planner, op: Operation) -> Step:
    inits = planner.operand_slots(list(op.operands))
    before, before_args, condition = planner.plan_region(op.regions[0])
    after, after_args, yielded = planner.plan_region(op.regions[1])
    out_slots = [planner.slot(r) for r in op.results]

    def step(env: Env) -> None:
        values = [env[s] for s in inits]
        while True:
            for s, v in zip(before_args, values, strict=True):
                env[s] = v
            before.execute(env)
            forwarded = [env[s] for s in condition[1:]]
            if not bool(env[condition[0]]):
                break
            for s, v in zip(after_args, forwarded, strict=True):
                env[s] = v
            after.execute(env)
            values = [env[s] for s in yielded]
        for s, v in zip(out_slots, forwarded, strict=True):
            env[s] = v

    return step


@_impl(func.CallOp)
def _call(planner: Planner, op: Operation) -> Step:
    callee = planner.callee(op.callee.root_reference.data)  # type: ignore[attr-defined]
    in_slots = planner.operand_slots(list(op.operands))
    out_slots = [planner.slot(r) for r in op.results]

    def step(env: Env) -> None:
        results = callee.call([env[s] for s in in_slots])
        for s, v in zip(out_slots, results, strict=True):
            env[s] = v

    return step
