"""The numpy reference interpreter.

``Interpreter(module)`` prepares a plan once: every SSA value gets a slot in a flat
environment list, every op becomes a closure over its kernel, decoded attributes and
slot numbers, and each value is dropped after its last use. ``run`` then only walks
the closures. Ops are dispatched by name through ``HANDLERS`` so that new dialects
(partitioned calls, ``nc``) plug in with ``register_handler``; ``onnx.*`` ops without
a handler go to the numpy kernels of ``neuron_ir.kernels`` and, for the rare ops
without one, to ``onnx.reference``'s implementation of that single op.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from xdsl.dialects.builtin import (
    DYNAMIC_INDEX,
    ArrayAttr,
    DenseArrayBase,
    DenseIntOrFPElementsAttr,
    DenseResourceAttr,
    FloatAttr,
    IntegerAttr,
    ModuleOp,
    StringAttr,
    TensorType,
    UnrankedTensorType,
)
from xdsl.dialects.func import FuncOp
from xdsl.ir import Attribute, Block, Operation, Region, SSAValue

from dialects.onnx import CustomOp, OnnxOp, StringTensorAttr

from . import dtypes
from .errors import InterpreterError
from .interp.fusion import plan_fusions
from .kernels import KERNELS

Env = list
Step = Callable[[Env], None]


# ---------------------------------------------------------------------------
# attribute and constant decoding


def constant_array(attr: Attribute) -> np.ndarray:
    """The numpy value of a constant attribute (read-only, no copy where possible)."""
    if isinstance(attr, DenseIntOrFPElementsAttr):
        dtype = dtypes.numpy_dtype_of(attr.get_element_type())
        array = np.frombuffer(attr.data.data, dtype=dtype).reshape(attr.get_shape())
        return array
    if isinstance(attr, StringTensorAttr):
        values = np.array([s.data for s in attr.values.data], dtype=object)
        return values.reshape(attr.type.get_shape())
    if isinstance(attr, DenseResourceAttr):
        raise InterpreterError("constant data was elided when the IR was printed; "
                               "re-import the model or print without --elide-constants")
    raise InterpreterError(f"cannot decode constant attribute {attr}")


def python_attr(attr: Attribute) -> Any:
    """An op property as the plain Python value the kernels take."""
    if isinstance(attr, IntegerAttr):
        return int(attr.value.data)
    if isinstance(attr, FloatAttr):
        return float(attr.value.data)
    if isinstance(attr, StringAttr):
        return attr.data
    if isinstance(attr, DenseArrayBase):
        return [int(v) for v in attr.get_values()]
    if isinstance(attr, DenseIntOrFPElementsAttr | StringTensorAttr | DenseResourceAttr):
        return constant_array(attr)
    if isinstance(attr, ArrayAttr):
        return [python_attr(a) for a in attr.data]
    raise InterpreterError(f"cannot decode attribute {attr}")


def onnx_attrs(op: Operation) -> dict[str, Any]:
    """The node's explicitly set ONNX attributes (regions excluded)."""
    if isinstance(op, CustomOp):
        return {k: python_attr(v) for k, v in op.attrs.data.items() if k != "__graphs__"}
    kinds = getattr(op, "ONNX_ATTRS", {})
    return {name: python_attr(value) for name, value in op.properties.items()
            if name in kinds}


def _describe(op: Operation) -> str:
    name = op.attributes.get("onnx.name")
    label = f"'{op.name}'"
    if isinstance(name, StringAttr):
        label += f" (node '{name.data}')"
    return label


# ---------------------------------------------------------------------------
# planning


@dataclass
class Plan:
    """A straight-line list of steps over a shared environment."""

    steps: list[Step] = field(default_factory=list)

    def execute(self, env: Env) -> None:
        for step in self.steps:
            step(env)


Handler = Callable[["Planner", Operation], Step]
HANDLERS: dict[str, Handler] = {}


def register_handler(*names: str) -> Callable[[Handler], Handler]:
    """Register how the planner turns ops named ``names`` into a step."""

    def register(fn: Handler) -> Handler:
        for name in names:
            HANDLERS[name] = fn
        return fn

    return register


class Planner:
    """Assigns slots to values and builds the steps of one function."""

    def __init__(self, module: ModuleOp):
        self.module = module
        self.slots: dict[SSAValue, int] = {}
        self.constants: dict[int, np.ndarray] = {}
        self.functions: dict[str, FuncOp] = {
            op.sym_name.data: op for op in module.ops if isinstance(op, FuncOp)}
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
        fused = plan_fusions(self, ops)  # fused chains run at their last op's index
        last_use: dict[int, int] = {}
        for index, op in enumerate(ops):
            for value in _used_values(op):
                slot = self.slot(value)
                last_use[slot] = max(last_use.get(slot, -1), fused.anchor.get(op, index))
        defined_here = {self.slot(arg) for arg in block.args}
        for op in ops:
            defined_here.update(self.slot(r) for r in op.results)
        keep = keep or set()
        free_after: dict[int, list[int]] = {}
        for slot_index, index in last_use.items():
            if slot_index in defined_here and slot_index not in keep:
                free_after.setdefault(index, []).append(slot_index)
        for index, op in enumerate(ops):
            step = fused.steps[op] if op in fused.steps else self.plan_op(op)
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
        handler = HANDLERS.get(op.name)
        if handler is None and op.name.startswith("onnx."):
            handler = _onnx_handler
        if handler is None:
            raise InterpreterError(f"the interpreter cannot run op {_describe(op)}")
        return handler(self, op)

    def callee(self, name: str) -> FunctionPlan:
        plan = self.callees.get(name)
        if plan is None:
            func = self.functions.get(name)
            if func is None:
                raise InterpreterError(f"call to unknown function @{name}")
            plan = FunctionPlan(self.module, func)
            self.callees[name] = plan
        return plan


def _used_values(op: Operation) -> list[SSAValue]:
    """Operands of ``op`` and every value its regions read from outside them."""
    values = list(op.operands)
    if op.regions:
        inner: set[SSAValue] = set()
        for nested in op.walk():
            if nested is op:
                continue
            inner.update(nested.results)
            for region in nested.regions:
                for block in region.blocks:
                    inner.update(block.args)
        for region in op.regions:
            for block in region.blocks:
                inner.update(block.args)
        for nested in op.walk():
            if nested is op:
                continue
            values.extend(v for v in nested.operands if v not in inner)
    return values


def _freer(slots: list[int]) -> Step:
    def free(env: Env) -> None:
        for s in slots:
            env[s] = None

    return free


# ---------------------------------------------------------------------------
# handlers


@register_handler("onnx.Constant")
def _constant(planner: Planner, op: Operation) -> Step | None:
    planner.constants[planner.slot(op.results[0])] = constant_array(op.properties["value"])
    return None


@register_handler("onnx.yield", "func.return")
def _terminator(planner: Planner, op: Operation) -> None:
    return None


def _onnx_handler(planner: Planner, op: Operation) -> Step:
    op_type = op.ONNX_TYPE if isinstance(op, OnnxOp) else op.op_type.data  # type: ignore
    if isinstance(op, OnnxOp):
        inputs = op.onnx_inputs()
        outputs = op.onnx_outputs()
    else:
        inputs = _custom_inputs(op)  # type: ignore[arg-type]
        outputs = list(op.results)
    in_slots = planner.operand_slots(inputs)
    out_slots = [-1 if v is None else planner.slot(v) for v in outputs]
    attrs = onnx_attrs(op)
    n_out = len(outputs)
    kernel = KERNELS.get(op_type) if isinstance(op, OnnxOp) else None
    if kernel is None:
        kernel = _reference_kernel(op, op_type, attrs, len(inputs), n_out)
    label = _describe(op)
    primary = kernel
    spare: list[Callable] = []  # the onnx.reference kernel, made on first need

    def step(env: Env) -> None:
        args = [None if s < 0 else env[s] for s in in_slots]
        try:
            results = primary(args, attrs, n_out)
        except NotImplementedError:
            # The kernel covers the common cases; the rest go to onnx.reference.
            if not spare:
                spare.append(_reference_kernel(op, op_type, attrs, len(in_slots), n_out))
            results = spare[0](args, attrs, n_out)
        except InterpreterError:
            raise
        except Exception as exc:
            raise InterpreterError(f"{label} failed: {type(exc).__name__}: {exc}") from exc
        for s, value in zip(out_slots, results, strict=False):
            if s >= 0:
                env[s] = value

    return step


def _custom_inputs(op: CustomOp) -> list[SSAValue | None]:
    absent = set(op.absent_inputs.get_values()) if op.absent_inputs is not None else set()
    values = iter(op.inputs)
    total = len(op.inputs) + len(absent)
    return [None if i in absent else next(values) for i in range(total)]


def _reference_kernel(op: Operation, op_type: str, attrs: dict[str, Any], n_in: int,
                      n_out: int) -> Callable:
    """A kernel that runs onnx.reference's implementation of this one node."""
    import onnx
    from onnx import helper, numpy_helper
    from onnx.reference import ReferenceEvaluator

    from dialects.onnx import CANONICAL_OPSET

    domain = op.domain.data if isinstance(op, CustomOp) else ""
    if op.regions:
        raise InterpreterError(f"no implementation of {_describe(op)} with subgraphs")
    in_names = [f"i{k}" for k in range(n_in)]
    out_names = [f"o{k}" for k in range(n_out)]
    node_attrs = {}
    for name, value in attrs.items():
        if isinstance(value, np.ndarray):
            node_attrs[name] = numpy_helper.from_array(value)
        elif isinstance(value, list) and value and isinstance(value[0], np.ndarray):
            node_attrs[name] = [numpy_helper.from_array(v) for v in value]
        else:
            node_attrs[name] = value
    cache: dict[tuple, Any] = {}

    def run(args: list, attrs_: dict, n_out_: int) -> list[np.ndarray]:
        present = [n if a is not None else "" for n, a in zip(in_names, args, strict=True)]
        key = tuple((None if a is None else (a.dtype.str, a.ndim)) for a in args)
        evaluator = cache.get(key)
        if evaluator is None:
            node = helper.make_node(op_type, present, out_names, domain=domain, **node_attrs)
            inputs = [helper.make_tensor_value_info(
                n, helper.np_dtype_to_tensor_dtype(a.dtype) if a.dtype != object
                else onnx.TensorProto.STRING, None)
                for n, a in zip(in_names, args, strict=True) if a is not None]
            outputs = [helper.make_tensor_value_info(n, onnx.TensorProto.UNDEFINED, None)
                       for n in out_names]
            graph = helper.make_graph([node], "single", inputs, outputs)
            opsets = [helper.make_opsetid("", CANONICAL_OPSET)]
            if domain not in ("", "ai.onnx"):
                opsets.append(helper.make_opsetid(domain, 1))
            model = helper.make_model(graph, opset_imports=opsets)
            try:
                evaluator = ReferenceEvaluator(model)
            except Exception as exc:
                raise InterpreterError(f"no implementation of {_describe(op)}: "
                                       f"{type(exc).__name__}: {exc}") from None
            cache[key] = evaluator
        feeds = {n: a for n, a in zip(in_names, args, strict=True) if a is not None}
        results = [np.asarray(r) for r in evaluator.run(None, feeds)]
        # onnx.reference returns fixed-width unicode; the IR's strings are objects.
        return [r.astype(object) if r.dtype.kind == "U" else r for r in results]

    return run


def _branch_step(planner: Planner, op: Operation, then_region: Region,
                 else_region: Region) -> Step:
    """onnx.If and scf.if: run one region, forward what it yields."""
    cond_slot = planner.slot(op.operands[0])
    then_plan, _, then_out = planner.plan_region(then_region)
    else_plan, _, else_out = (planner.plan_region(else_region) if else_region.blocks
                              else (Plan(), [], []))
    out_slots = [planner.slot(r) for r in op.results]

    def step(env: Env) -> None:
        if bool(np.asarray(env[cond_slot]).reshape(-1)[0]):
            plan, outs = then_plan, then_out
        else:
            plan, outs = else_plan, else_out
        plan.execute(env)
        for s, o in zip(out_slots, outs, strict=True):
            env[s] = env[o]

    return step


@register_handler("onnx.If")
def _if(planner: Planner, op: Operation) -> Step:
    return _branch_step(planner, op, op.then_branch, op.else_branch)  # type: ignore


@register_handler("onnx.Loop")
def _loop(planner: Planner, op: Operation) -> Step:
    m_slot = -1 if op.M is None else planner.slot(op.M)  # type: ignore[attr-defined]
    cond_slot = -1 if op.cond is None else planner.slot(op.cond)  # type: ignore[attr-defined]
    init_slots = planner.operand_slots(list(op.v_initial))  # type: ignore[attr-defined]
    body, arg_slots, yielded = planner.plan_region(op.body)  # type: ignore[attr-defined]
    n_carried = len(init_slots)
    out_slots = [planner.slot(r) for r in op.results]
    scan_types = [r.type for r in op.results[n_carried:]]

    def step(env: Env) -> None:
        trip = None if m_slot < 0 else int(np.asarray(env[m_slot]).reshape(-1)[0])
        cond = True if cond_slot < 0 else bool(np.asarray(env[cond_slot]).reshape(-1)[0])
        carried = [env[s] for s in init_slots]
        scans: list[list[np.ndarray]] = [[] for _ in scan_types]
        i = 0
        while (trip is None or i < trip) and cond:
            env[arg_slots[0]] = np.array(i, dtype=np.int64)
            env[arg_slots[1]] = np.array(cond, dtype=np.bool_)
            for s, v in zip(arg_slots[2:], carried, strict=True):
                env[s] = v
            body.execute(env)
            if cond_slot >= 0:
                cond = bool(np.asarray(env[yielded[0]]).reshape(-1)[0])
            carried = [env[s] for s in yielded[1:1 + n_carried]]
            for acc, s in zip(scans, yielded[1 + n_carried:], strict=True):
                acc.append(env[s])
            i += 1
        for s, v in zip(out_slots, carried, strict=False):
            env[s] = v
        for s, acc, ttype in zip(out_slots[n_carried:], scans, scan_types, strict=True):
            env[s] = np.stack(acc) if acc else _empty_scan(ttype)

    return step


def _empty_scan(ttype: Attribute) -> np.ndarray:
    dtype = np.float32
    shape: tuple[int, ...] = (0,)
    if isinstance(ttype, TensorType | UnrankedTensorType):
        try:
            dtype = dtypes.numpy_dtype_of(ttype.element_type)
        except KeyError:
            pass
    if isinstance(ttype, TensorType):
        rest = [d if d != DYNAMIC_INDEX else 0 for d in ttype.get_shape()[1:]]
        shape = (0, *rest)
    return np.zeros(shape, dtype=dtype)


@register_handler("onnx.Scan")
def _scan(planner: Planner, op: Operation) -> Step:
    attrs = onnx_attrs(op)
    inputs = planner.operand_slots(list(op.initial_state_and_scan_inputs))  # type: ignore
    n_scan_in = attrs["num_scan_inputs"]
    n_state = len(inputs) - n_scan_in
    body, arg_slots, yielded = planner.plan_region(op.body)  # type: ignore[attr-defined]
    out_slots = [planner.slot(r) for r in op.results]
    n_scan_out = len(out_slots) - n_state
    in_axes = attrs.get("scan_input_axes", [0] * n_scan_in)
    in_dirs = attrs.get("scan_input_directions", [0] * n_scan_in)
    out_axes = attrs.get("scan_output_axes", [0] * n_scan_out)
    out_dirs = attrs.get("scan_output_directions", [0] * n_scan_out)

    def step(env: Env) -> None:
        state = [env[s] for s in inputs[:n_state]]
        scan_ins = []
        for k, s in enumerate(inputs[n_state:]):
            x = np.asarray(env[s])
            axis = in_axes[k] % x.ndim
            x = np.moveaxis(x, axis, 0)
            scan_ins.append(x[::-1] if in_dirs[k] else x)
        length = scan_ins[0].shape[0] if scan_ins else 0
        outs: list[list[np.ndarray]] = [[] for _ in range(n_scan_out)]
        for t in range(length):
            for s, v in zip(arg_slots[:n_state], state, strict=True):
                env[s] = v
            for s, x in zip(arg_slots[n_state:], scan_ins, strict=True):
                env[s] = x[t]
            body.execute(env)
            state = [env[s] for s in yielded[:n_state]]
            for acc, s in zip(outs, yielded[n_state:], strict=True):
                acc.append(env[s])
        for s, v in zip(out_slots, state, strict=False):
            env[s] = v
        for k, (s, acc) in enumerate(zip(out_slots[n_state:], outs, strict=True)):
            stacked = np.stack(acc) if acc else _empty_scan(op.results[n_state + k].type)
            if out_dirs[k]:
                stacked = stacked[::-1]
            axis = out_axes[k] % stacked.ndim
            env[s] = np.ascontiguousarray(np.moveaxis(stacked, 0, axis))

    return step


@register_handler("scf.yield", "scf.condition")
def _scf_terminator(planner: Planner, op: Operation) -> None:
    return None


@register_handler("arith.constant")
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


@register_handler("tensor.extract")
def _tensor_extract(planner: Planner, op: Operation) -> Step:
    source = planner.slot(op.operands[0])
    indices = planner.operand_slots(list(op.operands[1:]))
    out = planner.slot(op.results[0])

    def step(env: Env) -> None:
        index = tuple(int(env[s]) for s in indices)
        env[out] = np.asarray(env[source][index])

    return step


@register_handler("scf.if")
def _scf_if(planner: Planner, op: Operation) -> Step:
    return _branch_step(planner, op, op.regions[0], op.regions[1])


@register_handler("scf.while")
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


@register_handler("func.call")
def _call(planner: Planner, op: Operation) -> Step:
    callee = planner.callee(op.callee.root_reference.data)  # type: ignore[attr-defined]
    in_slots = planner.operand_slots(list(op.operands))
    out_slots = [planner.slot(r) for r in op.results]

    def step(env: Env) -> None:
        results = callee.call([env[s] for s in in_slots])
        for s, v in zip(out_slots, results, strict=True):
            env[s] = v

    return step


# ---------------------------------------------------------------------------
# functions and the public entry point


class FunctionPlan:
    """A prepared function: its argument and result slots and its steps."""

    def __init__(self, module: ModuleOp, func: FuncOp):
        planner = Planner(module)
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
            self.template[slot_index] = array

    def call(self, args: Sequence[np.ndarray]) -> list[np.ndarray]:
        env = list(self.template)
        for s, a in zip(self.arg_slots, args, strict=True):
            env[s] = a
        self.plan.execute(env)
        return [env[s] for s in self.result_slots]


def _names(func: FuncOp, attrs: ArrayAttr | None, count: int, prefix: str) -> list[str]:
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

    def __init__(self, module: ModuleOp, entry: str = "main"):
        funcs = {op.sym_name.data: op for op in module.ops if isinstance(op, FuncOp)}
        if entry not in funcs:
            raise InterpreterError(f"the module has no function @{entry}")
        func = funcs[entry]
        self.function = FunctionPlan(module, func)
        ftype = func.function_type
        self.input_names = _names(func, func.arg_attrs, len(ftype.inputs.data), "arg")
        self.output_names = _names(func, func.res_attrs, len(ftype.outputs.data), "result")
        self.input_types = list(ftype.inputs.data)

    def run(self, inputs: Mapping[str, Any]) -> dict[str, np.ndarray]:
        missing = [n for n in self.input_names if n not in inputs]
        if missing:
            raise InterpreterError(f"missing input '{missing[0]}' (the model takes "
                                   f"{', '.join(self.input_names)})")
        extra = [n for n in inputs if n not in self.input_names]
        if extra:
            raise InterpreterError(f"unknown input '{extra[0]}' (the model takes "
                                   f"{', '.join(self.input_names)})")
        args = [_checked_input(name, inputs[name], ttype)
                for name, ttype in zip(self.input_names, self.input_types, strict=True)]
        results = self.function.call(args)
        return {name: np.asarray(value) for name, value in
                zip(self.output_names, results, strict=True)}


def _checked_input(name: str, value: Any, ttype: Attribute) -> np.ndarray:
    array = np.asarray(value)
    if isinstance(ttype, TensorType | UnrankedTensorType):
        try:
            expected = dtypes.numpy_dtype_of(ttype.element_type)
        except KeyError:
            expected = None
        if expected is not None and array.dtype != expected:
            raise InterpreterError(f"input '{name}': expected dtype {expected}, got "
                                   f"{array.dtype}")
    if isinstance(ttype, TensorType):
        shape = ttype.get_shape()
        shown = "x".join("?" if d == DYNAMIC_INDEX else str(d) for d in shape) or "scalar"
        if array.ndim != len(shape) or any(
                d != DYNAMIC_INDEX and d != a for d, a in zip(shape, array.shape, strict=True)):
            raise InterpreterError(f"input '{name}': expected shape {shown}, got "
                                   f"{'x'.join(map(str, array.shape)) or 'scalar'}")
    # A read-only view: no kernel may write into the caller's array.
    view = array.view()
    view.flags.writeable = False
    return view


def run(module: Any, inputs: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Run ``@main`` of a module (any level) or a compiled model on named inputs."""
    if not isinstance(module, ModuleOp) and hasattr(module, "run"):
        return module.run(inputs)
    return Interpreter(module).run(inputs)


from . import nc_interp  # noqa: E402,F401  (registers the nc.* handlers; imports this module)
