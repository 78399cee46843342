"""The interpreter's compiled float32 kernels, where the extension was built.

Some float32 work is a long chain of elementwise operations: erf's rational function is
about 24 numpy array passes, BERT's Gelu (Div, Erf, Add, Mul, Mul) about 30, a
convolution's bias, residual Add and Relu three.  Those passes are bound by memory
bandwidth, which the two cores share; the compiled loops (``_native.c``) make one pass
and keep every intermediate in registers.  im2col is a copy that numpy makes row by
row through a 5-D strided view; the compiled one copies each window row with memcpy.

Each of these compiled kernels performs the same IEEE float32 operations, in the same
order, as the numpy code beside it, so its results are bit-identical to that code's
(``tests/test_native.py`` checks it).  The extension is optional: where it was not built
(no C compiler at install time), or ``NEURON_IR_NATIVE=0`` is set, or inside
``disabled()``, every function here returns False (or None) and the caller runs its
numpy code.

Convolutions (``conv2d``) are the exception to "the same operations as numpy":
they are the compiled extension's own product, an implicit GEMM over the zero-padded
image with AVX2 fused multiply-adds (``_native.c`` explains the blocks), and their
bias, residual and activation applied before the product leaves the cache.  Numpy has
no such product; its im2col and OpenBLAS GEMM sum in another order, so those results
agree with this one to float32 rounding, not bit for bit.  Each output is one chain of
multiply-adds over the kernel window in order, whatever the split, so every chunking
the interpreter uses gives the same bits, fused or not (``tests/test_native_conv.py``).
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
# The compiled convolution needs AVX2 and FMA (x86-64); the other kernels run anywhere.
_conv2d = _native is not None and bool(getattr(_native, "HAVE_CONV2D", 0))


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


# conv_tail_in_place's and conv2d's activations (the C kernels' codes)
TAIL_ACTIVATIONS = {None: 0, "Relu": 1, "LeakyRelu": 2}


def takes_activation(activation: str | None, alpha: float) -> bool:
    """An activation the compiled tails compute: none, Relu, or LeakyRelu with
    0 <= alpha <= 1 (its kernel's max(v, v * alpha))."""
    return activation in TAIL_ACTIVATIONS and (activation != "LeakyRelu" or 0.0 <= alpha <= 1.0)


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
    if not takes_activation(activation, alpha):
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


def _c_floats(x: np.ndarray, ndim: int) -> bool:
    return (
        x.ndim == ndim
        and x.dtype == np.float32
        and x.dtype.byteorder in "=|"
        and x.flags.c_contiguous
    )


def conv2d_enabled() -> bool:
    """True where ``conv2d`` computes (the extension built, enabled, on AVX2 and FMA)."""
    return _enabled and _conv2d


GEMM_ROWS = 4  # output channels a tile of the compiled product computes together
GEMM_COLS = 24  # and output columns (GEMM_MR and GEMM_NR in _native.c)


def pack_weights(weight: np.ndarray) -> np.ndarray:
    """Float32 weights (M, K) as ``conv2d`` reads them: panels of ``GEMM_ROWS`` output
    channels, (ceil(M/4), K, 4), channels past M zero."""
    m, k = weight.shape
    panels = -(-m // GEMM_ROWS)
    packed = np.zeros((panels * GEMM_ROWS, k), np.float32)
    packed[:m] = weight
    return np.ascontiguousarray(packed.reshape(panels, GEMM_ROWS, k).transpose(0, 2, 1))


def conv2d(
    padded: np.ndarray,
    packed: np.ndarray,
    out: np.ndarray,
    kernel: tuple[int, int],
    dilations: tuple[int, int],
    stride: int,
    rows: tuple[int, int],
    channels: tuple[int, int],
    bias: np.ndarray | None = None,
    residual: np.ndarray | None = None,
    activation: str | None = None,
    alpha: float = 0.0,
) -> bool:
    """Output rows ``rows`` and channels ``channels`` of the convolution (``stride`` on
    both axes) of one zero-padded float32 image ``padded`` (C, Hp, Wp) by
    ``pack_weights``' panels into ``out`` (M, OH, OW), then
    act((v + bias) + residual) as ``conv_tail_in_place`` rounds it (``bias`` (M,),
    ``residual`` shaped like ``out``, each optional).  All C-contiguous.  False, and
    nothing written, where the compiled product cannot take them (no extension, a CPU
    without AVX2 and FMA, other types or layouts)."""
    if not conv2d_enabled() or not takes_activation(activation, alpha):
        return False
    if not (
        _c_floats(padded, 3)
        and _c_floats(packed, 3)
        and _c_floats(out, 3)
        and out.flags.writeable
        and (bias is None or _c_floats(bias, 1))
        and (residual is None or (_c_floats(residual, 3) and residual.shape == out.shape))
    ):
        return False
    if residual is not None and np.may_share_memory(residual, out):
        return False
    code = TAIL_ACTIVATIONS[activation]
    args = (padded, packed, out, kernel, dilations, stride, rows, channels, bias, residual)
    return bool(_native.conv2d_f32(*args, code, float(alpha)))  # type: ignore[union-attr]


# run_parts' job kinds (JOB_PAD, JOB_CONV, JOB_MAXPOOL in _native.c)
_PAD_JOB, CONV_JOB, _MAXPOOL_JOB = 0, 1, 2


def pad_job(
    image: np.ndarray, padded: np.ndarray, begin: tuple[int, int], rows: tuple[int, int]
) -> tuple:
    """``pad``'s work as a ``run_parts`` job."""
    return (_PAD_JOB, (image, padded, begin, rows))


def maxpool_job(
    image: np.ndarray,
    out: np.ndarray,
    kernel: tuple[int, int],
    strides: tuple[int, int],
    dilations: tuple[int, int],
    begin: tuple[int, int],
    channels: tuple[int, int],
) -> tuple:
    """A ``run_parts`` job: channels ``channels`` of the 2-D max pool of one C-contiguous
    float32 (C, H, W) image, ``begin`` (top, left) pads, into ``out`` (C, OH, OW).  The
    maxima of ``nn._window_reduce`` (np.maximum over each window's rows, then its
    columns), except that a maximum of tied zeros may take the other zero's sign."""
    return (_MAXPOOL_JOB, (image, out, kernel, strides, dilations, begin, channels))


def run_parts(parts: list[list[tuple]]) -> None:
    """Each part's jobs in order, the parts side by side (``pad_job``, ``maxpool_job``,
    and the convolutions' ``nn.Conv2dPlan.jobs`` builds: ``CONV_JOB`` with ``conv2d``'s
    arguments, the activation as its code): part 0 on the calling thread, the others
    on the extension's own worker threads, which never take the GIL (``_native.c`` says
    why).  Call it only where ``conv2d_enabled()``; jobs of different parts must not
    write the same floats."""
    if not _native.run_parts(parts):  # type: ignore[union-attr]
        raise RuntimeError("the compiled kernels declined run_parts")


def pad(
    image: np.ndarray, padded: np.ndarray, begin: tuple[int, int], rows: tuple[int, int]
) -> None:
    """Rows ``rows`` of ``padded`` (C, Hp, Wp; C-contiguous float32): the float32 (C, H, W)
    image placed at ``begin`` (top, left), zeros around it.  The compiled copy (call it
    only where ``built()``)."""
    _native.pad_f32(image, padded, begin, rows)  # type: ignore[union-attr]


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
