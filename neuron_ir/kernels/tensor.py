"""Numpy kernels for the "tensor" family: elementwise math, reductions, shape and index ops.

Semantics are those of the canonical opset (28).  Conventions shared by every kernel:

* Results are always ``np.ndarray`` of the ONNX output dtype.  Numpy ufuncs return numpy
  scalars for 0-d operands, so results go through ``np.asarray(..., dtype=...)``, which is
  free when the array already has that dtype.
* Attribute constants are Python floats/ints: numpy treats them as "weak" and keeps the
  array dtype (float16 stays float16).  ml_dtypes' bfloat16 does not follow that rule, so
  composite float formulas run in float32 for half-precision inputs and cast back (which
  also avoids compounding half-precision rounding in multi-step formulas).
* Inputs are never written to; scatter ops copy first.  Pure layout ops (Reshape,
  Transpose, Squeeze, Slice, ...) may return views of their input.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import ml_dtypes
import numpy as np
from onnx import TensorProto
from onnx.helper import tensor_dtype_to_np_dtype

from . import kernel, native, parallel

_F16 = np.dtype(np.float16)
_BF16 = np.dtype(ml_dtypes.bfloat16)
_F32 = np.dtype(np.float32)
_F64 = np.dtype(np.float64)
_I64 = np.dtype(np.int64)
_BOOL = np.dtype(np.bool_)
# Dtypes whose formulas are evaluated in float32 (see module docstring).
_HALF = frozenset({_F16, _BF16})


# ----------------------------------------------------------------------------- helpers


def _opt(inputs: list[np.ndarray | None], i: int) -> np.ndarray | None:
    """Optional input ``i``: absent positions may be ``None`` or missing at the end."""
    return inputs[i] if i < len(inputs) else None


def _str(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else v


def _ints(a: np.ndarray | None) -> list[int] | None:
    return None if a is None else [int(v) for v in np.asarray(a).reshape(-1).tolist()]


def _scalar(a: np.ndarray) -> Any:
    """Python value of a 0-d or one-element tensor."""
    return np.asarray(a).reshape(-1)[0].item()


def _is_float(dt: np.dtype) -> bool:
    return dt.kind == "f" or dt in _HALF or dt.kind == "V" and "float" in dt.name


def _compute_dtype(dt: np.dtype) -> np.dtype:
    return _F32 if dt in _HALF else dt


def _float_fn(fn):
    """Kernel from ``fn(x, attrs)``: half precision computed in float32, dtype preserved."""

    @functools.wraps(fn)
    def run(inputs, attrs, n_out):
        x = inputs[0]
        dt = x.dtype
        if dt in _HALF:
            return [np.asarray(fn(x.astype(_F32), attrs)).astype(dt)]
        return [np.asarray(fn(x, attrs), dtype=dt)]

    return run


def _quiet(fn):
    """Silence numpy floating-point warnings: IEEE results (inf, nan) are the ONNX answer."""

    @functools.wraps(fn)
    def run(*args):
        with np.errstate(all="ignore"):
            return fn(*args)

    return run


# ------------------------------------------------------------- elementwise: binary


def _binary(ufunc, logical: bool = False):
    def run(inputs, attrs, n_out):
        a, b = inputs[0], inputs[1]
        return [np.asarray(ufunc(a, b), dtype=_BOOL if logical else a.dtype)]

    return run


for _op, _uf in (
    ("Add", np.add),
    ("Sub", np.subtract),
    ("Mul", np.multiply),
    ("BitwiseAnd", np.bitwise_and),
    ("BitwiseOr", np.bitwise_or),
    ("BitwiseXor", np.bitwise_xor),
):
    kernel(_op)(_quiet(_binary(_uf)))

for _op, _uf in (
    ("And", np.logical_and),
    ("Or", np.logical_or),
    ("Xor", np.logical_xor),
    ("Equal", np.equal),
    ("Less", np.less),
    ("LessOrEqual", np.less_equal),
    ("Greater", np.greater),
    ("GreaterOrEqual", np.greater_equal),
):
    kernel(_op)(_binary(_uf, logical=True))


@kernel("Div")
@_quiet
def _div(inputs, attrs, n_out):
    a, b = inputs[0], inputs[1]
    if a.dtype.kind in "iu":
        # ONNX integer division truncates toward zero (C semantics); numpy floors.
        # Stay in integers so large int64 values are exact.  x // 0 gives 0 in numpy.
        if a.dtype.kind == "u":
            return [np.asarray(np.floor_divide(a, b), dtype=a.dtype)]
        q, r = np.divmod(a, b)
        # Floor and truncation differ by one where the division is inexact and the
        # operand signs differ.
        q += (r != 0) & ((a < 0) != (b < 0))
        return [np.asarray(q, dtype=a.dtype)]
    return [np.asarray(np.divide(a, b), dtype=a.dtype)]


@kernel("Pow")
@_quiet
def _pow(inputs, attrs, n_out):
    a, b = inputs[0], inputs[1]
    dt = a.dtype
    if dt.kind in "iu" and b.dtype.kind in "iu":
        if b.size and b.min() < 0:
            # numpy refuses negative integer powers; C pow() in double then truncation
            # gives 0 except for bases 1 and -1, which double arithmetic reproduces.
            r = np.power(a.astype(_F64), b.astype(_F64))
        else:
            r = np.power(a, b)
    elif _is_float(dt) and b.dtype.kind in "iub":
        # Integer exponents are exact in the base's float type; avoids a float64 detour.
        cd = _compute_dtype(dt)
        r = np.power(a.astype(cd, copy=False), b.astype(cd))
    elif dt in _HALF or b.dtype in _HALF:
        r = np.power(a.astype(_F32), b.astype(_F32))
    else:
        r = np.power(a, b)
    return [np.asarray(r).astype(dt, copy=False)]


@kernel("Mod")
@_quiet
def _mod(inputs, attrs, n_out):
    a, b = inputs[0], inputs[1]
    # fmod=0: floor-quotient remainder, sign of the divisor (Python/np.mod semantics,
    # including the IEEE special cases the spec lists); fmod=1: C fmod, sign of dividend.
    fn = np.fmod if attrs.get("fmod", 0) else np.mod
    dt = a.dtype
    if dt in _HALF:
        return [np.asarray(fn(a.astype(_F32), b.astype(_F32))).astype(dt)]
    return [np.asarray(fn(a, b), dtype=dt)]


@kernel("BitShift")
def _bitshift(inputs, attrs, n_out):
    a, b = inputs[0], inputs[1]
    # numpy's shifts already implement the opset-28 rule for counts < 0 or >= width
    # (0, or -1 for an arithmetic right shift of a negative value), and left shifts of
    # signed values wrap in two's complement.
    fn = np.left_shift if _str(attrs["direction"]) == "LEFT" else np.right_shift
    return [np.asarray(fn(a, b.astype(a.dtype, copy=False)), dtype=a.dtype)]


@kernel("PRelu")
def _prelu(inputs, attrs, n_out):
    x, slope = inputs[0], inputs[1]
    # slope broadcasts unidirectionally to x, so the output keeps x's shape.
    r = np.where(x < 0, x * slope, x)
    return [np.asarray(r, dtype=x.dtype)]


def _variadic(ufunc):
    def run(inputs, attrs, n_out):
        xs = [x for x in inputs if x is not None]
        if len(xs) == 1:
            return [xs[0]]
        acc = np.asarray(ufunc(xs[0], xs[1]))
        for x in xs[2:]:
            # Accumulate in place when x does not widen the result (acc is our own array).
            if acc.ndim >= x.ndim and np.broadcast_shapes(acc.shape, x.shape) == acc.shape:
                ufunc(acc, x, out=acc)
            else:
                acc = np.asarray(ufunc(acc, x))
        return [np.asarray(acc, dtype=xs[0].dtype)]

    return run


# np.maximum / np.minimum propagate NaN, as onnx.reference and ONNX Runtime do.
kernel("Max")(_variadic(np.maximum))
kernel("Min")(_variadic(np.minimum))
kernel("Sum")(_quiet(_variadic(np.add)))


@kernel("Mean")
@_quiet
def _mean(inputs, attrs, n_out):
    xs = [x for x in inputs if x is not None]
    dt = xs[0].dtype
    cd = _compute_dtype(dt)
    acc = xs[0].astype(cd, copy=False)
    for x in xs[1:]:
        acc = acc + x.astype(cd, copy=False)
    return [np.asarray(acc / len(xs)).astype(dt, copy=False)]


# -------------------------------------------------------------- elementwise: unary


def _unary(ufunc):
    def run(inputs, attrs, n_out):
        x = inputs[0]
        return [np.asarray(ufunc(x), dtype=x.dtype)]

    return run


for _op, _uf in (
    ("Abs", np.abs),
    ("Neg", np.negative),
    ("Ceil", np.ceil),
    ("Floor", np.floor),
    ("Round", np.round),  # numpy rounds half to even, as ONNX requires
    ("Sign", np.sign),
    ("Reciprocal", np.reciprocal),
    ("Sqrt", np.sqrt),
    ("Exp", np.exp),
    ("Log", np.log),
    ("Sin", np.sin),
    ("Cos", np.cos),
    ("Tan", np.tan),
    ("Asin", np.arcsin),
    ("Acos", np.arccos),
    ("Atan", np.arctan),
    ("Sinh", np.sinh),
    ("Cosh", np.cosh),
    ("Asinh", np.arcsinh),
    ("Acosh", np.arccosh),
    ("Atanh", np.arctanh),
    ("Tanh", np.tanh),
    ("BitwiseNot", np.invert),
):
    kernel(_op)(_quiet(_unary(_uf)))


@kernel("Not")
def _not(inputs, attrs, n_out):
    return [np.asarray(np.logical_not(inputs[0]))]


@kernel("IsNaN")
def _isnan(inputs, attrs, n_out):
    return [np.asarray(np.isnan(inputs[0]))]


@kernel("IsInf")
def _isinf(inputs, attrs, n_out):
    x = inputs[0]
    neg = attrs.get("detect_negative", 1)
    pos = attrs.get("detect_positive", 1)
    if neg and pos:
        r = np.isinf(x)
    elif pos:
        r = x == np.inf
    elif neg:
        r = x == -np.inf
    else:
        r = np.zeros(x.shape, dtype=_BOOL)
    return [np.asarray(r, dtype=_BOOL)]


# Erf.  float64 inputs use math.erf element by element (exact, ~0.2 s per 1M values).
# float32 uses one rational function in float32, erf(x) = x P(x^2) / Q(x^2) on x clamped
# to +-3.92 (beyond that float32 erf rounds to +-1), degree 5 over 5 in x^2, fitted for
# this project by weighted least squares on the relative error (float64 fit error
# < 3e-8).  Evaluated in float32 it is within 7 ulp (4e-7 absolute) of erf: the rounding
# of the Horner steps, not the fit, bounds it.  It is ~4x faster than the float64 path
# below, which dominated BERT's Gelu (Erf on every FFN activation).
_ERF32_P = tuple(
    np.float32(c)
    for c in (
        1.1283791545894972,
        0.18865009058596177,
        0.05252710077675409,
        0.003694076530919144,
        0.0002839290671570356,
        2.0716038263146608e-06,
    )
)
_ERF32_Q = tuple(
    np.float32(c)
    for c in (
        1.0,
        0.5005197236729658,
        0.11339305659765592,
        0.014824300554488063,
        0.0011464793775741774,
        3.82660668299048e-05,
    )
)
_ERF32_CLAMP = np.float32(3.92)
# float16/bfloat16 are evaluated in float64 with two branches, then rounded once:
#   |x| < 1: the odd Taylor series erf(x) = 2/sqrt(pi) * sum (-1)^n x^(2n+1) / (n! (2n+1)),
#            14 terms (truncation < 1e-11);
#   |x| >= 1: erfc(|x|) from the Chebyshev-fitted formula of Numerical Recipes (fractional
#            error < 1.2e-7 in erfc, so < 2e-8 absolute in erf = 1 - erfc there).
# Measured (on float32 inputs): max error 0.6 ulp (3.5e-8 absolute), ~35 ms per 1M values.
_ERF_TAYLOR = tuple(
    2.0 / math.sqrt(math.pi) * (-1.0) ** n / (math.factorial(n) * (2 * n + 1)) for n in range(14)
)
_ERFC_CHEB = (
    -1.26551223,
    1.00002368,
    0.37409196,
    0.09678418,
    -0.18628806,
    0.27886807,
    -1.13520398,
    1.48851587,
    -0.82215223,
    0.17087277,
)
_erf_scalar = np.frompyfunc(math.erf, 1, 1)
_erfc_scalar = np.frompyfunc(math.erfc, 1, 1)


def _erf_series(x: np.ndarray) -> np.ndarray:
    """erf(x) for |x| < 1 (1-D float64), Horner in place."""
    x2 = x * x
    p = np.full_like(x, _ERF_TAYLOR[-1])
    for c in _ERF_TAYLOR[-2::-1]:
        p *= x2
        p += c
    p *= x
    return p


def _erfc_abs(x: np.ndarray) -> np.ndarray:
    """erfc(|x|) for |x| >= 1 (1-D float64), Horner in place."""
    a = np.abs(x)
    t = a * 0.5
    t += 1.0
    np.reciprocal(t, out=t)  # t = 1 / (1 + |x|/2)
    q = np.full_like(x, _ERFC_CHEB[-1])
    for c in _ERFC_CHEB[-2::-1]:
        q *= t
        q += c
    a *= a
    q -= a
    np.exp(q, out=q)
    q *= t
    return q


def _erf_poly(xf: np.ndarray, complement: bool) -> np.ndarray:
    """erf, or erfc if ``complement``, of a 1-D float64 array.

    erfc is formed directly (not as 1 - erf) so that Gelu's 1 + erf(z) = erfc(-z) keeps
    its relative accuracy for negative inputs.
    """
    small = np.abs(xf) < 1.0  # NaN counts as large; that branch propagates it
    n_small = int(np.count_nonzero(small))
    # When both branches are needed, evaluating each on every element and selecting is
    # faster than gathering and scattering the two subsets by boolean mask.
    p = _erf_series(xf) if n_small else None
    if n_small == xf.size:
        return 1.0 - p if complement else p
    q = _erfc_abs(xf)
    if complement:
        big = np.where(xf > 0, q, 2.0 - q)  # erfc(-a) = 2 - erfc(a)
    else:
        big = np.subtract(1.0, q, out=q)
        np.copysign(big, xf, out=big)  # erf is odd
    if p is None:
        return big
    if complement:
        p = np.subtract(1.0, p, out=p)
    return np.where(small, p, big)


def _erf32(x: np.ndarray) -> np.ndarray:
    """erf of a float32 array (fresh, same shape); large arrays in one chunk per core."""
    flat = x.reshape(-1)
    if flat.size < parallel.MIN_ELEMENTS or parallel.WORKERS == 1 or parallel.in_chunk():
        return _erf32_chunk(flat).reshape(x.shape)
    out = np.empty_like(flat)

    def chunk(lo: int, hi: int) -> None:
        out[lo:hi] = _erf32_chunk(flat[lo:hi])

    parallel.run_chunks(chunk, flat.size)
    return out.reshape(x.shape)


def _erf32_chunk(x: np.ndarray) -> np.ndarray:
    """erf of a 1-D float32 array, the rational form above, in place on one copy (one
    compiled pass, bit-identical, where ``native`` has it)."""
    if native.enabled():
        out = np.empty_like(x)
        if native.erf_f32(x, out):
            return out
    xc = np.clip(x, -_ERF32_CLAMP, _ERF32_CLAMP)  # NaN stays NaN
    t = np.square(xc)
    # Horner's rule; the work is memory-bound, so array passes count: the first step
    # is c5 * t + c4 rather than a filled array times t, and Q reuses xc's buffer.
    p = np.multiply(t, _ERF32_P[-1])
    for c in _ERF32_P[-2:0:-1]:
        p += c
        p *= t
    p += _ERF32_P[0]
    p *= xc  # keeps the sign of -0.0
    q = np.multiply(t, _ERF32_Q[-1], out=xc)  # xc's last use was above
    for c in _ERF32_Q[-2:0:-1]:
        q += c
        q *= t
    q += _ERF32_Q[0]
    p /= q
    np.clip(p, -1.0, 1.0, out=p)
    return p


def _erf(x: np.ndarray) -> np.ndarray:
    """erf with x's dtype."""
    x = np.asarray(x)
    if x.size == 0:
        return x.copy()
    if x.dtype == _F64:
        return np.asarray(_erf_scalar(x), dtype=_F64)
    if x.dtype == _F32:
        return _erf32(x)
    # 1-D float64 working copy (ufuncs on 0-d arrays return scalars, which in-place ops
    # reject); rounded once to the input type at the end.
    return _erf_poly(x.astype(_F64).reshape(-1), False).astype(x.dtype).reshape(x.shape)


@kernel("Erf")
@_quiet
def _erf_kernel(inputs, attrs, n_out):
    return [np.asarray(_erf(inputs[0]))]


_F32_0_2 = float(np.float32(0.2))
_F32_0_01 = float(np.float32(0.01))
_F32_1_6 = float(np.float32(1.0 / 6.0))


def _sigmoid(x: np.ndarray) -> np.ndarray:
    # 1 / (1 + exp(-x)) is accurate everywhere and saturates correctly (exp overflow to
    # inf gives 0), except that it flushes the tiny values below x = -80 to 0: those
    # are recomputed as exp(x), equal to e^x / (1 + e^x) at that magnitude.  This is
    # several times faster than a two-branch np.where formulation.
    shape = x.shape
    x = x.reshape(-1)  # in-place ufuncs need arrays, not the scalars 0-d inputs produce
    r = np.exp(-x)
    r += 1.0
    np.divide(1.0, r, out=r)
    low = x < -80.0
    if low.any():
        r[low] = np.exp(x[low])
    return r.reshape(shape)


def _softplus(x: np.ndarray) -> np.ndarray:
    # log(1 + exp(x)) = max(x, 0) + log1p(exp(-|x|)): no overflow, no cancellation.
    return np.maximum(x, 0.0) + np.log1p(np.exp(-np.abs(x)))


@kernel("Sigmoid")
@_quiet
@_float_fn
def _sigmoid_kernel(x, attrs):
    return _sigmoid(x)


@kernel("HardSigmoid")
@_float_fn
def _hard_sigmoid(x, attrs):
    # Attribute defaults are float32 values: 0.2 means 0.2f, as the schema stores it.
    return np.clip(x * attrs.get("alpha", _F32_0_2) + attrs.get("beta", 0.5), 0.0, 1.0)


_ZEROS: dict[np.dtype, np.ndarray] = {}


def _zeros(shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """A read-only array of zeros of ``shape``, a view of one cached buffer per dtype."""
    n = math.prod(shape)
    buf = _ZEROS.get(dtype)
    if buf is None or buf.size < n:
        buf = np.zeros(max(n, 1 << 16), dtype=dtype)
        buf.flags.writeable = False
        _ZEROS[dtype] = buf  # a race only builds the buffer twice
    return buf[:n].reshape(shape)


def relu(x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """max(x, 0) (NaN stays NaN), into ``out`` if given.

    Against an array of zeros, not the scalar 0: numpy 2.4's maximum has no SIMD loop
    for a scalar operand, and was measured 3.7x slower with one (0.43 against 0.12 ms
    on 800,000 float32 values)."""
    return np.maximum(x, _zeros(x.shape, x.dtype), out=out)


@kernel("Relu")
def _relu(inputs, attrs, n_out):
    x = inputs[0]
    return [np.asarray(relu(x), dtype=x.dtype)]


@kernel("LeakyRelu")
@_float_fn
def _leaky_relu(x, attrs):
    alpha = attrs.get("alpha", _F32_0_01)
    # For 0 <= alpha <= 1, max(x, alpha x) is the same function and avoids np.where,
    # which is an order of magnitude slower than the arithmetic here.
    if 0.0 <= alpha <= 1.0:
        return np.maximum(x, x * alpha)
    return np.where(x < 0, x * alpha, x)


@kernel("Elu")
@_quiet
@_float_fn
def _elu(x, attrs):
    # max(x, 0) + alpha * expm1(min(x, 0)): one term is 0 on each side; expm1 is accurate
    # near 0 and min() keeps exp from overflowing.  Cheaper than np.where.
    return np.maximum(x, 0.0) + attrs.get("alpha", 1.0) * np.expm1(np.minimum(x, 0.0))


@kernel("Selu")
@_quiet
@_float_fn
def _selu(x, attrs):
    alpha = attrs.get("alpha", 1.67326319217681884765625)
    gamma = attrs.get("gamma", 1.05070102214813232421875)
    return gamma * (np.maximum(x, 0.0) + alpha * np.expm1(np.minimum(x, 0.0)))


@kernel("Celu")
@_quiet
@_float_fn
def _celu(x, attrs):
    alpha = attrs.get("alpha", 1.0)
    return np.maximum(x, 0.0) + alpha * np.expm1(np.minimum(x, 0.0) / alpha)


@kernel("Softplus")
@_quiet
@_float_fn
def _softplus_kernel(x, attrs):
    return _softplus(x)


@kernel("Softsign")
@_quiet
@_float_fn
def _softsign(x, attrs):
    return x / (1.0 + np.abs(x))


@kernel("HardSwish")
@_quiet
@_float_fn
def _hard_swish(x, attrs):
    # alpha is 1/6 rounded to float32, as in the op's HardSigmoid function body.
    return x * np.clip(x * _F32_1_6 + 0.5, 0.0, 1.0)


@kernel("Mish")
@_quiet
@_float_fn
def _mish(x, attrs):
    return x * np.tanh(_softplus(x))


@kernel("Gelu")
@_quiet
def _gelu(inputs, attrs, n_out):
    x = inputs[0]
    dt = x.dtype
    if _str(attrs.get("approximate", "none")) == "tanh":
        xc = x.astype(_F32) if dt in _HALF else x
        inner = math.sqrt(2.0 / math.pi) * (xc + 0.044715 * xc * xc * xc)
        return [np.asarray(0.5 * xc * (1.0 + np.tanh(inner))).astype(dt, copy=False)]
    if x.size == 0:
        return [x.copy()]
    # 0.5 x (1 + erf(x/sqrt2)) = 0.5 x erfc(-x/sqrt2): no cancellation for negative x.
    # Narrow floats: all in float64, one rounding at the end.
    if dt == _F64:
        return [np.asarray(0.5 * x * _erfc_scalar(x * -math.sqrt(0.5)), dtype=dt)]
    if dt == _F32:
        # float32 erf; where 1 + erf(z) cancels (z < -2, erf within 0.5% of -1) the
        # float64 erfc path recomputes those few elements, keeping the tail's relative
        # accuracy.
        c = np.float32(math.sqrt(0.5))
        z = x * c
        r = np.array(x, order="C")
        # (x * (erf(x * c) + 1)) * 0.5 in one compiled pass where native has it (the
        # same float32 operations in the same order as the numpy lines).
        if not native.gelu_erf_in_place(r, False, float(c), 1.0, 0.5):
            r = _erf32(z)
            r += 1.0
            r *= x
            r *= 0.5
        low = z < -2.0
        if low.any():
            xl = x[low].astype(_F64)
            r[low] = (0.5 * xl * _erf_poly(xl * -math.sqrt(0.5), True)).astype(_F32)
        return [r]
    xf = x.astype(_F64).reshape(-1)
    r = 0.5 * xf * _erf_poly(xf * -math.sqrt(0.5), True)
    return [r.astype(dt).reshape(x.shape)]


@kernel("ThresholdedRelu")
@_float_fn
def _thresholded_relu(x, attrs):
    return np.where(x > attrs.get("alpha", 1.0), x, 0.0)


@kernel("Shrink")
def _shrink(inputs, attrs, n_out):
    x = inputs[0]
    lambd = attrs.get("lambd", 0.5)
    bias = attrs.get("bias", 0.0)
    cd = _F64 if x.dtype.kind in "iu" else _compute_dtype(x.dtype)
    xc = x.astype(cd, copy=False)
    r = np.where(xc < -lambd, xc + bias, np.where(xc > lambd, xc - bias, 0.0))
    return [np.asarray(r).astype(x.dtype, copy=False)]


@kernel("Clip")
def _clip(inputs, attrs, n_out):
    x = inputs[0]
    lo, hi = _opt(inputs, 1), _opt(inputs, 2)
    if lo is None and hi is None:
        return [x]
    # maximum then minimum: NaN propagates and min > max yields max, as the spec says.
    r = x
    if lo is not None:
        r = np.maximum(r, lo.astype(x.dtype, copy=False))
    if hi is not None:
        r = np.minimum(r, hi.astype(x.dtype, copy=False))
    return [np.asarray(r, dtype=x.dtype)]


@kernel("Identity")
def _identity(inputs, attrs, n_out):
    return [inputs[0]]


@kernel("Where")
def _where(inputs, attrs, n_out):
    c, x, y = inputs
    return [np.asarray(np.where(c, x, y), dtype=x.dtype)]


# ----------------------------------------------------------------------------- Cast

_FLOAT8 = {
    TensorProto.FLOAT8E4M3FN,
    TensorProto.FLOAT8E4M3FNUZ,
    TensorProto.FLOAT8E5M2,
    TensorProto.FLOAT8E5M2FNUZ,
}


@functools.cache
def _onnx_dtype(to: int) -> np.dtype:
    return np.dtype(tensor_dtype_to_np_dtype(to))


def _to_e8m0(x: np.ndarray, saturate: bool, round_mode: str) -> np.ndarray:
    """Cast to FLOAT8E8M0 (a bare power-of-two exponent) from the float32 bit pattern."""
    bits = np.asarray(x, dtype=_F32).view(np.uint32)
    exp = ((bits >> 23) & 0xFF).astype(np.uint16)
    mant = bits & 0x7FFFFF
    special = exp == 0xFF  # inf / nan
    if round_mode == "up":
        inc = mant != 0
    elif round_mode == "nearest":
        inc = mant >= 0x400000  # at or above 1.5 * 2^e: ties go up
    else:  # "down": truncate the mantissa
        inc = np.zeros(exp.shape, dtype=_BOOL)
    inc &= ~special
    if saturate:
        inc &= exp != 0xFE  # never round past the largest finite value
    exp = exp + inc
    if saturate:
        # Spec table: Inf saturates to the maximum; NaN stays NaN.
        exp = np.where(special & (mant == 0), 0xFE, exp)
    # With saturate off, 0xFE rounding up lands on 0xFF, the NaN encoding.
    return exp.astype(np.uint8).view(ml_dtypes.float8_e8m0fnu)


@_quiet
def _cast(x: np.ndarray, to: int, saturate: int, round_mode: str) -> np.ndarray:
    if to == TensorProto.STRING or x.dtype.kind in "OUS":
        raise NotImplementedError("Cast from/to string tensors")
    dt = _onnx_dtype(to)
    if x.dtype == dt:
        return x
    if to == TensorProto.FLOAT8E8M0:
        return _to_e8m0(x, bool(saturate), _str(round_mode))
    if to in _FLOAT8 and saturate and x.dtype != _BOOL:
        # Saturation: clamp to the finite range (inf included) before rounding; NaN passes.
        info = ml_dtypes.finfo(dt)
        if x.dtype not in (_F32, _F64):
            x = x.astype(_F64)  # exact for every narrower float and for most ints
        x = np.clip(x, float(info.min), float(info.max))
    return np.asarray(x).astype(dt)


@kernel("Cast")
def _cast_kernel(inputs, attrs, n_out):
    return [_cast(inputs[0], attrs["to"], attrs.get("saturate", 1), attrs.get("round_mode", "up"))]


_NP_TO_ONNX: dict[np.dtype, int] = {}


@kernel("CastLike")
def _cast_like(inputs, attrs, n_out):
    x, like = inputs[0], inputs[1]
    dt = like.dtype
    if dt not in _NP_TO_ONNX:
        from onnx.helper import np_dtype_to_tensor_dtype

        _NP_TO_ONNX[dt] = np_dtype_to_tensor_dtype(dt)
    return [_cast(x, _NP_TO_ONNX[dt], attrs.get("saturate", 1), attrs.get("round_mode", "up"))]


# ----------------------------------------------------------------------- reductions


def _reduce_axes(x: np.ndarray, inputs, attrs) -> tuple[int, ...]:
    """Axes to reduce; ``()`` means the no-op case (noop_with_empty_axes with no axes)."""
    axes = _ints(_opt(inputs, 1))
    if axes is None:
        axes = attrs.get("axes")  # pre-opset-18 attribute form, tolerated
    if not axes:
        return () if attrs.get("noop_with_empty_axes", 0) else tuple(range(x.ndim))
    return tuple(sorted({a + x.ndim if a < 0 else a for a in axes}))


def _lowest(dt: np.dtype):
    if dt == _BOOL:
        return False
    if dt.kind in "iu":
        return int(np.iinfo(dt).min)
    return -math.inf


def _highest(dt: np.dtype):
    if dt == _BOOL:
        return True
    if dt.kind in "iu":
        return int(np.iinfo(dt).max)
    return math.inf


def _reduction(body):
    """Kernel from ``body(x, axes, keepdims)``; x is promoted to float32 if half precision."""

    def run(inputs, attrs, n_out):
        x = inputs[0]
        axes = _reduce_axes(x, inputs, attrs)
        keep = bool(attrs.get("keepdims", 1))
        dt = x.dtype
        r = body(x.astype(_F32) if dt in _HALF else x, axes, keep)
        return [np.asarray(r).astype(dt, copy=False)]

    return _quiet(run)


def _sum(x, axes, keep):
    # dtype=x.dtype: numpy would otherwise widen small ints to int64.
    return np.sum(x, axis=axes, keepdims=keep, dtype=x.dtype)


kernel("ReduceSum")(_reduction(_sum))
kernel("ReduceSumSquare")(_reduction(lambda x, ax, k: _sum(x * x, ax, k)))
kernel("ReduceL1")(_reduction(lambda x, ax, k: _sum(np.abs(x), ax, k)))
kernel("ReduceL2")(_reduction(lambda x, ax, k: np.sqrt(_sum(x * x, ax, k))))
kernel("ReduceLogSum")(_reduction(lambda x, ax, k: np.log(_sum(x, ax, k))))
kernel("ReduceProd")(_reduction(lambda x, ax, k: np.prod(x, axis=ax, keepdims=k, dtype=x.dtype)))
# initial= makes empty reductions return -inf/+inf (or the integer extremes) per spec.
kernel("ReduceMax")(
    _reduction(lambda x, ax, k: np.max(x, axis=ax, keepdims=k, initial=_lowest(x.dtype)))
)
kernel("ReduceMin")(
    _reduction(lambda x, ax, k: np.min(x, axis=ax, keepdims=k, initial=_highest(x.dtype)))
)


def _mean_body(x, axes, keep):
    n = math.prod(x.shape[a] for a in axes)
    s = np.sum(x, axis=axes, keepdims=keep, dtype=_F64 if x.dtype.kind in "iu" else x.dtype)
    if x.dtype.kind in "iu":
        # C-style integer mean: truncate toward zero.
        return np.trunc(s / n) if n else s
    return s / n if n else s * math.nan


kernel("ReduceMean")(_reduction(_mean_body))


def _logsumexp(x, axes, keep):
    m = np.max(x, axis=axes, keepdims=True, initial=-math.inf)
    m = np.where(np.isfinite(m), m, 0.0).astype(x.dtype, copy=False)  # all -inf / empty
    s = np.sum(np.exp(x - m), axis=axes, keepdims=True)
    r = np.log(s) + m
    return r if keep else np.squeeze(r, axis=axes)


kernel("ReduceLogSumExp")(_reduction(_logsumexp))


def _arg_reduce(fn):
    def run(inputs, attrs, n_out):
        x = inputs[0]
        axis = attrs.get("axis", 0)
        if axis < 0:
            axis += x.ndim
        keep = bool(attrs.get("keepdims", 1))
        if attrs.get("select_last_index", 0):
            r = x.shape[axis] - 1 - fn(np.flip(x, axis), axis=axis, keepdims=keep)
        else:
            r = fn(x, axis=axis, keepdims=keep)
        return [np.asarray(r, dtype=_I64)]

    return run


kernel("ArgMax")(_arg_reduce(np.argmax))
kernel("ArgMin")(_arg_reduce(np.argmin))


# -------------------------------------------------------------------- shape / layout


@kernel("Reshape")
def _reshape(inputs, attrs, n_out):
    x = inputs[0]
    shape = _ints(inputs[1])
    if not attrs.get("allowzero", 0):
        shape = [x.shape[i] if s == 0 else s for i, s in enumerate(shape)]
    return [x.reshape(shape)]


@kernel("Transpose")
def _transpose(inputs, attrs, n_out):
    perm = attrs.get("perm")
    return [np.transpose(inputs[0], perm)]  # perm None reverses the axes


@kernel("Flatten")
def _flatten(inputs, attrs, n_out):
    x = inputs[0]
    axis = attrs.get("axis", 1)
    if axis < 0:
        axis += x.ndim
    return [x.reshape(math.prod(x.shape[:axis]), math.prod(x.shape[axis:]))]


@kernel("Concat")
def _concat(inputs, attrs, n_out):
    xs = [x for x in inputs if x is not None]
    return [np.concatenate(xs, axis=attrs["axis"])]


@kernel("Split")
def _split(inputs, attrs, n_out):
    x = inputs[0]
    axis = attrs.get("axis", 0)
    if axis < 0:
        axis += x.ndim
    dim = x.shape[axis]
    sizes = _ints(_opt(inputs, 1))
    if sizes is None:
        # num_outputs (or the output count): equal chunks of ceil(dim / n), last smaller.
        n = attrs.get("num_outputs", n_out)
        chunk = -(-dim // n)
        sizes = [max(0, min(chunk, dim - i * chunk)) for i in range(n)]
    outs = []
    start = 0
    index = [slice(None)] * x.ndim
    for s in sizes:
        index[axis] = slice(start, start + s)
        outs.append(x[tuple(index)])
        start += s
    return outs


@kernel("Slice")
def _slice(inputs, attrs, n_out):
    x = inputs[0]
    starts, ends = _ints(inputs[1]), _ints(inputs[2])
    axes = _ints(_opt(inputs, 3))
    steps = _ints(_opt(inputs, 4))
    if axes is None:
        axes = list(range(len(starts)))
    if steps is None:
        steps = [1] * len(starts)
    index = [slice(None)] * x.ndim
    for s, e, a, st in zip(starts, ends, axes, steps, strict=True):
        if a < 0:
            a += x.ndim
        dim = x.shape[a]
        if s < 0:
            s += dim
        if e < 0:
            e += dim
        if dim == 0:
            index[a] = slice(0, 0)
            continue
        if st > 0:
            s = min(max(s, 0), dim)
            e = min(max(e, 0), dim)
        else:
            # Backward: start in [0, dim-1], end in [-1, dim-1] where -1 means "past 0".
            s = min(max(s, 0), dim - 1)
            e = min(max(e, -1), dim - 1)
        index[a] = slice(s, e if e >= 0 else None, st)
    return [x[tuple(index)]]


@kernel("Squeeze")
def _squeeze(inputs, attrs, n_out):
    x = inputs[0]
    axes = _ints(_opt(inputs, 1))
    if axes is None:
        axes = attrs.get("axes")
    if axes is None:
        return [np.squeeze(x)]
    return [np.squeeze(x, axis=tuple(a + x.ndim if a < 0 else a for a in axes))]


@kernel("Unsqueeze")
def _unsqueeze(inputs, attrs, n_out):
    x = inputs[0]
    axes = _ints(_opt(inputs, 1))
    if axes is None:
        axes = attrs["axes"]
    rank = x.ndim + len(axes)
    axes = sorted(a + rank if a < 0 else a for a in axes)
    shape = list(x.shape)
    for a in axes:
        shape.insert(a, 1)
    return [x.reshape(shape)]


@kernel("Expand")
def _expand(inputs, attrs, n_out):
    x = inputs[0]
    shape = np.broadcast_shapes(x.shape, tuple(_ints(inputs[1])))
    if shape == x.shape:
        return [x]
    # Materialize: a read-only broadcast view would surprise a caller that owns the output.
    return [np.array(np.broadcast_to(x, shape))]


@kernel("Tile")
def _tile(inputs, attrs, n_out):
    return [np.tile(inputs[0], _ints(inputs[1]))]


@kernel("Shape")
def _shape(inputs, attrs, n_out):
    shape = inputs[0].shape
    r = len(shape)
    start = attrs.get("start", 0)
    end = attrs.get("end", r)
    start = min(max(start + r if start < 0 else start, 0), r)
    end = min(max(end + r if end < 0 else end, 0), r)
    return [np.array(shape[start:end], dtype=_I64)]


@kernel("Size")
def _size(inputs, attrs, n_out):
    return [np.array(inputs[0].size, dtype=_I64)]


@kernel("ConstantOfShape")
def _constant_of_shape(inputs, attrs, n_out):
    value = attrs.get("value")
    value = np.zeros(1, dtype=_F32) if value is None else np.asarray(value)
    shape = _ints(inputs[0])
    return [np.full(shape, value.reshape(-1)[0], dtype=value.dtype)]


@kernel("Constant")
def _constant(inputs, attrs, n_out):
    if "value" in attrs:
        return [np.asarray(attrs["value"])]
    if "value_float" in attrs:
        return [np.array(attrs["value_float"], dtype=_F32)]
    if "value_floats" in attrs:
        return [np.array(attrs["value_floats"], dtype=_F32).reshape(-1)]
    if "value_int" in attrs:
        return [np.array(attrs["value_int"], dtype=_I64)]
    if "value_ints" in attrs:
        return [np.array(attrs["value_ints"], dtype=_I64).reshape(-1)]
    raise NotImplementedError(f"Constant with attributes {sorted(attrs)}")


@kernel("Range")
def _range(inputs, attrs, n_out):
    start, limit, delta = inputs[0], inputs[1], inputs[2]
    dt = start.dtype
    s, lim, d = _scalar(start), _scalar(limit), _scalar(delta)
    if dt.kind in "iu":
        n = max(-(-(lim - s) // d), 0)  # exact integer ceil
        return [np.asarray(s + np.arange(n, dtype=_I64) * d).astype(dt)]
    n = max(math.ceil((lim - s) / d), 0)
    # start + i*delta, evaluated in float64 (float32 for half types unless stash_type
    # asks for double) and rounded once to the output type.
    cd = _F64
    if dt in _HALF and attrs.get("stash_type", 1) == TensorProto.FLOAT:
        cd = _F32
    s, d = cd.type(s), cd.type(d)
    return [(s + np.arange(n, dtype=cd) * d).astype(dt)]


@kernel("EyeLike")
def _eye_like(inputs, attrs, n_out):
    x = inputs[0]
    dt = _onnx_dtype(attrs["dtype"]) if "dtype" in attrs else x.dtype
    rows, cols = (x.shape[0], x.shape[0]) if x.ndim == 1 else x.shape
    return [np.eye(rows, cols, k=attrs.get("k", 0), dtype=dt)]


@kernel("Trilu")
def _trilu(inputs, attrs, n_out):
    x = inputs[0]
    k_in = _opt(inputs, 1)
    k = 0 if k_in is None else int(_scalar(k_in))
    # np.triu/np.tril operate on the last two axes of stacked matrices.
    fn = np.triu if attrs.get("upper", 1) else np.tril
    return [np.asarray(fn(x, k), dtype=x.dtype)]


# ------------------------------------------------------------------- gather / scatter


def _axis_index(idx: np.ndarray, axis: int) -> tuple[np.ndarray, ...]:
    """Fancy index selecting data[i0, .., idx[i], .., iN] for every position i of idx.

    Negative entries of idx wrap like Python indexing, which is what ONNX specifies.
    """
    r = idx.ndim
    grid = []
    for d, n in enumerate(idx.shape):
        if d == axis:
            grid.append(idx)
        else:
            shape = [1] * r
            shape[d] = n
            grid.append(np.arange(n).reshape(shape))
    return tuple(grid)


@kernel("Gather")
def _gather(inputs, attrs, n_out):
    x, idx = inputs[0], inputs[1]
    axis = attrs.get("axis", 0)
    # np.take wraps negative indices (mode="raise" only rejects out-of-range ones).
    # np.asarray: np.take returns a numpy scalar for scalar indices into a 1-D tensor.
    return [np.asarray(np.take(x, idx.astype(np.intp, copy=False), axis=axis))]


@kernel("GatherElements")
def _gather_elements(inputs, attrs, n_out):
    x, idx = inputs[0], inputs[1]
    axis = attrs.get("axis", 0)
    if axis < 0:
        axis += x.ndim
    return [x[_axis_index(idx, axis)]]


@kernel("GatherND")
def _gather_nd(inputs, attrs, n_out):
    x, idx = inputs[0], inputs[1]
    b = attrs.get("batch_dims", 0)
    k = idx.shape[-1]
    bshape, qshape = x.shape[:b], idx.shape[b:-1]
    nb, nq = math.prod(bshape), math.prod(qshape)
    # Collapse batch dims to one and index dims to one: out[b, q] = data[b, idx[b, q, :]].
    data = x.reshape((nb,) + x.shape[b:])
    ix = idx.reshape(nb, nq, k)
    sel = (np.arange(nb).reshape(nb, 1),) + tuple(ix[:, :, j] for j in range(k))
    out = data[sel]
    return [out.reshape(bshape + qshape + x.shape[b + k :])]


_SCATTER_REDUCE = {
    "add": np.add,
    "mul": np.multiply,
    "max": np.maximum,
    "min": np.minimum,
}


def _scatter(x: np.ndarray, index: tuple, updates: np.ndarray, reduction: str) -> np.ndarray:
    out = x.copy()
    updates = updates.astype(x.dtype, copy=False)
    if reduction == "none":
        out[index] = updates
    else:
        # ufunc.at accumulates over repeated indices, unlike out[index] op= updates.
        _SCATTER_REDUCE[reduction].at(out, index, updates)
    return out


@kernel("ScatterElements")
def _scatter_elements(inputs, attrs, n_out):
    x, idx, upd = inputs[0], inputs[1], inputs[2]
    axis = attrs.get("axis", 0)
    if axis < 0:
        axis += x.ndim
    return [_scatter(x, _axis_index(idx, axis), upd, _str(attrs.get("reduction", "none")))]


@kernel("ScatterND")
def _scatter_nd(inputs, attrs, n_out):
    x, idx, upd = inputs[0], inputs[1], inputs[2]
    k = idx.shape[-1]
    index = tuple(idx[..., j] for j in range(k))
    return [_scatter(x, index, upd, _str(attrs.get("reduction", "none")))]


@kernel("OneHot")
def _one_hot(inputs, attrs, n_out):
    indices, depth, values = inputs[0], inputs[1], inputs[2]
    depth = int(_scalar(depth))
    # Non-integer indices are truncated; negatives in [-depth, -1] wrap; anything still
    # outside [0, depth) matches no position and yields an all-off row.
    idx = indices.astype(_I64, copy=False) if indices.dtype.kind != "f" else np.trunc(indices)
    idx = np.where(idx < 0, idx + depth, idx)
    rank = idx.ndim + 1
    axis = attrs.get("axis", -1)
    if axis < 0:
        axis += rank
    shape = [1] * rank
    shape[axis] = depth
    hot = np.expand_dims(idx, axis) == np.arange(depth).reshape(shape)
    values = values.reshape(-1)
    return [np.where(hot, values[1], values[0]).astype(values.dtype, copy=False)]


@kernel("NonZero")
def _nonzero(inputs, attrs, n_out):
    x = inputs[0]
    if x.ndim == 0:
        # numpy rejects nonzero() on 0-d; there are no coordinates to report.
        return [np.zeros((0, int(np.count_nonzero(x))), dtype=_I64)]
    return [np.array(np.nonzero(x), dtype=_I64).reshape(x.ndim, -1)]


@kernel("Compress")
def _compress(inputs, attrs, n_out):
    x, cond = inputs[0], inputs[1]
    # np.compress flattens when axis is None and drops slices past len(condition).
    return [np.compress(cond.astype(_BOOL, copy=False).reshape(-1), x, axis=attrs.get("axis"))]


@kernel("ReverseSequence")
def _reverse_sequence(inputs, attrs, n_out):
    x, lens = inputs[0], inputs[1]
    time_axis = attrs.get("time_axis", 0)
    nt = x.shape[time_axis]
    nb = x.shape[attrs.get("batch_axis", 1)]
    lens = lens.astype(_I64, copy=False).reshape(1, nb)
    t = np.arange(nt).reshape(nt, 1)
    src = np.where(t < lens, lens - 1 - t, t)  # (time, batch) source time index
    b = np.arange(nb).reshape(1, nb)
    if time_axis == 0:
        return [x[src, b]]
    return [x[b.T, src.T]]


@kernel("Unique")
def _unique(inputs, attrs, n_out):
    x = inputs[0]
    axis = attrs.get("axis")
    y, first, inverse, counts = np.unique(
        x, return_index=True, return_inverse=True, return_counts=True, axis=axis
    )
    inverse = inverse.reshape(-1)
    if not attrs.get("sorted", 1):
        # Reorder the sorted uniques by first occurrence and remap the inverse.
        order = np.argsort(first, kind="stable")
        rank = np.empty_like(order)
        rank[order] = np.arange(order.size)
        first, counts, inverse = first[order], counts[order], rank[inverse]
        y = np.take(y, order, axis=0 if axis is None else axis)
    outs = [
        y,
        np.asarray(first, dtype=_I64),
        np.asarray(inverse, dtype=_I64),
        np.asarray(counts, dtype=_I64),
    ]
    return outs[:n_out]
