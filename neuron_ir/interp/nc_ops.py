"""Interpreter handlers for the ``nc`` dialect.

Each nc op runs on the numpy kernels of ``neuron_ir.kernels`` that share its
semantics (``nc.conv`` is ONNX Conv with explicit pads, ``nc.tensor_tensor add`` is
ONNX Add, ...), so a lowered program computes what the onnx-level graph did, as
fast. ``nc.program`` runs its stages in order; ``nc.send``/``nc.recv`` pass values
between stages by channel.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from xdsl.ir import Operation

from dialects import nc
from dialects.nc import ACTIVATIONS, BINARY_OPS, REDUCE_OPS

from ..errors import InterpreterError
from ..ir import dtypes
from ..ir.attrs import constant_array, describe_op, python_attr
from ..kernels import KERNELS
from .core import Env, HandlerTable, Planner, Step, implements

HANDLERS: HandlerTable = {}


def _impl(*op_types):
    return implements(HANDLERS, *op_types)


def _props(op: Operation) -> dict[str, Any]:
    return {k: python_attr(v) for k, v in op.properties.items() if k not in ("reads", "est_time")}


def _step(planner: Planner, op: Operation, fn: Callable[[list], np.ndarray]) -> Step:
    """A step computing the op's single result from its operands with ``fn``."""
    in_slots = planner.operand_slots(list(op.operands))
    out = planner.slot(op.results[0])
    label = describe_op(op)

    def step(env: Env) -> None:
        try:
            env[out] = fn([env[s] for s in in_slots])
        except InterpreterError:
            raise
        except Exception as exc:
            raise InterpreterError(f"{label} failed: {type(exc).__name__}: {exc}") from exc

    return step


def _out_dtype(op: Operation) -> np.dtype:
    return dtypes.numpy_dtype_of(op.results[0].type.element_type)  # type: ignore


def _out_shape(op: Operation) -> tuple[int, ...]:
    return tuple(op.results[0].type.get_shape())  # type: ignore[attr-defined]


# -- structure ------------------------------------------------------------------


@_impl(nc.ProgramOp)
def _program(planner: Planner, op: Operation) -> Step:
    in_slots = planner.operand_slots(list(op.operands))
    out_slots = [planner.slot(r) for r in op.results]
    outer = getattr(planner, "nc_channels", None)
    channels: dict[int, Any] = {}
    planner.nc_channels = channels  # type: ignore[attr-defined]
    try:
        stages = [planner.plan_region(region) for region in op.regions]
    finally:
        planner.nc_channels = outer  # type: ignore[attr-defined]

    def step(env: Env) -> None:
        channels.clear()
        for plan, args, _ in stages:
            for s, v in zip(args, in_slots, strict=True):
                env[s] = env[v]
            plan.execute(env)
        # Only the last stage returns the program's results.
        for s, y in zip(out_slots, stages[-1][2], strict=True):
            env[s] = env[y]
        channels.clear()

    return step


@_impl(nc.ReturnOp)
def _return(planner: Planner, op: Operation) -> None:
    return None


@_impl(nc.WeightOp)
def _weight(planner: Planner, op: Operation) -> None:
    planner.constants[planner.slot(op.results[0])] = constant_array(op.properties["value"])
    return None


@_impl(nc.SendOp)
def _send(planner: Planner, op: Operation) -> Step:
    channels = getattr(planner, "nc_channels", None)
    if channels is None:
        raise InterpreterError("nc.send outside an nc.program")
    src = planner.slot(op.operands[0])
    channel = int(op.properties["channel"].value.data)  # type: ignore[attr-defined]

    def step(env: Env) -> None:
        channels[channel] = env[src]

    return step


@_impl(nc.RecvOp)
def _recv(planner: Planner, op: Operation) -> Step:
    channels = getattr(planner, "nc_channels", None)
    if channels is None:
        raise InterpreterError("nc.recv outside an nc.program")
    out = planner.slot(op.results[0])
    channel = int(op.properties["channel"].value.data)  # type: ignore[attr-defined]

    def step(env: Env) -> None:
        if channel not in channels:
            raise InterpreterError(f"nc.recv: nothing was sent on channel {channel}")
        env[out] = channels[channel]

    return step


@_impl(nc.DmaCopyOp)
def _dma_copy(planner: Planner, op: Operation) -> Step:
    return _step(planner, op, lambda a: a[0])


# -- Tensor engine --------------------------------------------------------------


@_impl(nc.MatmulOp)
def _matmul(planner: Planner, op: Operation) -> Step:
    p = _props(op)
    t_lhs, t_rhs = bool(p.get("transpose_lhs", 0)), bool(p.get("transpose_rhs", 0))
    kernel = KERNELS["MatMul"]

    def run(a: list) -> np.ndarray:
        x, w = a
        if t_lhs:
            x = np.swapaxes(x, -1, -2)
        if t_rhs:
            w = np.swapaxes(w, -1, -2)
        return kernel([x, w], {}, 1)[0]

    return _step(planner, op, run)


@_impl(nc.ConvOp)
def _conv(planner: Planner, op: Operation) -> Step:
    p = _props(op)
    kernel = KERNELS["Conv"]
    w_shape = tuple(op.operands[1].type.get_shape())  # type: ignore[attr-defined]
    attrs = {
        "strides": p["strides"],
        "pads": p["pads"],
        "dilations": p["dilations"],
        "group": p["group"],
        "kernel_shape": list(w_shape[2:]),
    }
    return _step(planner, op, lambda a: kernel(a, attrs, 1)[0])


# -- Scalar engine ----------------------------------------------------------------


def _activation_fn(func: str, params: dict[str, float]) -> Callable[[np.ndarray], np.ndarray]:
    if func == "identity":
        return lambda x: x
    if func == "square":
        return np.square
    if func == "rsqrt":
        return lambda x: 1.0 / np.sqrt(x)  # as the normalisation kernels compute it
    if func == "silu":
        sigmoid = KERNELS["Sigmoid"]
        return lambda x: x * sigmoid([x], {}, 1)[0]
    if func == "gelu_tanh":
        gelu = KERNELS["Gelu"]
        return lambda x: gelu([x], {"approximate": "tanh"}, 1)[0]
    name, names = ACTIVATIONS.get(func, (None, ()))
    kernel = KERNELS.get(name) if name else None
    if kernel is None:
        raise InterpreterError(f"nc.activation: no implementation of '{func}'")
    # alpha/beta carry the ONNX attributes the table names, in order.
    attrs = {
        onnx: params[mine]
        for onnx, mine in zip(names, ("alpha", "beta"), strict=False)
        if mine in params
    }
    return lambda x: kernel([x], attrs, 1)[0]


@_impl(nc.ActivationOp)
def _activation(planner: Planner, op: Operation) -> Step:
    p = _props(op)
    fn = _activation_fn(p["func"], {k: p[k] for k in ("alpha", "beta") if k in p})
    scale, bias = p.get("scale"), p.get("bias")

    def run(a: list) -> np.ndarray:
        x = a[0]
        if scale is not None:
            x = x * np.asarray(scale, dtype=x.dtype)
        if bias is not None:
            x = x + np.asarray(bias, dtype=x.dtype)
        return np.asarray(fn(x))

    return _step(planner, op, run)


# -- Vector engine ------------------------------------------------------------------


@_impl(nc.TensorTensorOp)
def _tensor_tensor(planner: Planner, op: Operation) -> Step:
    kind = _props(op)["op"]
    if kind == "ne":
        equal = KERNELS["Equal"]
        return _step(planner, op, lambda a: np.logical_not(equal(a, {}, 1)[0]))
    name, attrs = BINARY_OPS[kind]
    kernel = KERNELS[name]
    return _step(planner, op, lambda a: kernel(a, attrs, 1)[0])


@_impl(nc.TensorScalarOp)
def _tensor_scalar(planner: Planner, op: Operation) -> Step:
    p = _props(op)
    kind, scalar, reverse = p["op"], p["scalar"], bool(p.get("reverse", 0))
    dtype = dtypes.numpy_dtype_of(op.operands[0].type.element_type)  # type: ignore
    # The immediate in the operand's dtype: the same array the onnx graph held.
    s = np.asarray(bool(scalar) if dtype == np.bool_ else scalar).astype(dtype)
    if kind == "ne":
        equal = KERNELS["Equal"]
        return _step(planner, op, lambda a: np.logical_not(equal([a[0], s], {}, 1)[0]))
    name, attrs = BINARY_OPS[kind]
    kernel = KERNELS[name]
    if reverse:
        return _step(planner, op, lambda a: kernel([s, a[0]], attrs, 1)[0])
    return _step(planner, op, lambda a: kernel([a[0], s], attrs, 1)[0])


@_impl(nc.ReduceOp)
def _reduce(planner: Planner, op: Operation) -> Step:
    p = _props(op)
    kind, axes, keep = p["op"], p["axes"], int(p["keepdims"])
    if kind in ("argmax", "argmin"):
        if len(axes) != 1:
            raise InterpreterError(f"nc.reduce {kind} takes one axis")
        kernel = KERNELS[REDUCE_OPS[kind]]
        attrs = {"axis": axes[0], "keepdims": keep}
        return _step(planner, op, lambda a: kernel(a, attrs, 1)[0])
    kernel = KERNELS[REDUCE_OPS[kind]]
    axes_array = np.array(axes, dtype=np.int64)
    attrs = {"keepdims": keep}
    return _step(planner, op, lambda a: kernel([a[0], axes_array], attrs, 1)[0])


@_impl(nc.TransposeOp)
def _transpose(planner: Planner, op: Operation) -> Step:
    kernel = KERNELS["Transpose"]
    attrs = {"perm": _props(op)["perm"]}
    return _step(planner, op, lambda a: kernel(a, attrs, 1)[0])


@_impl(nc.SelectOp)
def _select(planner: Planner, op: Operation) -> Step:
    kernel = KERNELS["Where"]
    return _step(planner, op, lambda a: kernel(a, {}, 1)[0])


@_impl(nc.CastOp)
def _cast(planner: Planner, op: Operation) -> Step:
    kernel = KERNELS["Cast"]
    attrs = {"to": dtypes.BY_XDSL[op.results[0].type.element_type].onnx}  # type: ignore
    return _step(planner, op, lambda a: kernel(a, attrs, 1)[0])


@_impl(nc.PoolOp)
def _pool(planner: Planner, op: Operation) -> Step:
    p = _props(op)
    in_shape = tuple(op.operands[0].type.get_shape())  # type: ignore[attr-defined]
    max_pool = p["kind"] == "max"
    plain = not p.get("ceil_mode", 0) and not any(d != 1 for d in p.get("dilations", []))
    if plain and list(in_shape[2:]) == p["kernel"] and not any(p["pads"]):
        # One window over every spatial position: the global pools.
        kernel = KERNELS["GlobalMaxPool" if max_pool else "GlobalAveragePool"]
        return _step(planner, op, lambda a: kernel(a, {}, 1)[0])
    kernel = KERNELS["MaxPool" if max_pool else "AveragePool"]
    attrs = {"kernel_shape": p["kernel"], "strides": p["strides"], "pads": p["pads"]}
    for key in ("dilations", "ceil_mode"):
        if key in p:
            attrs[key] = p[key]
    if not max_pool:
        attrs["count_include_pad"] = int(p.get("count_include_pad", 0))
    return _step(planner, op, lambda a: kernel(a, attrs, 1)[0])


@_impl(nc.ReshapeOp)
def _reshape(planner: Planner, op: Operation) -> Step:
    shape = _out_shape(op)
    return _step(planner, op, lambda a: a[0].reshape(shape))


@_impl(nc.BroadcastOp)
def _broadcast(planner: Planner, op: Operation) -> Step:
    kernel = KERNELS["Expand"]
    shape = np.array(_out_shape(op), dtype=np.int64)
    return _step(planner, op, lambda a: kernel([a[0], shape], {}, 1)[0])


@_impl(nc.SliceOp)
def _slice(planner: Planner, op: Operation) -> Step:
    p = _props(op)
    kernel = KERNELS["Slice"]
    bounds = [np.array(p[k], dtype=np.int64) for k in ("starts", "ends", "axes", "steps")]
    return _step(planner, op, lambda a: kernel([a[0], *bounds], {}, 1)[0])


@_impl(nc.ConcatOp)
def _concat(planner: Planner, op: Operation) -> Step:
    kernel = KERNELS["Concat"]
    attrs = {"axis": _props(op)["axis"]}
    return _step(planner, op, lambda a: kernel(a, attrs, 1)[0])


@_impl(nc.PadOp)
def _pad(planner: Planner, op: Operation) -> Step:
    p = _props(op)
    kernel = KERNELS["Pad"]
    pads = np.array(p["pads"], dtype=np.int64)
    value = np.asarray(p["value"]).astype(_out_dtype(op))
    return _step(planner, op, lambda a: kernel([a[0], pads, value], {"mode": "constant"}, 1)[0])


# -- GpSimd engine ------------------------------------------------------------------


@_impl(nc.GatherOp)
def _gather(planner: Planner, op: Operation) -> Step:
    p = _props(op)
    name = {"take": "Gather", "elements": "GatherElements", "nd": "GatherND"}[p["mode"]]
    kernel = KERNELS[name]
    attrs = {} if name == "GatherND" else {"axis": p["axis"]}
    return _step(planner, op, lambda a: kernel(a, attrs, 1)[0])


@_impl(nc.IotaOp)
def _iota(planner: Planner, op: Operation) -> None:
    p = _props(op)
    shape = _out_shape(op)
    axis = p["axis"] % max(len(shape), 1)
    index = np.arange(shape[axis]).reshape([-1 if i == axis else 1 for i in range(len(shape))])
    value = np.broadcast_to(p["start"] + p["step"] * index, shape).astype(_out_dtype(op))
    planner.constants[planner.slot(op.results[0])] = value
    return None
