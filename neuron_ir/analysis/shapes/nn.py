"""Shape rules for the "nn" family: convolutions, matrix products, normalizations,
softmax-like ops, pooling, Resize/Pad, attention, recurrent and quantization ops.

Every rule follows the ONNX operator specification at opset 28 (the canonical
opset) and applies the attribute defaults itself, like the kernels in
``neuron_ir.kernels.nn`` do. Dims are ``None`` whenever the inputs do not pin
them down; inconsistent inputs (channel counts, inner dims, ...) raise
``ShapeError``. Window arithmetic (Conv/pooling) follows the same formulas as the
kernels, generalized to unknown dims.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from ...ir.dtypes import BY_ONNX
from . import Dim, Shape, ShapeContext, ShapeError, TensorInfo, shape_rule

_INT32 = np.dtype(np.int32)
_INT64 = np.dtype(np.int64)
_UINT8 = np.dtype(np.uint8)
_FLOAT32 = np.dtype(np.float32)
_BOOL = np.dtype(np.bool_)

# --------------------------------------------------------------------------- helpers


def _shape(info: TensorInfo | None) -> Shape | None:
    return None if info is None else info.shape


def _dtype(*infos: TensorInfo | None) -> np.dtype | None:
    """The first known dtype among ``infos`` (inputs sharing one type variable)."""
    for info in infos:
        if info is not None and info.dtype is not None:
            return info.dtype
    return None


def _out(
    dtype: np.dtype | None, shape: Sequence[Dim] | None, *, data_dependent: bool = False
) -> TensorInfo:
    return TensorInfo(dtype, None if shape is None else tuple(shape), data_dependent=data_dependent)


def _str(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _ints(ctx: ShapeContext, name: str) -> list[int] | None:
    value = ctx.attr(name)
    return None if value is None else [int(v) for v in np.asarray(value).reshape(-1)]


def _const_ints(ctx: ShapeContext, index: int) -> list[int] | None:
    """A constant integer input as a flat list, or None if its value is unknown."""
    value = ctx.const(index)
    return None if value is None else [int(v) for v in np.asarray(value).reshape(-1)]


def _elem_type(onnx_type: int, what: str) -> np.dtype:
    entry = BY_ONNX.get(int(onnx_type))
    if entry is None:
        raise ShapeError(f"{what}: unknown ONNX data type {onnx_type}")
    return entry.numpy


def _norm_axis(ctx: ShapeContext, axis: int, rank: int, what: str = "axis") -> int:
    if not -rank <= axis < rank:
        raise ShapeError(f"{ctx.op_type}: {what} {axis} is out of range for rank {rank}")
    return axis + rank if axis < 0 else axis


def _merge(ctx: ShapeContext, a: Dim, b: Dim, what: str) -> Dim:
    """Two dims that must be equal: the known one, or ShapeError if they differ."""
    if a is not None and b is not None and a != b:
        raise ShapeError(f"{ctx.op_type}: {what} mismatch ({a} vs {b})")
    return a if a is not None else b


def _dim(shape: Shape | None, i: int) -> Dim:
    """Dim ``i`` of a shape that may be unknown or too short (then None)."""
    if shape is None or not -len(shape) <= i < len(shape):
        return None
    return shape[i]


def _div(ctx: ShapeContext, a: Dim, b: Dim, what: str) -> Dim:
    """``a / b`` for a dim that must divide exactly."""
    if a is None or b is None:
        return None
    if b <= 0 or a % b:
        raise ShapeError(f"{ctx.op_type}: {what}: {a} is not divisible by {b}")
    return a // b


def _mul(*dims: Dim) -> Dim:
    return None if any(d is None for d in dims) else math.prod(dims)  # type: ignore[arg-type]


def _add(*dims: Dim) -> Dim:
    return None if any(d is None for d in dims) else sum(dims)  # type: ignore[arg-type]


def _bcast_dim(ctx: ShapeContext, a: Dim, b: Dim) -> Dim:
    """Multidirectional broadcast of one dim pair."""
    if a == 1:
        return b
    if b == 1:
        return a
    if a is None or b is None:
        # The unknown one is 1 or equal to the known one: either way the result is
        # the known one, unless that is unknown too.
        return a if a is not None else b
    if a != b:
        raise ShapeError(f"{ctx.op_type}: dims {a} and {b} do not broadcast")
    return a


def _bcast(ctx: ShapeContext, a: Shape, b: Shape) -> Shape:
    n = max(len(a), len(b))
    a = (1,) * (n - len(a)) + tuple(a)
    b = (1,) * (n - len(b)) + tuple(b)
    return tuple(_bcast_dim(ctx, x, y) for x, y in zip(a, b, strict=True))


def _check_rank(
    ctx: ShapeContext, info: TensorInfo | None, ranks: Sequence[int], what: str
) -> None:
    if info is not None and info.shape is not None and len(info.shape) not in ranks:
        want = " or ".join(str(r) for r in ranks)
        raise ShapeError(f"{ctx.op_type}: {what} must have rank {want}, got {len(info.shape)}")


def _check_vector(ctx: ShapeContext, index: int, length: Dim, what: str) -> Dim:
    """Input ``index`` (if present) is a 1-D vector of ``length``; the merged length."""
    info = ctx.input(index)
    _check_rank(ctx, info, (1,), what)
    return _merge(ctx, length, _dim(_shape(info), 0), f"{what} length")


def _same_as_input(ctx: ShapeContext, index: int = 0) -> list[TensorInfo]:
    x = ctx.input(index)
    return [_out(_dtype(x), _shape(x))]


# ------------------------------------------------------------ window geometry (conv/pool)


def _spatial_attr(ctx: ShapeContext, name: str, nd: int, default: int) -> list[int]:
    values = _ints(ctx, name)
    if values is None:
        return [default] * nd
    if len(values) != nd:
        raise ShapeError(
            f"{ctx.op_type}: '{name}' has {len(values)} entries, "
            f"expected {nd} (one per spatial dim)"
        )
    return values


def _spatial_rank(
    ctx: ShapeContext, *shapes: Shape | None, names: Sequence[str] = ()
) -> int | None:
    """Number of spatial dims, from any input of rank 2 + nd or a per-dim attribute."""
    for shape in shapes:
        if shape is not None:
            if len(shape) < 2:
                raise ShapeError(f"{ctx.op_type}: inputs need rank >= 2, got {len(shape)}")
            return len(shape) - 2
    for name in names:
        values = _ints(ctx, name)
        if values is not None:
            return len(values) // 2 if name == "pads" else len(values)
    return None


def _window_out(
    ctx: ShapeContext,
    n: Dim,
    k: Dim,
    stride: int,
    dil: int,
    begin: int,
    end: int,
    auto_pad: str,
    ceil_mode: bool = False,
) -> Dim:
    """Output length of a sliding window over ``n`` positions (Conv and pooling).

    SAME_* pads so that the output is ceil(n / stride) whatever the kernel (the
    kernels' pad computation gives exactly that, in ceil mode too). Otherwise the
    window must fit the padded input; ceil mode adds a last partial window unless it
    would start inside the end padding."""
    if stride <= 0 or dil <= 0:
        raise ShapeError(f"{ctx.op_type}: strides and dilations must be positive")
    if n is None:
        return None
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        return -(-n // stride)
    if k is None:
        return None
    if auto_pad == "VALID":
        begin = end = 0
    elif auto_pad != "NOTSET":
        raise ShapeError(f"{ctx.op_type}: unknown auto_pad '{auto_pad}'")
    dk = (k - 1) * dil + 1
    span = n + begin + end - dk
    if span < 0:
        raise ShapeError(
            f"{ctx.op_type}: window of extent {dk} is larger than the "
            f"padded input ({n} + {begin + end} padding)"
        )
    if not ceil_mode:
        return span // stride + 1
    o = -(-span // stride) + 1
    if (o - 1) * stride >= n + begin:
        o -= 1
    return o


def _window_spatial(
    ctx: ShapeContext, in_sp: Sequence[Dim], kernel: Sequence[Dim], *, ceil_mode: bool = False
) -> list[Dim]:
    nd = len(in_sp)
    strides = _spatial_attr(ctx, "strides", nd, 1)
    dil = _spatial_attr(ctx, "dilations", nd, 1)
    pads = _ints(ctx, "pads") or [0] * (2 * nd)
    if len(pads) != 2 * nd:
        raise ShapeError(f"{ctx.op_type}: 'pads' has {len(pads)} entries, expected {2 * nd}")
    if any(p < 0 for p in pads):
        raise ShapeError(f"{ctx.op_type}: negative pads {pads}")
    auto_pad = _str(ctx.attr("auto_pad", "NOTSET"))
    return [
        _window_out(
            ctx, in_sp[i], kernel[i], strides[i], dil[i], pads[i], pads[nd + i], auto_pad, ceil_mode
        )
        for i in range(nd)
    ]


def _kernel_dims(ctx: ShapeContext, nd: int, w_shape: Shape | None) -> list[Dim]:
    """Kernel extent per spatial dim: the attribute, checked against W's shape."""
    from_w = list(w_shape[2:]) if w_shape is not None else [None] * nd
    attr = _ints(ctx, "kernel_shape")
    if attr is None:
        return from_w
    if len(attr) != nd:
        raise ShapeError(f"{ctx.op_type}: 'kernel_shape' has {len(attr)} entries, expected {nd}")
    return [
        _merge(ctx, a, w, "kernel_shape vs weight shape") for a, w in zip(attr, from_w, strict=True)
    ]


def _conv_like(
    ctx: ShapeContext,
    x: TensorInfo | None,
    w: TensorInfo | None,
    bias_index: int | None,
    dtype: np.dtype | None,
) -> list[TensorInfo]:
    """Conv geometry shared by Conv, ConvInteger, QLinearConv and DeformConv:
    X (N, C, D1..Dn), W (M, C/group, k1..kn) -> (N, M, O1..On)."""
    xs, ws = _shape(x), _shape(w)
    nd = _spatial_rank(ctx, xs, ws, names=("kernel_shape", "strides", "dilations", "pads"))
    if nd is None:
        return [_out(dtype, None)]
    if xs is not None and ws is not None and len(xs) != len(ws):
        raise ShapeError(f"{ctx.op_type}: input rank {len(xs)} and weight rank {len(ws)} differ")
    group = int(ctx.attr("group", 1))
    if group <= 0:
        raise ShapeError(f"{ctx.op_type}: group must be positive, got {group}")
    c, m = _dim(xs, 1), _dim(ws, 0)
    if c is not None and c % group:
        raise ShapeError(f"{ctx.op_type}: {c} input channels not divisible by group {group}")
    if m is not None and m % group:
        raise ShapeError(f"{ctx.op_type}: {m} output channels not divisible by group {group}")
    cw = _dim(ws, 1)
    if c is not None and cw is not None and c != cw * group:
        raise ShapeError(
            f"{ctx.op_type}: input has {c} channels but the weight expects "
            f"{cw} x group {group} = {cw * group}"
        )
    if bias_index is not None:
        m = _check_vector(ctx, bias_index, m, "bias")
    kernel = _kernel_dims(ctx, nd, ws)
    in_sp = list(xs[2:]) if xs is not None else [None] * nd
    out_sp = _window_spatial(ctx, in_sp, kernel)
    return [_out(dtype, (_dim(xs, 0), m, *out_sp))]


# ------------------------------------------------------------------------- convolution


@shape_rule("Conv")
def _conv(ctx: ShapeContext) -> list[TensorInfo]:
    x, w = ctx.input(0), ctx.input(1)
    return _conv_like(ctx, x, w, 2, _dtype(x, w))


@shape_rule("ConvInteger")
def _conv_integer(ctx: ShapeContext) -> list[TensorInfo]:
    return _conv_like(ctx, ctx.input(0), ctx.input(1), None, _INT32)


@shape_rule("QLinearConv")
def _qlinear_conv(ctx: ShapeContext) -> list[TensorInfo]:
    # x, x_scale, x_zero_point, w, w_scale, w_zero_point, y_scale, y_zero_point, B;
    # y has the type of y_zero_point (T3).
    return _conv_like(ctx, ctx.input(0), ctx.input(3), 8, _dtype(ctx.input(7)))


@shape_rule("DeformConv")
def _deform_conv(ctx: ShapeContext) -> list[TensorInfo]:
    x, w, offset = ctx.input(0), ctx.input(1), ctx.input(2)
    [y] = _conv_like(ctx, x, w, 3, _dtype(x, w))
    if y.shape is None:
        return [y]
    # The offset input (N, offset_group * prod(k) * n, O1..On) repeats the output
    # spatial dims, which pins them when the geometry could not.
    os_ = _shape(offset)
    if os_ is not None:
        if len(os_) != len(y.shape):
            raise ShapeError(f"DeformConv: offset rank {len(os_)} != output rank {len(y.shape)}")
        dims = [_merge(ctx, y.shape[0], os_[0], "batch size of offset")] + [y.shape[1]]
        dims += [
            _merge(ctx, a, b, "offset spatial dims")
            for a, b in zip(y.shape[2:], os_[2:], strict=True)
        ]
        return [_out(y.dtype, dims)]
    return [y]


@shape_rule("ConvTranspose")
def _conv_transpose(ctx: ShapeContext) -> list[TensorInfo]:
    """X (N, C, D1..Dn), W (C, M/group, k1..kn) -> (N, M, O1..On) with
    O = stride * (D - 1) + output_padding + (k - 1) * dilation + 1 - pads, or
    output_shape, or D * stride for SAME_* auto_pad."""
    x, w = ctx.input(0), ctx.input(1)
    xs, ws = _shape(x), _shape(w)
    dtype = _dtype(x, w)
    nd = _spatial_rank(
        ctx, xs, ws, names=("kernel_shape", "strides", "dilations", "output_padding", "pads")
    )
    if nd is None:
        return [_out(dtype, None)]
    if xs is not None and ws is not None and len(xs) != len(ws):
        raise ShapeError(f"ConvTranspose: input rank {len(xs)} and weight rank {len(ws)} differ")
    group = int(ctx.attr("group", 1))
    if group <= 0:
        raise ShapeError(f"ConvTranspose: group must be positive, got {group}")
    c = _merge(ctx, _dim(xs, 1), _dim(ws, 0), "input channels vs weight dim 0")
    if c is not None and c % group:
        raise ShapeError(f"ConvTranspose: {c} input channels not divisible by group {group}")
    m = _mul(_dim(ws, 1), group)
    m = _check_vector(ctx, 2, m, "bias")
    kernel = _kernel_dims(ctx, nd, ws)
    strides = _spatial_attr(ctx, "strides", nd, 1)
    dil = _spatial_attr(ctx, "dilations", nd, 1)
    out_pad = _spatial_attr(ctx, "output_padding", nd, 0)
    auto_pad = _str(ctx.attr("auto_pad", "NOTSET"))
    in_sp = list(xs[2:]) if xs is not None else [None] * nd
    target = _ints(ctx, "output_shape")
    if target is not None:
        # Explicit output size (pads are derived from it); given for the spatial dims,
        # possibly preceded by N and C.
        if len(target) < nd:
            raise ShapeError(f"ConvTranspose: output_shape {target} has fewer than {nd} dims")
        out_sp: list[Dim] = list(target[-nd:])
    elif auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        out_sp = [None if n is None else n * s for n, s in zip(in_sp, strides, strict=True)]
    else:
        if auto_pad == "VALID":
            pads = [0] * (2 * nd)
        elif auto_pad == "NOTSET":
            pads = _ints(ctx, "pads") or [0] * (2 * nd)
            if len(pads) != 2 * nd:
                raise ShapeError(
                    f"ConvTranspose: 'pads' has {len(pads)} entries, expected {2 * nd}"
                )
        else:
            raise ShapeError(f"ConvTranspose: unknown auto_pad '{auto_pad}'")
        out_sp = []
        for i in range(nd):
            n, k = in_sp[i], kernel[i]
            if n is None or k is None:
                out_sp.append(None)
                continue
            o = strides[i] * (n - 1) + out_pad[i] + (k - 1) * dil[i] + 1 - pads[i] - pads[nd + i]
            if o < 0:
                raise ShapeError(f"ConvTranspose: negative output size {o} (pads too large)")
            out_sp.append(o)
    return [_out(dtype, (_dim(xs, 0), m, *out_sp))]


@shape_rule("CausalConvWithState")
def _causal_conv_with_state(ctx: ShapeContext) -> list[TensorInfo]:
    """input (B, C, L), weight (C, 1, k) -> output like input, present_state (B, C, k-1)."""
    x, w, past = ctx.input(0), ctx.input(1), ctx.input(3)
    for info, what in ((x, "input"), (w, "weight"), (past, "past_state")):
        _check_rank(ctx, info, (3,), what)
    xs, ws, ps = _shape(x), _shape(w), _shape(past)
    b = _merge(ctx, _dim(xs, 0), _dim(ps, 0), "batch of past_state")
    c = _merge(ctx, _dim(xs, 1), _dim(ws, 0), "channels of weight")
    c = _merge(ctx, c, _dim(ps, 1), "channels of past_state")
    c = _check_vector(ctx, 2, c, "bias")
    if _dim(ws, 1) not in (None, 1):
        raise ShapeError(f"CausalConvWithState: weight dim 1 must be 1 (depthwise), got {ws[1]}")
    k = _dim(ws, 2)
    state = _merge(ctx, None if k is None else k - 1, _dim(ps, 2), "past_state length vs k-1")
    dtype = _dtype(x, w)
    y = (b, c, _dim(xs, 2))
    return [_out(dtype, y), _out(dtype, (b, c, state))]


# ---------------------------------------------------------------------- matrix products


def _matmul_shape(ctx: ShapeContext, a: Shape | None, b: Shape | None) -> Shape | None:
    """numpy matmul: 1-D operands are promoted (and the added dim removed), batch
    dims broadcast."""
    if a is not None and len(a) == 0 or b is not None and len(b) == 0:
        raise ShapeError(f"{ctx.op_type}: operands must not be scalars")
    if a is None or b is None:
        return None  # a 1-D operand drops a dim, so the rank is unknown too
    a2 = (1, a[0]) if len(a) == 1 else tuple(a)
    b2 = (b[0], 1) if len(b) == 1 else tuple(b)
    if a2[-1] is not None and b2[-2] is not None and a2[-1] != b2[-2]:
        raise ShapeError(f"{ctx.op_type}: inner dims differ: {a} @ {b}")
    batch = _bcast(ctx, a2[:-2], b2[:-2])
    rows = () if len(a) == 1 else (a2[-2],)
    cols = () if len(b) == 1 else (b2[-1],)
    return (*batch, *rows, *cols)


@shape_rule("MatMul")
def _matmul(ctx: ShapeContext) -> list[TensorInfo]:
    a, b = ctx.input(0), ctx.input(1)
    return [_out(_dtype(a, b), _matmul_shape(ctx, _shape(a), _shape(b)))]


@shape_rule("MatMulInteger")
def _matmul_integer(ctx: ShapeContext) -> list[TensorInfo]:
    return [_out(_INT32, _matmul_shape(ctx, _shape(ctx.input(0)), _shape(ctx.input(1))))]


@shape_rule("QLinearMatMul")
def _qlinear_matmul(ctx: ShapeContext) -> list[TensorInfo]:
    # a, a_scale, a_zero_point, b, b_scale, b_zero_point, y_scale, y_zero_point
    shape = _matmul_shape(ctx, _shape(ctx.input(0)), _shape(ctx.input(3)))
    return [_out(_dtype(ctx.input(7)), shape)]


@shape_rule("Gemm")
def _gemm(ctx: ShapeContext) -> list[TensorInfo]:
    """A (M, K) (or (K, M) with transA), B (K, N) (or (N, K)), optional C
    unidirectionally broadcastable to (M, N) -> (M, N)."""
    a, b, c = ctx.input(0), ctx.input(1), ctx.input(2)
    _check_rank(ctx, a, (2,), "A")
    _check_rank(ctx, b, (2,), "B")
    as_, bs = _shape(a) or (None, None), _shape(b) or (None, None)
    if int(ctx.attr("transA", 0)):
        as_ = as_[::-1]
    if int(ctx.attr("transB", 0)):
        bs = bs[::-1]
    _merge(ctx, as_[1], bs[0], "inner dim K of A and B")
    m, n = as_[0], bs[1]
    cs = _shape(c)
    if cs is not None:
        if len(cs) > 2:
            raise ShapeError(f"Gemm: C has rank {len(cs)}, at most 2 allowed")
        # C broadcasts to (M, N) one way only: each of its dims is 1 or the target's.
        for cd, target in zip(cs[::-1], (n, m), strict=False):
            if cd is not None and target is not None and cd not in (1, target):
                raise ShapeError(f"Gemm: C of shape {cs} does not broadcast to ({m}, {n})")
    return [_out(_dtype(a, b, c), (m, n))]


@shape_rule("Einsum")
def _einsum(ctx: ShapeContext) -> list[TensorInfo]:
    eq = _str(ctx.attr("equation", "")).replace(" ", "")
    lhs, arrow, rhs = eq.partition("->")
    terms = lhs.split(",")
    inputs = ctx.inputs
    dtype = _dtype(*inputs)
    if len(terms) != len(inputs):
        raise ShapeError(
            f"Einsum: equation '{eq}' has {len(terms)} operands, got {len(inputs)} inputs"
        )
    label_dim: dict[str, Dim] = {}
    ell_shapes: list[Shape] = []
    ell_unknown = False  # some operand with an ellipsis has unknown rank
    counts: dict[str, int] = {}
    for term, info in zip(terms, inputs, strict=True):
        has_ell = "..." in term
        head, _, tail = term.partition("...")
        letters = head + tail
        if not letters.isalpha() and letters:
            raise ShapeError(f"Einsum: bad term '{term}' in '{eq}'")
        for ch in letters:
            counts[ch] = counts.get(ch, 0) + 1
        shape = _shape(info)
        if shape is None:
            ell_unknown |= has_ell
            for ch in letters:
                # The unknown dim may be 1 or not: only a known non-1 dim survives.
                label_dim[ch] = _bcast_dim(ctx, label_dim.get(ch), None)
            continue
        n_ell = len(shape) - len(letters)
        if n_ell < 0 or (n_ell and not has_ell):
            raise ShapeError(f"Einsum: term '{term}' does not match operand rank {len(shape)}")
        if has_ell:
            ell_shapes.append(tuple(shape[len(head) : len(head) + n_ell]))
        dims = list(shape[: len(head)]) + list(shape[len(head) + n_ell :])
        for ch, d in zip(letters, dims, strict=True):
            # numpy broadcasts a size-1 labelled dim against the others.
            label_dim[ch] = _bcast_dim(ctx, label_dim[ch], d) if ch in label_dim else d
    if not arrow:
        # Implicit output: the ellipsis dims, then the labels used exactly once in
        # alphabetical (ASCII) order.
        rhs = ("..." if "..." in lhs else "") + "".join(
            sorted(ch for ch, n in counts.items() if n == 1)
        )
    head, has_ell, tail = rhs.partition("...")
    out: list[Dim] = []
    for ch in head:
        if ch not in label_dim:
            raise ShapeError(f"Einsum: output label '{ch}' not in the inputs of '{eq}'")
        out.append(label_dim[ch])
    if has_ell:
        if ell_unknown:
            return [_out(dtype, None)]
        ell: Shape = ()
        for s in ell_shapes:
            ell = _bcast(ctx, ell, s)
        out.extend(ell)
    for ch in tail:
        if ch not in label_dim:
            raise ShapeError(f"Einsum: output label '{ch}' not in the inputs of '{eq}'")
        out.append(label_dim[ch])
    return [_out(dtype, out)]


# ---------------------------------------------------------------------- normalizations


def _channels(ctx: ShapeContext, x: TensorInfo | None, indices: Sequence[int]) -> Dim:
    """The channel count C = X dim 1, checked against the (C)-shaped inputs."""
    xs = _shape(x)
    if xs is not None and len(xs) < 2:
        raise ShapeError(f"{ctx.op_type}: input must have rank >= 2, got {len(xs)}")
    c = _dim(xs, 1)
    for i in indices:
        if ctx.input(i) is not None:
            c = _check_vector(ctx, i, c, f"input {i}")
    return c


@shape_rule("BatchNormalization")
def _batch_normalization(ctx: ShapeContext) -> list[TensorInfo]:
    x = ctx.input(0)
    c = _channels(ctx, x, (1, 2, 3, 4))
    # Outputs 1 and 2 (running statistics, training mode) have the type of input_mean.
    stat = _dtype(ctx.input(3), ctx.input(4))
    return [_out(_dtype(x), _shape(x)), _out(stat, (c,)), _out(stat, (c,))]


@shape_rule("InstanceNormalization")
def _instance_normalization(ctx: ShapeContext) -> list[TensorInfo]:
    _channels(ctx, ctx.input(0), (1, 2))
    return _same_as_input(ctx)


@shape_rule("GroupNormalization")
def _group_normalization(ctx: ShapeContext) -> list[TensorInfo]:
    c = _channels(ctx, ctx.input(0), (1, 2))
    groups = ctx.attr("num_groups")
    if groups is not None and c is not None and (int(groups) <= 0 or c % int(groups)):
        raise ShapeError(f"GroupNormalization: {c} channels not divisible into {groups} groups")
    return _same_as_input(ctx)


@shape_rule("LayerNormalization")
def _layer_normalization(ctx: ShapeContext) -> list[TensorInfo]:
    """Y like X; Mean and InvStdDev keep the leading dims and reduce the normalized
    ones (axis..r-1) to 1, in the stash_type element type."""
    x = ctx.input(0)
    xs = _shape(x)
    stash = _elem_type(int(ctx.attr("stash_type", 1)), "LayerNormalization stash_type")
    if xs is None:
        stats = None
    else:
        axis = _norm_axis(ctx, int(ctx.attr("axis", -1)), len(xs))
        stats = (*xs[:axis], *(1,) * (len(xs) - axis))
    return [_out(_dtype(x), xs), _out(stash, stats), _out(stash, stats)]


@shape_rule("RMSNormalization")
def _rms_normalization(ctx: ShapeContext) -> list[TensorInfo]:
    x, scale = ctx.input(0), ctx.input(1)
    xs = _shape(x)
    if xs is not None:
        _norm_axis(ctx, int(ctx.attr("axis", -1)), len(xs))
    # Y has scale's element type (V), which may differ from X's (T).
    return [_out(_dtype(scale), xs)]


@shape_rule("LpNormalization", "Softmax", "LogSoftmax", "Hardmax")
def _along_axis(ctx: ShapeContext) -> list[TensorInfo]:
    xs = _shape(ctx.input(0))
    if xs is not None and len(xs):
        _norm_axis(ctx, int(ctx.attr("axis", -1)), len(xs))
    return _same_as_input(ctx)


@shape_rule("LRN", "MeanVarianceNormalization", "RotaryEmbedding")
def _same_shape(ctx: ShapeContext) -> list[TensorInfo]:
    return _same_as_input(ctx)


@shape_rule("CumSum", "CumProd")
def _cumulative(ctx: ShapeContext) -> list[TensorInfo]:
    xs = _shape(ctx.input(0))
    axis = _const_ints(ctx, 1)
    if xs is not None and axis:
        _norm_axis(ctx, axis[0], len(xs))
    return _same_as_input(ctx)


@shape_rule("NegativeLogLikelihoodLoss", "SoftmaxCrossEntropyLoss")
def _loss(ctx: ShapeContext) -> list[TensorInfo]:
    """Scores (N, C, d1..dk), labels (N, d1..dk), optional weight (C) -> the loss:
    per element (N, d1..dk) for reduction 'none', else a scalar; the second output
    of SoftmaxCrossEntropyLoss (log_prob) is shaped like the scores."""
    x, labels = ctx.input(0), ctx.input(1)
    xs, ls = _shape(x), _shape(labels)
    _channels(ctx, x, (2,))  # checks weight (C)
    per_elem: Shape | None = None
    if xs is not None:
        per_elem = (xs[0], *xs[2:])
        if ls is not None:
            if len(ls) != len(per_elem):
                raise ShapeError(
                    f"{ctx.op_type}: labels of shape {ls} do not match scores of shape {xs}"
                )
            per_elem = tuple(
                _merge(ctx, a, b, "labels vs scores dims")
                for a, b in zip(per_elem, ls, strict=True)
            )
    elif ls is not None:
        per_elem = ls
    reduction = _str(ctx.attr("reduction", "mean"))
    if reduction not in ("none", "sum", "mean"):
        raise ShapeError(f"{ctx.op_type}: unknown reduction '{reduction}'")
    loss = per_elem if reduction == "none" else ()
    return [_out(_dtype(x), loss), _out(_dtype(x), xs)]


@shape_rule("Dropout")
def _dropout(ctx: ShapeContext) -> list[TensorInfo]:
    x = ctx.input(0)
    return [_out(_dtype(x), _shape(x)), _out(_BOOL, _shape(x))]


# ------------------------------------------------------------------------------ pooling


def _pool(ctx: ShapeContext) -> Shape | None:
    xs = _shape(ctx.input(0))
    kernel = _ints(ctx, "kernel_shape")
    if kernel is None:
        raise ShapeError(f"{ctx.op_type}: the 'kernel_shape' attribute is required")
    nd = len(kernel)
    if xs is None:
        return (None, None, *[None] * nd)
    if len(xs) != nd + 2:
        raise ShapeError(
            f"{ctx.op_type}: input rank {len(xs)} does not match kernel_shape {kernel}"
        )
    ceil_mode = bool(int(ctx.attr("ceil_mode", 0)))
    return (xs[0], xs[1], *_window_spatial(ctx, xs[2:], kernel, ceil_mode=ceil_mode))


@shape_rule("MaxPool")
def _max_pool(ctx: ShapeContext) -> list[TensorInfo]:
    shape = _pool(ctx)
    return [_out(_dtype(ctx.input(0)), shape), _out(_INT64, shape)]


@shape_rule("AveragePool", "LpPool")
def _avg_pool(ctx: ShapeContext) -> list[TensorInfo]:
    return [_out(_dtype(ctx.input(0)), _pool(ctx))]


@shape_rule("GlobalAveragePool", "GlobalMaxPool", "GlobalLpPool")
def _global_pool(ctx: ShapeContext) -> list[TensorInfo]:
    x = ctx.input(0)
    xs = _shape(x)
    if xs is not None and len(xs) < 2:
        raise ShapeError(f"{ctx.op_type}: input must have rank >= 2, got {len(xs)}")
    return [_out(_dtype(x), None if xs is None else (xs[0], xs[1], *(1,) * (len(xs) - 2)))]


@shape_rule("MaxRoiPool")
def _max_roi_pool(ctx: ShapeContext) -> list[TensorInfo]:
    x, rois = ctx.input(0), ctx.input(1)
    _check_rank(ctx, x, (4,), "X")
    _check_rank(ctx, rois, (2,), "rois")
    if _dim(_shape(rois), 1) not in (None, 5):
        raise ShapeError(f"MaxRoiPool: rois must be (num_rois, 5), got {rois.shape}")
    pooled = _ints(ctx, "pooled_shape")
    if pooled is None or len(pooled) != 2:
        raise ShapeError("MaxRoiPool: 'pooled_shape' must be given as (height, width)")
    shape = (_dim(_shape(rois), 0), _dim(_shape(x), 1), *pooled)
    return [_out(_dtype(x, rois), shape)]


@shape_rule("MaxUnpool")
def _max_unpool(ctx: ShapeContext) -> list[TensorInfo]:
    """(N, C, D1..Dn) -> output_shape if given, else (D - 1) * stride + k - pads."""
    x, idx = ctx.input(0), ctx.input(1)
    xs = _shape(x)
    if xs is not None and _shape(idx) is not None and len(xs) == len(idx.shape):
        xs = tuple(_merge(ctx, a, b, "X vs I shape") for a, b in zip(xs, idx.shape, strict=True))
    elif xs is None:
        xs = _shape(idx)
    dtype = _dtype(x)
    kernel = _ints(ctx, "kernel_shape")
    if kernel is None:
        raise ShapeError("MaxUnpool: the 'kernel_shape' attribute is required")
    nd = len(kernel)
    if xs is not None and len(xs) != nd + 2:
        raise ShapeError(f"MaxUnpool: input rank {len(xs)} does not match kernel_shape {kernel}")
    n, c = _dim(xs, 0), _dim(xs, 1)
    if ctx.input(2) is not None:
        target = _const_ints(ctx, 2)
        if target is None:
            return [_out(dtype, (n, c, *[None] * nd))]
        if len(target) != nd + 2:
            raise ShapeError(f"MaxUnpool: output_shape {target} must have rank {nd + 2}")
        return [
            _out(
                dtype,
                (
                    _merge(ctx, n, target[0], "output_shape batch"),
                    _merge(ctx, c, target[1], "output_shape channels"),
                    *target[2:],
                ),
            )
        ]
    strides = _spatial_attr(ctx, "strides", nd, 1)
    pads = _ints(ctx, "pads") or [0] * (2 * nd)
    if len(pads) != 2 * nd:
        raise ShapeError(f"MaxUnpool: 'pads' has {len(pads)} entries, expected {2 * nd}")
    in_sp = list(xs[2:]) if xs is not None else [None] * nd
    out_sp = [
        None if d is None else (d - 1) * strides[i] + kernel[i] - pads[i] - pads[nd + i]
        for i, d in enumerate(in_sp)
    ]
    return [_out(dtype, (n, c, *out_sp))]


@shape_rule("RoiAlign")
def _roi_align(ctx: ShapeContext) -> list[TensorInfo]:
    """X (N, C, H, W), rois (R, 4), batch_indices (R) -> (R, C, oh, ow)."""
    x, rois, bi = ctx.input(0), ctx.input(1), ctx.input(2)
    _check_rank(ctx, x, (4,), "X")
    _check_rank(ctx, rois, (2,), "rois")
    _check_rank(ctx, bi, (1,), "batch_indices")
    if _dim(_shape(rois), 1) not in (None, 4):
        raise ShapeError(f"RoiAlign: rois must be (num_rois, 4), got {rois.shape}")
    r = _merge(ctx, _dim(_shape(rois), 0), _dim(_shape(bi), 0), "num_rois of rois vs batch_indices")
    oh = int(ctx.attr("output_height", 1))
    ow = int(ctx.attr("output_width", 1))
    return [_out(_dtype(x, rois), (r, _dim(_shape(x), 1), oh, ow))]


# ------------------------------------------------------------------------- Resize & Pad


def _nonempty_const(ctx: ShapeContext, index: int) -> tuple[bool, np.ndarray | None]:
    """(may be given, value): an absent or known-empty input is not given."""
    info = ctx.input(index)
    if info is None:
        return False, None
    if info.value is not None:
        return info.value.size > 0, (info.value if info.value.size else None)
    if info.shape is not None and any(d == 0 for d in info.shape):
        return False, None
    return True, None


def _resized(
    ctx: ShapeContext, x: TensorInfo | None, scales_index: int, sizes_index: int | None
) -> list[TensorInfo]:
    """Resize/Upsample: dims along ``axes`` become floor(in * scale), or the
    requested sizes (adjusted by keep_aspect_ratio_policy); other dims stay."""
    xs = _shape(x)
    dtype = _dtype(x)
    scales_given, scales = _nonempty_const(ctx, scales_index)
    sizes_given, sizes = (False, None) if sizes_index is None else _nonempty_const(ctx, sizes_index)
    if scales is not None and sizes is not None:
        raise ShapeError(f"{ctx.op_type}: only one of scales and sizes may be given")
    if not scales_given and not sizes_given:
        raise ShapeError(f"{ctx.op_type}: one of scales and sizes must be given")
    axes_attr = _ints(ctx, "axes")
    known = scales if scales is not None else sizes
    if xs is not None:
        rank = len(xs)
    elif axes_attr is None and known is not None:
        rank = known.size  # scales/sizes cover every dim
    else:
        return [_out(dtype, None)]
    in_dims = list(xs) if xs is not None else [None] * rank
    if axes_attr is None:
        axes = list(range(rank))
    else:
        axes = [_norm_axis(ctx, a, rank, "axes entry") for a in axes_attr]
        if len(set(axes)) != len(axes):
            raise ShapeError(f"{ctx.op_type}: repeated axes {axes_attr}")
    out = list(in_dims)
    if known is not None and known.size != len(axes):
        raise ShapeError(
            f"{ctx.op_type}: {'scales' if scales is not None else 'sizes'} has "
            f"{known.size} entries, expected {len(axes)}"
        )
    if scales is not None:
        # The spec's output size floor(in * scale), in double precision like the kernel.
        for ax, s in zip(axes, scales.reshape(-1).astype(np.float64), strict=True):
            if s <= 0:
                raise ShapeError(f"{ctx.op_type}: scales must be positive, got {s}")
            n = in_dims[ax]
            out[ax] = None if n is None else int(math.floor(float(s) * n))
    elif sizes is not None:
        req = [int(v) for v in sizes.reshape(-1)]
        policy = _str(ctx.attr("keep_aspect_ratio_policy", "stretch"))
        if policy == "stretch":
            for ax, r in zip(axes, req, strict=True):
                out[ax] = r
        elif policy in ("not_larger", "not_smaller"):
            # One common scale for every resized axis, then round half up.
            n_in = [in_dims[ax] for ax in axes]
            if any(n is None for n in n_in):
                for ax in axes:
                    out[ax] = None
            else:
                ratios = [r / n for r, n in zip(req, n_in, strict=True)]
                s = min(ratios) if policy == "not_larger" else max(ratios)
                for ax, n in zip(axes, n_in, strict=True):
                    out[ax] = int(s * n + 0.5)
        else:
            raise ShapeError(f"{ctx.op_type}: unknown keep_aspect_ratio_policy '{policy}'")
    else:
        for ax in axes:
            out[ax] = None
    return [_out(dtype, out)]


@shape_rule("Resize")
def _resize(ctx: ShapeContext) -> list[TensorInfo]:
    return _resized(ctx, ctx.input(0), 2, 3)


@shape_rule("Upsample")
def _upsample(ctx: ShapeContext) -> list[TensorInfo]:
    scales = ctx.attr("scales")
    if scales is not None:
        # Opset 7 Upsample: scales is an attribute rather than input 1.
        value = np.asarray(scales, dtype=np.float32)
        ctx = ShapeContext(
            ctx.op_type, [ctx.input(0), TensorInfo.of_array(value)], ctx.attrs, ctx.n_out
        )
    return _resized(ctx, ctx.input(0), 1, None)


@shape_rule("Pad")
def _pad(ctx: ShapeContext) -> list[TensorInfo]:
    """Each padded axis grows by its begin and end pads (negative pads crop)."""
    x = ctx.input(0)
    xs = _shape(x)
    dtype = _dtype(x)
    pads = _const_ints(ctx, 1)
    pads_shape = _shape(ctx.input(1))
    axes_info = ctx.input(3)
    axes_given = axes_info is not None and not (
        axes_info.shape is not None and 0 in axes_info.shape
    )
    axes_v = _const_ints(ctx, 3)
    if xs is None:
        # Without axes the pads cover every dim twice: that gives the rank.
        if not axes_given and pads is not None and len(pads) % 2 == 0:
            xs = (None,) * (len(pads) // 2)
        elif not axes_given and _dim(pads_shape, 0) is not None and pads_shape[0] % 2 == 0:
            xs = (None,) * (pads_shape[0] // 2)
        else:
            return [_out(dtype, None)]
    r = len(xs)
    if axes_given:
        if axes_v is None:
            # Unknown axes: any dim might be padded.
            return [_out(dtype, (None,) * r)]
        axes = [_norm_axis(ctx, a, r, "axes entry") for a in axes_v]
        if len(set(axes)) != len(axes):
            raise ShapeError(f"Pad: repeated axes {axes_v}")
    else:
        axes = list(range(r))
    n_pads = pads_shape[0] if pads_shape and len(pads_shape) == 1 else None
    if pads is not None:
        n_pads = len(pads)
    if n_pads is not None and n_pads != 2 * len(axes):
        raise ShapeError(f"Pad: {n_pads} pads for {len(axes)} axes (expected {2 * len(axes)})")
    out = list(xs)
    for i, ax in enumerate(axes):
        if pads is None or xs[ax] is None:
            out[ax] = None
            continue
        d = xs[ax] + pads[i] + pads[len(axes) + i]
        if d < 0:
            raise ShapeError(f"Pad: pads {pads} crop axis {ax} of size {xs[ax]} below zero")
        out[ax] = d
    return [_out(dtype, out)]


@shape_rule("CenterCropPad")
def _center_crop_pad(ctx: ShapeContext) -> list[TensorInfo]:
    x = ctx.input(0)
    xs = _shape(x)
    dtype = _dtype(x)
    target = _const_ints(ctx, 1)
    axes_attr = _ints(ctx, "axes")
    if xs is None:
        if axes_attr is None and target is not None:
            return [_out(dtype, target)]
        return [_out(dtype, None)]
    r = len(xs)
    axes = (
        list(range(r))
        if axes_attr is None
        else [_norm_axis(ctx, a, r, "axes entry") for a in axes_attr]
    )
    out = list(xs)
    if target is None:
        for ax in axes:
            out[ax] = None
        return [_out(dtype, out)]
    if len(target) != len(axes):
        raise ShapeError(f"CenterCropPad: shape has {len(target)} entries for {len(axes)} axes")
    for ax, t in zip(axes, target, strict=True):
        if t < 0:
            raise ShapeError(f"CenterCropPad: negative target size {t}")
        out[ax] = t
    return [_out(dtype, out)]


# ------------------------------------------------------------------ indexing-like ops


@shape_rule("TopK")
def _topk(ctx: ShapeContext) -> list[TensorInfo]:
    x = ctx.input(0)
    xs = _shape(x)
    ks = _shape(ctx.input(1))
    if ks is not None and len(ks) > 1 or ks == (0,):
        raise ShapeError(f"TopK: K must hold one value, got shape {ks}")
    k = _const_ints(ctx, 1)
    if xs is None:
        shape = None
    else:
        axis = _norm_axis(ctx, int(ctx.attr("axis", -1)), len(xs))
        kk: Dim = None
        if k is not None:
            kk = k[0]
            if kk < 0:
                raise ShapeError(f"TopK: negative K {kk}")
            if xs[axis] is not None and kk > xs[axis]:
                raise ShapeError(f"TopK: K={kk} exceeds the axis size {xs[axis]}")
        shape = (*xs[:axis], kk, *xs[axis + 1 :])
    return [_out(_dtype(x), shape), _out(_INT64, shape)]


@shape_rule("NonMaxSuppression")
def _non_max_suppression(ctx: ShapeContext) -> list[TensorInfo]:
    boxes, scores = ctx.input(0), ctx.input(1)
    _check_rank(ctx, boxes, (3,), "boxes")
    _check_rank(ctx, scores, (3,), "scores")
    bs, ss = _shape(boxes), _shape(scores)
    _merge(ctx, _dim(bs, 0), _dim(ss, 0), "batch of boxes vs scores")
    _merge(ctx, _dim(bs, 1), _dim(ss, 2), "box count of boxes vs scores")
    if _dim(bs, 2) not in (None, 4):
        raise ShapeError(f"NonMaxSuppression: boxes must be (batch, boxes, 4), got {bs}")
    # An absent max_output_boxes_per_class means 0: nothing is ever selected.
    max_out = _const_ints(ctx, 2) if ctx.input(2) is not None else [0]
    if max_out is not None and (not max_out or max_out[0] <= 0):
        return [_out(_INT64, (0, 3))]
    return [_out(_INT64, (None, 3), data_dependent=True)]


@shape_rule("DepthToSpace")
def _depth_to_space(ctx: ShapeContext) -> list[TensorInfo]:
    x = ctx.input(0)
    _check_rank(ctx, x, (4,), "input")
    xs = _shape(x) or (None,) * 4
    b = int(ctx.attr("blocksize", 0))
    if b <= 0:
        raise ShapeError("DepthToSpace: 'blocksize' must be a positive integer")
    c = _div(ctx, xs[1], b * b, "channels / blocksize^2")
    return [_out(_dtype(x), (xs[0], c, _mul(xs[2], b), _mul(xs[3], b)))]


@shape_rule("SpaceToDepth")
def _space_to_depth(ctx: ShapeContext) -> list[TensorInfo]:
    x = ctx.input(0)
    _check_rank(ctx, x, (4,), "input")
    xs = _shape(x) or (None,) * 4
    b = int(ctx.attr("blocksize", 0))
    if b <= 0:
        raise ShapeError("SpaceToDepth: 'blocksize' must be a positive integer")
    h = _div(ctx, xs[2], b, "height / blocksize")
    w = _div(ctx, xs[3], b, "width / blocksize")
    return [_out(_dtype(x), (xs[0], _mul(xs[1], b * b), h, w))]


@shape_rule("GridSample")
def _grid_sample(ctx: ShapeContext) -> list[TensorInfo]:
    """X (N, C, D1..Dr), grid (N, O1..Or, r) -> (N, C, O1..Or)."""
    x, grid = ctx.input(0), ctx.input(1)
    xs, gs = _shape(x), _shape(grid)
    dtype = _dtype(x)
    if xs is not None and gs is not None and len(xs) != len(gs):
        raise ShapeError(f"GridSample: X rank {len(xs)} and grid rank {len(gs)} differ")
    if xs is not None and len(xs) < 3 or gs is not None and len(gs) < 3:
        raise ShapeError("GridSample: X and grid need rank >= 3")
    if gs is None:
        return [_out(dtype, None if xs is None else (xs[0], xs[1], *[None] * (len(xs) - 2)))]
    r = len(gs) - 2
    if gs[-1] is not None and gs[-1] != r:
        raise ShapeError(f"GridSample: grid's last dim must be {r}, got {gs[-1]}")
    n = _merge(ctx, _dim(xs, 0), gs[0], "batch of X vs grid")
    return [_out(dtype, (n, _dim(xs, 1), *gs[1:-1]))]


@shape_rule("AffineGrid")
def _affine_grid(ctx: ShapeContext) -> list[TensorInfo]:
    """theta (N, 2, 3) with size (N, C, H, W) -> (N, H, W, 2); (N, 3, 4) with
    (N, C, D, H, W) -> (N, D, H, W, 3)."""
    theta, size = ctx.input(0), ctx.input(1)
    _check_rank(ctx, theta, (3,), "theta")
    ts = _shape(theta)
    dtype = _dtype(theta)
    nd: int | None = None
    if _dim(ts, 1) is not None:
        if ts[1] not in (2, 3):
            raise ShapeError(f"AffineGrid: theta must be (N, 2, 3) or (N, 3, 4), got {ts}")
        nd = ts[1]
        if ts[2] is not None and ts[2] != nd + 1:
            raise ShapeError(f"AffineGrid: theta must be (N, 2, 3) or (N, 3, 4), got {ts}")
    values = _const_ints(ctx, 1)
    n_size = len(values) if values is not None else _dim(_shape(size), 0)
    if n_size is not None:
        if n_size not in (4, 5):
            raise ShapeError(f"AffineGrid: size must have 4 or 5 entries, got {n_size}")
        nd = _merge(ctx, nd, n_size - 2, "spatial rank of theta vs size")
    if nd is None:
        return [_out(dtype, None)]
    n = _dim(ts, 0)
    if values is not None:
        n = _merge(ctx, n, values[0], "batch of theta vs size")
        spatial: list[Dim] = list(values[2:])
    else:
        spatial = [None] * nd
    return [_out(dtype, (n, *spatial, nd))]


@shape_rule("Col2Im")
def _col2im(ctx: ShapeContext) -> list[TensorInfo]:
    """input (N, C * prod(block_shape), L) -> (N, C, *image_shape)."""
    x = ctx.input(0)
    _check_rank(ctx, x, (3,), "input")
    xs = _shape(x)
    dtype = _dtype(x)
    image = _const_ints(ctx, 1)
    block = _const_ints(ctx, 2)
    nd = len(image) if image is not None else _dim(_shape(ctx.input(1)), 0)
    nd_b = len(block) if block is not None else _dim(_shape(ctx.input(2)), 0)
    nd = _merge(ctx, nd, nd_b, "lengths of image_shape vs block_shape")
    if nd is None:
        return [_out(dtype, None)]
    c = (
        None
        if block is None
        else _div(ctx, _dim(xs, 1), math.prod(block), "input dim 1 / prod(block_shape)")
    )
    if image is not None and block is not None and _dim(xs, 2) is not None:
        # The number of blocks L must match the sliding positions over the image.
        strides = _spatial_attr(ctx, "strides", nd, 1)
        dil = _spatial_attr(ctx, "dilations", nd, 1)
        pads = _ints(ctx, "pads") or [0] * (2 * nd)
        if len(pads) != 2 * nd:
            raise ShapeError(f"Col2Im: 'pads' has {len(pads)} entries, expected {2 * nd}")
        blocks = math.prod(
            (image[i] + pads[i] + pads[nd + i] - (dil[i] * (block[i] - 1) + 1)) // strides[i] + 1
            for i in range(nd)
        )
        if blocks != xs[2]:
            raise ShapeError(
                f"Col2Im: input has {xs[2]} blocks, image_shape {image} and "
                f"block_shape {block} give {blocks}"
            )
    spatial = list(image) if image is not None else [None] * nd
    return [_out(dtype, (_dim(xs, 0), c, *spatial))]


# ---------------------------------------------------------------------------- attention


@shape_rule("Attention")
def _attention(ctx: ShapeContext) -> list[TensorInfo]:
    """Q/K/V either 4-D (B, heads, seq, head_size) or 3-D (B, seq, heads * head_size)
    with q_num_heads/kv_num_heads. Y matches Q's layout with V's head size;
    present_key/value are (B, kv_heads, past + kv_seq, size); qk_matmul_output is
    (B, q_heads, q_seq, past + kv_seq)."""
    q, k, v = ctx.input(0), ctx.input(1), ctx.input(2)
    past_k, past_v = ctx.input(4), ctx.input(5)
    for info, what in ((q, "Q"), (k, "K"), (v, "V")):
        _check_rank(ctx, info, (3, 4), what)
    for info, what in ((past_k, "past_key"), (past_v, "past_value")):
        _check_rank(ctx, info, (4,), what)
    q_heads_attr, kv_heads_attr = ctx.attr("q_num_heads"), ctx.attr("kv_num_heads")

    def split(info, heads_attr, what):
        """(batch, heads, seq, head_size) of one of Q, K, V, in either layout."""
        s = _shape(info)
        if s is None:
            return None, None, None, None
        if len(s) == 4:
            return s
        if heads_attr is None:
            raise ShapeError(
                f"Attention: 3-D {what} needs the q_num_heads and kv_num_heads attributes"
            )
        heads = int(heads_attr)
        return s[0], heads, s[1], _div(ctx, s[2], heads, f"{what} hidden size / heads")

    qb, qh, qs, qd = split(q, q_heads_attr, "Q")
    kb, kh, ks, kd = split(k, kv_heads_attr, "K")
    vb, vh, vs, vd = split(v, kv_heads_attr, "V")
    pkb, pkh, pks, pkd = _shape(past_k) or (None,) * 4
    pvb, pvh, pvs, pvd = _shape(past_v) or (None,) * 4
    b = qb
    for other in (kb, vb, pkb, pvb):
        b = _merge(ctx, b, other, "batch size")
    kvh = kh
    for other in (vh, pkh, pvh):
        kvh = _merge(ctx, kvh, other, "kv_num_heads")
    if qh is None and q_heads_attr is not None:
        qh = int(q_heads_attr)
    if qh is not None and kvh is not None and (kvh <= 0 or qh % kvh):
        raise ShapeError(f"Attention: q_num_heads {qh} is not a multiple of kv_num_heads {kvh}")
    head = _merge(ctx, qd, kd, "head size of Q vs K")
    head = _merge(ctx, head, pkd, "head size of past_key")
    vd = _merge(ctx, vd, pvd, "head size of past_value")
    kv_seq = _merge(ctx, ks, vs, "sequence length of K vs V")
    past = _merge(ctx, pks, pvs, "past sequence length")
    has_past = past_k is not None or past_v is not None
    total = _add(past, kv_seq) if has_past else kv_seq
    qshape = _shape(q)
    if qshape is None:
        y = None
    elif len(qshape) == 4:
        y = (b, qh, qs, vd)
    else:
        y = (b, qs, _mul(qh, vd))
    return [
        _out(_dtype(q), y),
        _out(_dtype(k, q), (b, kvh, total, head)),
        _out(_dtype(v), (b, kvh, total, vd)),
        _out(_dtype(q), (b, qh, qs, total)),
    ]


@shape_rule("LinearAttention")
def _linear_attention(ctx: ShapeContext) -> list[TensorInfo]:
    """query (B, T, Hq*dk), key (B, T, Hkv*dk), value (B, T, Hkv*dv) ->
    output (B, T, Hq*dv), present_state (B, Hkv, dk, dv)."""
    q, k, v, past = ctx.input(0), ctx.input(1), ctx.input(2), ctx.input(3)
    for info, what in ((q, "query"), (k, "key"), (v, "value")):
        _check_rank(ctx, info, (3,), what)
    _check_rank(ctx, past, (4,), "past_state")
    qs, ks, vs, ps = _shape(q), _shape(k), _shape(v), _shape(past)
    hq = ctx.attr("q_num_heads")
    hkv = ctx.attr("kv_num_heads")
    hq = None if hq is None else int(hq)
    hkv = None if hkv is None else int(hkv)
    b, t = _dim(qs, 0), _dim(qs, 1)
    for s in (ks, vs):
        b = _merge(ctx, b, _dim(s, 0), "batch size")
        t = _merge(ctx, t, _dim(s, 1), "sequence length")
    b = _merge(ctx, b, _dim(ps, 0), "batch size of past_state")
    hkv = _merge(ctx, hkv, _dim(ps, 1), "kv heads of past_state")
    if hq is not None and hkv is not None and (hkv <= 0 or hq % hkv):
        raise ShapeError(
            f"LinearAttention: q_num_heads {hq} is not a multiple of kv_num_heads {hkv}"
        )
    dk = _merge(
        ctx,
        _div(ctx, _dim(qs, 2), hq, "query hidden / q_num_heads"),
        _div(ctx, _dim(ks, 2), hkv, "key hidden / kv_num_heads"),
        "key head size",
    )
    dk = _merge(ctx, dk, _dim(ps, 2), "key head size of past_state")
    dv = _merge(
        ctx,
        _div(ctx, _dim(vs, 2), hkv, "value hidden / kv_num_heads"),
        _dim(ps, 3),
        "value head size of past_state",
    )
    dtype = _dtype(q, k, v)
    return [_out(dtype, (b, t, _mul(hq, dv))), _out(_dtype(past, q), (b, hkv, dk, dv))]


# ---------------------------------------------------------------------------- recurrent


_GATES = {"RNN": 1, "GRU": 3, "LSTM": 4}


@shape_rule("RNN", "GRU", "LSTM")
def _recurrent(ctx: ShapeContext) -> list[TensorInfo]:
    """X (seq, batch, input) (layout 0) or (batch, seq, input) (layout 1) ->
    Y (seq, dirs, batch, hidden) / (batch, seq, dirs, hidden), Y_h and Y_c
    (dirs, batch, hidden) / (batch, dirs, hidden)."""
    x, w, r = ctx.input(0), ctx.input(1), ctx.input(2)
    for info, what in ((x, "X"), (w, "W"), (r, "R")):
        _check_rank(ctx, info, (3,), what)
    gates = _GATES[ctx.op_type]
    direction = _str(ctx.attr("direction", "forward"))
    if direction not in ("forward", "reverse", "bidirectional"):
        raise ShapeError(f"{ctx.op_type}: unknown direction '{direction}'")
    dirs = 2 if direction == "bidirectional" else 1
    layout = int(ctx.attr("layout", 0))
    xs, ws, rs = _shape(x), _shape(w), _shape(r)
    if layout:
        batch, seq = _dim(xs, 0), _dim(xs, 1)
    else:
        seq, batch = _dim(xs, 0), _dim(xs, 1)
    for s, what in ((ws, "W"), (rs, "R")):
        if _dim(s, 0) is not None and s[0] != dirs:
            raise ShapeError(
                f"{ctx.op_type}: {what} dim 0 is {s[0]}, expected {dirs} "
                f"for direction '{direction}'"
            )
    _merge(ctx, _dim(xs, 2), _dim(ws, 2), "input size of X vs W")
    hidden = ctx.attr("hidden_size")
    hidden = None if hidden is None else int(hidden)
    hidden = _merge(ctx, hidden, _dim(rs, 2), "hidden_size vs R")
    for s, what in ((ws, "W"), (rs, "R")):
        hidden = _merge(
            ctx,
            hidden,
            _div(ctx, _dim(s, 1), gates, f"{what} dim 1 / gates"),
            f"hidden size of {what}",
        )
    dtype = _dtype(x, w, r)
    if layout:
        y = (batch, seq, dirs, hidden)
        state = (batch, dirs, hidden)
    else:
        y = (seq, dirs, batch, hidden)
        state = (dirs, batch, hidden)
    outs = [_out(dtype, y), _out(dtype, state)]
    if ctx.op_type == "LSTM":
        outs.append(_out(dtype, state))
    return outs


# ------------------------------------------------------------------------- quantization


@shape_rule("DequantizeLinear")
def _dequantize_linear(ctx: ShapeContext) -> list[TensorInfo]:
    out_dtype = ctx.attr("output_dtype")
    if out_dtype is not None and int(out_dtype) != 0:
        dtype = _elem_type(int(out_dtype), "DequantizeLinear output_dtype")
    else:
        dtype = _dtype(ctx.input(1))  # the scale's type
    return [_out(dtype, _shape(ctx.input(0)))]


@shape_rule("QuantizeLinear")
def _quantize_linear(ctx: ShapeContext) -> list[TensorInfo]:
    out_dtype = ctx.attr("output_dtype")
    zp = ctx.input(2)
    if out_dtype is not None and int(out_dtype) != 0:
        dtype = _elem_type(int(out_dtype), "QuantizeLinear output_dtype")
        if zp is not None and zp.dtype is not None and zp.dtype != dtype:
            raise ShapeError(
                f"QuantizeLinear: output_dtype {dtype} differs from the zero "
                f"point's type {zp.dtype}"
            )
    elif zp is not None:
        dtype = zp.dtype
    else:
        dtype = _UINT8  # neither given: uint8
    return [_out(dtype, _shape(ctx.input(0)))]


@shape_rule("DynamicQuantizeLinear")
def _dynamic_quantize_linear(ctx: ShapeContext) -> list[TensorInfo]:
    return [_out(_UINT8, _shape(ctx.input(0))), _out(_FLOAT32, ()), _out(_UINT8, ())]


# ------------------------------------------------------------------------------- misc


@shape_rule("ImageDecoder")
def _image_decoder(ctx: ShapeContext) -> list[TensorInfo]:
    # (H, W, channels): the image size is in the encoded bytes.
    fmt = _str(ctx.attr("pixel_format", "RGB"))
    channels = 1 if fmt == "Grayscale" else 3
    return [_out(_UINT8, (None, None, channels), data_dependent=True)]


@shape_rule("TfIdfVectorizer")
def _tfidf_vectorizer(ctx: ShapeContext) -> list[TensorInfo]:
    """X (C) or (N, C) -> (max(ngram_indexes) + 1) or (N, max + 1), float32."""
    x = ctx.input(0)
    _check_rank(ctx, x, (1, 2), "X")
    indexes = _ints(ctx, "ngram_indexes")
    width = max(indexes) + 1 if indexes else None
    xs = _shape(x)
    if xs is None:
        return [_out(_FLOAT32, None)]
    return [_out(_FLOAT32, (width,) if len(xs) == 1 else (xs[0], width))]
