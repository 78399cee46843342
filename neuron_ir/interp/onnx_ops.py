"""Interpreter handlers of the ``onnx`` dialect: numpy kernels, If/Loop/Scan regions,
and ``onnx.reference`` for the rare ops without a kernel of ours."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from xdsl.dialects.builtin import DYNAMIC_INDEX, TensorType, UnrankedTensorType
from xdsl.ir import Attribute, Operation, Region, SSAValue

from dialects.onnx import ConstantOp, CustomOp, IfOp, LoopOp, OnnxOp, ScanOp, YieldOp

from ..errors import InterpreterError
from ..ir import dtypes
from ..ir.attrs import constant_array, describe_op, onnx_attrs
from ..kernels import KERNELS
from .core import Env, HandlerTable, Plan, Planner, Step, implements

HANDLERS: HandlerTable = {}


def _impl(*op_types):
    return implements(HANDLERS, *op_types)


@_impl(ConstantOp)
def _constant(planner: Planner, op: Operation) -> Step | None:
    planner.constants[planner.slot(op.results[0])] = constant_array(op.properties["value"])
    return None


@_impl(YieldOp)
def _terminator(planner: Planner, op: Operation) -> None:
    return None


# Ops whose trailing outputs are optional extras: computing fewer does not change the
# first ones (unlike Split, whose output count is its semantics).
_OPTIONAL_TRAILING_OUTPUTS = frozenset(
    {"MaxPool", "Dropout", "LayerNormalization", "BatchNormalization"}
)


@_impl(OnnxOp, CustomOp)
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
    if op_type in _OPTIONAL_TRAILING_OUTPUTS:
        # Unused trailing outputs are not computed: MaxPool's Indices alone cost ~15x
        # its Y on ResNet's stem.
        while n_out > 1 and (outputs[n_out - 1] is None or not outputs[n_out - 1].uses):
            n_out -= 1
    kernel = KERNELS.get(op_type) if isinstance(op, OnnxOp) else None
    if kernel is None:
        kernel = _reference_kernel(op, op_type, attrs, len(inputs), n_out)
    label = describe_op(op)
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


def _reference_kernel(
    op: Operation, op_type: str, attrs: dict[str, Any], n_in: int, n_out: int
) -> Callable:
    """A kernel that runs onnx.reference's implementation of this one node."""
    import onnx
    from onnx import helper, numpy_helper
    from onnx.reference import ReferenceEvaluator

    from dialects.onnx import CANONICAL_OPSET

    domain = op.domain.data if isinstance(op, CustomOp) else ""
    if op.regions:
        raise InterpreterError(f"no implementation of {describe_op(op)} with subgraphs")
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
            inputs = [
                helper.make_tensor_value_info(
                    n,
                    helper.np_dtype_to_tensor_dtype(a.dtype)
                    if a.dtype != object
                    else onnx.TensorProto.STRING,
                    None,
                )
                for n, a in zip(in_names, args, strict=True)
                if a is not None
            ]
            outputs = [
                helper.make_tensor_value_info(n, onnx.TensorProto.UNDEFINED, None)
                for n in out_names
            ]
            graph = helper.make_graph([node], "single", inputs, outputs)
            opsets = [helper.make_opsetid("", CANONICAL_OPSET)]
            if domain not in ("", "ai.onnx"):
                opsets.append(helper.make_opsetid(domain, 1))
            model = helper.make_model(graph, opset_imports=opsets)
            try:
                evaluator = ReferenceEvaluator(model)
            except Exception as exc:
                raise InterpreterError(
                    f"no implementation of {describe_op(op)}: {type(exc).__name__}: {exc}"
                ) from None
            cache[key] = evaluator
        feeds = {n: a for n, a in zip(in_names, args, strict=True) if a is not None}
        results = [np.asarray(r) for r in evaluator.run(None, feeds)]
        # onnx.reference returns fixed-width unicode; the IR's strings are objects.
        return [r.astype(object) if r.dtype.kind == "U" else r for r in results]

    return run


def branch_step(planner: Planner, op: Operation, then_region: Region, else_region: Region) -> Step:
    """onnx.If and scf.if: run one region, forward what it yields."""
    cond_slot = planner.slot(op.operands[0])
    then_plan, _, then_out = planner.plan_region(then_region)
    else_plan, _, else_out = (
        planner.plan_region(else_region) if else_region.blocks else (Plan(), [], [])
    )
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


@_impl(IfOp)
def _if(planner: Planner, op: Operation) -> Step:
    return branch_step(planner, op, op.then_branch, op.else_branch)  # type: ignore


@_impl(LoopOp)
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
            carried = [env[s] for s in yielded[1 : 1 + n_carried]]
            for acc, s in zip(scans, yielded[1 + n_carried :], strict=True):
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


@_impl(ScanOp)
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
