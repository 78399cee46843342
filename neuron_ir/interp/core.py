"""The planned numpy interpreter: its core (planner, handler tables, entry point).

``Interpreter(module, handlers)`` prepares a plan once: every SSA value gets a slot in a
flat environment list, every op becomes a closure over its kernel, decoded attributes
and slot numbers, and each value is dropped after its last use; ``run`` then only walks
the closures. This is faster than xDSL's own ``Interpreter`` (which dispatches every op
through Python-level interface lookups on each run), and speed is why it exists: every
differential test, conformance sweep and planner check runs it.

Handlers come in tables keyed by op class, one module a dialect (``onnx_ops``,
``builtin_ops``, ``nc_ops``), assembled explicitly by ``neuron_ir.interp``; this module
imports none of them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from xdsl.dialects.builtin import (
    DYNAMIC_INDEX,
    ArrayAttr,
    ModuleOp,
    StringAttr,
    TensorType,
    UnrankedTensorType,
)
from xdsl.dialects.func import FuncOp
from xdsl.ir import Attribute, Block, Operation, Region, SSAValue

from ..errors import InterpreterError
from ..ir import dtypes
from ..ir.attrs import describe_op
from ..ir.util import used_values

Env = list
Step = Callable[[Env], None]


# ---------------------------------------------------------------------------
# planning


@dataclass
class Plan:
    """A straight-line list of steps over a shared environment."""

    steps: list[Step] = field(default_factory=list)

    def execute(self, env: Env) -> None:
        for step in self.steps:
            step(env)


Handler = Callable[["Planner", Operation], "Step | None"]
# Keyed by op class; a base class (``OnnxOp``) serves every subclass without its own entry.
HandlerTable = dict[type[Operation], Handler]


def implements(table: HandlerTable, *op_types: type[Operation]) -> Callable[[Handler], Handler]:
    """Decorator: record in ``table`` how the planner turns ``op_types`` into a step."""

    def register(fn: Handler) -> Handler:
        for op_type in op_types:
            table[op_type] = fn
        return fn

    return register


def lookup(table: HandlerTable, op: Operation) -> Handler | None:
    """The handler of ``op``'s class, or of its nearest base class in ``table``."""
    for cls in type(op).__mro__:
        handler = table.get(cls)
        if handler is not None:
            return handler
    return None


# Plan-time fusion (``neuron_ir.interp.fusion``), given by whoever assembles the
# handlers: (planner, block ops) -> an object with ``steps`` {op: step or None for the
# fused ops} and ``anchor`` {op: index of the block op where its chain runs}.
Fuser = Callable[["Planner", list[Operation]], Any]


class Planner:
    """Assigns slots to values and builds the steps of one function."""

    def __init__(self, module: ModuleOp, handlers: HandlerTable, fuse: Fuser | None = None):
        self.module = module
        self.handlers = handlers
        self.fuse = fuse
        self.slots: dict[SSAValue, int] = {}
        self.constants: dict[int, np.ndarray] = {}
        self.functions: dict[str, FuncOp] = {
            op.sym_name.data: op for op in module.ops if isinstance(op, FuncOp)
        }
        self.callees: dict[str, FunctionPlan] = {}

    def slot(self, value: SSAValue) -> int:
        index = self.slots.get(value)
        if index is None:
            index = self.slots[value] = len(self.slots)
        return index

    def operand_slots(self, values: Sequence[SSAValue | None]) -> list[int]:
        return [-1 if v is None else self.slot(v) for v in values]

    def plan_block(self, block: Block, keep: set[int] | None = None) -> Plan:
        """Steps for ``block``, freeing values defined and last used in it."""
        plan = Plan()
        ops = list(block.ops)
        fused_steps: dict[Operation, Step | None] = {}
        anchor: dict[Operation, int] = {}
        if self.fuse is not None:  # fused chains run at their last op's index
            fusions = self.fuse(self, ops)
            fused_steps, anchor = fusions.steps, fusions.anchor
        last_use: dict[int, int] = {}
        for index, op in enumerate(ops):
            for value in used_values(op):
                slot = self.slot(value)
                last_use[slot] = max(last_use.get(slot, -1), anchor.get(op, index))
        defined_here = {self.slot(arg) for arg in block.args}
        for op in ops:
            defined_here.update(self.slot(r) for r in op.results)
        keep = keep or set()
        free_after: dict[int, list[int]] = {}
        for slot_index, index in last_use.items():
            if slot_index in defined_here and slot_index not in keep:
                free_after.setdefault(index, []).append(slot_index)
        for index, op in enumerate(ops):
            step = fused_steps[op] if op in fused_steps else self.plan_op(op)
            if step is not None:
                plan.steps.append(step)
            frees = [s for s in free_after.get(index, []) if s not in self.constants]
            if frees:
                plan.steps.append(_freer(frees))
        return plan

    def plan_region(self, region: Region) -> tuple[Plan, list[int], list[int]]:
        """(plan, argument slots, yielded slots) of a single-block region."""
        block = region.block
        terminator = block.last_op
        if terminator is None:
            raise InterpreterError("empty region")
        yielded = self.operand_slots(list(terminator.operands))
        plan = self.plan_block(block, keep=set(yielded))
        return plan, [self.slot(a) for a in block.args], yielded

    def plan_op(self, op: Operation) -> Step | None:
        handler = lookup(self.handlers, op)
        if handler is None:
            raise InterpreterError(f"the interpreter cannot run op {describe_op(op)}")
        return handler(self, op)

    def callee(self, name: str) -> FunctionPlan:
        plan = self.callees.get(name)
        if plan is None:
            func = self.functions.get(name)
            if func is None:
                raise InterpreterError(f"call to unknown function @{name}")
            plan = FunctionPlan(self.module, func, self.handlers, self.fuse)
            self.callees[name] = plan
        return plan


def _freer(slots: list[int]) -> Step:
    def free(env: Env) -> None:
        for s in slots:
            env[s] = None

    return free


# ---------------------------------------------------------------------------
# functions and the public entry point


class FunctionPlan:
    """A prepared function: its argument and result slots and its steps."""

    def __init__(
        self, module: ModuleOp, func: FuncOp, handlers: HandlerTable, fuse: Fuser | None = None
    ):
        planner = Planner(module, handlers, fuse)
        self.func = func
        block = func.body.block
        self.arg_slots = [planner.slot(a) for a in block.args]
        ret = block.last_op
        if ret is None or ret.name != "func.return":
            raise InterpreterError(f"@{func.sym_name.data} does not end in func.return")
        self.result_slots = planner.operand_slots(list(ret.operands))
        self.plan = planner.plan_block(block, keep=set(self.result_slots))
        self.size = len(planner.slots)
        self.template: list[Any] = [None] * self.size
        for slot_index, array in planner.constants.items():
            if isinstance(array, np.ndarray):
                # Constants are shared by every run: no kernel may write into them, and
                # plans may keep what they derive from them (packed weights).
                array.flags.writeable = False
            self.template[slot_index] = array

    def call(self, args: Sequence[np.ndarray]) -> list[np.ndarray]:
        env = list(self.template)
        for s, a in zip(self.arg_slots, args, strict=True):
            env[s] = a
        self.plan.execute(env)
        return [env[s] for s in self.result_slots]


def io_names(func: FuncOp, attrs: ArrayAttr | None, count: int, prefix: str) -> list[str]:
    names = []
    for k in range(count):
        name = None
        if attrs is not None and k < len(attrs.data):
            entry = attrs.data[k].data.get("onnx.name")
            if isinstance(entry, StringAttr):
                name = entry.data
        names.append(name or f"{prefix}{k}")
    return names


class Interpreter:
    """A module's ``@main`` prepared for repeated runs on numpy inputs."""

    def __init__(
        self,
        module: ModuleOp,
        handlers: HandlerTable,
        entry: str = "main",
        fuse: Fuser | None = None,
    ):
        funcs = {op.sym_name.data: op for op in module.ops if isinstance(op, FuncOp)}
        if entry not in funcs:
            raise InterpreterError(f"the module has no function @{entry}")
        func = funcs[entry]
        self.function = FunctionPlan(module, func, handlers, fuse)
        ftype = func.function_type
        self.input_names = io_names(func, func.arg_attrs, len(ftype.inputs.data), "arg")
        self.output_names = io_names(func, func.res_attrs, len(ftype.outputs.data), "result")
        self.input_types = list(ftype.inputs.data)

    def run(self, inputs: Mapping[str, Any]) -> dict[str, np.ndarray]:
        missing = [n for n in self.input_names if n not in inputs]
        if missing:
            raise InterpreterError(
                f"missing input '{missing[0]}' (the model takes {', '.join(self.input_names)})"
            )
        extra = [n for n in inputs if n not in self.input_names]
        if extra:
            raise InterpreterError(
                f"unknown input '{extra[0]}' (the model takes {', '.join(self.input_names)})"
            )
        args = [
            _checked_input(name, inputs[name], ttype)
            for name, ttype in zip(self.input_names, self.input_types, strict=True)
        ]
        results = self.function.call(args)
        return {
            name: np.asarray(value) for name, value in zip(self.output_names, results, strict=True)
        }


def _checked_input(name: str, value: Any, ttype: Attribute) -> np.ndarray:
    array = np.asarray(value)
    if isinstance(ttype, TensorType | UnrankedTensorType):
        try:
            expected = dtypes.numpy_dtype_of(ttype.element_type)
        except KeyError:
            expected = None
        if expected is not None and array.dtype != expected:
            raise InterpreterError(f"input '{name}': expected dtype {expected}, got {array.dtype}")
    if isinstance(ttype, TensorType):
        shape = ttype.get_shape()
        shown = "x".join("?" if d == DYNAMIC_INDEX else str(d) for d in shape) or "scalar"
        if array.ndim != len(shape) or any(
            d != DYNAMIC_INDEX and d != a for d, a in zip(shape, array.shape, strict=True)
        ):
            raise InterpreterError(
                f"input '{name}': expected shape {shown}, got "
                f"{'x'.join(map(str, array.shape)) or 'scalar'}"
            )
    # A read-only view: no kernel may write into the caller's array.
    view = array.view()
    view.flags.writeable = False
    return view
