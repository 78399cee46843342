"""Shape rules for the "tensor" family: elementwise math, reductions, layout and index ops.

Conventions (see the package docstring for the contract):

* Attributes arrive only when set explicitly; the ONNX defaults of opset 28 are applied
  here, as the kernels in ``neuron_ir.kernels.tensor`` do.
* A dim that cannot be determined is ``None``; an unknown rank is ``shape=None``.  Where
  implementations are known to disagree on a degenerate case (e.g. Squeeze with an empty
  ``axes`` tensor, Range lengths that depend on the precision of the arithmetic), the
  rule answers ``None`` rather than pick one.
* ``data_dependent`` is set by ops whose output size depends on tensor contents (NonZero,
  Unique, Compress, StringSplit, ...) and propagated from every input that determines an
  output's shape, including inputs read for their value (Reshape's ``shape``, Tile's
  ``repeats``, ...).  Shape and Size forward their input's flag when their value is not
  fully known, so that ``Reshape(x, Shape(NonZero(y)))`` stays flagged.
* Values are produced only where they follow from static shapes (Shape, Size) or are
  given outright (Constant, Identity of a constant); the shape-inference pass folds the
  other all-constant nodes with the kernels.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from onnx import TensorProto
from onnx.helper import tensor_dtype_to_np_dtype

from . import Dim, Shape, ShapeContext, ShapeError, TensorInfo, shape_rule

_I64 = np.dtype(np.int64)
_F32 = np.dtype(np.float32)
_BOOL = np.dtype(np.bool_)
_STR = np.dtype(object)


# ----------------------------------------------------------------------------- helpers


def _str(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else v


def _onnx_dtype(code: Any, op: str) -> np.dtype:
    try:
        return np.dtype(tensor_dtype_to_np_dtype(int(code)))
    except (KeyError, ValueError, TypeError) as exc:
        raise ShapeError(f"{op}: unknown ONNX element type {code!r}") from exc


def _req(ctx: ShapeContext, i: int) -> TensorInfo:
    info = ctx.input(i)
    if info is None:
        raise ShapeError(f"{ctx.op_type}: required input {i} is missing")
    return info


def _dd(*infos: TensorInfo | None) -> bool:
    return any(i is not None and i.data_dependent for i in infos)


def _ints(a: np.ndarray | None) -> list[int] | None:
    return None if a is None else [int(v) for v in np.asarray(a).reshape(-1).tolist()]


def _scalar(ctx: ShapeContext, i: int, what: str) -> Any:
    """Python value of constant input ``i`` (a scalar or one-element tensor), or None."""
    v = ctx.const(i)
    if v is None:
        return None
    v = np.asarray(v)
    if v.size != 1:
        raise ShapeError(f"{ctx.op_type}: '{what}' must have one element, got shape {v.shape}")
    return v.reshape(-1)[0].item()


def _list_len(info: TensorInfo | None) -> int | None:
    """Number of entries of a 1-D list input (axes, shape, ...) if statically known."""
    if info is None:
        return None
    if info.value is not None:
        return int(np.asarray(info.value).size)
    if info.shape is not None and len(info.shape) == 1:
        return info.shape[0]
    return None


def _axis(ctx: ShapeContext, axis: int, rank: int, what: str = "axis") -> int:
    """``axis`` normalized to [0, rank); ShapeError outside [-rank, rank-1]."""
    if not -rank <= axis < rank:
        raise ShapeError(f"{ctx.op_type}: {what} {axis} out of range for rank {rank}")
    return axis + rank if axis < 0 else axis


def _axes(ctx: ShapeContext, axes: Iterable[int], rank: int, what: str = "axes") -> list[int]:
    out = [_axis(ctx, a, rank, what) for a in axes]
    if len(set(out)) != len(out):
        raise ShapeError(f"{ctx.op_type}: repeated entries in {what} {list(axes)}")
    return out


def _prod(dims: Iterable[Dim]) -> Dim:
    """Product of dims; None if any is unknown, unless a known 0 makes it 0."""
    dims = list(dims)
    if 0 in dims:
        return 0
    if any(d is None for d in dims):
        return None
    return math.prod(dims)


def _merge(ctx: ShapeContext, a: Dim, b: Dim, what: str) -> Dim:
    """Two facts about the same dim: equal if both known, else the known one."""
    if a is not None and b is not None and a != b:
        raise ShapeError(f"{ctx.op_type}: {what}: dims {a} and {b} disagree")
    return a if a is not None else b


def _fmt(shape: Shape | None) -> str:
    if shape is None:
        return "[*]"
    return "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"


def _broadcast(ctx: ShapeContext, shapes: Sequence[Shape | None]) -> Shape | None:
    """Multidirectional (numpy) broadcast of shapes with unknown dims."""
    if any(s is None for s in shapes):
        return None
    rank = max((len(s) for s in shapes), default=0)
    out: list[Dim] = []
    for k in range(rank):
        dims = [s[k - rank + len(s)] for s in shapes if k - rank + len(s) >= 0]
        # Every dim other than 1 must agree; an unknown dim may be 1 or that value.
        fixed = {d for d in dims if d is not None and d != 1}
        if len(fixed) > 1:
            shown = ", ".join(_fmt(s) for s in shapes)
            raise ShapeError(f"{ctx.op_type}: shapes {shown} are not broadcastable")
        if fixed:
            out.append(fixed.pop())
        elif None in dims:
            out.append(None)  # 1 if all unknowns are 1, else whatever they are
        else:
            out.append(1)
    return tuple(out)


def _info(
    dtype: np.dtype | None,
    shape: Sequence[Dim] | None,
    dd: bool = False,
    value: np.ndarray | None = None,
) -> TensorInfo:
    shape = None if shape is None else tuple(None if d is None else int(d) for d in shape)
    return TensorInfo(dtype, shape, value, dd)


# ------------------------------------------------------------- elementwise: unary

_SAME = (
    # math
    "Abs",
    "Neg",
    "Ceil",
    "Floor",
    "Round",
    "Sign",
    "Reciprocal",
    "Sqrt",
    "Exp",
    "Log",
    "Sin",
    "Cos",
    "Tan",
    "Asin",
    "Acos",
    "Atan",
    "Sinh",
    "Cosh",
    "Asinh",
    "Acosh",
    "Atanh",
    "Tanh",
    "Erf",
    "BitwiseNot",
    "Not",
    # activations
    "Sigmoid",
    "HardSigmoid",
    "Relu",
    "LeakyRelu",
    "Elu",
    "Selu",
    "Celu",
    "Softplus",
    "Softsign",
    "HardSwish",
    "Mish",
    "Gelu",
    "ThresholdedRelu",
    "Shrink",
    "Swish",
    # same shape, same type
    "Clip",
    "Trilu",
    "ReverseSequence",
    "ScatterElements",
    "ScatterND",
    "Scatter",
)


@shape_rule(*_SAME)
def _same(ctx: ShapeContext) -> list[TensorInfo]:
    # Clip's min/max, Trilu's k, ReverseSequence's lengths and the scatter indices and
    # updates never change the shape of input 0.
    x = _req(ctx, 0)
    return [_info(x.dtype, x.shape, x.data_dependent)]


@shape_rule("Identity")
def _identity(ctx: ShapeContext) -> list[TensorInfo]:
    x = _req(ctx, 0)
    return [x]


@shape_rule("IsNaN", "IsInf", "RegexFullMatch")
def _predicate(ctx: ShapeContext) -> list[TensorInfo]:
    x = _req(ctx, 0)
    return [_info(_BOOL, x.shape, x.data_dependent)]


@shape_rule("Cast", "BitCast")
def _cast(ctx: ShapeContext) -> list[TensorInfo]:
    x = _req(ctx, 0)
    to = ctx.attr("to")
    if to is None:
        raise ShapeError(f"{ctx.op_type}: attribute 'to' is required")
    # BitCast only reinterprets elements of the same width, so the shape is kept too.
    return [_info(_onnx_dtype(to, ctx.op_type), x.shape, x.data_dependent)]


@shape_rule("CastLike")
def _cast_like(ctx: ShapeContext) -> list[TensorInfo]:
    x, like = _req(ctx, 0), _req(ctx, 1)
    return [_info(like.dtype, x.shape, x.data_dependent)]


@shape_rule("Bernoulli", "RandomNormalLike", "RandomUniformLike")
def _random_like(ctx: ShapeContext) -> list[TensorInfo]:
    x = _req(ctx, 0)
    dt = ctx.attr("dtype")
    dtype = x.dtype if dt is None else _onnx_dtype(dt, ctx.op_type)
    return [_info(dtype, x.shape, x.data_dependent)]


@shape_rule("RandomNormal", "RandomUniform")
def _random(ctx: ShapeContext) -> list[TensorInfo]:
    shape = ctx.attr("shape")
    if shape is None:
        raise ShapeError(f"{ctx.op_type}: attribute 'shape' is required")
    if any(int(d) < 0 for d in shape):
        raise ShapeError(f"{ctx.op_type}: negative dim in shape {list(shape)}")
    return [_info(_onnx_dtype(ctx.attr("dtype", TensorProto.FLOAT), ctx.op_type), shape)]


@shape_rule("Multinomial")
def _multinomial(ctx: ShapeContext) -> list[TensorInfo]:
    x = _req(ctx, 0)
    dtype = _onnx_dtype(ctx.attr("dtype", TensorProto.INT32), ctx.op_type)
    if x.shape is not None and len(x.shape) != 2:
        raise ShapeError(f"Multinomial: input must be [batch, classes], got {_fmt(x.shape)}")
    batch = None if x.shape is None else x.shape[0]
    return [_info(dtype, (batch, int(ctx.attr("sample_size", 1))), x.data_dependent)]


# ------------------------------------------------------------- elementwise: n-ary

_SAME_TYPE_BINARY = (
    "Add",
    "Sub",
    "Mul",
    "Div",
    "Pow",
    "Mod",
    "BitShift",
    "BitwiseAnd",
    "BitwiseOr",
    "BitwiseXor",
    "Max",
    "Min",
    "Sum",
    "Mean",
    "StringConcat",
)
_VARIADIC = ("Max", "Min", "Sum", "Mean")
_BOOL_BINARY = ("And", "Or", "Xor", "Equal", "Less", "LessOrEqual", "Greater", "GreaterOrEqual")


@shape_rule(*_SAME_TYPE_BINARY, *_BOOL_BINARY)
def _broadcasting(ctx: ShapeContext) -> list[TensorInfo]:
    if ctx.op_type in _VARIADIC:
        xs = [x for x in ctx.inputs if x is not None]  # absent positions are skipped
        if not xs:
            raise ShapeError(f"{ctx.op_type}: no inputs")
    else:
        xs = [_req(ctx, 0), _req(ctx, 1)]
    if ctx.op_type in _BOOL_BINARY:
        dtype = _BOOL
    elif ctx.op_type == "StringConcat":
        dtype = _STR
    else:
        # Pow's exponent may have another type; the result has the base's (input 0).
        dtype = xs[0].dtype
    return [_info(dtype, _broadcast(ctx, [x.shape for x in xs]), _dd(*xs))]


@shape_rule("Where")
def _where(ctx: ShapeContext) -> list[TensorInfo]:
    c, x, y = _req(ctx, 0), _req(ctx, 1), _req(ctx, 2)
    dtype = x.dtype if x.dtype is not None else y.dtype
    return [_info(dtype, _broadcast(ctx, [c.shape, x.shape, y.shape]), _dd(c, x, y))]


@shape_rule("PRelu")
def _prelu(ctx: ShapeContext) -> list[TensorInfo]:
    # slope broadcasts unidirectionally to X: the output is X's shape, and a known slope
    # dim other than 1 pins the matching X dim.
    x, slope = _req(ctx, 0), _req(ctx, 1)
    if x.shape is None or slope.shape is None:
        return [_info(x.dtype, x.shape, _dd(x, slope))]
    r, q = len(x.shape), len(slope.shape)
    if q > r:
        raise ShapeError(f"PRelu: slope {_fmt(slope.shape)} has higher rank than X {_fmt(x.shape)}")
    out = list(x.shape)
    for k, s in enumerate(slope.shape):
        i = r - q + k
        if s is not None and s != 1:
            if out[i] is not None and out[i] != s:
                raise ShapeError(
                    f"PRelu: slope {_fmt(slope.shape)} does not broadcast to X {_fmt(x.shape)}"
                )
            out[i] = s
    return [_info(x.dtype, out, _dd(x, slope))]


# ----------------------------------------------------------------------- reductions

_REDUCTIONS = (
    "ReduceSum",
    "ReduceSumSquare",
    "ReduceL1",
    "ReduceL2",
    "ReduceLogSum",
    "ReduceLogSumExp",
    "ReduceProd",
    "ReduceMax",
    "ReduceMin",
    "ReduceMean",
)


@shape_rule(*_REDUCTIONS)
def _reduce(ctx: ShapeContext) -> list[TensorInfo]:
    x = _req(ctx, 0)
    axes_in = ctx.input(1)
    dd = _dd(x, axes_in)
    keep = bool(ctx.attr("keepdims", 1))
    noop = bool(ctx.attr("noop_with_empty_axes", 0))
    if axes_in is not None:
        axes = _ints(axes_in.value)
        if axes is None and _list_len(axes_in) == 0:
            axes = []
    else:
        axes = ctx.attr("axes")  # pre-opset-18 attribute form, tolerated like the kernels
        axes = [] if axes is None else list(axes)
    if x.shape is None:
        return [_info(x.dtype, None, dd)]
    rank = len(x.shape)
    if axes is None:
        # Axes unknown: each dim is either kept or reduced (to 1 with keepdims).
        if rank == 0:
            return [_info(x.dtype, (), dd)]
        if not keep:
            return [_info(x.dtype, None, dd)]
        return [_info(x.dtype, [1 if d == 1 else None for d in x.shape], dd)]
    if not axes:
        if noop:
            return [_info(x.dtype, x.shape, dd)]
        axes = list(range(rank))
    # Repeated axes are harmless here (the kernels reduce each axis once).
    reduced = {_axis(ctx, a, rank, "axes") for a in axes}
    if keep:
        shape = [1 if i in reduced else d for i, d in enumerate(x.shape)]
    else:
        shape = [d for i, d in enumerate(x.shape) if i not in reduced]
    return [_info(x.dtype, shape, dd)]


@shape_rule("ArgMax", "ArgMin")
def _arg_reduce(ctx: ShapeContext) -> list[TensorInfo]:
    x = _req(ctx, 0)
    keep = bool(ctx.attr("keepdims", 1))
    if x.shape is None:
        return [_info(_I64, None, x.data_dependent)]
    axis = _axis(ctx, int(ctx.attr("axis", 0)), len(x.shape))
    if keep:
        shape = [1 if i == axis else d for i, d in enumerate(x.shape)]
    else:
        shape = [d for i, d in enumerate(x.shape) if i != axis]
    return [_info(_I64, shape, x.data_dependent)]


# -------------------------------------------------------------------- shape / layout


@shape_rule("Reshape")
def _reshape(ctx: ShapeContext) -> list[TensorInfo]:
    x, s = _req(ctx, 0), _req(ctx, 1)
    dd = _dd(x, s)
    target = _ints(s.value)
    if target is None:
        n = _list_len(s)
        return [_info(x.dtype, None if n is None else [None] * n, dd)]
    allowzero = bool(ctx.attr("allowzero", 0))
    if target.count(-1) > 1:
        raise ShapeError(f"Reshape: more than one -1 in shape {target}")
    if any(t < -1 for t in target):
        raise ShapeError(f"Reshape: invalid dim in shape {target}")
    if allowzero and 0 in target and -1 in target:
        raise ShapeError(f"Reshape: shape {target} has both 0 and -1 with allowzero=1")
    in_shape = x.shape
    out: list[Dim] = []
    copied: set[int] = set()
    for i, t in enumerate(target):
        if t == 0 and not allowzero:
            # 0 copies the input dim at the same position.
            if in_shape is None:
                out.append(None)
                continue
            if i >= len(in_shape):
                raise ShapeError(
                    f"Reshape: shape {target} copies dim {i} of a rank-{len(in_shape)} input"
                )
            out.append(in_shape[i])
            copied.add(i)
        else:
            out.append(t)
    if in_shape is None:
        return [_info(x.dtype, [None if d == -1 else d for d in out], dd)]
    # Copied dims appear on both sides of the element count and cancel, so the -1 dim is
    # known when the other input dims are, even if a copied dim is not.
    copied_dims = [in_shape[i] for i in copied]
    rest_in = [d for i, d in enumerate(in_shape) if i not in copied]
    explicit = [d for i, d in enumerate(out) if i not in copied and d != -1]
    p_explicit = math.prod(explicit)
    rest_known = None not in rest_in
    p_rest = math.prod(d for d in rest_in if d is not None)
    copied_nonzero = None not in copied_dims and 0 not in copied_dims
    if -1 in out:
        if 0 in copied_dims or p_explicit == 0:
            fill = None  # 0 elements: -1 is not determined
        elif 0 in rest_in:
            fill = 0
        elif not rest_known:
            fill = None
        else:
            if p_rest % p_explicit:
                raise ShapeError(f"Reshape: cannot reshape {_fmt(in_shape)} to {target}")
            fill = p_rest // p_explicit
        out = [fill if d == -1 else d for d in out]
    elif rest_known and copied_nonzero and p_rest != p_explicit:
        raise ShapeError(
            f"Reshape: cannot reshape {_fmt(in_shape)} ({_prod(in_shape)} elements) to {target}"
        )
    return [_info(x.dtype, out, dd)]


@shape_rule("Transpose")
def _transpose(ctx: ShapeContext) -> list[TensorInfo]:
    x = _req(ctx, 0)
    perm = ctx.attr("perm")
    if x.shape is None:
        return [_info(x.dtype, None if perm is None else [None] * len(perm), x.data_dependent)]
    rank = len(x.shape)
    if perm is None:
        perm = list(range(rank))[::-1]
    perm = [int(p) for p in perm]
    if sorted(perm) != list(range(rank)):
        raise ShapeError(f"Transpose: perm {perm} is not a permutation of rank {rank}")
    return [_info(x.dtype, [x.shape[p] for p in perm], x.data_dependent)]


@shape_rule("Flatten")
def _flatten(ctx: ShapeContext) -> list[TensorInfo]:
    x = _req(ctx, 0)
    axis = int(ctx.attr("axis", 1))
    if x.shape is None:
        return [_info(x.dtype, (1 if axis == 0 else None, None), x.data_dependent)]
    rank = len(x.shape)
    if not -rank <= axis <= rank:
        raise ShapeError(f"Flatten: axis {axis} out of range for rank {rank}")
    if axis < 0:
        axis += rank
    return [_info(x.dtype, (_prod(x.shape[:axis]), _prod(x.shape[axis:])), x.data_dependent)]


@shape_rule("Concat")
def _concat(ctx: ShapeContext) -> list[TensorInfo]:
    xs = [x for x in ctx.inputs if x is not None]
    if not xs:
        raise ShapeError("Concat: no inputs")
    if "axis" not in ctx.attrs:
        raise ShapeError("Concat: attribute 'axis' is required")
    axis = int(ctx.attrs["axis"])
    dtype = next((x.dtype for x in xs if x.dtype is not None), None)
    dd = _dd(*xs)
    known = [x.shape for x in xs if x.shape is not None]
    if not known:
        return [_info(dtype, None, dd)]
    rank = len(known[0])
    if any(len(s) != rank for s in known):
        raise ShapeError(f"Concat: inputs of different ranks {[_fmt(s) for s in known]}")
    axis = _axis(ctx, axis, rank)
    out: list[Dim] = []
    for i in range(rank):
        if i == axis:
            dims = [s[i] for s in known]
            complete = len(known) == len(xs) and None not in dims
            out.append(sum(dims) if complete else None)
        else:
            d: Dim = None
            for s in known:
                d = _merge(ctx, d, s[i], f"dim {i} of inputs {[_fmt(s) for s in known]}")
            out.append(d)
    return [_info(dtype, out, dd)]


@shape_rule("Split")
def _split(ctx: ShapeContext) -> list[TensorInfo]:
    x = _req(ctx, 0)
    split_in = ctx.input(1)
    dd = _dd(x, split_in)
    n = ctx.n_out
    if x.shape is None:
        return [_info(x.dtype, None, dd) for _ in range(n)]
    rank = len(x.shape)
    axis = _axis(ctx, int(ctx.attr("axis", 0)), rank)
    dim = x.shape[axis]
    sizes: list[Dim]
    if split_in is not None:
        given = _ints(split_in.value)
        if given is None:
            sizes = [dim if n == 1 else None] * n
        else:
            if len(given) != n:
                raise ShapeError(f"Split: {len(given)} split sizes for {n} outputs")
            if any(s < 0 for s in given):
                raise ShapeError(f"Split: negative split size in {given}")
            if dim is not None and sum(given) != dim:
                raise ShapeError(
                    f"Split: sizes {given} do not add up to dim {dim} of {_fmt(x.shape)}"
                )
            sizes = list(given)
    else:
        parts = int(ctx.attr("num_outputs", n))
        if parts != n:
            raise ShapeError(f"Split: num_outputs={parts} but the node has {n} outputs")
        if dim is None:
            sizes = [None] * n
        else:
            # Equal chunks of ceil(dim / n); the last one is smaller (as the kernel does).
            chunk = -(-dim // n)
            sizes = [max(0, min(chunk, dim - i * chunk)) for i in range(n)]
    outs = []
    for size in sizes:
        shape = list(x.shape)
        shape[axis] = size
        outs.append(_info(x.dtype, shape, dd))
    return outs


def _slice_len(dim: int, start: int, end: int, step: int) -> int:
    """Length of one sliced axis, with the spec's adjustment and clamping."""
    if start < 0:
        start += dim
    if end < 0:
        end += dim
    if step > 0:
        start = min(max(start, 0), dim)
        end = min(max(end, 0), dim)
        return max(0, -(-(end - start) // step))
    start = min(max(start, 0), dim - 1)
    end = min(max(end, -1), dim - 1)
    return max(0, -(-(start - end) // -step))


@shape_rule("Slice")
def _slice(ctx: ShapeContext) -> list[TensorInfo]:
    x = _req(ctx, 0)
    starts_in, ends_in = _req(ctx, 1), _req(ctx, 2)
    axes_in, steps_in = ctx.input(3), ctx.input(4)
    dd = _dd(x, starts_in, ends_in, axes_in, steps_in)
    if x.shape is None:
        return [_info(x.dtype, None, dd)]
    rank = len(x.shape)
    starts, ends = _ints(starts_in.value), _ints(ends_in.value)
    n = next(
        (
            v
            for v in (
                _list_len(starts_in),
                _list_len(ends_in),
                _list_len(axes_in),
                _list_len(steps_in),
            )
            if v is not None
        ),
        None,
    )
    for info, what in (
        (starts_in, "starts"),
        (ends_in, "ends"),
        (axes_in, "axes"),
        (steps_in, "steps"),
    ):
        m = _list_len(info)
        if m is not None and n is not None and m != n:
            raise ShapeError(f"Slice: '{what}' has {m} entries, expected {n}")
    if axes_in is None:
        axes = None if n is None else list(range(n))
        if n is not None and n > rank:
            raise ShapeError(f"Slice: {n} starts for a rank-{rank} input")
    else:
        axes = _ints(axes_in.value)
    if axes is not None:
        axes = _axes(ctx, axes, rank)
    if steps_in is None:
        steps = None if n is None else [1] * n
    else:
        steps = _ints(steps_in.value)
    if steps is not None and 0 in steps:
        raise ShapeError(f"Slice: step 0 in steps {steps}")
    if axes is None:
        # Which axes are sliced is unknown; only empty dims are certain to stay empty.
        return [_info(x.dtype, [0 if d == 0 else None for d in x.shape], dd)]
    out = list(x.shape)
    for k, a in enumerate(axes):
        dim = x.shape[a]
        if dim == 0:
            continue
        if starts is None or ends is None or steps is None:
            out[a] = None
            continue
        s, e, st = starts[k], ends[k], steps[k]
        if dim is not None:
            out[a] = _slice_len(dim, s, e, st)
        elif st > 0 and (s >= 0) == (e >= 0) and e <= s:
            # Same-signed bounds keep their order under the shift and clamp: empty.
            out[a] = 0
        else:
            out[a] = None
    return [_info(x.dtype, out, dd)]


@shape_rule("Squeeze")
def _squeeze(ctx: ShapeContext) -> list[TensorInfo]:
    x = _req(ctx, 0)
    axes_in = ctx.input(1)
    dd = _dd(x, axes_in)
    if axes_in is not None:
        axes = _ints(axes_in.value)
    else:
        axes = ctx.attr("axes")  # pre-opset-13 attribute form, tolerated like the kernels
        axes = None if axes is None else list(axes)
    if x.shape is None:
        return [_info(x.dtype, None, dd)]
    if axes_in is not None and axes is None:
        return [_info(x.dtype, None, dd)]  # which (and with duplicates, how many) unknown
    if axes is None or (not axes and axes_in is not None):
        # No axes: every 1 goes.  An empty axes tensor means "no axes" to some runtimes and
        # "squeeze nothing" to numpy, so it is only unambiguous when no dim can be 1.
        if None in x.shape:
            return [_info(x.dtype, None, dd)]
        if axes is not None and 1 in x.shape:
            return [_info(x.dtype, None, dd)]
        return [_info(x.dtype, [d for d in x.shape if d != 1], dd)]
    rank = len(x.shape)
    drop = set(_axes(ctx, axes, rank))
    for a in drop:
        if x.shape[a] is not None and x.shape[a] != 1:
            raise ShapeError(f"Squeeze: dim {a} of {_fmt(x.shape)} is not 1")
    return [_info(x.dtype, [d for i, d in enumerate(x.shape) if i not in drop], dd)]


@shape_rule("Unsqueeze")
def _unsqueeze(ctx: ShapeContext) -> list[TensorInfo]:
    x = _req(ctx, 0)
    axes_in = ctx.input(1)
    dd = _dd(x, axes_in)
    if axes_in is not None:
        axes = _ints(axes_in.value)
        count = _list_len(axes_in)
    else:
        axes = ctx.attr("axes")  # pre-opset-13 attribute form
        if axes is None:
            raise ShapeError("Unsqueeze: 'axes' is required")
        axes = list(axes)
        count = len(axes)
    if x.shape is None:
        return [_info(x.dtype, None, dd)]
    if axes is None:
        # The spec forbids duplicate axes, so the rank is known; the dims' places are not.
        return [_info(x.dtype, None if count is None else [None] * (len(x.shape) + count), dd)]
    rank = len(x.shape) + len(axes)
    ones = set(_axes(ctx, axes, rank))
    rest = iter(x.shape)
    return [_info(x.dtype, [1 if i in ones else next(rest) for i in range(rank)], dd)]


@shape_rule("Expand")
def _expand(ctx: ShapeContext) -> list[TensorInfo]:
    x, s = _req(ctx, 0), _req(ctx, 1)
    dd = _dd(x, s)
    target = _ints(s.value)
    if target is not None:
        if any(t < 0 for t in target):
            raise ShapeError(f"Expand: negative dim in shape {target}")
        return [_info(x.dtype, _broadcast(ctx, [x.shape, tuple(target)]), dd)]
    n = _list_len(s)
    if x.shape is None or n is None:
        return [_info(x.dtype, None, dd)]
    # Broadcasting a dim other than 1 leaves it unchanged (or fails).
    rank = max(len(x.shape), n)
    padded = [1] * (rank - len(x.shape)) + list(x.shape)
    return [_info(x.dtype, [d if d is not None and d != 1 else None for d in padded], dd)]


@shape_rule("Tile")
def _tile(ctx: ShapeContext) -> list[TensorInfo]:
    x, r = _req(ctx, 0), _req(ctx, 1)
    dd = _dd(x, r)
    reps = _ints(r.value)
    if x.shape is None:
        # One repeat per input dim, so the repeats give the rank (and 0 repeats a 0 dim).
        if reps is not None:
            return [_info(x.dtype, [0 if k == 0 else None for k in reps], dd)]
        n = _list_len(r)
        return [_info(x.dtype, None if n is None else [None] * n, dd)]
    if reps is None:
        return [_info(x.dtype, [0 if d == 0 else None for d in x.shape], dd)]
    if len(reps) != len(x.shape):
        raise ShapeError(f"Tile: {len(reps)} repeats for a rank-{len(x.shape)} input")
    if any(k < 0 for k in reps):
        raise ShapeError(f"Tile: negative repeat in {reps}")
    return [_info(x.dtype, [_prod([d, k]) for d, k in zip(x.shape, reps, strict=True)], dd)]


@shape_rule("Shape")
def _shape(ctx: ShapeContext) -> list[TensorInfo]:
    x = _req(ctx, 0)
    if x.shape is None:
        return [_info(_I64, (None,), x.data_dependent)]
    r = len(x.shape)
    start, end = int(ctx.attr("start", 0)), int(ctx.attr("end", r))
    # Out-of-range start/end are clamped, as the spec says.
    start = min(max(start + r if start < 0 else start, 0), r)
    end = min(max(end + r if end < 0 else end, 0), r)
    dims = x.shape[start:end]
    if None in dims:
        return [_info(_I64, (len(dims),), x.data_dependent)]
    return [_info(_I64, (len(dims),), False, np.array(dims, dtype=_I64))]


@shape_rule("Size")
def _size(ctx: ShapeContext) -> list[TensorInfo]:
    x = _req(ctx, 0)
    n = None if x.shape is None else _prod(x.shape)
    if n is None:
        return [_info(_I64, (), x.data_dependent)]
    return [_info(_I64, (), False, np.array(n, dtype=_I64))]


@shape_rule("ConstantOfShape")
def _constant_of_shape(ctx: ShapeContext) -> list[TensorInfo]:
    s = _req(ctx, 0)
    value = ctx.attr("value")
    dtype = _F32 if value is None else np.asarray(value).dtype
    dims = _ints(s.value)
    if dims is None:
        n = _list_len(s)
        return [_info(dtype, None if n is None else [None] * n, s.data_dependent)]
    if any(d < 0 for d in dims):
        raise ShapeError(f"ConstantOfShape: negative dim in {dims}")
    return [_info(dtype, dims, s.data_dependent)]


@shape_rule("Constant")
def _constant(ctx: ShapeContext) -> list[TensorInfo]:
    a = ctx.attrs
    if "value" in a:
        v = np.asarray(a["value"])
    elif "value_float" in a:
        v = np.array(a["value_float"], dtype=_F32)
    elif "value_floats" in a:
        v = np.array(a["value_floats"], dtype=_F32).reshape(-1)
    elif "value_int" in a:
        v = np.array(a["value_int"], dtype=_I64)
    elif "value_ints" in a:
        v = np.array(a["value_ints"], dtype=_I64).reshape(-1)
    elif "value_string" in a:
        v = np.array(_str(a["value_string"]), dtype=_STR)
    elif "value_strings" in a:
        v = np.array([_str(s) for s in a["value_strings"]], dtype=_STR).reshape(-1)
    else:
        return [TensorInfo(None, None)]  # sparse_value: not decoded here
    return [TensorInfo(v.dtype, tuple(v.shape), v)]


def _range_count(start: Any, limit: Any, delta: Any, dtype: np.dtype) -> int | None:
    """max(ceil((limit - start) / delta), 0), or None if the arithmetic matters.

    Implementations evaluate the formula exactly (integers), in double, in float or in
    the input type; the count is only certain when all of those agree.
    """
    counts = set()
    if dtype.kind in "iu":
        s, lim, d = int(start), int(limit), int(delta)
        counts.add(max(-(-(lim - s) // d), 0))
    types = {np.dtype(np.float64)}  # integer ranges: exact or in double
    if dtype.kind not in "iu":
        types |= {np.dtype(np.float32), dtype}
    with np.errstate(all="ignore"):
        for t in types:
            q = (t.type(limit) - t.type(start)) / t.type(delta)
            if not np.isfinite(q):
                return None
            counts.add(max(math.ceil(float(q)), 0))
    return counts.pop() if len(counts) == 1 else None


@shape_rule("Range")
def _range(ctx: ShapeContext) -> list[TensorInfo]:
    ins = [_req(ctx, i) for i in range(3)]
    dtype = next((i.dtype for i in ins if i.dtype is not None), None)  # all three agree
    dd = _dd(*ins)
    vals = [_scalar(ctx, i, w) for i, w in enumerate(("start", "limit", "delta"))]
    if any(v is None for v in vals) or dtype is None:
        return [_info(dtype, (None,), dd)]
    if vals[2] == 0:
        raise ShapeError("Range: delta is 0")
    return [_info(dtype, (_range_count(*vals, np.dtype(dtype)),), dd)]


@shape_rule("EyeLike")
def _eye_like(ctx: ShapeContext) -> list[TensorInfo]:
    x = _req(ctx, 0)
    dt = ctx.attr("dtype")
    dtype = x.dtype if dt is None else _onnx_dtype(dt, "EyeLike")
    if x.shape is not None and len(x.shape) != 2:
        raise ShapeError(f"EyeLike: input must be 2-D, got {_fmt(x.shape)}")
    return [_info(dtype, (None, None) if x.shape is None else x.shape, x.data_dependent)]


# ------------------------------------------------------------------- gather / scatter


@shape_rule("Gather")
def _gather(ctx: ShapeContext) -> list[TensorInfo]:
    x, idx = _req(ctx, 0), _req(ctx, 1)
    dd = _dd(x, idx)
    if x.shape is None or idx.shape is None:
        return [_info(x.dtype, None, dd)]
    axis = _axis(ctx, int(ctx.attr("axis", 0)), len(x.shape))
    return [_info(x.dtype, x.shape[:axis] + idx.shape + x.shape[axis + 1 :], dd)]


@shape_rule("GatherElements")
def _gather_elements(ctx: ShapeContext) -> list[TensorInfo]:
    x, idx = _req(ctx, 0), _req(ctx, 1)
    dd = _dd(x, idx)
    if x.shape is not None:
        _axis(ctx, int(ctx.attr("axis", 0)), len(x.shape))
    if idx.shape is None:
        return [_info(x.dtype, None if x.shape is None else [None] * len(x.shape), dd)]
    if x.shape is not None and len(x.shape) != len(idx.shape):
        raise ShapeError(
            f"GatherElements: data {_fmt(x.shape)} and indices {_fmt(idx.shape)} differ in rank"
        )
    return [_info(x.dtype, idx.shape, dd)]


@shape_rule("GatherND")
def _gather_nd(ctx: ShapeContext) -> list[TensorInfo]:
    x, idx = _req(ctx, 0), _req(ctx, 1)
    dd = _dd(x, idx)
    b = int(ctx.attr("batch_dims", 0))
    if x.shape is None or idx.shape is None or not idx.shape or idx.shape[-1] is None:
        if idx.shape is not None and not idx.shape:
            raise ShapeError("GatherND: indices must have rank >= 1")
        return [_info(x.dtype, None, dd)]
    r, q, k = len(x.shape), len(idx.shape), idx.shape[-1]
    if b < 0 or b >= min(r, q):
        raise ShapeError(
            f"GatherND: batch_dims {b} too large for data {_fmt(x.shape)} and "
            f"indices {_fmt(idx.shape)}"
        )
    if k < 1 or b + k > r:
        raise ShapeError(
            f"GatherND: index depth {k} does not fit data {_fmt(x.shape)} with batch_dims {b}"
        )
    batch = [_merge(ctx, x.shape[i], idx.shape[i], f"batch dim {i}") for i in range(b)]
    return [_info(x.dtype, batch + list(idx.shape[b:-1]) + list(x.shape[b + k :]), dd)]


@shape_rule("OneHot")
def _one_hot(ctx: ShapeContext) -> list[TensorInfo]:
    idx, depth_in, values = _req(ctx, 0), _req(ctx, 1), _req(ctx, 2)
    dd = _dd(idx, depth_in)
    depth = _scalar(ctx, 1, "depth")
    if depth is not None:
        depth = int(depth)  # non-integer depths are truncated
        if depth < 0:
            raise ShapeError(f"OneHot: negative depth {depth}")
    if idx.shape is None:
        return [_info(values.dtype, None, dd)]
    rank = len(idx.shape) + 1
    axis = _axis(ctx, int(ctx.attr("axis", -1)), rank)
    shape = list(idx.shape)
    shape.insert(axis, depth)
    return [_info(values.dtype, shape, dd)]


@shape_rule("Compress")
def _compress(ctx: ShapeContext) -> list[TensorInfo]:
    x, c = _req(ctx, 0), _req(ctx, 1)
    axis = ctx.attr("axis")
    cond = None if c.value is None else np.asarray(c.value).reshape(-1).astype(bool)
    if c.shape is not None and len(c.shape) != 1:
        raise ShapeError(f"Compress: condition must be 1-D, got {_fmt(c.shape)}")
    if cond is None:
        n, dd = None, True
    else:
        n, dd = int(np.count_nonzero(cond)), _dd(x)
    if axis is None:
        # Selection from the flattened input.
        total = None if x.shape is None else _prod(x.shape)
        if cond is not None and total is not None and cond[total:].any():
            raise ShapeError(f"Compress: condition selects past the {total} elements")
        return [_info(x.dtype, (n,), dd)]
    if x.shape is None:
        return [_info(x.dtype, None, dd)]
    axis = _axis(ctx, int(axis), len(x.shape))
    dim = x.shape[axis]
    if cond is not None and dim is not None and cond[dim:].any():
        raise ShapeError(f"Compress: condition selects past dim {dim} of {_fmt(x.shape)}")
    shape = list(x.shape)
    shape[axis] = n
    return [_info(x.dtype, shape, dd or _dd(c))]


@shape_rule("NonZero")
def _nonzero(ctx: ShapeContext) -> list[TensorInfo]:
    x = _req(ctx, 0)
    if x.shape is None:
        return [_info(_I64, (None, None), True)]
    # Runtimes disagree on the coordinate count of a 0-d input (0 or 1 rows).
    rows = len(x.shape) if x.shape else None
    if x.value is not None:
        return [_info(_I64, (rows, int(np.count_nonzero(x.value))), x.data_dependent)]
    if 0 in x.shape:
        return [_info(_I64, (rows, 0), x.data_dependent)]
    return [_info(_I64, (rows, None), True)]


@shape_rule("Unique")
def _unique(ctx: ShapeContext) -> list[TensorInfo]:
    x = _req(ctx, 0)
    axis = ctx.attr("axis")
    if axis is None:
        y = (None,)
        n_in = None if x.shape is None else _prod(x.shape)
    elif x.shape is None:
        y, n_in = None, None
    else:
        a = _axis(ctx, int(axis), len(x.shape))
        y = tuple(None if i == a else d for i, d in enumerate(x.shape))
        n_in = x.shape[a]
    return [
        _info(x.dtype, y, True),
        _info(_I64, (None,), True),
        _info(_I64, (n_in,), x.data_dependent),  # inverse_indices: one per input element
        _info(_I64, (None,), True),
    ][: ctx.n_out]


@shape_rule("Det")
def _det(ctx: ShapeContext) -> list[TensorInfo]:
    x = _req(ctx, 0)
    if x.shape is None:
        return [_info(x.dtype, None, x.data_dependent)]
    if len(x.shape) < 2:
        raise ShapeError(f"Det: input must have rank >= 2, got {_fmt(x.shape)}")
    _merge(ctx, x.shape[-2], x.shape[-1], "matrices must be square")
    return [_info(x.dtype, x.shape[:-2], x.data_dependent)]


# --------------------------------------------------------------------------- strings


@shape_rule("StringNormalizer")
def _string_normalizer(ctx: ShapeContext) -> list[TensorInfo]:
    x = _req(ctx, 0)
    if x.shape is not None and (
        len(x.shape) not in (1, 2) or (len(x.shape) == 2 and x.shape[0] not in (1, None))
    ):
        raise ShapeError(f"StringNormalizer: input must be [C] or [1, C], got {_fmt(x.shape)}")
    stop = ctx.attr("stopwords")
    if not stop and x.shape is not None and x.shape[-1] not in (0, None):
        return [_info(_STR, x.shape, x.data_dependent)]
    # Stop words drop a data-dependent number of strings (an empty result keeps one).
    shape = None if x.shape is None else x.shape[:-1] + (None,)
    return [_info(_STR, shape, True)]


@shape_rule("StringSplit")
def _string_split(ctx: ShapeContext) -> list[TensorInfo]:
    x = _req(ctx, 0)
    y = None if x.shape is None else x.shape + (None,)
    return [_info(_STR, y, True), _info(_I64, x.shape, x.data_dependent)][: ctx.n_out]


# ---------------------------------------------------------------------------- signal


@shape_rule("HannWindow", "HammingWindow", "BlackmanWindow")
def _window(ctx: ShapeContext) -> list[TensorInfo]:
    size_in = _req(ctx, 0)
    dtype = _onnx_dtype(ctx.attr("output_datatype", TensorProto.FLOAT), ctx.op_type)
    size = _scalar(ctx, 0, "size")
    if size is not None and int(size) < 0:
        raise ShapeError(f"{ctx.op_type}: negative size {size}")
    return [_info(dtype, (None if size is None else int(size),), size_in.data_dependent)]


@shape_rule("MelWeightMatrix")
def _mel_weight_matrix(ctx: ShapeContext) -> list[TensorInfo]:
    ins = [_req(ctx, i) for i in range(2)]
    dtype = _onnx_dtype(ctx.attr("output_datatype", TensorProto.FLOAT), ctx.op_type)
    bins = _scalar(ctx, 0, "num_mel_bins")
    n = _scalar(ctx, 1, "dft_length")
    return [
        _info(
            dtype,
            (None if n is None else int(n) // 2 + 1, None if bins is None else int(bins)),
            _dd(*ins),
        )
    ]


@shape_rule("DFT")
def _dft(ctx: ShapeContext) -> list[TensorInfo]:
    x = _req(ctx, 0)
    len_in, axis_in = ctx.input(1), ctx.input(2)
    dd = _dd(x, len_in, axis_in)
    inverse = bool(ctx.attr("inverse", 0))
    onesided = bool(ctx.attr("onesided", 0))
    last = 1 if onesided and inverse else 2  # IRFFT returns a real signal
    if x.shape is None:
        return [_info(x.dtype, None, dd)]
    rank = len(x.shape)
    if rank < 2 or x.shape[-1] not in (1, 2, None):
        raise ShapeError(
            f"DFT: input must end in a dim of 1 (real) or 2 (complex), got {_fmt(x.shape)}"
        )
    if axis_in is not None:
        axis = _scalar(ctx, 2, "axis")
    else:
        axis = ctx.attr("axis", -2)  # opset-17 attribute form
    if axis is None:
        return [_info(x.dtype, [None] * (rank - 1) + [last], dd)]
    axis = int(axis)
    if not (-rank <= axis <= -2 or 0 <= axis <= rank - 2):
        raise ShapeError(f"DFT: axis {axis} out of range for {_fmt(x.shape)}")
    axis %= rank
    dim = x.shape[axis]
    if len_in is not None:
        n = _scalar(ctx, 1, "dft_length")
        n = None if n is None else int(n)
    elif onesided and inverse:
        n = None if dim is None else 2 * (dim - 1)
    else:
        n = dim
    if n is not None and n < 1:
        raise ShapeError(f"DFT: dft_length {n} must be positive")
    if n is not None and onesided and not inverse:
        n = n // 2 + 1
    shape = list(x.shape)
    shape[axis] = n
    shape[-1] = last
    return [_info(x.dtype, shape, dd)]


@shape_rule("STFT")
def _stft(ctx: ShapeContext) -> list[TensorInfo]:
    sig, step_in = _req(ctx, 0), _req(ctx, 1)
    window, len_in = ctx.input(2), ctx.input(3)
    dd = _dd(sig, step_in, window, len_in)
    onesided = bool(ctx.attr("onesided", 1))
    if sig.shape is not None and len(sig.shape) != 3:
        raise ShapeError(f"STFT: signal must be [batch, length, 1|2], got {_fmt(sig.shape)}")
    batch, length, comp = (None, None, None) if sig.shape is None else sig.shape
    step = _scalar(ctx, 1, "frame_step")
    if len_in is not None:
        fl = _scalar(ctx, 3, "frame_length")
        fl = None if fl is None else int(fl)
    elif window is not None:
        fl = None if window.shape is None else window.shape[0]
    else:
        fl = length
    if window is not None and window.shape is not None and fl is not None:
        _merge(ctx, window.shape[0], fl, "window length and frame_length")
    if step is not None and int(step) < 1:
        raise ShapeError(f"STFT: frame_step {step} must be positive")
    frames = None
    if step is not None and fl is not None and length is not None:
        if fl > length:
            raise ShapeError(f"STFT: frame_length {fl} exceeds signal length {length}")
        frames = (length - fl) // int(step) + 1
    if fl is None:
        bins = None
    elif onesided:
        # A one-sided spectrum is only defined for real input.
        bins = fl // 2 + 1 if comp == 1 else None
    else:
        bins = fl
    return [_info(sig.dtype, (batch, frames, bins, 2), dd)]
