"""``lower-to-nc``: turn each NeuronCore subgraph's onnx ops into one ``nc.program``.

Every ``func.func`` with ``neuron.target`` gets a body of the form::

    %r = "nc.program"(%args) ({^bb0(%args): ...nc ops...; nc.return %results})
    func.return %r

with one stage (``cores = 1``). Nothing of the onnx dialect stays inside the program:
an op without a lowering is a ``PassError`` naming the node. The lowering keeps ONNX
semantics exactly (the nc interpreter runs the same numpy kernels), decomposing
Softmax, LayerNormalization, BatchNormalization and Gemm into engine ops.

Weights (``onnx.Constant`` read as tensors, and constants the lowering derives, such
as folded batch-norm scales) become ``nc.weight`` in HBM, where a loaded model's
weights live until ``nc-place-weights`` caches them in SBUF; ``nc-estimate`` then
prices every op. Constants read only as attributes (shapes, axes, slice bounds) are
folded into the nc ops and leave no weight behind.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from xdsl.context import Context
from xdsl.dialects.builtin import (
    DenseArrayBase,
    Float64Type,
    FloatAttr,
    IntegerAttr,
    ModuleOp,
    StringAttr,
    i64,
)
from xdsl.dialects.func import FuncOp, ReturnOp
from xdsl.ir import Attribute, Block, Operation, Region, SSAValue
from xdsl.passes import ModulePass

from dialects import nc
from neuron_ir.analysis.report import PARTITIONED_ATTR, TARGET_ATTR
from neuron_ir.errors import PassError
from neuron_ir.ir.attrs import constant_array, onnx_attrs
from neuron_ir.ir.util import dense_attr, dtype_of, is_static, tensor_type

_BINARY = {"Add": "add", "Sub": "sub", "Mul": "mul", "Div": "div", "Pow": "pow",
           "Max": "max", "Min": "min", "Equal": "eq", "Less": "lt", "LessOrEqual": "le",
           "Greater": "gt", "GreaterOrEqual": "ge", "And": "and", "Or": "or", "Xor": "xor"}
# Ops whose scalar-constant operand may become an immediate (float results only).
_SCALAR_OK = {"add", "sub", "mul", "div", "pow", "max", "min"}
_ACTIVATION = {"Relu": "relu", "Sigmoid": "sigmoid", "Tanh": "tanh", "Erf": "erf",
               "Exp": "exp", "Log": "log", "Sqrt": "sqrt", "Abs": "abs", "Neg": "neg",
               "Reciprocal": "reciprocal", "LeakyRelu": "leaky_relu", "Softplus": "softplus",
               "Sin": "sin", "Cos": "cos", "Sign": "sign", "Floor": "floor", "Ceil": "ceil",
               "Round": "round", "Elu": "elu", "Mish": "mish"}
_REDUCE = {"ReduceMean": "mean", "ReduceSum": "sum", "ReduceMax": "max", "ReduceMin": "min",
           "ReduceProd": "prod", "ReduceSumSquare": "sum_square",
           "ReduceLogSumExp": "log_sum_exp"}
_RESHAPES = {"Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity", "Dropout"}


@dataclass(frozen=True)
class LowerToNcPass(ModulePass):
    """Lower every NeuronCore subgraph (``neuron.target``) to one ``nc.program``."""

    name = "lower-to-nc"

    batch: int = 1
    """Batch size the program is compiled for (recorded on ``nc.program``)."""

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        if self.batch < 1:
            raise PassError(f"lower-to-nc: batch must be positive, not {self.batch}")
        if PARTITIONED_ATTR not in op.attributes and not any(
                isinstance(f, FuncOp) and TARGET_ATTR in f.attributes for f in op.ops):
            # Nothing would be lowered: say why rather than print the module unchanged.
            raise PassError("lower-to-nc needs a partitioned module: run 'partition' first")
        for func in list(op.ops):
            if isinstance(func, FuncOp) and isinstance(func.attributes.get(TARGET_ATTR),
                                                       StringAttr):
                _lower_func(func, self.batch)


def _lower_func(func: FuncOp, batch: int) -> None:
    from neuron_ir.target import get_target

    target = func.attributes[TARGET_ATTR].data  # type: ignore[union-attr]
    block = func.body.block
    ret = block.last_op
    if ret is None or ret.name != "func.return":
        raise PassError(f"@{func.sym_name.data}: body does not end in func.return")
    if any(o.name.startswith("nc.") for o in block.ops):
        raise PassError(f"@{func.sym_name.data} is already lowered to nc")
    for arg in block.args:
        if not is_static(arg.type):
            raise PassError(f"@{func.sym_name.data}: argument type {arg.type} is not static; "
                            "run shape-inference with pinned input shapes first")
    stage = Block(arg_types=[a.type for a in block.args])
    lowering = _Lowering(get_target(target), stage)
    for old, new in zip(block.args, stage.args, strict=True):
        lowering.values[old] = new
        if old.name_hint:
            new.name_hint = old.name_hint
    for inner in list(block.ops):
        if inner is ret:
            break
        lowering.lower(inner)
    results = [lowering.tensor(v) for v in ret.operands]
    stage.add_op(nc.ReturnOp.build(operands=[results]))
    program = nc.ProgramOp.build(
        operands=[list(block.args)],
        result_types=[[v.type for v in ret.operands]],
        properties={"target": StringAttr(target), "batch": IntegerAttr(batch, i64),
                    "cores": IntegerAttr(1, i64)},
        regions=[[Region(stage)]])
    for inner in reversed(list(block.ops)):
        inner.detach()
        inner.erase(safe_erase=False)
    block.add_op(program)
    block.add_op(ReturnOp(*program.results))


def _describe(op: Operation) -> str:
    name = op.attributes.get("onnx.name")
    return f"'{op.name}'" + (f" (node '{name.data}')" if isinstance(name, StringAttr) else "")


def _f(x: float) -> FloatAttr:
    return FloatAttr(float(x), Float64Type())


def _ints(values) -> DenseArrayBase:
    return DenseArrayBase.from_list(i64, [int(v) for v in values])


def _shape(value: SSAValue) -> tuple[int, ...]:
    return tuple(value.type.get_shape())  # type: ignore[attr-defined]


def _dtype(value: SSAValue) -> np.dtype:
    return dtype_of(value.type.element_type)  # type: ignore[attr-defined]


class _Lowering:
    """Lowers the ops of one subgraph into ``stage``, in order."""

    def __init__(self, profile: Any, stage: Block):
        self.profile = profile
        self.stage = stage
        self.values: dict[SSAValue, SSAValue] = {}
        self.constants: dict[SSAValue, np.ndarray] = {}  # onnx value -> its array
        self.const_attrs: dict[SSAValue, Attribute] = {}
        self.current: Operation | None = None

    # -- helpers --------------------------------------------------------------

    def fail(self, why: str) -> PassError:
        op = self.current
        return PassError(f"lower-to-nc: cannot lower {_describe(op)}: {why}"
                         if op is not None else f"lower-to-nc: {why}")

    def const(self, value: SSAValue | None) -> np.ndarray | None:
        return None if value is None else self.constants.get(value)

    def need_const(self, value: SSAValue | None, what: str) -> np.ndarray:
        array = self.const(value)
        if array is None:
            raise self.fail(f"{what} must be a constant")
        return array

    def weight(self, array: np.ndarray, attr: Attribute | None = None) -> SSAValue:
        """An ``nc.weight``, in HBM until ``nc-place-weights`` places it."""
        array = np.asarray(array)
        if array.dtype == np.dtype(object):
            raise self.fail("string tensors cannot live on a NeuronCore")
        attr = attr if attr is not None else dense_attr(array)
        op = nc.WeightOp.build(properties={"value": attr, "memory": StringAttr("hbm")},
                               result_types=[attr.type])  # type: ignore[attr-defined]
        self.stage.add_op(op)
        return op.results[0]

    def tensor(self, value: SSAValue) -> SSAValue:
        """The nc value of an onnx value (weights are placed on first tensor use)."""
        new = self.values.get(value)
        if new is None:
            if value not in self.constants:
                raise self.fail(f"operand {value} was not lowered")
            new = self.values[value] = self.weight(self.constants[value],
                                                   self.const_attrs.get(value))
        return new

    def emit(self, cls: type, operands: list[SSAValue], out_type: Attribute,
             flops: float = 0.0, **props: Any) -> SSAValue:
        properties: dict[str, Attribute] = {}
        for key, val in props.items():
            if val is None:
                continue
            if isinstance(val, Attribute):
                properties[key] = val
            elif isinstance(val, str):
                properties[key] = StringAttr(val)
            elif isinstance(val, bool | int | np.integer):
                properties[key] = IntegerAttr(int(val), i64)
            elif isinstance(val, float):
                properties[key] = _f(val)
            else:
                properties[key] = _ints(val)
        if cls is nc.ConcatOp:
            op = cls.build(operands=[operands], result_types=[out_type], properties=properties)
        else:
            op = cls.build(operands=operands, result_types=[out_type], properties=properties)
        self.stage.add_op(op)
        return op.results[0]

    def typed(self, shape: tuple[int, ...], dtype: np.dtype) -> Attribute:
        return tensor_type(dtype, shape)

    def binary(self, kind: str, lhs: SSAValue, rhs: SSAValue, out_type: Attribute,
               flops: float = 0.0) -> SSAValue:
        """lhs op rhs on nc values, a scalar weight operand as an immediate."""
        return self.emit(nc.TensorTensorOp, [lhs, rhs], out_type, flops, op=kind)

    def scalar_op(self, kind: str, x: SSAValue, scalar: float, reverse: bool = False) -> SSAValue:
        return self.emit(nc.TensorScalarOp, [x], x.type, op=kind, scalar=float(scalar),
                         reverse=1 if reverse else None)

    def reduce(self, kind: str, x: SSAValue, axes: list[int], keepdims: bool) -> SSAValue:
        shape = list(_shape(x))
        axes = sorted({a % len(shape) for a in axes})
        out = [1 if i in axes else d for i, d in enumerate(shape)]
        if not keepdims:
            out = [d for i, d in enumerate(shape) if i not in axes]
        dtype = np.dtype(np.int64) if kind in ("argmax", "argmin") else _dtype(x)
        return self.emit(nc.ReduceOp, [x], self.typed(tuple(out), dtype), op=kind, axes=axes,
                         keepdims=int(keepdims))

    def reshape(self, x: SSAValue, shape: tuple[int, ...]) -> SSAValue:
        if _shape(x) == tuple(shape):
            return x
        return self.emit(nc.ReshapeOp, [x], self.typed(tuple(shape), _dtype(x)))

    def transpose(self, x: SSAValue, perm: list[int]) -> SSAValue:
        shape = _shape(x)
        return self.emit(nc.TransposeOp, [x],
                         self.typed(tuple(shape[p] for p in perm), _dtype(x)), perm=perm)

    # -- dispatch -------------------------------------------------------------

    def lower(self, op: Operation) -> None:
        self.current = op
        if op.regions:
            raise self.fail("ops with regions cannot run on a NeuronCore")
        if op.name == "onnx.Constant":
            self.constants[op.results[0]] = constant_array(op.properties["value"])
            self.const_attrs[op.results[0]] = op.properties["value"]
            return
        if not op.name.startswith("onnx."):
            raise self.fail("only onnx ops can be lowered")
        kind = getattr(op, "ONNX_TYPE", None)
        if kind is None:
            raise self.fail("custom ops have no NeuronCore lowering")
        ins = op.onnx_inputs()  # type: ignore[attr-defined]
        outs = op.onnx_outputs()  # type: ignore[attr-defined]
        for v in [*ins, *outs]:
            if v is not None and not is_static(v.type):
                raise self.fail(f"value type {v.type} is not static")
        used_outs = [v for v in outs[1:] if v is not None and v.uses]
        if used_outs and kind != "Dropout":
            raise self.fail("only the first result may be used")
        attrs = onnx_attrs(op)
        handler = getattr(self, f"_lower_{kind}", None)
        if handler is None:
            if kind in _BINARY:
                handler = self._lower_binary
            elif kind in _ACTIVATION:
                handler = self._lower_activation
            elif kind in _REDUCE:
                handler = self._lower_reduce
            elif kind in _RESHAPES:
                handler = self._lower_reshape
            else:
                raise self.fail("no lowering to the nc dialect")
        result = handler(op, kind, ins, outs[0], attrs)
        if result is None:  # folded to a constant, placed as a weight on first use
            return
        if result.type != outs[0].type:
            raise self.fail(f"lowered to {result.type}, expected {outs[0].type}")
        self.values[outs[0]] = result

    def flops(self, op: Operation) -> float:
        from neuron_ir.analysis.flops import op_flops

        return float(op_flops(op))

    # -- element-wise -----------------------------------------------------------

    def _lower_binary(self, op, kind, ins, out, attrs) -> SSAValue:
        name = _BINARY[kind]
        if len(ins) != 2:
            if kind in ("Max", "Min") and len(ins) > 2:
                raise self.fail("variadic Max/Min with more than two inputs")
            raise self.fail(f"{kind} with {len(ins)} inputs")
        lhs, rhs = ins
        dtype = _dtype(out)
        if name in _SCALAR_OK and dtype.kind == "f" and _dtype(lhs) == _dtype(rhs) == dtype:
            # A one-element constant becomes an immediate when it does not broadcast
            # the other operand up (the output keeps that operand's shape).
            for const_side, other, reverse in ((rhs, lhs, False), (lhs, rhs, True)):
                c = self.const(const_side)
                if (c is not None and c.size == 1 and _shape(other) == _shape(out)
                        and other not in self.constants):
                    return self.scalar_op(name, self.tensor(other), float(c.reshape(-1)[0]),
                                          reverse)
        return self.binary(name, self.tensor(lhs), self.tensor(rhs), out.type,
                           self.flops(op))

    def _lower_Not(self, op, kind, ins, out, attrs) -> SSAValue:
        # not x == x xor true on booleans.
        return self.scalar_op("xor", self.tensor(ins[0]), 1.0)

    def _lower_Where(self, op, kind, ins, out, attrs) -> SSAValue:
        return self.emit(nc.SelectOp, [self.tensor(v) for v in ins], out.type)

    def _lower_activation(self, op, kind, ins, out, attrs) -> SSAValue:
        alpha = attrs.get("alpha")
        if kind == "LeakyRelu" and alpha is None:
            alpha = 0.01
        if kind == "Elu" and alpha is None:
            alpha = 1.0
        return self.emit(nc.ActivationOp, [self.tensor(ins[0])], out.type, self.flops(op),
                         func=_ACTIVATION[kind], alpha=None if alpha is None else float(alpha))

    def _lower_Gelu(self, op, kind, ins, out, attrs) -> SSAValue:
        approx = str(attrs.get("approximate", "none"))
        func = "gelu_tanh" if approx == "tanh" else "gelu"
        return self.emit(nc.ActivationOp, [self.tensor(ins[0])], out.type, func=func)

    def _lower_Cast(self, op, kind, ins, out, attrs) -> SSAValue:
        if int(attrs.get("saturate", 1)) != 1:
            raise self.fail("Cast with saturate=0")
        return self.emit(nc.CastOp, [self.tensor(ins[0])], out.type)

    # -- matrix products --------------------------------------------------------

    def _lower_MatMul(self, op, kind, ins, out, attrs) -> SSAValue:
        return self.emit(nc.MatmulOp, [self.tensor(ins[0]), self.tensor(ins[1])], out.type,
                         self.flops(op))

    def _lower_Gemm(self, op, kind, ins, out, attrs) -> SSAValue:
        # Same order as the kernel: (A' B') * alpha, then + C * beta.
        a, b = ins[0], ins[1]
        c = ins[2] if len(ins) > 2 else None
        alpha = float(attrs.get("alpha", 1.0))
        beta = float(attrs.get("beta", 1.0))
        shape = _shape(out)
        y = self.emit(nc.MatmulOp, [self.tensor(a), self.tensor(b)],
                      self.typed(shape, _dtype(out)), self.flops(op),
                      transpose_lhs=1 if int(attrs.get("transA", 0)) else None,
                      transpose_rhs=1 if int(attrs.get("transB", 0)) else None)
        if alpha != 1.0:
            y = self.scalar_op("mul", y, alpha)
        if c is not None and beta != 0.0:
            cv = self.const(c)
            if beta != 1.0 and cv is not None:
                # Folded at compile time, in the dtype the kernel computes in.
                c_val = self.weight(np.asarray(cv * beta).astype(cv.dtype))
            else:
                c_val = self.tensor(c)
                if beta != 1.0:
                    c_val = self.scalar_op("mul", c_val, beta)
            y = self.binary("add", y, c_val, out.type)
        return y

    def _lower_CumSum(self, op, kind, ins, out, attrs) -> SSAValue:
        # A cumulative sum along the last axis is a product with a triangular matrix of
        # ones (exact for integers, reassociated for floats).
        x = ins[0]
        shape = _shape(x)
        axis = int(self.need_const(ins[1], "the axis").reshape(-1)[0]) % len(shape)
        n = shape[axis]
        i, j = np.indices((n, n))
        exclusive = int(attrs.get("exclusive", 0))
        reverse = int(attrs.get("reverse", 0))
        mask = (i >= j) if reverse else (i <= j)
        if exclusive:
            mask &= i != j
        xv = self.tensor(x)
        last = len(shape) - 1
        perm = list(range(len(shape)))
        perm[axis], perm[last] = perm[last], perm[axis]
        if axis != last:
            xv = self.transpose(xv, perm)
        tri = self.weight(mask.astype(_dtype(x)))
        y = self.emit(nc.MatmulOp, [xv, tri], xv.type, 2.0 * math.prod(shape) * n)
        if axis != last:
            y = self.transpose(y, perm)
        return y

    # -- normalisations -----------------------------------------------------------

    def _lower_Softmax(self, op, kind, ins, out, attrs) -> SSAValue:
        x = self.tensor(ins[0])
        axis = int(attrs.get("axis", -1))
        m = self.reduce("max", x, [axis], True)
        d = self.binary("sub", x, m, x.type)
        e = self.emit(nc.ActivationOp, [d], x.type, func="exp")
        s = self.reduce("sum", e, [axis], True)
        return self.binary("div", e, s, out.type)

    def _lower_LayerNormalization(self, op, kind, ins, out, attrs) -> SSAValue:
        x = self.tensor(ins[0])
        shape = _shape(ins[0])
        if _dtype(ins[0]) != np.float32 or int(attrs.get("stash_type", 1)) != 1:
            raise self.fail("only float32 LayerNormalization")
        axis = int(attrs.get("axis", -1)) % len(shape)
        axes = list(range(axis, len(shape)))
        eps = float(attrs.get("epsilon", 1e-5))
        mean = self.reduce("mean", x, axes, True)
        d = self.binary("sub", x, mean, x.type)
        sq = self.emit(nc.ActivationOp, [d], x.type, func="square")
        var = self.reduce("mean", sq, axes, True)
        var = self.scalar_op("add", var, eps)
        inv = self.emit(nc.ActivationOp, [var], var.type, func="rsqrt")
        y = self.binary("mul", d, inv, x.type)
        y = self.binary("mul", y, self.tensor(ins[1]), x.type)
        if len(ins) > 2 and ins[2] is not None:
            y = self.binary("add", y, self.tensor(ins[2]), x.type)
        return y

    def _lower_BatchNormalization(self, op, kind, ins, out, attrs) -> SSAValue:
        if int(attrs.get("training_mode", 0)):
            raise self.fail("training-mode BatchNormalization")
        x = ins[0]
        if _dtype(x) != np.float32:
            raise self.fail("only float32 BatchNormalization")
        scale, bias, mean, var = (self.need_const(v, "the statistics") for v in ins[1:5])
        eps = float(attrs.get("epsilon", 1e-5))
        # Folded per channel in float64, like the kernel (and onnxruntime).
        k = scale.astype(np.float64) / np.sqrt(var.astype(np.float64) + eps)
        shift = bias.astype(np.float64) - mean.astype(np.float64) * k
        cshape = (1, _shape(x)[1]) + (1,) * (len(_shape(x)) - 2)
        y = self.binary("mul", self.tensor(x), self.weight(k.astype(np.float32).reshape(cshape)),
                        x.type)
        return self.binary("add", y, self.weight(shift.astype(np.float32).reshape(cshape)),
                           out.type)

    # -- reductions -------------------------------------------------------------

    def _lower_reduce(self, op, kind, ins, out, attrs) -> SSAValue:
        x = ins[0]
        rank = len(_shape(x))
        axes_v = self.const(ins[1]) if len(ins) > 1 and ins[1] is not None else None
        if len(ins) > 1 and ins[1] is not None and axes_v is None:
            raise self.fail("the axes must be a constant")
        axes = ([int(a) for a in axes_v.reshape(-1)] if axes_v is not None
                else attrs.get("axes"))
        if not axes:
            if attrs.get("noop_with_empty_axes", 0):
                return self.reshape(self.tensor(x), _shape(out))
            axes = list(range(rank))
        return self.reduce(_REDUCE[kind], self.tensor(x), axes, bool(attrs.get("keepdims", 1)))

    def _lower_ArgMax(self, op, kind, ins, out, attrs) -> SSAValue:
        if attrs.get("select_last_index", 0):
            raise self.fail("select_last_index=1")
        return self.reduce("argmax" if kind == "ArgMax" else "argmin", self.tensor(ins[0]),
                           [int(attrs.get("axis", 0))], bool(attrs.get("keepdims", 1)))

    _lower_ArgMin = _lower_ArgMax

    # -- layout -------------------------------------------------------------------

    def _lower_reshape(self, op, kind, ins, out, attrs) -> SSAValue:
        if kind == "Dropout" and len(op.results) > 1 and op.results[1].uses:
            raise self.fail("the Dropout mask is used")
        # Shapes are static: the result type says everything.
        x = self.tensor(ins[0])
        if x.type == out.type:
            return x
        return self.emit(nc.ReshapeOp, [x], out.type)

    def _lower_Transpose(self, op, kind, ins, out, attrs) -> SSAValue:
        rank = len(_shape(ins[0]))
        perm = attrs.get("perm") or list(reversed(range(rank)))
        return self.transpose(self.tensor(ins[0]), [int(p) for p in perm])

    def _lower_Expand(self, op, kind, ins, out, attrs) -> SSAValue:
        x = self.tensor(ins[0])
        if x.type == out.type:
            return x
        return self.emit(nc.BroadcastOp, [x], out.type)

    def _lower_Slice(self, op, kind, ins, out, attrs) -> SSAValue:
        rank = len(_shape(ins[0]))
        starts = self.need_const(ins[1], "starts").reshape(-1)
        ends = self.need_const(ins[2], "ends").reshape(-1)
        axes = (self.need_const(ins[3], "axes").reshape(-1)
                if len(ins) > 3 and ins[3] is not None else np.arange(len(starts)))
        steps = (self.need_const(ins[4], "steps").reshape(-1)
                 if len(ins) > 4 and ins[4] is not None else np.ones(len(starts), np.int64))
        # int64 bounds (INT64_MAX for "to the end") are kept as they are.
        return self.emit(nc.SliceOp, [self.tensor(ins[0])], out.type,
                         starts=[int(s) for s in starts], ends=[int(e) for e in ends],
                         steps=[int(s) for s in steps], axes=[int(a) % rank for a in axes])

    def _lower_Concat(self, op, kind, ins, out, attrs) -> SSAValue:
        rank = len(_shape(out))
        return self.emit(nc.ConcatOp, [self.tensor(v) for v in ins], out.type,
                         axis=int(attrs["axis"]) % rank)

    def _lower_Pad(self, op, kind, ins, out, attrs) -> SSAValue:
        if str(attrs.get("mode", "constant")) != "constant":
            raise self.fail("only constant-mode Pad")
        rank = len(_shape(ins[0]))
        pads = [int(p) for p in self.need_const(ins[1], "pads").reshape(-1)]
        value = 0.0
        if len(ins) > 2 and ins[2] is not None:
            value = float(self.need_const(ins[2], "the pad value").reshape(-1)[0])
        if len(ins) > 3 and ins[3] is not None:
            axes = [int(a) % rank for a in self.need_const(ins[3], "axes").reshape(-1)]
            full = [0] * (2 * rank)
            for k, a in enumerate(axes):
                full[a], full[rank + a] = pads[k], pads[len(axes) + k]
            pads = full
        return self.emit(nc.PadOp, [self.tensor(ins[0])], out.type, pads=pads, value=value)

    def _lower_Gather(self, op, kind, ins, out, attrs) -> SSAValue:
        mode = {"Gather": "take", "GatherElements": "elements", "GatherND": "nd"}[kind]
        if kind == "GatherND" and int(attrs.get("batch_dims", 0)) != 0:
            raise self.fail("GatherND with batch_dims != 0")
        rank = len(_shape(ins[0]))
        return self.emit(nc.GatherOp, [self.tensor(ins[0]), self.tensor(ins[1])], out.type,
                         axis=int(attrs.get("axis", 0)) % max(rank, 1), mode=mode)

    _lower_GatherElements = _lower_Gather
    _lower_GatherND = _lower_Gather

    # -- convolution and pooling ---------------------------------------------------

    def _window(self, attrs, in_sp, kernel, strides, dil) -> list[int]:
        from neuron_ir.kernels.nn import _window_pads

        dk = [(k - 1) * d + 1 for k, d in zip(kernel, dil, strict=True)]
        begin, end = _window_pads(attrs, list(in_sp), dk, list(strides))
        return [*begin, *end]

    def _lower_Conv(self, op, kind, ins, out, attrs) -> SSAValue:
        x, w = ins[0], ins[1]
        xs, ws = _shape(x), _shape(w)
        nd = len(xs) - 2
        strides = [int(s) for s in attrs.get("strides", [1] * nd)]
        dil = [int(d) for d in attrs.get("dilations", [1] * nd)]
        pads = self._window(attrs, xs[2:], ws[2:], strides, dil)
        y = self.emit(nc.ConvOp, [self.tensor(x), self.tensor(w)], out.type, self.flops(op),
                      strides=strides, pads=pads, dilations=dil,
                      group=int(attrs.get("group", 1)))
        if len(ins) > 2 and ins[2] is not None:
            cshape = (1, ws[0]) + (1,) * nd
            b = self.const(ins[2])
            bias = (self.weight(b.reshape(cshape)) if b is not None
                    else self.reshape(self.tensor(ins[2]), cshape))
            y = self.binary("add", y, bias, out.type)
        return y

    def _pool(self, kind_name: str, x: SSAValue, out: SSAValue, kernel, strides, pads,
              include_pad: int | None) -> SSAValue:
        return self.emit(nc.PoolOp, [self.tensor(x)], out.type, kind=kind_name, kernel=kernel,
                         strides=strides, pads=pads, count_include_pad=include_pad)

    def _lower_MaxPool(self, op, kind, ins, out, attrs) -> SSAValue:
        x = ins[0]
        xs = _shape(x)
        nd = len(xs) - 2
        kernel = [int(k) for k in attrs["kernel_shape"]]
        strides = [int(s) for s in attrs.get("strides", [1] * nd)]
        dil = [int(d) for d in attrs.get("dilations", [1] * nd)]
        if any(d != 1 for d in dil):
            raise self.fail("dilated pooling")
        if int(attrs.get("ceil_mode", 0)):
            raise self.fail("ceil_mode=1")
        if kind == "MaxPool" and int(attrs.get("storage_order", 0)):
            raise self.fail("storage_order=1")
        pads = self._window(attrs, xs[2:], kernel, strides, dil)
        include = int(attrs.get("count_include_pad", 0)) if kind == "AveragePool" else None
        return self._pool("max" if kind == "MaxPool" else "avg", x, out, kernel, strides,
                          pads, include)

    _lower_AveragePool = _lower_MaxPool

    def _lower_GlobalAveragePool(self, op, kind, ins, out, attrs) -> SSAValue:
        xs = _shape(ins[0])
        nd = len(xs) - 2
        return self._pool("avg" if kind == "GlobalAveragePool" else "max", ins[0], out,
                          list(xs[2:]), [1] * nd, [0] * (2 * nd), None)

    _lower_GlobalMaxPool = _lower_GlobalAveragePool

    def _lower_Resize(self, op, kind, ins, out, attrs) -> SSAValue:
        # Nearest upsampling by whole factors repeats each element: a broadcast
        # between two reshapes (half_pixel / asymmetric coordinates, floor-like rounding).
        if str(attrs.get("mode", "nearest")) != "nearest":
            raise self.fail("only nearest Resize")
        ctm = str(attrs.get("coordinate_transformation_mode", "half_pixel"))
        nearest = str(attrs.get("nearest_mode", "round_prefer_floor"))
        xs, ys = _shape(ins[0]), _shape(out)
        factors = []
        for a, b in zip(xs, ys, strict=True):
            if a == 0 or b % a:
                raise self.fail("only whole-factor upsampling")
            factors.append(b // a)
        ok = (ctm == "asymmetric" and nearest == "floor") or (
            ctm in ("half_pixel", "pytorch_half_pixel")
            and nearest in ("round_prefer_floor", "floor") and all(f <= 2 for f in factors))
        if not ok or attrs.get("antialias", 0) or any(f != 1 for f in factors[:2]):
            raise self.fail(f"Resize with {ctm}/{nearest} and factors {factors}")
        x = self.tensor(ins[0])
        expanded = tuple(d for a, f in zip(xs, factors, strict=True) for d in (a, 1))
        wide = tuple(d for a, f in zip(xs, factors, strict=True) for d in (a, f))
        y = self.reshape(x, expanded)
        y = self.emit(nc.BroadcastOp, [y], self.typed(wide, _dtype(out)))
        return self.reshape(y, ys)

    # -- constants the shape inference left behind ----------------------------------

    def _fold(self, op, ins, out) -> None:
        from neuron_ir.kernels import KERNELS
        from passes.shape_inference import LOWERING_FOLD_BYTES

        size = _dtype(out).itemsize
        for d in _shape(out):
            size *= d
        if size > LOWERING_FOLD_BYTES:  # checked before the kernel allocates anything
            raise self.fail(f"its {size} bytes exceed the constant-folding budget "
                            f"of {LOWERING_FOLD_BYTES} bytes")
        args = [self.need_const(v, "every input") if v is not None else None for v in ins]
        value = KERNELS[op.ONNX_TYPE](args, onnx_attrs(op), 1)[0]
        self.constants[out] = np.asarray(value)

    def _lower_Range(self, op, kind, ins, out, attrs) -> None:
        return self._fold(op, ins, out)

    def _lower_ConstantOfShape(self, op, kind, ins, out, attrs) -> None:
        return self._fold(op, ins, out)

    def _lower_Shape(self, op, kind, ins, out, attrs) -> None:
        shape = np.array(_shape(ins[0]), dtype=np.int64)
        start = int(attrs.get("start", 0))
        end = attrs.get("end")
        self.constants[out] = shape[start:None if end is None else int(end)]
