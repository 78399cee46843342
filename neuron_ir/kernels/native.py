"""The interpreter's compiled float32 kernels, where the extension was built.

Some float32 work is a long chain of elementwise operations: erf's rational function is
about 24 numpy array passes, BERT's Gelu (Div, Erf, Add, Mul, Mul) about 30, a
convolution's bias, residual Add and Relu three.  Those passes are bound by memory
bandwidth, which the two cores share; the compiled loops (``_native.c``) make one pass
and keep every intermediate in registers.  im2col is a copy that numpy makes row by
row through a 5-D strided view; the compiled one copies each window row with memcpy.

Each compiled kernel performs the same IEEE float32 operations, in the same order, as
the numpy code beside it, so its results are bit-identical to that code's
(``tests/test_native.py`` checks it).  The extension is optional: where it was not built
(no C compiler at install time), or ``NEURON_IR_NATIVE=0`` is set, or inside
``disabled()``, every function here returns False and the caller runs its numpy code.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np

try:
    from . import _native
except ImportError:  # not built: the numpy code runs instead
    _native = None

_enabled = _native is not None and os.environ.get("NEURON_IR_NATIVE", "1") != "0"


def built() -> bool:
    """True where the compiled extension was built and imports."""
    return _native is not None


def enabled() -> bool:
    return _enabled


@contextmanager
def disabled() -> Iterator[None]:
    """The numpy code everywhere inside the block (for tests and A/B measurements)."""
    global _enabled
    before = _enabled
    _enabled = False
    try:
        yield
    finally:
        _enabled = before


def _takes(x: np.ndarray) -> bool:
    """A float32 array the loops can walk: last axis contiguous (or of length <= 1)."""
    return (
        x.dtype == np.float32
        and x.dtype.byteorder in "=|"
        and (x.ndim == 0 or x.shape[-1] <= 1 or x.strides[-1] == 4)
    )


def erf_f32(x: np.ndarray, out: np.ndarray) -> bool:
    """out = erf(x) (``tensor._erf32_chunk``'s values); False, and nothing written, where
    the compiled kernel cannot take them.  ``out`` may be ``x`` itself, and must not
    otherwise overlap it."""
    if not _enabled or not (_takes(x) and _takes(out)) or x.shape != out.shape:
        return False
    if out is not x and np.may_share_memory(x, out):
        return False
    _native.erf_f32(x, out)  # type: ignore[union-attr]
    return True


def gelu_erf_in_place(
    x: np.ndarray, divide: bool, c: float, one: float, half: float, half_first: bool = False
) -> bool:
    """x = (x * a) * half in place, or x * (a * half) when ``half_first``, with
    a = erf(x / c) + one (``x * c`` when not ``divide``), each step rounded to float32 as
    the decomposed ops round it; False, and x untouched, where the compiled kernel cannot
    take it."""
    if not _enabled or not _takes(x) or not x.flags.writeable:
        return False
    _native.gelu_erf_f32(x, bool(divide), bool(half_first), c, one, half)  # type: ignore[union-attr]
    return True


# conv_tail_in_place's activations (the C kernel's codes)
TAIL_ACTIVATIONS = {None: 0, "Relu": 1, "LeakyRelu": 2}


def conv_tail_in_place(
    x: np.ndarray,
    bias: np.ndarray | None,
    residual: np.ndarray | None,
    activation: str | None,
    alpha: float = 0.0,
) -> bool:
    """x = act((x + bias) + residual) in place, as the separate numpy steps round it:
    bias, residual and activation each optional; ``bias`` broadcasts to x with a last
    axis of 1, e.g. (C, 1, 1) on NCHW; ``residual`` has x's shape; ``activation`` is
    Relu, or LeakyRelu with 0 <= alpha <= 1 (its kernel's max(v, v * alpha)).  False,
    and x untouched, where the compiled kernel cannot take them."""
    if not _enabled or not _takes(x) or not x.flags.writeable or x.ndim == 0:
        return False
    if activation not in TAIL_ACTIVATIONS or (
        activation == "LeakyRelu" and not 0.0 <= alpha <= 1.0
    ):
        return False
    rows = None
    if bias is not None:
        if bias.dtype != np.float32 or bias.ndim > x.ndim or bias.shape[-1:] not in ((), (1,)):
            return False
        try:
            rows = np.broadcast_to(bias, x.shape[:-1] + (1,))[..., 0]
        except ValueError:
            return False
    if residual is not None:
        if residual.shape != x.shape or not _takes(residual):
            return False
        if np.may_share_memory(residual, x):
            return False
    code = TAIL_ACTIVATIONS[activation]
    _native.conv_tail_f32(x, rows, residual, code, float(alpha))  # type: ignore[union-attr]
    return True


def im2col(
    image: np.ndarray,
    kernel: tuple[int, int],
    strides: tuple[int, int],
    dilations: tuple[int, int],
    begin: tuple[int, int],
    rows: tuple[int, int],
    ow: int,
) -> np.ndarray | None:
    """The (C*kh*kw, rows*ow) GEMM operand of output rows ``rows`` of one float32 (C, H, W)
    image, zero-padded by ``begin`` (top, left) pads and as far as the windows reach; None
    where the compiled kernel cannot take it, or numpy's strided copy is the faster (a
    column stride above 1: the 7x7 stride-2 stem took 0.69 ms against numpy's 0.45)."""
    if not _enabled or image.ndim != 3 or not _takes(image) or strides[1] != 1:
        return None
    h0, h1 = rows
    cols = np.empty((image.shape[0] * kernel[0] * kernel[1], (h1 - h0) * ow), np.float32)
    _native.im2col_f32(image, cols, kernel, strides, dilations, begin, rows, ow)  # type: ignore[union-attr]
    return cols
