"""``lower-to-nc``: turn each NeuronCore subgraph's onnx ops into one ``nc.program``.

Every ``func.func`` with ``neuron.target`` gets a body of the form::

    %r = "nc.program"(%args) ({^bb0(%args): ...nc ops...; nc.return %results})
    func.return %r

with one stage (``cores = 1``). Nothing of the onnx dialect stays inside the program.
Which ops may be lowered is decided by the one legality table
(``neuron_ir.target.legality.unsupported_reason``), the same that ``partition`` reads: an op
the table refuses is a ``PassError`` naming the node and the table's reason. Every
legal op is lowered by one rewrite pattern per op family (``PATTERNS``), run by xDSL's
``PatternRewriteWalker`` in op order; a pattern appends the engine ops to the stage
and replaces the onnx op's results with theirs. ``tests/test_legality.py`` proves
the table and the patterns agree. The lowering keeps ONNX semantics exactly (the nc
interpreter runs the same numpy kernels), decomposing the composite ops (softmax,
normalisations, Gemm, ConvTranspose, Resize, ...) into engine ops.

Weights (``onnx.Constant`` read as tensors, and constants the lowering derives, such
as folded batch-norm scales) become ``nc.weight`` in HBM, where a loaded model's
weights live until ``nc-place-weights`` caches them in SBUF; ``nc-estimate`` then
prices every op. Constants read only as attributes (shapes, axes, slice bounds) are
folded into the nc ops and leave no weight behind.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

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
from xdsl.ir import Attribute, Block, BlockArgument, Operation, Region, SSAValue
from xdsl.passes import ModulePass
from xdsl.pattern_rewriter import (
    GreedyRewritePatternApplier,
    PatternRewriter,
    PatternRewriteWalker,
    RewritePattern,
)

from dialects import nc
from dialects.onnx import ConstantOp, OnnxOp
from neuron_ir.analysis.report import PARTITIONED_ATTR, TARGET_ATTR
from neuron_ir.errors import PassError
from neuron_ir.ir.attrs import constant_array, onnx_attrs
from neuron_ir.ir.util import constant_op, dense_attr, dtype_of, is_static, tensor_type

# ONNX op -> nc kind, read off the dialect's own tables (defined once, in dialects/nc.py).
_BINARY = {
    onnx: kind for kind, (onnx, fixed) in nc.BINARY_OPS.items() if not fixed and kind != "ne"
}
# Ops whose scalar-constant operand may become an immediate (float results only).
_SCALAR_OK = {"add", "sub", "mul", "div", "pow", "max", "min"}
_ACTIVATION = {
    onnx: (kind, params) for kind, (onnx, params) in nc.ACTIVATIONS.items() if onnx is not None
}
_REDUCE = {onnx: kind for kind, onnx in nc.REDUCE_OPS.items() if kind not in ("argmax", "argmin")}
_INT64_MAX = np.iinfo(np.int64).max


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
            isinstance(f, FuncOp) and TARGET_ATTR in f.attributes for f in op.ops
        ):
            # Nothing would be lowered: say why rather than print the module unchanged.
            raise PassError("lower-to-nc needs a partitioned module: run 'partition' first")
        for func in list(op.ops):
            if isinstance(func, FuncOp) and isinstance(
                func.attributes.get(TARGET_ATTR), StringAttr
            ):
                _lower_func(func, self.batch)


def _lower_func(func: FuncOp, batch: int) -> None:
    from neuron_ir.target import get_target
    from neuron_ir.target.legality import unsupported_reason

    target = func.attributes[TARGET_ATTR].data  # type: ignore[union-attr]
    block = func.body.block
    ret = block.last_op
    if ret is None or ret.name != "func.return":
        raise PassError(f"@{func.sym_name.data}: body does not end in func.return")
    if any(o.name.startswith("nc.") for o in block.ops):
        raise PassError(f"@{func.sym_name.data} is already lowered to nc")
    for arg in block.args:
        if not is_static(arg.type):
            raise PassError(
                f"@{func.sym_name.data}: argument type {arg.type} is not static; "
                "run shape-inference with pinned input shapes first"
            )
    stage = Block(arg_types=[a.type for a in block.args])
    lowering = _Lowering(get_target(target), stage)
    for inner in block.ops:
        lowering.current = inner
        if inner is ret or isinstance(inner, ConstantOp):
            continue
        if inner.regions:
            raise lowering.fail("ops with regions cannot run on a NeuronCore")
        why = unsupported_reason(inner, target)
        if why is not None:
            raise lowering.fail(why)
    for inner in block.ops:
        if isinstance(inner, ConstantOp):
            lowering.note_constant(inner.results[0])
    # The onnx ops read the stage's arguments; each pattern replaces an onnx op's
    # results by the nc values it appended to the stage.
    for old, new in zip(block.args, stage.args, strict=True):
        if old.name_hint:
            new.name_hint = old.name_hint
        old.replace_all_uses_with(new)
    walker = PatternRewriteWalker(
        GreedyRewritePatternApplier([cls(lowering) for cls in PATTERNS]), apply_recursively=False
    )
    walker.rewrite_region(func.body)
    for inner in block.ops:
        if inner is not ret and not isinstance(inner, ConstantOp):
            lowering.current = inner
            raise lowering.fail("no lowering to the nc dialect")
    lowering.current = None
    results = [lowering.tensor(v) for v in ret.operands]
    stage.add_op(nc.ReturnOp.build(operands=[results]))
    program = nc.ProgramOp.build(
        operands=[list(block.args)],
        result_types=[[v.type for v in ret.operands]],
        properties={
            "target": StringAttr(target),
            "batch": IntegerAttr(batch, i64),
            "cores": IntegerAttr(1, i64),
        },
        regions=[[Region(stage)]],
    )
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
    """The state of lowering one subgraph into ``stage``, and the emit helpers."""

    def __init__(self, profile: Any, stage: Block):
        self.profile = profile
        self.stage = stage
        self.values: dict[SSAValue, SSAValue] = {}  # constant -> its nc.weight
        self.constants: dict[SSAValue, np.ndarray] = {}  # onnx value -> its array
        self.const_attrs: dict[SSAValue, Attribute] = {}
        self.current: Operation | None = None

    # -- helpers --------------------------------------------------------------

    def fail(self, why: str) -> PassError:
        op = self.current
        return PassError(
            f"lower-to-nc: cannot lower {_describe(op)}: {why}"
            if op is not None
            else f"lower-to-nc: {why}"
        )

    def note_constant(self, value: SSAValue, array: np.ndarray | None = None) -> None:
        """Record an ``onnx.Constant`` result (read as an attribute or placed as a weight)."""
        owner = value.owner
        if array is None:
            self.constants[value] = constant_array(owner.properties["value"])  # type: ignore
            self.const_attrs[value] = owner.properties["value"]  # type: ignore[union-attr]
        else:
            self.constants[value] = np.asarray(array)

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
        op = nc.WeightOp.build(
            properties={"value": attr, "memory": StringAttr("hbm")}, result_types=[attr.type]
        )  # type: ignore[attr-defined]
        self.stage.add_op(op)
        return op.results[0]

    def tensor(self, value: SSAValue) -> SSAValue:
        """The nc value of an operand (weights are placed on first tensor use)."""
        new = self.values.get(value)
        if new is None:
            if value not in self.constants:
                owner = value.owner
                lowered = (isinstance(value, BlockArgument) and value.owner is self.stage) or (
                    isinstance(owner, Operation) and owner.name.startswith("nc.")
                )
                if not lowered:
                    raise self.fail(f"operand {value} was not lowered")
                return value
            new = self.values[value] = self.weight(
                self.constants[value], self.const_attrs.get(value)
            )
        return new

    def emit(
        self,
        cls: type,
        operands: list[SSAValue],
        out_type: Attribute,
        flops: float = 0.0,
        **props: Any,
    ) -> SSAValue:
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

    def binary(
        self, kind: str, lhs: SSAValue, rhs: SSAValue, out_type: Attribute, flops: float = 0.0
    ) -> SSAValue:
        """lhs op rhs on nc values, a scalar weight operand as an immediate."""
        return self.emit(nc.TensorTensorOp, [lhs, rhs], out_type, flops, op=kind)

    def scalar_op(self, kind: str, x: SSAValue, scalar: float, reverse: bool = False) -> SSAValue:
        return self.emit(
            nc.TensorScalarOp,
            [x],
            x.type,
            op=kind,
            scalar=float(scalar),
            reverse=1 if reverse else None,
        )

    def reduce(self, kind: str, x: SSAValue, axes: list[int], keepdims: bool) -> SSAValue:
        shape = list(_shape(x))
        axes = sorted({a % len(shape) for a in axes})
        out = [1 if i in axes else d for i, d in enumerate(shape)]
        if not keepdims:
            out = [d for i, d in enumerate(shape) if i not in axes]
        dtype = np.dtype(np.int64) if kind in ("argmax", "argmin") else _dtype(x)
        return self.emit(
            nc.ReduceOp,
            [x],
            self.typed(tuple(out), dtype),
            op=kind,
            axes=axes,
            keepdims=int(keepdims),
        )

    def reshape(self, x: SSAValue, shape: tuple[int, ...]) -> SSAValue:
        if _shape(x) == tuple(shape):
            return x
        return self.emit(nc.ReshapeOp, [x], self.typed(tuple(shape), _dtype(x)))

    def transpose(self, x: SSAValue, perm: list[int]) -> SSAValue:
        shape = _shape(x)
        return self.emit(
            nc.TransposeOp, [x], self.typed(tuple(shape[p] for p in perm), _dtype(x)), perm=perm
        )

    def flops(self, op: Operation) -> float:
        from neuron_ir.analysis.flops import op_flops

        return float(op_flops(op))

    def cast(self, x: SSAValue, dtype: np.dtype) -> SSAValue:
        if _dtype(x) == np.dtype(dtype):
            return x
        return self.emit(nc.CastOp, [x], self.typed(_shape(x), np.dtype(dtype)))

    def compute(self, x: SSAValue) -> SSAValue:
        """``x`` in the dtype the kernels compute in (float16/bfloat16 via float32)."""
        return x if _dtype(x) in (np.float32, np.float64) else self.cast(x, np.float32)

    def unary(self, func: str, x: SSAValue, **params: Any) -> SSAValue:
        return self.emit(nc.ActivationOp, [x], x.type, func=func, **params)

    def bcast(
        self, kind: str, lhs: SSAValue, rhs: SSAValue, dtype: np.dtype | None = None
    ) -> SSAValue:
        """``lhs kind rhs`` with numpy broadcasting, the result type worked out."""
        shape = tuple(np.broadcast_shapes(_shape(lhs), _shape(rhs)))
        return self.binary(kind, lhs, rhs, self.typed(shape, dtype or _dtype(lhs)))

    def compare(self, kind: str, x: SSAValue, scalar: float) -> SSAValue:
        return self.emit(
            nc.TensorScalarOp,
            [x],
            self.typed(_shape(x), np.dtype(bool)),
            op=kind,
            scalar=float(scalar),
        )

    def select(self, cond: SSAValue, a: SSAValue, b: SSAValue, out_type: Attribute) -> SSAValue:
        return self.emit(nc.SelectOp, [cond, a, b], out_type)

    def slice(self, x: SSAValue, axis: int, start: int, end: int, step: int = 1) -> SSAValue:
        shape = list(_shape(x))
        shape[axis] = len(range(*slice(start, end, step).indices(shape[axis])))
        return self.emit(
            nc.SliceOp,
            [x],
            self.typed(tuple(shape), _dtype(x)),
            starts=[start],
            ends=[end],
            steps=[step],
            axes=[axis],
        )

    def concat(self, parts: list[SSAValue], axis: int) -> SSAValue:
        if len(parts) == 1:
            return parts[0]
        shape = list(_shape(parts[0]))
        shape[axis] = sum(_shape(p)[axis] for p in parts)
        return self.emit(nc.ConcatOp, parts, self.typed(tuple(shape), _dtype(parts[0])), axis=axis)

    def broadcast(self, x: SSAValue, shape: tuple[int, ...]) -> SSAValue:
        if _shape(x) == tuple(shape):
            return x
        return self.emit(nc.BroadcastOp, [x], self.typed(tuple(shape), _dtype(x)))

    def normalize(
        self, x: SSAValue, axes: list[int], eps: float, center: bool = True
    ) -> tuple[SSAValue, SSAValue, SSAValue]:
        """(x - mean) / sqrt(var + eps) over ``axes`` as the kernels compute it (two-pass
        variance): (normalised, mean, 1/std), the statistics with kept dims. Without
        ``center`` it is RMS normalisation (mean is then the mean square)."""
        if center:
            mean = self.reduce("mean", x, axes, True)
            d = self.binary("sub", x, mean, x.type)
        else:
            mean, d = None, x
        var = self.reduce("mean", self.unary("square", d), axes, True)
        inv = self.unary("rsqrt", self.scalar_op("add", var, eps))
        return self.binary("mul", d, inv, x.type), (mean if center else var), inv


# ---------------------------------------------------------------------------------
# the patterns: one per op family


Lowered = SSAValue | list[SSAValue | None] | np.ndarray


class OnnxLowering(RewritePattern):
    """Lowers the onnx ops of ``TYPES`` (already checked legal) into the stage.

    ``lower`` returns the nc value of each ONNX output (a list, None where an output
    is unused), the only output's value, or an array when the op folds to a constant.
    """

    TYPES: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, lowering: _Lowering):
        self.low = lowering

    def match_and_rewrite(self, op: Operation, rewriter: PatternRewriter) -> None:
        if not isinstance(op, OnnxOp) or op.ONNX_TYPE not in self.TYPES:
            return
        low = self.low
        low.current = op
        ins, outs = op.onnx_inputs(), op.onnx_outputs()
        # ONNX defaults come from the generated op class, never retyped here.
        attrs = {**op.ONNX_DEFAULTS, **onnx_attrs(op)}
        got = self.lower(op, op.ONNX_TYPE, ins, outs, attrs)
        if isinstance(got, np.ndarray):
            folded = constant_op(got)
            rewriter.replace(op, folded)
            low.note_constant(folded.results[0], got)
            return
        values = list(got) if isinstance(got, list) else [got]
        values += [None] * (len(outs) - len(values))
        new: list[SSAValue | None] = []
        for k, (old, value) in enumerate(zip(outs, values, strict=True)):
            if old is None:
                continue
            if value is None and old.uses:
                raise low.fail(f"result {k} is used but the lowering does not produce it")
            if value is not None and value.type != old.type:
                raise low.fail(f"lowered to {value.type}, expected {old.type}")
            new.append(value)
        rewriter.replace(op, [], new)

    def lower(self, op: OnnxOp, kind: str, ins: list, outs: list, attrs: dict) -> Lowered:
        raise NotImplementedError


class Elementwise(OnnxLowering):
    """Binary and variadic arithmetic, comparisons, logic, selects (Vector engine)."""

    TYPES = frozenset({*_BINARY, "Sum", "Mean", "Not", "Where", "IsNaN", "PRelu", "Clip"})

    def lower(self, op, kind, ins, outs, attrs) -> Lowered:
        low, out = self.low, outs[0]
        if kind == "Not":  # not x == x xor true on booleans
            return low.scalar_op("xor", low.tensor(ins[0]), 1.0)
        if kind == "Where":
            return low.select(*[low.tensor(v) for v in ins], out.type)
        if kind == "IsNaN":  # NaN is the one value unequal to itself
            x = low.tensor(ins[0])
            return low.binary("ne", x, x, out.type)
        if kind == "PRelu":
            x = low.tensor(ins[0])
            scaled = low.bcast("mul", x, low.tensor(ins[1]))
            return low.select(low.compare("lt", x, 0.0), scaled, x, out.type)
        if kind == "Clip":
            return self.clip(ins, out)
        if kind in ("Sum", "Mean") or (kind in ("Max", "Min") and len(ins) != 2):
            name = {"Sum": "add", "Mean": "add", "Max": "max", "Min": "min"}[kind]
            y = low.tensor(ins[0])
            for v in ins[1:]:
                y = low.bcast(name, y, low.tensor(v))
            if kind == "Mean" and len(ins) > 1:
                y = low.scalar_op("div", y, float(len(ins)))
            return y
        name = _BINARY[kind]
        if kind == "Mod" and int(attrs["fmod"]):
            name = "fmod"
        lhs, rhs = ins
        dtype = _dtype(out)
        if name in _SCALAR_OK and dtype.kind == "f" and _dtype(lhs) == _dtype(rhs) == dtype:
            # A one-element constant becomes an immediate when it does not broadcast
            # the other operand up (the output keeps that operand's shape).
            for const_side, other, reverse in ((rhs, lhs, False), (lhs, rhs, True)):
                c = low.const(const_side)
                if (
                    c is not None
                    and c.size == 1
                    and _shape(other) == _shape(out)
                    and other not in low.constants
                ):
                    return low.scalar_op(name, low.tensor(other), float(c.reshape(-1)[0]), reverse)
        return low.binary(name, low.tensor(lhs), low.tensor(rhs), out.type, low.flops(op))

    def clip(self, ins, out) -> SSAValue:
        low = self.low
        y = low.tensor(ins[0])
        for k, name in ((1, "max"), (2, "min")):
            bound = ins[k] if k < len(ins) else None
            if bound is None:
                continue
            c = low.const(bound)
            if c is not None and _dtype(out).kind == "f":
                y = low.scalar_op(name, y, float(c.reshape(-1)[0]))
            else:
                y = low.binary(name, y, low.tensor(bound), out.type)
        return y


class Activation(OnnxLowering):
    """Element-wise functions (Scalar engine), alpha/beta from the ONNX attributes."""

    TYPES = frozenset({*_ACTIVATION, "Gelu", "Swish"})

    def lower(self, op, kind, ins, outs, attrs) -> Lowered:
        low, out = self.low, outs[0]
        x = low.tensor(ins[0])
        if kind == "Gelu":
            func = "gelu_tanh" if str(attrs["approximate"]) == "tanh" else "gelu"
            return low.emit(nc.ActivationOp, [x], out.type, func=func)
        if kind == "Swish":  # x * sigmoid(alpha * x): the activation's scale is alpha
            s = low.unary("sigmoid", x, scale=float(attrs["alpha"]))
            return low.binary("mul", x, s, out.type)
        func, names = _ACTIVATION[kind]
        params = {p: float(attrs[n]) for p, n in zip(("alpha", "beta"), names, strict=False)}
        return low.emit(nc.ActivationOp, [x], out.type, low.flops(op), func=func, **params)


class Cast(OnnxLowering):
    TYPES = frozenset({"Cast"})

    def lower(self, op, kind, ins, outs, attrs) -> Lowered:
        return self.low.emit(nc.CastOp, [self.low.tensor(ins[0])], outs[0].type)


class MatrixProduct(OnnxLowering):
    """MatMul, Gemm, CumSum, Conv, ConvTranspose (Tensor engine)."""

    TYPES = frozenset({"MatMul", "Gemm", "CumSum", "Conv", "ConvTranspose"})

    def lower(self, op, kind, ins, outs, attrs) -> Lowered:
        return getattr(self, kind)(op, ins, outs[0], attrs)

    def MatMul(self, op, ins, out, attrs) -> SSAValue:  # noqa: N802
        low = self.low
        return low.emit(
            nc.MatmulOp, [low.tensor(ins[0]), low.tensor(ins[1])], out.type, low.flops(op)
        )

    def Gemm(self, op, ins, out, attrs) -> SSAValue:  # noqa: N802
        # Same order as the kernel: (A' B') * alpha, then + C * beta.
        low = self.low
        a, b = ins[0], ins[1]
        c = ins[2] if len(ins) > 2 else None
        alpha, beta = float(attrs["alpha"]), float(attrs["beta"])
        y = low.emit(
            nc.MatmulOp,
            [low.tensor(a), low.tensor(b)],
            low.typed(_shape(out), _dtype(out)),
            low.flops(op),
            transpose_lhs=1 if int(attrs["transA"]) else None,
            transpose_rhs=1 if int(attrs["transB"]) else None,
        )
        if alpha != 1.0:
            y = low.scalar_op("mul", y, alpha)
        if c is not None and beta != 0.0:
            cv = low.const(c)
            if beta != 1.0 and cv is not None:
                # Folded at compile time, in the dtype the kernel computes in.
                c_val = low.weight(np.asarray(cv * beta).astype(cv.dtype))
            else:
                c_val = low.tensor(c)
                if beta != 1.0:
                    c_val = low.scalar_op("mul", c_val, beta)
            y = low.binary("add", y, c_val, out.type)
        return y

    def CumSum(self, op, ins, out, attrs) -> SSAValue:  # noqa: N802
        # A cumulative sum along the last axis is a product with a triangular matrix of
        # ones (exact for integers, reassociated for floats).
        low = self.low
        x = ins[0]
        shape = _shape(x)
        axis = int(low.need_const(ins[1], "the axis").reshape(-1)[0]) % len(shape)
        n = shape[axis]
        i, j = np.indices((n, n))
        mask = (i >= j) if int(attrs["reverse"]) else (i <= j)
        if int(attrs["exclusive"]):
            mask &= i != j
        xv = low.tensor(x)
        last = len(shape) - 1
        perm = list(range(len(shape)))
        perm[axis], perm[last] = perm[last], perm[axis]
        if axis != last:
            xv = low.transpose(xv, perm)
        tri = low.weight(mask.astype(_dtype(x)))
        y = low.emit(nc.MatmulOp, [xv, tri], xv.type, 2.0 * math.prod(shape) * n)
        if axis != last:
            y = low.transpose(y, perm)
        return y

    def Conv(self, op, ins, out, attrs) -> SSAValue:  # noqa: N802
        from neuron_ir.kernels.nn import _window_pads

        low = self.low
        x, w = ins[0], ins[1]
        xs, ws = _shape(x), _shape(w)
        nd = len(xs) - 2
        strides = [int(s) for s in attrs.get("strides", [1] * nd)]
        dil = [int(d) for d in attrs.get("dilations", [1] * nd)]
        dk = [(k - 1) * d + 1 for k, d in zip(ws[2:], dil, strict=True)]
        begin, end = _window_pads(attrs, list(xs[2:]), dk, strides)
        y = low.emit(
            nc.ConvOp,
            [low.tensor(x), low.tensor(w)],
            out.type,
            low.flops(op),
            strides=strides,
            pads=[*begin, *end],
            dilations=dil,
            group=int(attrs["group"]),
        )
        return self.bias(y, ins, ws[0], out)

    def bias(self, y: SSAValue, ins, channels: int, out) -> SSAValue:
        low = self.low
        if len(ins) > 2 and ins[2] is not None:
            cshape = (1, channels) + (1,) * (len(_shape(out)) - 2)
            b = low.const(ins[2])
            bias = (
                low.weight(b.reshape(cshape))
                if b is not None
                else low.reshape(low.tensor(ins[2]), cshape)
            )
            y = low.binary("add", y, bias, out.type)
        return y

    def ConvTranspose(self, op, ins, out, attrs) -> SSAValue:  # noqa: N802
        # A transposed convolution is a stride-1 convolution of the input with zeros
        # inserted between its elements (stride - 1 of them), padded by
        # dilated_kernel - 1 - pad, with the kernel flipped and its in/out channels
        # swapped per group: Tensor-engine work, the zeros inserted by reshape + pad.
        from neuron_ir.kernels.nn import conv_transpose_geometry

        low = self.low
        x, w = ins[0], ins[1]
        xs, ws = _shape(x), _shape(w)
        nd = len(xs) - 2
        in_sp, k = list(xs[2:]), list(ws[2:])
        strides, dil, begin, end, out_pad, _ = conv_transpose_geometry(attrs, in_sp, k)
        g = int(attrs["group"])
        c, mg = xs[1], ws[1]
        dtype = _dtype(x)
        xv = low.tensor(x)
        if any(s != 1 for s in strides):
            inter = (xs[0], c, *[d for n, s in zip(in_sp, strides, strict=True) for d in (n, 1)])
            wide = (xs[0], c, *[d for n, s in zip(in_sp, strides, strict=True) for d in (n, s)])
            pads = [0] * (2 * len(inter))
            for i, s in enumerate(strides):
                pads[len(inter) + 3 + 2 * i] = s - 1
            z = low.emit(
                nc.PadOp, [low.reshape(xv, inter)], low.typed(wide, dtype), pads=pads, value=0.0
            )
            z = low.reshape(z, (xs[0], c, *[n * s for n, s in zip(in_sp, strides, strict=True)]))
            for i, (n, s) in enumerate(zip(in_sp, strides, strict=True)):
                if s != 1:
                    z = low.slice(z, 2 + i, 0, (n - 1) * s + 1)
        else:
            z = xv
        cpads = []
        for i in range(nd):
            dk = (k[i] - 1) * dil[i] + 1
            cpads.append((dk - 1 - begin[i], dk - 1 - end[i] + out_pad[i]))
        for i, (lo, hi) in enumerate(cpads):  # negative padding crops
            n = _shape(z)[2 + i]
            if lo < 0 or hi < 0:
                z = low.slice(z, 2 + i, max(-lo, 0), n - max(-hi, 0))
        wv = low.const(w)
        flip = (slice(None), slice(None)) + (slice(None, None, -1),) * nd
        if wv is not None:
            wt = wv.reshape(g, c // g, mg, *k).swapaxes(1, 2).reshape(g * mg, c // g, *k)
            wn = low.weight(np.ascontiguousarray(wt[flip]))
        else:
            wr = low.reshape(low.tensor(w), (g, c // g, mg, *k))
            wr = low.transpose(wr, [0, 2, 1, *range(3, 3 + nd)])
            wn = low.reshape(wr, (g * mg, c // g, *k))
            for i in range(nd):
                wn = low.slice(wn, 2 + i, -1, -_INT64_MAX, -1)
        y = low.emit(
            nc.ConvOp,
            [z, wn],
            low.typed(_shape(out), _dtype(out)),
            low.flops(op),
            strides=[1] * nd,
            pads=[*[max(p[0], 0) for p in cpads], *[max(p[1], 0) for p in cpads]],
            dilations=dil,
            group=g,
        )
        return self.bias(y, ins, g * mg, out)


class Normalization(OnnxLowering):
    """Softmax, LogSoftmax and the normalisations, decomposed into reductions (Vector
    engine), element-wise arithmetic and exp/log/rsqrt (Scalar engine)."""

    TYPES = frozenset(
        {
            "Softmax",
            "LogSoftmax",
            "LayerNormalization",
            "RMSNormalization",
            "BatchNormalization",
            "InstanceNormalization",
            "GroupNormalization",
            "LpNormalization",
        }
    )

    def lower(self, op, kind, ins, outs, attrs) -> Lowered:
        low = self.low
        out = outs[0]
        x = low.compute(low.tensor(ins[0]))
        rank = len(_shape(x))
        # Softmax, LogSoftmax and LpNormalization have no epsilon.
        eps = float(attrs["epsilon"]) if "epsilon" in attrs else 0.0
        stats: list[SSAValue | None] = []
        if kind in ("Softmax", "LogSoftmax"):
            axis = int(attrs["axis"]) % rank
            d = low.binary("sub", x, low.reduce("max", x, [axis], True), x.type)
            e = low.unary("exp", d)
            s = low.reduce("sum", e, [axis], True)
            y = (
                low.binary("div", e, s, x.type)
                if kind == "Softmax"
                else low.binary("sub", d, low.unary("log", s), x.type)
            )
        elif kind in ("LayerNormalization", "RMSNormalization"):
            axis = int(attrs["axis"]) % rank
            axes = list(range(axis, rank))
            y, mean, inv = low.normalize(x, axes, eps, center=kind == "LayerNormalization")
            y = low.binary("mul", y, low.compute(low.tensor(ins[1])), x.type)
            if len(ins) > 2 and ins[2] is not None:
                y = low.binary("add", y, low.compute(low.tensor(ins[2])), x.type)
            if kind == "LayerNormalization":
                stats = [mean, inv]
        elif kind == "BatchNormalization":
            y = self.batch_norm(x, ins, eps)
        elif kind == "InstanceNormalization":
            y, _, _ = low.normalize(x, list(range(2, rank)), eps)
            y = self.affine(y, ins)
        elif kind == "GroupNormalization":
            shape = _shape(x)
            groups = int(attrs["num_groups"])
            flat = low.reshape(x, (shape[0], groups, math.prod(shape[1:]) // groups))
            y, _, _ = low.normalize(flat, [2], eps)
            y = self.affine(low.reshape(y, shape), ins)
        else:  # LpNormalization: x / ||x||_p, 0 where the norm is 0
            axis = int(attrs["axis"]) % rank
            p = int(attrs["p"])
            norm = (
                low.reduce("sum", low.unary("abs", x), [axis], True)
                if p == 1
                else low.unary("sqrt", low.reduce("sum_square", x, [axis], True))
            )
            q = low.binary("div", x, norm, x.type)
            nonzero = low.compare("ne", norm, 0.0)
            y = low.select(nonzero, q, low.weight(np.zeros((), _dtype(x))), x.type)
        results: list[SSAValue | None] = [low.cast(y, _dtype(out))]
        for value, old in zip(stats, outs[1:], strict=False):
            results.append(None if old is None or value is None else low.cast(value, _dtype(old)))
        return results

    def affine(self, y: SSAValue, ins) -> SSAValue:
        """``y * scale[c] + bias[c]`` over the channel axis 1."""
        low = self.low
        shape = _shape(y)
        cshape = (1, shape[1]) + (1,) * (len(shape) - 2)
        for k, name in ((1, "mul"), (2, "add")):
            v = low.compute(low.reshape(low.tensor(ins[k]), cshape))
            y = low.binary(name, y, v, y.type)
        return y

    def batch_norm(self, x: SSAValue, ins, eps: float) -> SSAValue:
        low = self.low
        scale, bias, mean, var = (low.need_const(v, "the statistics") for v in ins[1:5])
        # Folded per channel in float64, like the kernel (and onnxruntime).
        k = scale.astype(np.float64) / np.sqrt(var.astype(np.float64) + eps)
        shift = bias.astype(np.float64) - mean.astype(np.float64) * k
        cshape = (1, _shape(x)[1]) + (1,) * (len(_shape(x)) - 2)
        ct = _dtype(x)
        y = low.binary("mul", x, low.weight(k.astype(ct).reshape(cshape)), x.type)
        return low.binary("add", y, low.weight(shift.astype(ct).reshape(cshape)), x.type)


class Reduction(OnnxLowering):
    """Reductions and ArgMax/ArgMin (Vector engine)."""

    TYPES = frozenset({*_REDUCE, "ArgMax", "ArgMin"})

    def lower(self, op, kind, ins, outs, attrs) -> Lowered:
        low, out = self.low, outs[0]
        x = ins[0]
        if kind in ("ArgMax", "ArgMin"):
            return low.reduce(
                kind.lower(), low.tensor(x), [int(attrs["axis"])], bool(attrs["keepdims"])
            )
        rank = len(_shape(x))
        axes_v = low.const(ins[1]) if len(ins) > 1 and ins[1] is not None else None
        axes = [int(a) for a in axes_v.reshape(-1)] if axes_v is not None else attrs.get("axes")
        if not axes:
            if int(attrs["noop_with_empty_axes"]):
                return low.reshape(low.tensor(x), _shape(out))
            axes = list(range(rank))
        return low.reduce(_REDUCE[kind], low.tensor(x), axes, bool(attrs["keepdims"]))


class Layout(OnnxLowering):
    """Reshapes, transposes, slices, concatenation, padding, tiling, masks (Vector
    engine; reshapes are free on device)."""

    TYPES = frozenset(
        {
            "Reshape",
            "Flatten",
            "Squeeze",
            "Unsqueeze",
            "Identity",
            "Dropout",
            "Transpose",
            "Expand",
            "Slice",
            "Concat",
            "Pad",
            "Split",
            "Tile",
            "DepthToSpace",
            "SpaceToDepth",
            "Trilu",
        }
    )

    def lower(self, op, kind, ins, outs, attrs) -> Lowered:
        low, out = self.low, outs[0]
        if kind in ("Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity", "Dropout"):
            # Shapes are static: the result type says everything. Dropout is the
            # identity in inference mode, its mask all true.
            x = low.tensor(ins[0])
            y = x if x.type == out.type else low.emit(nc.ReshapeOp, [x], out.type)
            if kind == "Dropout" and len(outs) > 1 and outs[1] is not None:
                return [y, low.weight(np.ones(_shape(outs[1]), dtype=bool))]
            return y
        return getattr(self, kind)(ins, outs, attrs)

    def Transpose(self, ins, outs, attrs) -> SSAValue:  # noqa: N802
        low = self.low
        rank = len(_shape(ins[0]))
        perm = attrs.get("perm") or list(reversed(range(rank)))
        return low.transpose(low.tensor(ins[0]), [int(p) for p in perm])

    def Expand(self, ins, outs, attrs) -> SSAValue:  # noqa: N802
        return self.low.broadcast(self.low.tensor(ins[0]), _shape(outs[0]))

    def Slice(self, ins, outs, attrs) -> SSAValue:  # noqa: N802
        low = self.low
        rank = len(_shape(ins[0]))
        starts = low.need_const(ins[1], "starts").reshape(-1)
        ends = low.need_const(ins[2], "ends").reshape(-1)
        axes = (
            low.need_const(ins[3], "axes").reshape(-1)
            if len(ins) > 3 and ins[3] is not None
            else np.arange(len(starts))
        )
        steps = (
            low.need_const(ins[4], "steps").reshape(-1)
            if len(ins) > 4 and ins[4] is not None
            else np.ones(len(starts), np.int64)
        )
        # int64 bounds (INT64_MAX for "to the end") are kept as they are.
        return low.emit(
            nc.SliceOp,
            [low.tensor(ins[0])],
            outs[0].type,
            starts=[int(s) for s in starts],
            ends=[int(e) for e in ends],
            steps=[int(s) for s in steps],
            axes=[int(a) % rank for a in axes],
        )

    def Concat(self, ins, outs, attrs) -> SSAValue:  # noqa: N802
        rank = len(_shape(outs[0]))
        return self.low.emit(
            nc.ConcatOp,
            [self.low.tensor(v) for v in ins],
            outs[0].type,
            axis=int(attrs["axis"]) % rank,
        )

    def Split(self, ins, outs, attrs) -> list[SSAValue | None]:  # noqa: N802
        # The result types carry the split sizes: one slice per used result.
        low = self.low
        x = low.tensor(ins[0])
        axis = int(attrs["axis"]) % len(_shape(x))
        results: list[SSAValue | None] = []
        start = 0
        for out in outs:
            size = _shape(out)[axis]
            results.append(low.slice(x, axis, start, start + size) if out.uses else None)
            start += size
        return results

    def Pad(self, ins, outs, attrs) -> SSAValue:  # noqa: N802
        low = self.low
        x = low.tensor(ins[0])
        rank = len(_shape(x))
        pads = [int(p) for p in low.need_const(ins[1], "pads").reshape(-1)]
        if len(ins) > 3 and ins[3] is not None:
            axes = [int(a) % rank for a in low.need_const(ins[3], "axes").reshape(-1)]
            full = [0] * (2 * rank)
            for k, a in enumerate(axes):
                full[a], full[rank + a] = pads[k], pads[len(axes) + k]
            pads = full
        mode = str(attrs["mode"])
        if mode == "constant":
            value = 0.0
            if len(ins) > 2 and ins[2] is not None:
                value = float(low.need_const(ins[2], "the pad value").reshape(-1)[0])
            return low.emit(nc.PadOp, [x], outs[0].type, pads=pads, value=value)
        # reflect / edge / wrap: crop the negative pads, then concatenate the mirrored,
        # repeated or wrapped slices on each axis.
        for a in range(rank):
            lo, hi = pads[a], pads[rank + a]
            n = _shape(x)[a]
            if lo < 0 or hi < 0:
                x = low.slice(x, a, max(-lo, 0), n - max(-hi, 0))
                n = _shape(x)[a]
            lo, hi = max(lo, 0), max(hi, 0)
            if not lo and not hi:
                continue
            parts = [x]
            if mode == "reflect":
                if lo:
                    parts.insert(0, low.slice(x, a, lo, 0, -1))
                if hi:
                    parts.append(low.slice(x, a, n - 2, n - 2 - hi, -1))
            elif mode == "edge":
                for side, count, at in ((0, lo, 0), (1, hi, n - 1)):
                    if count:
                        shape = list(_shape(x))
                        shape[a] = count
                        edge = low.broadcast(low.slice(x, a, at, at + 1), tuple(shape))
                        parts.insert(0 if side == 0 else len(parts), edge)
            else:  # wrap
                if lo:
                    parts.insert(0, low.slice(x, a, n - lo, n))
                if hi:
                    parts.append(low.slice(x, a, 0, hi))
            x = low.concat(parts, a)
        return x

    def Tile(self, ins, outs, attrs) -> SSAValue:  # noqa: N802
        # Repeating the whole tensor: a broadcast over new leading unit axes, one before
        # each axis, between two reshapes.
        low = self.low
        x = low.tensor(ins[0])
        reps = [int(r) for r in low.need_const(ins[1], "repeats").reshape(-1)]
        shape = _shape(x)
        inter = tuple(d for n in shape for d in (1, n))
        wide = tuple(d for n, r in zip(shape, reps, strict=True) for d in (r, n))
        y = low.broadcast(low.reshape(x, inter), wide)
        return low.reshape(y, _shape(outs[0]))

    def DepthToSpace(self, ins, outs, attrs) -> SSAValue:  # noqa: N802
        low = self.low
        x = low.tensor(ins[0])
        bs = int(attrs["blocksize"])
        b, c, h, w = _shape(x)
        if str(attrs["mode"]) == "DCR":
            t, perm = (b, bs, bs, c // (bs * bs), h, w), [0, 3, 4, 1, 5, 2]
        else:
            t, perm = (b, c // (bs * bs), bs, bs, h, w), [0, 1, 4, 2, 5, 3]
        return low.reshape(low.transpose(low.reshape(x, t), perm), _shape(outs[0]))

    def SpaceToDepth(self, ins, outs, attrs) -> SSAValue:  # noqa: N802
        low = self.low
        x = low.tensor(ins[0])
        bs = int(attrs["blocksize"])
        b, c, h, w = _shape(x)
        t = low.reshape(x, (b, c, h // bs, bs, w // bs, bs))
        perm = [0, 3, 5, 1, 2, 4] if str(attrs["mode"]) == "DCR" else [0, 1, 3, 5, 2, 4]
        return low.reshape(low.transpose(t, perm), _shape(outs[0]))

    def Trilu(self, ins, outs, attrs) -> SSAValue:  # noqa: N802
        # A constant mask over the two innermost axes, selected against zero.
        low = self.low
        x = low.tensor(ins[0])
        k = int(low.need_const(ins[1], "k").reshape(-1)[0]) if len(ins) > 1 else 0
        rows, cols = _shape(x)[-2:]
        ones = np.ones((rows, cols), dtype=bool)
        mask = np.triu(ones, k) if int(attrs["upper"]) else np.tril(ones, k)
        zero = low.weight(np.zeros((), _dtype(x)))
        return low.select(low.weight(mask), x, zero, outs[0].type)


class Gather(OnnxLowering):
    """Gather, GatherElements, GatherND (GpSimd engine)."""

    TYPES = frozenset({"Gather", "GatherElements", "GatherND"})

    def lower(self, op, kind, ins, outs, attrs) -> Lowered:
        low = self.low
        mode = {"Gather": "take", "GatherElements": "elements", "GatherND": "nd"}[kind]
        rank = len(_shape(ins[0]))
        return low.emit(
            nc.GatherOp,
            [low.tensor(ins[0]), low.tensor(ins[1])],
            outs[0].type,
            # GatherND has no axis; the nc op records 0.
            axis=int(attrs.get("axis", 0)) % max(rank, 1),
            mode=mode,
        )


class Resize(OnnxLowering):
    """Resize, one axis at a time: gathers of the source taps (GpSimd engine) weighted
    and summed (Vector engine); the taps are the kernel's own (``resize_plan``)."""

    TYPES = frozenset({"Resize"})

    def lower(self, op, kind, ins, outs, attrs) -> Lowered:
        from neuron_ir.kernels.nn import resize_plan

        low, out = self.low, outs[0]
        x = low.tensor(ins[0])
        consts = [
            low.const(v) if k < len(ins) else None
            for k, v in ((k, ins[k] if k < len(ins) else None) for k in (1, 2, 3))
        ]
        plan = resize_plan(_shape(x), attrs, *consts)
        y = x if str(attrs["mode"]) == "nearest" else low.compute(x)
        for step in plan:
            ax, n_out = step.axis, step.idx.shape[0]
            shape = list(_shape(y))
            shape[ax] = n_out
            bshape = [1] * len(shape)
            bshape[ax] = n_out
            acc = None
            for t in range(step.idx.shape[1]):
                idx = low.weight(step.idx[:, t].astype(np.int64))
                term = low.emit(
                    nc.GatherOp, [y, idx], low.typed(tuple(shape), _dtype(y)), axis=ax, mode="take"
                )
                if step.w is not None:
                    w = low.weight(step.w[:, t].astype(_dtype(y)).reshape(bshape))
                    term = low.binary("mul", term, w, term.type)
                acc = term if acc is None else low.binary("add", acc, term, term.type)
            y = acc  # type: ignore[assignment]
            if step.outside is not None:
                fill = low.weight(np.asarray(step.fill).astype(_dtype(y)))
                y = low.select(low.weight(step.outside.reshape(bshape)), fill, y, y.type)
        return low.cast(y, _dtype(out))


class Pool(OnnxLowering):
    """Max and average pooling with explicit pads, dilations and ceil mode (Vector)."""

    TYPES = frozenset({"MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool"})

    def lower(self, op, kind, ins, outs, attrs) -> Lowered:
        from neuron_ir.kernels.nn import _window_pads

        low, out = self.low, outs[0]
        xs = _shape(ins[0])
        nd = len(xs) - 2
        x = low.tensor(ins[0])
        if kind.startswith("Global"):
            return low.emit(
                nc.PoolOp,
                [x],
                out.type,
                kind="avg" if kind == "GlobalAveragePool" else "max",
                kernel=list(xs[2:]),
                strides=[1] * nd,
                pads=[0] * (2 * nd),
            )
        kernel = [int(k) for k in attrs["kernel_shape"]]
        strides = [int(s) for s in attrs.get("strides", [1] * nd)]
        dil = [int(d) for d in attrs.get("dilations", [1] * nd)]
        dk = [(k - 1) * d + 1 for k, d in zip(kernel, dil, strict=True)]
        begin, end = _window_pads(attrs, list(xs[2:]), dk, strides)
        return low.emit(
            nc.PoolOp,
            [x],
            out.type,
            kind="max" if kind == "MaxPool" else "avg",
            kernel=kernel,
            strides=strides,
            pads=[*begin, *end],
            count_include_pad=(int(attrs["count_include_pad"]) if kind == "AveragePool" else None),
            dilations=dil if any(d != 1 for d in dil) else None,
            ceil_mode=1 if int(attrs["ceil_mode"]) else None,
        )


class Fold(OnnxLowering):
    """Constant generators that shape-inference left unfolded (results bigger than its
    fold limit), computed at compile time into a weight."""

    TYPES = frozenset({"Range", "ConstantOfShape"})

    def lower(self, op, kind, ins, outs, attrs) -> Lowered:
        from neuron_ir.kernels import KERNELS
        from passes.shape_inference import LOWERING_FOLD_BYTES

        size = _dtype(outs[0]).itemsize
        for d in _shape(outs[0]):
            size *= d
        if size > LOWERING_FOLD_BYTES:  # checked before the kernel allocates anything
            raise self.low.fail(
                f"its {size} bytes exceed the constant-folding budget "
                f"of {LOWERING_FOLD_BYTES} bytes"
            )
        args = [self.low.need_const(v, "every input") if v is not None else None for v in ins]
        return np.asarray(KERNELS[kind](args, onnx_attrs(op), 1)[0])


PATTERNS: tuple[type[OnnxLowering], ...] = (
    Elementwise,
    Activation,
    Cast,
    MatrixProduct,
    Normalization,
    Reduction,
    Layout,
    Gather,
    Resize,
    Pool,
    Fold,
)


def lowered_types() -> frozenset[str]:
    """Every ONNX op type some pattern lowers (the legality table must agree)."""
    return frozenset().union(*(p.TYPES for p in PATTERNS))
