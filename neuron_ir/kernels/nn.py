"""Numpy kernels for the "nn" family of ONNX operators (opset 28 semantics).

Convolutions, matrix products, normalizations, softmax-like ops, pooling, Resize,
Pad, GridSample, RoiAlign, NonMaxSuppression and a few rearrangement ops.

Conventions (see ``neuron_ir.kernels``): ``attrs`` holds only explicitly set
attributes, so every default is applied here; inputs are never written to; the
result is a list of exactly ``n_out`` arrays.  Float32 stays float32 throughout
(like onnxruntime's CPU provider); float16 is computed in float32 because numpy
has no BLAS or fast ufunc loops for it.  Spatial work is vectorized over whole
tensors: Python loops only run over kernel taps, spatial dims or groups.
"""

from __future__ import annotations

import math
import weakref
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import as_strided

from . import kernel, native, parallel

# --------------------------------------------------------------------------- helpers


def _opt(inputs: list[np.ndarray | None], i: int) -> np.ndarray | None:
    """Optional input ``i``: None when absent (omitted, empty name or trailing)."""
    return inputs[i] if i < len(inputs) else None


def _str(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


_FLOAT_TYPES = (np.dtype(np.float32), np.dtype(np.float64))


def _compute_dtype(dtype: np.dtype) -> np.dtype:
    """Dtype to do float arithmetic in: float16 (and ints) go through float32."""
    dtype = np.dtype(dtype)
    if dtype == np.float64:
        return dtype
    return np.dtype(np.float32)


def _exact_dtype(dtype: np.dtype) -> np.dtype:
    """Dtype for products that must keep integers exact: float32/float64 and
    integers as is; float16 and ml_dtypes floats (bfloat16, ...) via float32."""
    dtype = np.dtype(dtype)
    if dtype in (np.float32, np.float64) or dtype.kind in "iub":
        return dtype
    return np.dtype(np.float32)


def _to_dtype(y: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Cast a float result back to ``dtype``; integers round half-to-even and saturate."""
    dtype = np.dtype(dtype)
    if y.dtype == dtype:
        return y
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return np.clip(np.rint(y), info.min, info.max).astype(dtype)
    return y.astype(dtype)


def _fresh(y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """``y``, copied if it is a view of the input ``x`` (outputs never alias inputs)."""
    return y.copy() if np.may_share_memory(y, x) else y


def _scalar(t: np.ndarray | None, default: Any) -> Any:
    if t is None or np.size(t) == 0:
        return default
    return np.asarray(t).reshape(-1)[0].item()


def _norm_axis(axis: int, rank: int) -> int:
    return axis + rank if axis < 0 else axis


_STASH_DTYPES = {1: np.float32, 10: np.float16, 11: np.float64}


def _stash_dtype(attrs: dict[str, Any]) -> np.dtype:
    stash = int(attrs.get("stash_type", 1))
    if stash not in _STASH_DTYPES:
        raise NotImplementedError(f"stash_type={stash}")
    return np.dtype(_STASH_DTYPES[stash])


# ------------------------------------------------------------ window geometry (conv/pool)


def _same_pads(
    in_sp: list[int], dk: list[int], strides: list[int], upper: bool
) -> tuple[list[int], list[int]]:
    """SAME_* padding: output = ceil(in / stride); odd padding goes to the end for
    SAME_UPPER and to the beginning for SAME_LOWER.  Uses the dilated kernel extent
    and never goes negative (a kernel shorter than the stride pads nothing)."""
    begin, end = [], []
    for n, k, s in zip(in_sp, dk, strides, strict=True):
        out = -(-n // s)
        total = max(0, (out - 1) * s + k - n)
        b = total // 2 if upper else total - total // 2
        begin.append(b)
        end.append(total - b)
    return begin, end


def _window_pads(
    attrs: dict[str, Any], in_sp: list[int], dk: list[int], strides: list[int]
) -> tuple[list[int], list[int]]:
    """Begin/end padding of a sliding-window op from ``auto_pad`` / ``pads``."""
    nd = len(in_sp)
    auto_pad = _str(attrs.get("auto_pad", "NOTSET"))
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        return _same_pads(in_sp, dk, strides, auto_pad == "SAME_UPPER")
    if auto_pad == "VALID":
        return [0] * nd, [0] * nd
    pads = [int(p) for p in attrs.get("pads", [0] * (2 * nd))]
    return pads[:nd], pads[nd:]


def _window_view(
    xp: np.ndarray, out_sp: list[int], k: list[int], strides: list[int], dil: list[int]
) -> np.ndarray:
    """Read-only (N, C, *out, *k) view of the windows of the padded input ``xp``."""
    st = xp.strides
    nd = len(k)
    shape = (*xp.shape[:2], *out_sp, *k)
    strides_ = (
        *st[:2],
        *(st[2 + i] * strides[i] for i in range(nd)),
        *(st[2 + i] * dil[i] for i in range(nd)),
    )
    return as_strided(xp, shape=shape, strides=strides_, writeable=False)


def _tap_slices(
    tap: tuple[int, ...], out_sp: list[int], strides: list[int], dil: list[int]
) -> tuple[slice, ...]:
    """Index selecting, for every output position, the input element under kernel
    tap ``tap`` (in padded coordinates)."""
    return (slice(None), slice(None)) + tuple(
        slice(t * d, t * d + (o - 1) * s + 1, s)
        for t, o, s, d in zip(tap, out_sp, strides, dil, strict=True)
    )


def _pad_spatial(x: np.ndarray, begin: list[int], end: list[int], value: Any) -> np.ndarray:
    """Constant-pad the spatial dims (a fresh contiguous array; np.pad is ~2x slower)."""
    if not any(begin) and not any(end):
        return x
    shape = (*x.shape[:2], *(n + b + e for n, b, e in zip(x.shape[2:], begin, end, strict=True)))
    y = np.zeros(shape, dtype=x.dtype) if value == 0 else np.full(shape, value, dtype=x.dtype)
    y[
        (
            slice(None),
            slice(None),
            *(slice(b, b + n) for b, n in zip(begin, x.shape[2:], strict=True)),
        )
    ] = x
    return y


# ------------------------------------------------------------------------- convolution

# Max elements of one im2col buffer (64 MiB of float32).
_IM2COL_BUDGET = 1 << 24


def _grouped_gemm(w: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """(G, M, K) x (N, G, K, P) -> (N, G, M, P), one 2-D BLAS GEMM per image and group.

    numpy's broadcasting matmul over these stacks runs several times slower than
    plain 2-D products on the same data.
    """
    n, g = cols.shape[:2]
    out = np.empty((n, g, w.shape[1], cols.shape[3]), dtype=np.result_type(w, cols))
    for i in range(n):
        for j in range(g):
            parallel.matmul_into(w[j], cols[i, j], out[i, j])
    return out


def _conv_geometry(in_sp: list[int], w: np.ndarray, attrs: dict) -> tuple:
    """(kernel, strides, dilations, begin pads, end pads, output size) of a Conv."""
    nd = len(in_sp)
    k = list(w.shape[2:])
    strides = [int(s) for s in attrs.get("strides", [1] * nd)]
    dil = [int(d) for d in attrs.get("dilations", [1] * nd)]
    dk = [(k[i] - 1) * dil[i] + 1 for i in range(nd)]
    begin, end = _window_pads(attrs, in_sp, dk, strides)
    out_sp = [(in_sp[i] + begin[i] + end[i] - dk[i]) // strides[i] + 1 for i in range(nd)]
    return k, strides, dil, begin, end, out_sp


# Packed weights of constant arrays, by id(array): (a weak reference to it, its panels).
_PACKED: dict[int, tuple[weakref.ref, np.ndarray]] = {}

# Conv2dPlan's geometry of a constant weight, by (id(weight), input shape and type,
# id(attributes), and the settings it depends on): (a weak reference to the weight,
# (the attributes as they were, the geometry)).  The interpreter plans every convolution again
# each run (its buffers are new), and working the geometry out was ~40% of that.
_GEOMETRY: dict[tuple, tuple[weakref.ref, tuple[dict, dict]]] = {}


def _keep_while(owner: np.ndarray, cache: dict, key: Any, value: Any) -> None:
    """``cache[key] = (a weak reference to owner, value)``, dropped with owner (a constant
    array, whose id stays its own while it lives)."""
    cache[key] = (weakref.ref(owner), value)
    weakref.finalize(owner, cache.pop, key, None)


def _same_attrs(a: dict, b: dict) -> bool:
    try:
        return bool(a == b)
    except ValueError:  # array values: not compared, not the same
        return False


def _conv2d_geometry(x: np.ndarray, w: np.ndarray, attrs: dict) -> dict:
    """What Conv2dPlan derives from the shapes and attributes alone (no arrays kept);
    ValueError for what it does not cover."""
    key = (
        id(w),
        x.shape,
        x.dtype.str,
        id(attrs),
        native.conv2d_enabled(),
        parallel.WORKERS,
        parallel.MIN_FLOPS,
    )
    hit = _GEOMETRY.get(key)
    if hit is not None and hit[0]() is w and _same_attrs(hit[1][0], attrs):
        return hit[1][1]
    if (
        x.ndim != 4
        or x.dtype not in (np.float32, np.float64)
        or w.dtype != x.dtype
        or int(attrs.get("group", 1)) != 1
        or w.shape[1] != x.shape[1]
    ):
        raise ValueError("not an ungrouped 2-D float convolution")
    if 0 in x.shape[:2] or w.shape[0] == 0:
        raise ValueError("no images, input channels or output channels")
    k, strides, dil, begin, end, (oh, ow) = _conv_geometry(list(x.shape[2:]), w, attrs)
    if oh <= 0 or ow <= 0:
        raise ValueError("empty output")
    n, c = x.shape[:2]
    m = w.shape[0]
    shape = (n, m, oh, ow)
    # The output axis the chunks split: images, else channels or rows (see Conv2dPlan).
    if n > 1:
        axis = 0
    elif oh * ow < 32 * parallel.WORKERS and m >= 2 * parallel.WORKERS:
        axis = 1
    else:
        axis = 2
    flops = 2.0 * n * m * oh * ow * c * k[0] * k[1]
    geometry = {
        "dtype": x.dtype,
        "shape": shape,
        "axis": axis,
        "parts": shape[axis] if flops >= parallel.MIN_FLOPS else 0,
        # tuples: every plan of the weight shares them
        "k": tuple(k),
        "strides": tuple(strides),
        "dil": tuple(dil),
        "begin": tuple(begin),
        "end": tuple(end),
        "pointwise": k == [1, 1] and not any(begin) and not any(end),
        # the compiled product takes it (Conv2dPlan._direct_input gives its input)
        "direct": native.conv2d_enabled()
        and x.dtype == np.float32
        and strides[1] == strides[0]
        and strides[0] <= 4
        and min(begin + end) >= 0,
    }
    if not w.flags.writeable:
        _keep_while(w, _GEOMETRY, key, (dict(attrs), geometry))
    return geometry


class Conv2dPlan:
    """An ungrouped 2-D float convolution (input and weight of one float type) as im2col
    and GEMM, computed in ``parts`` chunks along ``axis``: the output rows of the one
    image (each chunk copies only its own im2col columns), its output channels when the
    image is small, or the images of a batch.

    Tiny images split by channels because a row chunk of a 7x7 output is a GEMM only
    21-28 columns wide: on ResNet-50's layer-4 shapes both cores reached 36-49 GFLOP/s
    each split by rows, and 72-119 GFLOP/s together split by channels.  Each channel
    chunk reads the whole im2col matrix, built once before the split.  Layer 3 (14x14)
    gains too, but stays split by rows: the channel split rounds some of onnx's
    light_squeezenet (13x13) logits, which reach 9.5e9 and go through Softmax, one ulp
    away from its shipped output, and the row split matches it.

    Float32 convolutions with equal strides (and no negative pads) run the compiled
    product instead (``native.conv2d``: an implicit GEMM over the zero-padded input, no
    im2col matrix, the weights packed once per constant array), in the same chunks, and
    can take the bias, residual Add and activation that follow into its epilogue
    (``fuse_tail``).  It sums in its own order, so float32 results differ from the numpy
    path's by rounding.  Its chunks are jobs (``jobs``) that a split hands to the
    extension's worker threads (``native.run_parts``) rather than to Python threads.

    The interpreter's fused regions run the same plan as this kernel, so a fused
    convolution rounds exactly like the unfused one (see ``parallel.MatmulPlan``).
    Raises ValueError for what it does not cover."""

    def __init__(self, x: np.ndarray, w: np.ndarray, b: np.ndarray | None, attrs: dict):
        if b is not None and b.dtype != x.dtype:
            raise ValueError("not an ungrouped 2-D float convolution")
        self.__dict__.update(_conv2d_geometry(x, w, attrs))
        n, m, oh, ow = self.shape
        self.w2 = w.reshape(m, -1)
        self.bias = None if b is None else b.reshape(m, 1)
        self.padded = self._direct_input(x) if self.direct else None
        if self.padded is not None:
            # (bias, residual, activation, alpha) of the compiled product's epilogue
            bias = None if b is None else np.ascontiguousarray(b.reshape(m))
            self.tail: tuple = (bias, None, None, 0.0)
            self.w_packed = self._packed(w)
            if self.axis == 1 and self.padded is not x:
                native.pad(x[0], self.padded[0], tuple(self.begin), (0, self.padded.shape[2]))
            return
        strides = self.strides
        if self.pointwise:
            self.x = x[:, :, : oh * strides[0] : strides[0], : ow * strides[1] : strides[1]]
        else:
            self.x = x
        if self.axis == 1:
            self.cols = self._im2col(0, 0, oh)

    def _direct_input(self, x: np.ndarray) -> np.ndarray:
        """The (N, C, Hp, Wp) zero-padded input the compiled product reads (x itself for
        an unpadded stride-1 1x1 convolution).  One spare row lets stride-2 loads read one
        float past the last window; a buffer is filled chunk by chunk, each chunk padding
        the rows its windows read."""
        if not x.flags.c_contiguous:  # a strided view: the copies read rows of floats
            x = np.ascontiguousarray(x)
        self.x = x
        if self.pointwise and self.strides[0] == 1:
            return x
        n, c, h, w = x.shape
        end = self.end
        rows, cols = h + self.begin[0] + end[0] + 1, w + self.begin[1] + end[1]
        return np.empty((n, c, rows, cols), np.float32)

    def _packed(self, w: np.ndarray) -> np.ndarray:
        """The weights as the compiled product reads them, packed once per constant
        weight array (kept while the array lives; a run-time weight is packed each run)."""
        key = id(w)
        hit = _PACKED.get(key)
        if hit is not None and hit[0]() is w:
            return hit[1]
        packed = native.pack_weights(self.w2)
        if not w.flags.writeable:  # a constant, or a caller's array viewed read-only
            _keep_while(w, _PACKED, key, packed)
        return packed

    def fuse_tail(
        self,
        bias: np.ndarray | None,
        residual: np.ndarray | None,
        activation: str | None,
        alpha: float,
    ) -> bool:
        """Apply act((y + bias) + residual) in the product's epilogue (bias (M,) float32,
        residual shaped like the output), where the compiled product runs and takes them;
        False, and the plan unchanged, otherwise."""
        if self.padded is None:
            return False
        if bias is not None and (bias.dtype != np.float32 or bias.size != self.shape[1]):
            return False
        if residual is not None and (
            residual.shape != self.shape
            or residual.dtype != np.float32
            or not residual.flags.c_contiguous
        ):
            return False
        if not native.takes_activation(activation, alpha):
            return False
        flat = None if bias is None else np.ascontiguousarray(bias.reshape(-1))
        self.tail = (flat, residual, activation, alpha)
        return True

    def jobs(self, out: np.ndarray, lo: int, hi: int) -> list[tuple]:
        """Chunk [lo, hi) as the compiled product's jobs (``native.run_parts``): for each
        image, padding what it reads, then the product."""
        n, m, oh, _ = self.shape
        images, rows, channels = range(n), (0, oh), (0, m)
        if self.axis == 0:
            images = range(lo, hi)
        elif self.axis == 1:
            channels = (lo, hi)
        else:
            rows = (lo, hi)
        bias, residual, activation, alpha = self.tail
        (kh, kw), (dh, dw), stride = self.k, self.dil, self.strides[0]
        if not native.conv2d_enabled():  # conv2d_enabled() held when the plan was made
            raise RuntimeError("the compiled convolution declined its own plan")
        # The arrays are the plan's own or checked by it (fuse_tail): the jobs are built
        # without native.conv2d's checks (the extension checks them again).
        act = (native.TAIL_ACTIVATIONS[activation], float(alpha))
        jobs = []
        for image in images:
            if self.padded is not self.x and self.axis != 1:
                # The rows this chunk's windows read; neighbouring chunks both write the
                # rows they share, with the same values.
                reach = (rows[0] * stride, (rows[1] - 1) * stride + (kh - 1) * dh + 1)
                jobs.append(
                    native.pad_job(self.x[image], self.padded[image], tuple(self.begin), reach)
                )
            product = (self.padded[image], self.w_packed, out[image], (kh, kw), (dh, dw))
            res = None if residual is None else residual[image]
            jobs.append((native.CONV_JOB, (*product, stride, rows, channels, bias, res, *act)))
        return jobs

    def compiled(self) -> bool:
        """True where the chunks are the compiled product's jobs (``jobs``)."""
        return self.padded is not None

    def split_jobs(self, out: np.ndarray) -> list[list[tuple]]:
        """The whole result's jobs, one list per chunk ``parallel.run_chunks`` would run."""
        bounds = parallel.chunk_bounds(self.shape[self.axis]) if self.parts else None
        return [self.jobs(out, lo, hi) for lo, hi in bounds or [(0, self.shape[self.axis])]]

    def _im2col(self, image: int, h0: int, h1: int) -> np.ndarray:
        """The (C*kh*kw, rows*ow) GEMM operand of output rows [h0, h1) of one image."""
        if self.pointwise:
            part = self.x[image, :, h0:h1]  # (C, rows, ow): a strided view, copied if need be
            return part.reshape(part.shape[0], -1)
        # Each chunk zero-pads only the input rows its windows read (no whole padded
        # copy before the split), then copies its windows into GEMM order.
        x = self.x[image]
        (kh, kw), (sh, sw), (dh, dw) = self.k, self.strides, self.dil
        ow = self.shape[3]
        cols = native.im2col(x, (kh, kw), (sh, sw), (dh, dw), tuple(self.begin), (h0, h1), ow)
        if cols is not None:  # the same copy in one compiled pass
            return cols
        top = h0 * sh - self.begin[0]
        rows_in = (h1 - h0 - 1) * sh + (kh - 1) * dh + 1
        cols_in = (ow - 1) * sw + (kw - 1) * dw + 1
        left = -self.begin[1]
        if top >= 0 and left == 0 and top + rows_in <= x.shape[1] and cols_in <= x.shape[2]:
            slab = x[:, top : top + rows_in]
        else:
            slab = np.zeros((x.shape[0], rows_in, cols_in), dtype=self.dtype)
            r0, r1 = max(top, 0), min(top + rows_in, x.shape[1])
            c0, c1 = max(left, 0), min(left + cols_in, x.shape[2])
            if r0 < r1 and c0 < c1:
                slab[:, r0 - top : r1 - top, c0 - left : c1 - left] = x[:, r0:r1, c0:c1]
        st = slab.strides
        win = as_strided(
            slab,
            shape=(slab.shape[0], kh, kw, h1 - h0, ow),
            strides=(st[0], st[1] * dh, st[2] * dw, st[1] * sh, st[2] * sw),
            writeable=False,
        )
        return np.ascontiguousarray(win).reshape(self.w2.shape[1], -1)

    def _rows(self, image: int, h0: int, h1: int, out: np.ndarray) -> None:
        m, oh, ow = self.shape[1:]
        cols = self._im2col(image, h0, h1)
        dest = out[image].reshape(m, oh * ow)[:, h0 * ow : h1 * ow]
        np.matmul(self.w2, cols, out=dest)
        if self.bias is not None:
            dest += self.bias

    def chunk(self, out: np.ndarray, lo: int, hi: int) -> None:
        """Chunk [lo, hi) along ``axis`` into ``out`` (C-contiguous, ``shape``)."""
        if self.padded is not None:
            native.run_parts([self.jobs(out, lo, hi)])
        elif self.axis == 1:
            dest = out[0].reshape(self.shape[1], -1)[lo:hi]
            np.matmul(self.w2[lo:hi], self.cols, out=dest)
            if self.bias is not None:
                dest += self.bias[lo:hi]
        elif self.axis == 2:
            for image in range(self.shape[0]):
                self._rows(image, lo, hi, out)
        else:
            for image in range(lo, hi):
                self._rows(image, 0, self.shape[2], out)

    def into(self, out: np.ndarray) -> None:
        """The whole result into ``out``, in ``parts`` chunks side by side (or one)."""
        if self.compiled():
            native.run_parts(self.split_jobs(out))
            return
        with parallel.serial_blas():
            if self.parts:
                parallel.run_chunks(lambda lo, hi: self.chunk(out, lo, hi), self.parts)
            else:
                self.chunk(out, 0, self.shape[self.axis])

    def run(self) -> np.ndarray:
        out = np.empty(self.shape, dtype=self.dtype)
        self.into(out)
        return out


@kernel("Conv")
def conv(inputs, attrs, n_out):
    x, w, b = inputs[0], inputs[1], _opt(inputs, 2)
    try:
        plan = Conv2dPlan(x, w, b, attrs)
    except ValueError:
        plan = None
    if plan is not None:
        return [plan.run()]
    out_dtype = x.dtype
    ct = _compute_dtype(x.dtype)
    x = x.astype(ct, copy=False)
    w = w.astype(ct, copy=False)
    nd = x.ndim - 2
    k, strides, dil, begin, end, out_sp = _conv_geometry(list(x.shape[2:]), w, attrs)
    n, c = x.shape[:2]
    m = w.shape[0]
    g = int(attrs.get("group", 1))
    cg, mg = c // g, m // g
    p = math.prod(out_sp)

    if all(kk == 1 for kk in k) and not any(begin) and not any(end):
        # 1x1 kernel: a plain (batched over N and groups) matmul on the subsampled input.
        sub = (slice(None, o * s, s) for o, s in zip(out_sp, strides, strict=True))
        xs = x[(slice(None), slice(None), *sub)]
        y = _grouped_gemm(w.reshape(g, mg, cg), xs.reshape(n, g, cg, p))
    else:
        xp = np.ascontiguousarray(_pad_spatial(x, begin, end, 0))
        win = _window_view(xp, out_sp, k, strides, dil)  # (N, C, *out, *k)
        if cg == 1 and g > 1:
            # Depthwise: a multiply-add per kernel tap beats a batch of 1-row GEMMs.
            wr = w.reshape(g, mg, -1)
            y = np.zeros((n, g, mg, *out_sp), dtype=ct)
            bshape = (g, mg) + (1,) * nd
            for t, tap in enumerate(np.ndindex(*k)):
                xt = win[(Ellipsis, *tap)][:, :, None]  # (N, G, 1, *out)
                y += xt * wr[:, :, t].reshape(bshape)
        else:
            # im2col: one contiguous (Cg*K, P) matrix per image and group, then a
            # single BLAS GEMM per (image, group).  Big batches go in chunks to bound
            # the K-fold blow-up of the im2col buffer.
            kk = math.prod(k)
            wr = w.reshape(g, mg, cg * kk)
            win = win.reshape(n, g, cg, *out_sp, *k)
            perm = (0, 1, 2, *range(3 + nd, 3 + 2 * nd), *range(3, 3 + nd))
            step = max(1, _IM2COL_BUDGET // max(1, c * kk * p))
            parts = []
            for i in range(0, n, step):
                chunk = win[i : i + step]
                cols = np.ascontiguousarray(chunk.transpose(perm))
                parts.append(_grouped_gemm(wr, cols.reshape(len(chunk), g, cg * kk, p)))
            y = parts[0] if len(parts) == 1 else np.concatenate(parts)
    y = y.reshape(n, m, *out_sp)
    if b is not None:
        y += b.astype(ct, copy=False).reshape((1, m) + (1,) * nd)
    return [_to_dtype(y, out_dtype)]


def conv_transpose_geometry(attrs, in_sp: list[int], k: list[int]):
    """(strides, dilations, begin pads, end pads, output_padding, output size) of a
    ConvTranspose, shared by the kernel and the NeuronCore lowering."""
    nd = len(in_sp)
    strides = [int(s) for s in attrs.get("strides", [1] * nd)]
    dil = [int(d) for d in attrs.get("dilations", [1] * nd)]
    out_pad = [int(v) for v in attrs.get("output_padding", [0] * nd)]
    dk = [(k[i] - 1) * dil[i] + 1 for i in range(nd)]
    natural = [strides[i] * (in_sp[i] - 1) + out_pad[i] + dk[i] for i in range(nd)]
    auto_pad = _str(attrs.get("auto_pad", "NOTSET"))
    target = attrs.get("output_shape")
    if target is None and auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        target = [in_sp[i] * strides[i] for i in range(nd)]
    if target is not None:
        # Pads are derived from the requested size (explicit pads are ignored).
        # Floor division keeps a negative total (output larger than the natural
        # size) growing the end first, matching the spec formula and its tests.
        target = [int(v) for v in target][-nd:]
        begin, end = [], []
        for i in range(nd):
            total = natural[i] - target[i]
            bb = total // 2 if auto_pad == "SAME_UPPER" else total - total // 2
            begin.append(bb)
            end.append(total - bb)
    elif auto_pad == "VALID":
        begin, end = [0] * nd, [0] * nd
    else:
        pads = [int(p) for p in attrs.get("pads", [0] * (2 * nd))]
        begin, end = pads[:nd], pads[nd:]
    out_sp = [natural[i] - begin[i] - end[i] for i in range(nd)]
    return strides, dil, begin, end, out_pad, out_sp


@kernel("ConvTranspose")
def conv_transpose(inputs, attrs, n_out):
    x, w, b = inputs[0], inputs[1], _opt(inputs, 2)
    out_dtype = x.dtype
    ct = _compute_dtype(x.dtype)
    x = x.astype(ct, copy=False)
    w = w.astype(ct, copy=False)
    nd = x.ndim - 2
    in_sp = list(x.shape[2:])
    k = list(w.shape[2:])
    strides, dil, begin, end, _, out_sp = conv_transpose_geometry(attrs, in_sp, k)
    dk = [(k[i] - 1) * dil[i] + 1 for i in range(nd)]

    n, c = x.shape[:2]
    g = int(attrs.get("group", 1))
    cg, mg = c // g, w.shape[1]
    m = mg * g
    kk = math.prod(k)
    p = math.prod(in_sp)
    # GEMM: every input pixel's contribution to every (out channel, kernel tap).
    wt = w.reshape(g, cg, mg * kk).transpose(0, 2, 1)
    cols = np.matmul(wt, x.reshape(n, g, cg, p)).reshape(n, m, *k, *in_sp)
    # col2im: scatter-add each tap's contribution at stride steps (one add per tap).
    full_sp = [strides[i] * (in_sp[i] - 1) + dk[i] for i in range(nd)]
    full = np.zeros((n, m, *full_sp), dtype=ct)
    for tap in np.ndindex(*k):
        full[_tap_slices(tap, in_sp, strides, dil)] += cols[(slice(None), slice(None), *tap)]
    # Output index o reads full index o + begin; outside the full range it is zero.
    y = np.zeros((n, m, *out_sp), dtype=ct)
    src, dst = [slice(None)] * 2, [slice(None)] * 2
    for i in range(nd):
        lo = max(begin[i], 0)
        hi = min(full_sp[i], begin[i] + out_sp[i])
        hi = max(hi, lo)
        src.append(slice(lo, hi))
        dst.append(slice(lo - begin[i], hi - begin[i]))
    y[tuple(dst)] = full[tuple(src)]
    if b is not None:
        y += b.astype(ct, copy=False).reshape((1, m) + (1,) * nd)
    return [_to_dtype(y, out_dtype)]


# ---------------------------------------------------------------------- matrix products


def _blas_matrices(x: np.ndarray) -> bool:
    """Whether numpy's matmul hands each matrix of ``x`` to BLAS as it is: one of the
    last two axes unit-strided, the other a row or column stride past its extent.
    Attention's transposed Q and K^T views are (row- and column-major): copying them
    first cost 1.35 ms per BERT-base layer against 0.41 ms for the strided product."""
    if x.ndim < 2 or x.size == 0:
        return x.flags.c_contiguous
    item = x.itemsize
    rows, cols = x.shape[-2:]
    s_row, s_col = x.strides[-2:]
    if s_col == item and (rows == 1 or s_row >= cols * item):
        return True
    return s_row == item and (cols == 1 or s_col >= rows * item)


def matmul_plan(x: np.ndarray, w: np.ndarray) -> tuple[parallel.MatmulPlan, tuple | None]:
    """The plan the MatMul kernel runs for ``x @ w`` (both at least 2-D, of one compute
    type), and the result's shape (None where the stacks broadcast: the plan then runs
    numpy's matmul whole).  The interpreter's fused regions run the same plan."""
    if w.ndim == 2:
        # One GEMM over all leading dims: numpy's stacked matmul loops per matrix.
        plan = parallel.MatmulPlan(x.reshape(-1, x.shape[-1]), w)
        return plan, (*x.shape[:-1], w.shape[-1])
    if not _blas_matrices(x):
        x = np.ascontiguousarray(x)  # numpy's matmul would take its slow non-BLAS loop
    if not _blas_matrices(w):
        w = np.ascontiguousarray(w)
    plan = parallel.MatmulPlan(x, w)
    return plan, plan.shape if plan.covered else None


@kernel("MatMul")
def matmul(inputs, attrs, n_out):
    a, b = inputs[0], inputs[1]
    ct = _exact_dtype(a.dtype)
    x, w = a.astype(ct, copy=False), b.astype(ct, copy=False)
    if x.ndim < 2 or w.ndim < 2:
        y = np.matmul(x, w)
    else:
        plan, shape = matmul_plan(x, w)
        y = plan.run()
        if shape is not None:
            y = y.reshape(shape)
    return [np.asarray(y).astype(a.dtype, copy=False)]


@kernel("Gemm")
def gemm(inputs, attrs, n_out):
    a, b, c = inputs[0], inputs[1], _opt(inputs, 2)
    dtype = a.dtype
    alpha = float(attrs.get("alpha", 1.0))
    beta = float(attrs.get("beta", 1.0))
    if int(attrs.get("transA", 0)):
        a = a.T
    if int(attrs.get("transB", 0)):
        b = b.T
    ct = _exact_dtype(dtype)
    y = parallel.matmul(a.astype(ct, copy=False), b.astype(ct, copy=False))
    if alpha != 1.0:
        y = y * alpha
    if c is not None and beta != 0.0:
        c = c.astype(ct, copy=False)
        y = y + (c if beta == 1.0 else c * beta)
    return [np.asarray(y).astype(dtype, copy=False)]


def _zero_point(zp: np.ndarray | None, ndim: int, per_row: bool) -> np.ndarray | int:
    """Broadcastable zero point: a 1-D per-row (A) / per-column (B) vector is
    reshaped to (M, 1) / (1, N); N-D zero points already have the right rank."""
    if zp is None:
        return 0
    zp = zp.astype(np.float64)
    if zp.ndim == 1 and zp.size > 1 and ndim >= 2:
        return zp.reshape(-1, 1) if per_row else zp.reshape(1, -1)
    return zp


def _int_matmul(a, b, a_zp, b_zp) -> np.ndarray:
    """Exact integer matmul through float64 BLAS: |products| <= 2**16, so sums are
    exact far beyond any realistic K."""
    a64 = a.astype(np.float64) - _zero_point(a_zp, a.ndim, per_row=True)
    b64 = b.astype(np.float64) - _zero_point(b_zp, b.ndim, per_row=False)
    return np.asarray(np.matmul(a64, b64))


@kernel("MatMulInteger")
def matmul_integer(inputs, attrs, n_out):
    y = _int_matmul(inputs[0], inputs[1], _opt(inputs, 2), _opt(inputs, 3))
    return [y.astype(np.int32)]


@kernel("QLinearMatMul")
def qlinear_matmul(inputs, attrs, n_out):
    a, a_s, a_zp, b, b_s, b_zp, y_s, y_zp = (list(inputs) + [None] * 8)[:8]
    out_dtype = np.dtype(y_zp.dtype if y_zp is not None else a.dtype)
    if out_dtype.kind not in "iu" or a.dtype.kind not in "iu" or b.dtype.kind not in "iu":
        raise NotImplementedError("QLinearMatMul only for 8-bit integer types")
    acc = _int_matmul(a, b, a_zp, b_zp)
    # Per-row / per-column scales broadcast like the zero points.
    a_scale = _zero_point(a_s, a.ndim, per_row=True)
    b_scale = _zero_point(b_s, b.ndim, per_row=False)
    scale = (np.asarray(a_scale, np.float32) * np.asarray(b_scale, np.float32)) / np.asarray(
        y_s, np.float32
    )
    y = acc * scale.astype(np.float64)
    if y_zp is not None:
        y = y + y_zp.astype(np.float64)
    return [_to_dtype(y, out_dtype)]


# ---------------------------------------------------------------------- normalizations


def _channel_shape(ndim: int, c: int) -> tuple[int, ...]:
    return (1, c) + (1,) * (ndim - 2)


@kernel("BatchNormalization")
def batch_normalization(inputs, attrs, n_out):
    x, scale, bias, mean, var = inputs[:5]
    ct = _compute_dtype(x.dtype)
    eps = float(attrs.get("epsilon", 1e-5))
    shape = _channel_shape(x.ndim, x.shape[1])
    xc = x.astype(ct, copy=False)
    if int(attrs.get("training_mode", 0)):
        # Normalize with the batch statistics (biased variance); the optional outputs
        # are the momentum-updated running statistics.
        axes = (0, *range(2, x.ndim))
        batch_mean = xc.mean(axis=axes)
        y = xc - batch_mean.reshape(shape)
        batch_var = np.square(y).mean(axis=axes)
        y *= (scale.astype(ct) / np.sqrt(batch_var + ct.type(eps))).reshape(shape)
        y += bias.astype(ct).reshape(shape)
        momentum = float(attrs.get("momentum", 0.9))
        mean = mean.astype(ct) * momentum + batch_mean * (1 - momentum)
        var = var.astype(ct) * momentum + batch_var * (1 - momentum)
    else:
        # Folded into one scale and shift per channel (two passes over x), like
        # onnxruntime; the folding runs in float64 so the shift adds no rounding.
        k = scale.astype(np.float64) / np.sqrt(var.astype(np.float64) + eps)
        shift = bias.astype(np.float64) - mean.astype(np.float64) * k
        y = np.multiply(xc, k.astype(ct).reshape(shape))
        y += shift.astype(ct).reshape(shape)
    # (np.array copies: the statistics outputs never alias the inputs)
    outs = [_to_dtype(y, x.dtype), np.array(mean, dtype=x.dtype), np.array(var, dtype=x.dtype)]
    return outs[:n_out]


def _normalize(x: np.ndarray, start: int, eps: float, dtype, in_place: bool = False) -> tuple:
    """(x - mean) / sqrt(var + eps) over the trailing axes ``start:``, in ``dtype``.

    Works in place on one fresh copy (on ``x`` itself if ``in_place``: the caller has
    checked that x is C-contiguous and of ``dtype``), rows x cols; mean and variance
    use numpy's pairwise sums (two-pass variance).  Returns y and keepdims-shaped mean,
    1/std."""
    rows = math.prod(x.shape[:start])
    xu = x.reshape(rows, -1) if in_place else np.array(x, dtype=dtype, order="C").reshape(rows, -1)
    mean = xu.mean(axis=1, keepdims=True)
    xu -= mean
    var = np.square(xu).mean(axis=1, keepdims=True)
    inv = 1.0 / np.sqrt(var + np.asarray(eps, dtype))
    xu *= inv
    keep = x.shape[:start] + (1,) * (x.ndim - start)
    return xu.reshape(x.shape), mean.reshape(keep), inv.reshape(keep)


@kernel("InstanceNormalization")
def instance_normalization(inputs, attrs, n_out):
    x, scale, bias = inputs[:3]
    ct = _compute_dtype(x.dtype)
    eps = float(attrs.get("epsilon", 1e-5))
    y, _, _ = _normalize(x, 2, eps, ct)
    shape = _channel_shape(x.ndim, x.shape[1])
    y *= scale.astype(ct).reshape(shape)
    y += bias.astype(ct).reshape(shape)
    return [_to_dtype(y, x.dtype)]


def _layer_norm(inputs: list, attrs: dict, in_place: bool = False) -> tuple:
    x, scale, bias = inputs[0], inputs[1], _opt(inputs, 2)
    axis = _norm_axis(int(attrs.get("axis", -1)), x.ndim)
    eps = float(attrs.get("epsilon", 1e-5))
    u = _stash_dtype(attrs)
    norm, mean, inv = _normalize(x, axis, eps, u, in_place)
    # Stage two (scale and shift) runs in the input type, as in the spec's function body.
    ct = _compute_dtype(x.dtype)
    y = norm.astype(ct, copy=False)
    y *= scale.astype(ct, copy=False)
    if bias is not None:
        y += bias.astype(ct, copy=False)
    return y, mean, inv


@kernel("LayerNormalization")
def layer_normalization(inputs, attrs, n_out):
    y, mean, inv = _layer_norm(inputs, attrs)
    return [_to_dtype(y, inputs[0].dtype), mean, inv][:n_out]


def layer_norm_in_place(inputs: list, attrs: dict) -> bool:
    """LayerNormalization's Y written over X (a buffer the caller owns), with the
    kernel's arithmetic: False, and X untouched, where that would not be exact (X not
    C-contiguous, or not of the type the statistics are computed in)."""
    x = inputs[0]
    if x.dtype not in _FLOAT_TYPES or not x.flags.c_contiguous or x.size == 0:
        return False
    if x.dtype != _stash_dtype(attrs):
        return False
    _layer_norm(inputs, attrs, in_place=True)
    return True


@kernel("GroupNormalization")
def group_normalization(inputs, attrs, n_out):
    x, scale, bias = inputs[:3]
    eps = float(attrs.get("epsilon", 1e-5))
    groups = int(attrs["num_groups"])
    u = _stash_dtype(attrs)
    n, c = x.shape[:2]
    norm, _, _ = _normalize(x.reshape(n, groups, -1), 2, eps, u)
    ct = _compute_dtype(x.dtype)
    y = norm.reshape(x.shape).astype(ct, copy=False)
    shape = _channel_shape(x.ndim, c)
    y *= scale.astype(ct).reshape(shape)
    y += bias.astype(ct).reshape(shape)
    return [_to_dtype(y, x.dtype)]


@kernel("LpNormalization")
def lp_normalization(inputs, attrs, n_out):
    x = inputs[0]
    ct = _compute_dtype(x.dtype)
    axis = int(attrs.get("axis", -1))
    p = int(attrs.get("p", 2))
    xc = x.astype(ct)
    if p == 1:
        norm = np.abs(xc).sum(axis=axis, keepdims=True)
    elif p == 2:
        norm = np.sqrt((xc * xc).sum(axis=axis, keepdims=True))
    else:
        raise NotImplementedError(f"LpNormalization p={p}")
    # A zero norm gives 0 (not NaN), like the reference and onnxruntime.
    y = np.divide(xc, norm, out=np.zeros_like(xc), where=norm != 0)
    return [_to_dtype(y, x.dtype)]


@kernel("LRN")
def lrn(inputs, attrs, n_out):
    x = inputs[0]
    ct = _compute_dtype(x.dtype)
    size = int(attrs["size"])
    alpha = float(attrs.get("alpha", 1e-4))
    beta = float(attrs.get("beta", 0.75))
    bias = float(attrs.get("bias", 1.0))
    xc = x.astype(ct)
    sq = xc * xc
    # Channel window [c - floor((size-1)/2), c + ceil((size-1)/2)], zero outside.
    lo = (size - 1) // 2
    hi = size - 1 - lo
    c = x.shape[1]
    sqp = np.pad(sq, [(0, 0), (lo, hi)] + [(0, 0)] * (x.ndim - 2))
    ssum = np.zeros_like(sq)
    for j in range(size):
        ssum += sqp[:, j : j + c]
    y = xc / (bias + (alpha / size) * ssum) ** beta
    return [_to_dtype(y, x.dtype)]


# ------------------------------------------------------------------------ softmax family


def _softmax_over(e: np.ndarray, axis: int) -> None:
    e -= e.max(axis=axis, keepdims=True)
    np.exp(e, out=e)
    e /= e.sum(axis=axis, keepdims=True)


@kernel("Softmax")
def softmax(inputs, attrs, n_out):
    x = inputs[0]
    e = np.array(x, dtype=_compute_dtype(x.dtype))  # fresh copy, worked in place
    _softmax_over(e, int(attrs.get("axis", -1)))
    return [_to_dtype(e, x.dtype)]


def softmax_in_place(inputs: list, attrs: dict) -> bool:
    """Softmax written over its input (a buffer the caller owns), with the kernel's
    arithmetic: False, and the input untouched, unless it is float32/float64 and C
    ordered from the softmax axis on (so each reduction sums in the same order as
    over the kernel's contiguous copy)."""
    x = inputs[0]
    if x.dtype not in _FLOAT_TYPES or x.size == 0:
        return False
    axis = int(attrs.get("axis", -1)) % x.ndim
    step = x.itemsize
    for dim in range(x.ndim - 1, axis - 1, -1):
        if x.shape[dim] != 1 and x.strides[dim] != step:
            return False
        step *= x.shape[dim]
    _softmax_over(x, axis)
    return True


@kernel("LogSoftmax")
def log_softmax(inputs, attrs, n_out):
    x = inputs[0]
    axis = int(attrs.get("axis", -1))
    z = np.array(x, dtype=_compute_dtype(x.dtype))  # fresh copy, worked in place
    z -= z.max(axis=axis, keepdims=True)
    z -= np.log(np.exp(z).sum(axis=axis, keepdims=True))
    return [_to_dtype(z, x.dtype)]


@kernel("Hardmax")
def hardmax(inputs, attrs, n_out):
    x = inputs[0]
    axis = int(attrs.get("axis", -1))
    y = np.zeros_like(x)
    if x.size:
        # argmax returns the first maximum, as the spec requires for ties.
        idx = np.argmax(x, axis=axis, keepdims=True)
        np.put_along_axis(y, idx, 1, axis=axis)
    return [y]


# ------------------------------------------------------------------------------ pooling


def _pool_geometry(attrs, in_sp):
    """Strides, dilations, pads, ceil-mode overflow and output size of a pool."""
    nd = len(in_sp)
    k = [int(v) for v in attrs["kernel_shape"]]
    strides = [int(s) for s in attrs.get("strides", [1] * nd)]
    dil = [int(d) for d in attrs.get("dilations", [1] * nd)]
    dk = [(k[i] - 1) * dil[i] + 1 for i in range(nd)]
    begin, end = _window_pads(attrs, in_sp, dk, strides)
    ceil_mode = int(attrs.get("ceil_mode", 0))
    out_sp = []
    for i in range(nd):
        span = in_sp[i] + begin[i] + end[i] - dk[i]
        if ceil_mode:
            o = -(-span // strides[i]) + 1
            # A window starting in the end padding is dropped.
            if (o - 1) * strides[i] >= in_sp[i] + begin[i]:
                o -= 1
        else:
            o = span // strides[i] + 1
        out_sp.append(max(o, 0))
    # Windows may run past the padded end in ceil mode: pad further, but those
    # positions are never counted.
    extra = [
        max(0, (out_sp[i] - 1) * strides[i] + dk[i] - (in_sp[i] + begin[i] + end[i]))
        for i in range(nd)
    ]
    return k, strides, dil, begin, end, extra, out_sp


def _window_counts(in_sp, k, strides, dil, begin, end, out_sp, include_pad):
    """Number of counted elements per output position, broadcastable to (1,1,*out)."""
    nd = len(in_sp)
    count = np.ones((1, 1) + (1,) * nd)
    for i in range(nd):
        pos = np.arange(out_sp[i])[:, None] * strides[i] + np.arange(k[i])[None, :] * dil[i]
        if include_pad:
            ok = pos < in_sp[i] + begin[i] + end[i]
        else:
            ok = (pos >= begin[i]) & (pos < begin[i] + in_sp[i])
        shape = [1] * (nd + 2)
        shape[2 + i] = out_sp[i]
        count = count * ok.sum(axis=1).reshape(shape)
    return count


def _window_reduce(xp, k, strides, dil, out_sp, ufunc):
    """Reduce every pooling window of ``xp`` with ``ufunc`` (np.add / np.maximum).

    Rectangular windows are separable: reducing one spatial dim at a time costs
    sum(k) array passes instead of prod(k).  Returns a fresh array."""
    y = xp
    for i in range(len(k)):
        sl = [slice(None)] * xp.ndim

        def tap(t, i=i, sl=sl):
            start = t * dil[i]
            sl[2 + i] = slice(start, start + (out_sp[i] - 1) * strides[i] + 1, strides[i])
            return tuple(sl)

        acc = y[tap(0)].copy()
        for t in range(1, k[i]):
            ufunc(acc, y[tap(t)], out=acc)
        y = acc
    return y if y is not xp else xp.copy()


@kernel("MaxPool")
def max_pool(inputs, attrs, n_out):
    x = inputs[0]
    in_sp = list(x.shape[2:])
    nd = len(in_sp)
    k, strides, dil, begin, end, extra, out_sp = _pool_geometry(attrs, in_sp)
    low = np.iinfo(x.dtype).min if x.dtype.kind in "iu" else -np.inf
    ends = [e + x_ for e, x_ in zip(end, extra, strict=True)]
    if n_out == 1 and nd == 2 and x.dtype == np.float32 and native.conv2d_enabled():
        return [_max_pool_compiled(x, k, strides, dil, begin, out_sp)]
    if n_out == 1 and x.size >= parallel.MIN_ELEMENTS and x.shape[1] >= parallel.WORKERS:
        # A serial step between two split convolutions (ResNet's stem): the channels
        # side by side, each chunk padding its own; the same maxima, bit for bit.
        y = np.empty((*x.shape[:2], *out_sp), dtype=x.dtype)

        def chunk(lo: int, hi: int) -> None:
            part = _pad_spatial(x[:, lo:hi], begin, ends, low)
            y[:, lo:hi] = _window_reduce(part, k, strides, dil, out_sp, np.maximum)

        parallel.run_chunks(chunk, x.shape[1])
        return [y]
    xp = _pad_spatial(x, begin, ends, low)
    if n_out == 1:
        return [_window_reduce(xp, k, strides, dil, out_sp, np.maximum)]
    taps = list(np.ndindex(*k))
    y = xp[_tap_slices(taps[0], out_sp, strides, dil)].copy()
    # Track the winning tap; strict '>' keeps the first maximum in window order.
    best = np.zeros(y.shape, dtype=np.int64)
    for t, tap in enumerate(taps[1:], 1):
        v = xp[_tap_slices(tap, out_sp, strides, dil)]
        better = v > y
        np.copyto(y, v, where=better)
        np.copyto(best, t, where=better)
    tap_coords = np.array(taps, dtype=np.int64).reshape(len(taps), nd)
    col_major = int(attrs.get("storage_order", 0)) == 1
    n, c = x.shape[:2]
    spatial = math.prod(in_sp)
    idx = (np.arange(n * c, dtype=np.int64) * spatial).reshape(n, c, *([1] * nd))
    for i in range(nd):
        shape = [1] * (nd + 2)
        shape[2 + i] = out_sp[i]
        start = (np.arange(out_sp[i], dtype=np.int64) * strides[i] - begin[i]).reshape(shape)
        coord = start + tap_coords[best, i] * dil[i]
        step = math.prod(in_sp[:i]) if col_major else math.prod(in_sp[i + 1 :])
        idx = idx + coord * step
    return [y, idx]


def _max_pool_compiled(x, k, strides, dil, begin, out_sp) -> np.ndarray:
    """The 2-D float32 max pool in the extension (``native.maxpool_job``): no padded copy,
    and large inputs by channels on its worker threads."""
    x = np.ascontiguousarray(x)
    n, c = x.shape[:2]
    y = np.empty((n, c, *out_sp), np.float32)
    split = x.size >= parallel.MIN_ELEMENTS
    bounds = parallel.chunk_bounds(c) if split else [(0, c)]
    window = (tuple(k), tuple(strides), tuple(dil), tuple(begin))
    native.run_parts(
        [[native.maxpool_job(x[i], y[i], *window, (lo, hi)) for i in range(n)] for lo, hi in bounds]
    )
    return y


@kernel("AveragePool")
def average_pool(inputs, attrs, n_out):
    x = inputs[0]
    in_sp = list(x.shape[2:])
    k, strides, dil, begin, end, extra, out_sp = _pool_geometry(attrs, in_sp)
    ct = _compute_dtype(x.dtype)
    xp = _pad_spatial(
        x.astype(ct, copy=False), begin, [e + x_ for e, x_ in zip(end, extra, strict=True)], 0
    )
    acc = _window_reduce(xp, k, strides, dil, out_sp, np.add)
    include = int(attrs.get("count_include_pad", 0)) == 1
    count = _window_counts(in_sp, k, strides, dil, begin, end, out_sp, include)
    with np.errstate(divide="ignore", invalid="ignore"):
        acc /= count.astype(ct)
    return [_to_dtype(acc, x.dtype)]


def _lp_power(x: np.ndarray, p: int) -> np.ndarray:
    return x * x if p == 2 else np.abs(x) ** p


def _lp_root(s: np.ndarray, p: int) -> np.ndarray:
    return np.sqrt(s) if p == 2 else s ** (1.0 / p)


@kernel("LpPool")
def lp_pool(inputs, attrs, n_out):
    x = inputs[0]
    p = int(attrs.get("p", 2))
    in_sp = list(x.shape[2:])
    k, strides, dil, begin, end, extra, out_sp = _pool_geometry(attrs, in_sp)
    ct = _compute_dtype(x.dtype)
    xpow = _lp_power(x.astype(ct, copy=False), p)
    xp = _pad_spatial(xpow, begin, [e + x_ for e, x_ in zip(end, extra, strict=True)], 0)
    acc = _window_reduce(xp, k, strides, dil, out_sp, np.add)
    return [_to_dtype(_lp_root(acc, p), x.dtype)]


@kernel("GlobalAveragePool")
def global_average_pool(inputs, attrs, n_out):
    x = inputs[0]
    xc = x.astype(_compute_dtype(x.dtype), copy=False)
    y = xc.mean(axis=tuple(range(2, x.ndim)), keepdims=True)
    return [_to_dtype(y, x.dtype)]


@kernel("GlobalMaxPool")
def global_max_pool(inputs, attrs, n_out):
    x = inputs[0]
    return [x.max(axis=tuple(range(2, x.ndim)), keepdims=True)]


@kernel("GlobalLpPool")
def global_lp_pool(inputs, attrs, n_out):
    x = inputs[0]
    p = int(attrs.get("p", 2))
    s = _lp_power(x.astype(_compute_dtype(x.dtype), copy=False), p).sum(
        axis=tuple(range(2, x.ndim)), keepdims=True
    )
    return [_to_dtype(_lp_root(s, p), x.dtype)]


# ------------------------------------------------------------------------------- Resize


def _resize_coords(
    mode: str, out_len: int, in_len: int, scale: float, length: float, roi: tuple | None
) -> np.ndarray:
    """Source coordinate of every output index along one axis.  ``length`` is the
    (possibly fractional) resized length: ``scale * in_len`` for scales input."""
    x = np.arange(out_len, dtype=np.float64)
    if mode == "half_pixel":
        return (x + 0.5) / scale - 0.5
    if mode == "half_pixel_symmetric":
        adjustment = out_len / length
        offset = in_len / 2 * (1 - adjustment)
        return offset + (x + 0.5) / scale - 0.5
    if mode == "pytorch_half_pixel":
        return (x + 0.5) / scale - 0.5 if length > 1 else np.zeros_like(x)
    if mode == "align_corners":
        return np.zeros_like(x) if length == 1 else x * (in_len - 1) / (length - 1)
    if mode == "asymmetric":
        return x / scale
    if mode == "tf_crop_and_resize":
        start, end = roi
        if length == 1:
            return np.full_like(x, (end - start) * (in_len - 1) / 2 + start * (in_len - 1))
        return x * (end - start) * (in_len - 1) / (length - 1) + start * (in_len - 1)
    raise ValueError(f"unknown coordinate_transformation_mode {mode!r}")


def _nearest_index(xo: np.ndarray, nearest_mode: str) -> np.ndarray:
    fl = np.floor(xo)
    frac = xo - fl
    if nearest_mode == "round_prefer_floor":
        return fl + (frac > 0.5)
    if nearest_mode == "round_prefer_ceil":
        return fl + (frac >= 0.5)
    if nearest_mode == "floor":
        return fl
    if nearest_mode == "ceil":
        return np.ceil(xo)
    raise ValueError(f"unknown nearest_mode {nearest_mode!r}")


def _cubic_weight(t: np.ndarray, a: float) -> np.ndarray:
    t = np.abs(t)
    near = ((a + 2) * t - (a + 3)) * t * t + 1
    far = ((a * t - 5 * a) * t + 8 * a) * t - 4 * a
    return np.where(t <= 1, near, np.where(t < 2, far, 0.0))


def _interp_taps(xo, in_len, mode, scale, antialias, a, exclude_outside):
    """Tap indices and weights (out, taps) for linear/cubic interpolation.

    With antialias the filter is stretched by 1/scale when downsampling (more taps);
    otherwise this is the plain 2-tap linear / 4-tap cubic kernel.  Taps outside the
    input reuse the edge value unless exclude_outside drops and renormalizes them.
    """
    s = min(scale, 1.0) if antialias else 1.0
    support = 1.0 if mode == "linear" else 2.0
    start = int(math.floor(-support / s)) + 1
    n_taps = 2 - 2 * start
    fl = np.floor(xo)
    # An integral coordinate counts as ratio 1 from the pixel on its left.
    ratio = np.where(xo == fl, 1.0, xo - fl)
    base = xo - ratio
    offs = np.arange(start, start + n_taps, dtype=np.float64)
    pos = base[:, None] + offs[None, :]
    t = (offs[None, :] - ratio[:, None]) * s
    if mode == "linear":
        w = np.clip(1.0 - np.abs(t), 0.0, 1.0)
    else:
        w = _cubic_weight(t, a)
    w = w / w.sum(axis=1, keepdims=True)
    if exclude_outside:
        w = np.where((pos < 0) | (pos > in_len - 1), 0.0, w)
        tot = w.sum(axis=1, keepdims=True)
        w = w / np.where(tot == 0, 1.0, tot)
    idx = np.clip(pos, 0, in_len - 1).astype(np.intp)
    return idx, w


@dataclass(frozen=True)
class ResizeAxis:
    """How Resize computes one axis: output ``j`` is ``sum_t x[idx[j, t]] * w[j, t]``
    (``w`` None: nearest, one tap), then ``fill`` where ``outside[j]``."""

    axis: int
    idx: np.ndarray
    w: np.ndarray | None
    outside: np.ndarray | None
    fill: float


def resize_plan(shape, attrs, roi, scales, sizes) -> list[ResizeAxis]:
    """The per-axis taps of a Resize of a tensor of ``shape`` (the axes it changes),
    shared by the kernel and the NeuronCore lowering."""
    if scales is not None and scales.size == 0:
        scales = None
    if sizes is not None and sizes.size == 0:
        sizes = None
    mode = _str(attrs.get("mode", "nearest"))
    ctm = _str(attrs.get("coordinate_transformation_mode", "half_pixel"))
    nearest_mode = _str(attrs.get("nearest_mode", "round_prefer_floor"))
    a = float(attrs.get("cubic_coeff_a", -0.75))
    exclude_outside = int(attrs.get("exclude_outside", 0))
    extrapolation = float(attrs.get("extrapolation_value", 0.0))
    antialias = int(attrs.get("antialias", 0)) and mode != "nearest"
    policy = _str(attrs.get("keep_aspect_ratio_policy", "stretch"))
    r = len(shape)
    axes = [_norm_axis(int(v), r) for v in attrs.get("axes", range(r))]
    in_sz = [shape[ax] for ax in axes]

    if sizes is not None:
        req = [int(v) for v in sizes.reshape(-1)]
        scale_list = [req[i] / in_sz[i] for i in range(len(axes))]
        if policy == "stretch":
            out_sz = req
            lengths = [float(o) for o in req]
        else:
            s = min(scale_list) if policy == "not_larger" else max(scale_list)
            if policy not in ("not_larger", "not_smaller"):
                raise ValueError(f"keep_aspect_ratio_policy={policy!r}")
            scale_list = [s] * len(axes)
            out_sz = [int(s * n + 0.5) for n in in_sz]  # round half up
            lengths = [s * n for n in in_sz]
    else:
        scale_list = [float(v) for v in scales.reshape(-1).astype(np.float64)]
        lengths = [scale_list[i] * in_sz[i] for i in range(len(axes))]
        out_sz = [int(math.floor(v)) for v in lengths]

    rois = [None] * len(axes)
    if ctm == "tf_crop_and_resize":
        # Keep the roi's own dtype: start * (len - 1) rounds like the reference and
        # onnxruntime do, which decides ties in nearest mode.
        rv = roi.reshape(-1)
        rois = [(rv[i], rv[len(axes) + i]) for i in range(len(axes))]

    plan = []
    for i, ax in enumerate(axes):
        n_in, n_out_ax, scale = in_sz[i], out_sz[i], scale_list[i]
        if (
            n_out_ax == n_in
            and scale == 1.0
            and (rois[i] is None or (rois[i][0] == 0 and rois[i][1] == 1))
        ):
            continue  # identity along this axis
        xo = _resize_coords(ctm, n_out_ax, n_in, scale, lengths[i], rois[i])
        if mode == "nearest":
            idx = np.clip(_nearest_index(xo, nearest_mode), 0, n_in - 1).astype(np.intp)
            idx, w = idx[:, None], None
        elif mode in ("linear", "cubic"):
            idx, w = _interp_taps(xo, n_in, mode, scale, antialias, a, exclude_outside)
        else:
            raise ValueError(f"unknown Resize mode {mode!r}")
        outside = None
        if ctm == "tf_crop_and_resize":
            outside = (xo < 0) | (xo > n_in - 1)
            if not outside.any():
                outside = None
        plan.append(ResizeAxis(ax, idx, w, outside, extrapolation))
    return plan


@kernel("Resize")
def resize(inputs, attrs, n_out):
    x = inputs[0]
    roi, scales, sizes = _opt(inputs, 1), _opt(inputs, 2), _opt(inputs, 3)
    mode = _str(attrs.get("mode", "nearest"))
    r = x.ndim
    y = x if mode == "nearest" else x.astype(_compute_dtype(x.dtype), copy=False)
    for step in resize_plan(x.shape, attrs, roi, scales, sizes):
        ax = step.axis
        bshape = [1] * r
        bshape[ax] = step.idx.shape[0]
        if step.w is None:
            y = np.take(y, step.idx[:, 0], axis=ax)
        else:
            w = step.w.astype(y.dtype)
            acc = None
            for t in range(step.idx.shape[1]):
                term = np.take(y, step.idx[:, t], axis=ax)
                term *= w[:, t].reshape(bshape)
                acc = term if acc is None else acc + term
            y = acc
        if step.outside is not None:
            fill = _to_dtype(np.asarray(step.fill), y.dtype)  # saturating
            y = np.where(step.outside.reshape(bshape), fill, y)
    return [_fresh(_to_dtype(y, x.dtype), x)]


# ------------------------------------------------------------------------- Pad & misc


@kernel("Pad")
def pad(inputs, attrs, n_out):
    data, pads = inputs[0], inputs[1]
    cval, axes_t = _opt(inputs, 2), _opt(inputs, 3)
    mode = _str(attrs.get("mode", "constant"))
    r = data.ndim
    if axes_t is not None and axes_t.size:
        axes = [_norm_axis(int(v), r) for v in axes_t.reshape(-1)]
    else:
        axes = list(range(r))
    pv = [int(v) for v in pads.reshape(-1)]
    width = [(0, 0)] * r
    for i, ax in enumerate(axes):
        width[ax] = (pv[i], pv[len(axes) + i])
    # Negative pads crop; crop first, then pad the non-negative part.
    crop = tuple(slice(max(-b, 0), data.shape[ax] - max(-e, 0)) for ax, (b, e) in enumerate(width))
    data_c = data[crop]
    pos = [(max(b, 0), max(e, 0)) for b, e in width]
    if mode == "constant":
        value = _scalar(cval, 0)
        fill = np.asarray(value).astype(data.dtype)
        y = np.pad(data_c, pos, mode="constant", constant_values=fill)
    elif mode in ("reflect", "edge", "wrap"):
        y = np.pad(data_c, pos, mode=mode)
    else:
        raise ValueError(f"unknown Pad mode {mode!r}")
    return [_fresh(y, data)]


@kernel("Dropout")
def dropout(inputs, attrs, n_out):
    x = inputs[0]
    ratio = float(_scalar(_opt(inputs, 1), 0.5))
    training = bool(_scalar(_opt(inputs, 2), False))
    if training and ratio > 0:
        raise NotImplementedError("Dropout in training mode is random")
    outs = [x.copy(), np.ones(x.shape, dtype=bool)]
    return outs[:n_out]


@kernel("Einsum")
def einsum(inputs, attrs, n_out):
    eq = _str(attrs["equation"]).replace(" ", "")
    dtype = inputs[0].dtype
    ops = [t.astype(_exact_dtype(t.dtype), copy=False) for t in inputs]
    y = np.asarray(np.einsum(eq, *ops, optimize=True)).astype(dtype, copy=False)
    for t in inputs:  # a pure transpose/diagonal comes back as a view
        y = _fresh(y, t)
    return [y]


@kernel("TopK")
def topk(inputs, attrs, n_out):
    x, k_t = inputs[0], inputs[1]
    k = int(_scalar(k_t, 0))
    axis = _norm_axis(int(attrs.get("axis", -1)), x.ndim)
    largest = int(attrs.get("largest", 1))
    if x.dtype == bool:
        key = x.astype(np.uint8)
    elif x.dtype.kind not in "iuf":
        key = x.astype(np.float32)  # ml_dtypes floats (bfloat16, ...)
    else:
        key = x
    if largest:
        # Order-reversing key so a stable ascending sort keeps lower indices first
        # among equal values; ~v avoids the overflow of -v on integer minima.
        key = -key if key.dtype.kind == "f" else ~key
    order = np.argsort(key, axis=axis, kind="stable")
    idx = np.take(order, np.arange(k), axis=axis).astype(np.int64)
    vals = np.take_along_axis(x, idx, axis=axis)
    return [vals, idx][:n_out]


@kernel("CumSum")
def cumsum(inputs, attrs, n_out):
    x, axis_t = inputs[0], inputs[1]
    axis = _norm_axis(int(_scalar(axis_t, 0)), x.ndim)
    reverse = int(attrs.get("reverse", 0))
    exclusive = int(attrs.get("exclusive", 0))
    y = np.flip(x, axis) if reverse else x
    y = np.cumsum(y, axis=axis, dtype=x.dtype)
    if exclusive:
        y = np.roll(y, 1, axis=axis)
        y[(slice(None),) * axis + (0,)] = 0
    if reverse:
        y = np.flip(y, axis)
    return [np.ascontiguousarray(y)]


@kernel("DepthToSpace")
def depth_to_space(inputs, attrs, n_out):
    x = inputs[0]
    bs = int(attrs["blocksize"])
    b, c, h, w = x.shape
    if _str(attrs.get("mode", "DCR")) == "DCR":
        t = x.reshape(b, bs, bs, c // (bs * bs), h, w).transpose(0, 3, 4, 1, 5, 2)
    else:
        t = x.reshape(b, c // (bs * bs), bs, bs, h, w).transpose(0, 1, 4, 2, 5, 3)
    return [_fresh(t.reshape(b, c // (bs * bs), h * bs, w * bs), x)]


@kernel("SpaceToDepth")
def space_to_depth(inputs, attrs, n_out):
    x = inputs[0]
    bs = int(attrs["blocksize"])
    b, c, h, w = x.shape
    t = x.reshape(b, c, h // bs, bs, w // bs, bs)
    if _str(attrs.get("mode", "DCR")) == "DCR":
        t = t.transpose(0, 3, 5, 1, 2, 4)
    else:
        t = t.transpose(0, 1, 3, 5, 2, 4)
    return [_fresh(t.reshape(b, c * bs * bs, h // bs, w // bs), x)]


# -------------------------------------------------------------------- NonMaxSuppression


@kernel("NonMaxSuppression")
def non_max_suppression(inputs, attrs, n_out):
    boxes, scores = inputs[0], inputs[1]
    max_out = max(int(_scalar(_opt(inputs, 2), 0)), 0)
    iou_th = float(_scalar(_opt(inputs, 3), 0.0))
    st = _opt(inputs, 4)
    score_th = None if st is None or st.size == 0 else float(_scalar(st, 0.0))
    if int(attrs.get("center_point_box", 0)):
        xc, yc, bw, bh = np.moveaxis(boxes, -1, 0)
        x0, x1, y0, y1 = xc - bw / 2, xc + bw / 2, yc - bh / 2, yc + bh / 2
    else:
        ya, xa, yb, xb = np.moveaxis(boxes, -1, 0)
        y0, y1 = np.minimum(ya, yb), np.maximum(ya, yb)
        x0, x1 = np.minimum(xa, xb), np.maximum(xa, xb)
    areas = (x1 - x0) * (y1 - y0)
    selected: list[tuple[int, int, int]] = []
    n_batch, n_class = scores.shape[:2]
    for bi in range(n_batch):
        bx0, bx1, by0, by1, ba = x0[bi], x1[bi], y0[bi], y1[bi], areas[bi]
        for ci in range(n_class):
            if max_out == 0:
                break
            sc = scores[bi, ci]
            cand = np.arange(sc.shape[0]) if score_th is None else np.nonzero(sc > score_th)[0]
            # Highest score first; equal scores keep the lower box index first.
            order = cand[np.argsort(-sc[cand], kind="stable")]
            kept = 0
            while order.size and kept < max_out:
                i, rest = order[0], order[1:]
                selected.append((bi, ci, int(i)))
                kept += 1
                iw = np.minimum(bx1[i], bx1[rest]) - np.maximum(bx0[i], bx0[rest])
                ih = np.minimum(by1[i], by1[rest]) - np.maximum(by0[i], by0[rest])
                inter = iw * ih
                union = ba[i] + ba[rest] - inter
                valid = (iw > 0) & (ih > 0) & (ba[i] > 0) & (ba[rest] > 0) & (union > 0)
                with np.errstate(divide="ignore", invalid="ignore"):
                    iou = np.where(valid, inter / np.where(valid, union, 1), 0)
                order = rest[~(valid & (iou > iou_th))]
    return [np.array(selected, dtype=np.int64).reshape(-1, 3)]


# ----------------------------------------------------------------------------- RoiAlign


def _roi_axis_weights(start, bin_size, pooled, grid, length):
    """Bilinear sampling along one axis of a RoiAlign bin grid.

    Returns (idx_low, idx_high, w_low, w_high), each (pooled, grid); samples beyond
    [-1, length] get zero weights."""
    pos = (
        start
        + np.arange(pooled)[:, None] * bin_size
        + (np.arange(grid)[None, :] + 0.5) * bin_size / grid
    )
    valid = (pos >= -1.0) & (pos <= length)
    pos = np.maximum(pos, 0.0)
    low = np.floor(pos).astype(np.intp)
    edge = low >= length - 1
    low = np.where(edge, length - 1, low)
    high = np.where(edge, length - 1, low + 1)
    pos = np.where(edge, low, pos)
    frac = pos - low
    return low, high, (1.0 - frac) * valid, frac * valid


@kernel("RoiAlign")
def roi_align(inputs, attrs, n_out):
    x, rois, batch_idx = inputs[0], inputs[1], inputs[2]
    mode = _str(attrs.get("mode", "avg"))
    oh = int(attrs.get("output_height", 1))
    ow = int(attrs.get("output_width", 1))
    sampling = int(attrs.get("sampling_ratio", 0))
    scale = float(attrs.get("spatial_scale", 1.0))
    half_pixel = _str(attrs.get("coordinate_transformation_mode", "half_pixel")) == "half_pixel"
    ct = _compute_dtype(x.dtype)
    n_roi = rois.shape[0]
    _, c, h, w = x.shape
    y = np.zeros((n_roi, c, oh, ow), dtype=ct)
    offset = 0.5 if half_pixel else 0.0
    for r in range(n_roi):  # ROIs have different grids; everything inside is vectorized
        x0, y0, x1, y1 = (float(v) * scale - offset for v in rois[r])
        rw, rh = x1 - x0, y1 - y0
        if not half_pixel:
            rw, rh = max(rw, 1.0), max(rh, 1.0)
        bh, bw = rh / oh, rw / ow
        gh = sampling if sampling > 0 else math.ceil(rh / oh)
        gw = sampling if sampling > 0 else math.ceil(rw / ow)
        if gh <= 0 or gw <= 0:
            continue
        img = x[int(batch_idx[r])].astype(ct, copy=False)
        ylo, yhi, wyl, wyh = _roi_axis_weights(y0, bh, oh, gh, h)
        xlo, xhi, wxl, wxh = _roi_axis_weights(x0, bw, ow, gw, w)
        if mode == "avg":
            # Bilinear sampling is separable: average of samples = Ay @ img @ Ax^T.
            ay = np.zeros((oh, h), dtype=np.float64)
            ax_ = np.zeros((ow, w), dtype=np.float64)
            rows = np.arange(oh)[:, None]
            np.add.at(ay, (np.broadcast_to(rows, ylo.shape), ylo), wyl)
            np.add.at(ay, (np.broadcast_to(rows, yhi.shape), yhi), wyh)
            cols = np.arange(ow)[:, None]
            np.add.at(ax_, (np.broadcast_to(cols, xlo.shape), xlo), wxl)
            np.add.at(ax_, (np.broadcast_to(cols, xhi.shape), xhi), wxh)
            r0, r1 = int(min(ylo.min(), yhi.min())), int(max(ylo.max(), yhi.max())) + 1
            c0, c1 = int(min(xlo.min(), xhi.min())), int(max(xlo.max(), xhi.max())) + 1
            sub = img[:, r0:r1, c0:c1]
            y[r] = np.einsum(
                "ph,chw,qw->cpq",
                ay[:, r0:r1].astype(ct),
                sub,
                ax_[:, c0:c1].astype(ct),
                optimize=True,
            ) / (gh * gw)
        else:
            # Max mode (as onnxruntime and the reference): per sample, the largest of
            # the four weighted corner values; then the max over the bin's samples.
            def corner(yi, wy, xi, wx, img=img):
                v = img[:, yi[:, :, None, None], xi[None, None, :, :]]  # (C, oh, gh, ow, gw)
                return v * (wy[:, :, None, None] * wx[None, None, :, :]).astype(ct)

            v = np.maximum(
                np.maximum(corner(ylo, wyl, xlo, wxl), corner(ylo, wyl, xhi, wxh)),
                np.maximum(corner(yhi, wyh, xlo, wxl), corner(yhi, wyh, xhi, wxh)),
            )
            y[r] = v.max(axis=(2, 4))
    return [_to_dtype(y, x.dtype)]


# --------------------------------------------------------------------------- GridSample


def _reflect(c: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Reflect coordinates into [lo, hi] by bouncing off the borders."""
    rng = hi - lo
    if rng <= 0:
        return np.full_like(c, lo)
    below, above = c < lo, c > hi
    d = np.where(below, lo - c, np.where(above, c - hi, 0.0))
    n = np.floor(d / rng)
    rem = d - n * rng
    even = (n % 2) == 0
    from_low = np.where(even, lo + rem, hi - rem)
    from_high = np.where(even, hi - rem, lo + rem)
    return np.where(below, from_low, np.where(above, from_high, c)).astype(c.dtype)


@kernel("GridSample")
def grid_sample(inputs, attrs, n_out):
    x, grid = inputs[0], inputs[1]
    mode = _str(attrs.get("mode", "linear"))
    padding = _str(attrs.get("padding_mode", "zeros"))
    align = int(attrs.get("align_corners", 0))
    ct = _compute_dtype(x.dtype)
    n, c = x.shape[:2]
    in_sp = list(x.shape[2:])
    nd = len(in_sp)
    out_sp = list(grid.shape[1:-1])
    q = math.prod(out_sp)
    g = grid.astype(ct).reshape(n, q, nd)

    taps_per_dim = []  # per spatial dim: list of (index array, weight array)
    for i in range(nd):
        length = in_sp[i]
        gn = g[:, :, nd - 1 - i]  # grid's last axis lists (x, y, ...): reversed dims
        if align:
            cc = (gn + 1) / 2 * (length - 1)
            lo, hi = 0.0, length - 1.0
        else:
            cc = ((gn + 1) * length - 1) / 2
            lo, hi = -0.5, length - 0.5
        if mode == "nearest":
            cc = np.rint(cc)  # round half to even, like PyTorch
        outside = (cc < lo) | (cc > hi)
        if padding == "border":
            cc = np.where(outside, np.clip(cc, 0, length - 1), cc).astype(ct)
        elif padding == "reflection":
            cc = np.where(outside, _reflect(cc, lo, hi), cc).astype(ct)

        def fetch(ix, length=length, lo=lo, hi=hi):
            """Index to read and validity of integer positions ``ix``."""
            if padding == "zeros":
                ok = (ix >= 0) & (ix < length)
                return np.clip(ix, 0, length - 1), ok
            if padding == "border":
                return np.clip(ix, 0, length - 1), None
            r = np.trunc(_reflect(ix.astype(np.float64), lo, hi)).astype(np.intp)
            return np.clip(r, 0, length - 1), None

        taps = []
        if mode == "nearest":
            ix, ok = fetch(np.trunc(cc).astype(np.intp))
            taps.append((ix, np.ones_like(cc) if ok is None else ok.astype(ct)))
        else:
            f0 = np.floor(cc)
            frac = cc - f0
            base = f0.astype(np.intp)
            if mode == "linear":
                offs, ws = (0, 1), (1 - frac, frac)
            elif mode == "cubic":
                offs = (-1, 0, 1, 2)
                ws = tuple(_cubic_weight(frac - o, -0.75).astype(ct) for o in offs)
            else:
                raise ValueError(f"unknown GridSample mode {mode!r}")
            for o, wgt in zip(offs, ws, strict=True):
                ix, ok = fetch(base + o)
                taps.append((ix, wgt if ok is None else wgt * ok))
        taps_per_dim.append(taps)

    xf = x.astype(ct, copy=False).reshape(n, c, -1)
    steps = [math.prod(in_sp[i + 1 :]) for i in range(nd)]
    y = np.zeros((n, c, q), dtype=ct)
    for combo in np.ndindex(*(len(t) for t in taps_per_dim)):
        flat = np.zeros((n, q), dtype=np.intp)
        wgt = np.ones((n, q), dtype=ct)
        for i, t in enumerate(combo):
            ix, wi = taps_per_dim[i][t]
            flat = flat + ix * steps[i]
            wgt = wgt * wi
        vals = np.take_along_axis(xf, flat[:, None, :], axis=2)
        y += vals * wgt[:, None, :]
    return [_to_dtype(y.reshape(n, c, *out_sp), x.dtype)]
