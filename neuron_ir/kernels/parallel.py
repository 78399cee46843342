"""Both cores for the kernels' big work, robust to a busy machine.

OpenBLAS's own threads spin while they wait for each other: when the cores are shared
with other processes a descheduled peer stalls the whole product, and a 2-thread GEMM
was measured 10-50x slower than a 1-thread one on this (2-core, loaded) machine.  So
the kernels run BLAS single-threaded and split large products (and large elementwise
work) themselves into one chunk per core: a thread of ours waiting on a chunk sleeps
in the kernel instead of spinning, and on a quiet machine the chunks run side by side
(numpy releases the GIL inside BLAS and ufunc loops).

The compiled convolution's splits take the same ranges (``chunk_bounds``) but run in
the extension's own threads instead (``native.run_parts``), which need neither a Python
thread's wake-up nor the GIL.

Assumptions: chunks below ``MIN_FLOPS`` / ``MIN_ELEMENTS`` are not worth a thread
hand-off (~20-50 us); row chunks of a C-contiguous product are independent and write
disjoint slices of one output, so the result is bit-identical to the unsplit product
whenever BLAS's per-row arithmetic does not depend on the row count (OpenBLAS's does
not for float32/float64 GEMM, which is what the tests check against ``np.matmul``
within rounding).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import numpy as np

try:
    WORKERS = max(1, len(os.sched_getaffinity(0)))
except AttributeError:  # not on Linux
    WORKERS = max(1, os.cpu_count() or 1)
WORKERS = min(WORKERS, 8)
MIN_FLOPS = 4e6  # a split product must be at least this many multiply-adds x2
MIN_ELEMENTS = 1 << 17  # elementwise work split only above this many elements

_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()
_blas_set: Callable[[int], None] | None = None
_blas_get: Callable[[], int] | None = None
_blas_probed = False


def _executor() -> ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(
                max_workers=WORKERS - 1, thread_name_prefix="neuron-ir-kernel"
            )
        return _pool


def _probe_blas() -> None:
    """Find numpy's BLAS thread setter once (threadpoolctl, when installed)."""
    global _blas_set, _blas_get, _blas_probed
    _blas_probed = True
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:
        return
    for lib in ThreadpoolController().select(user_api="blas").lib_controllers:
        _blas_set, _blas_get = lib.set_num_threads, lib.get_num_threads
        return


@contextmanager
def serial_blas():
    """BLAS at one thread inside the block (restored after); a no-op without control."""
    if not _blas_probed:
        _probe_blas()
    if _blas_set is None or _blas_get is None:
        yield
        return
    before = _blas_get()
    if before != 1:
        _blas_set(1)
    try:
        yield
    finally:
        if before != 1:
            _blas_set(before)


def _can_split() -> bool:
    """Splitting needs BLAS held at one thread: else our threads would each start
    BLAS's own and oversubscribe the cores."""
    if not _blas_probed:
        _probe_blas()
    return WORKERS > 1 and _blas_set is not None and not in_chunk()


_local = threading.local()


def in_chunk() -> bool:
    """True inside a chunk of ``run_chunks``: work there runs serially (a nested split
    would wait on the pool's only worker, which may be the one waiting)."""
    return getattr(_local, "depth", 0) > 0


def _as_chunk(fn: Callable[[int, int], object], lo: int, hi: int) -> None:
    _local.depth = getattr(_local, "depth", 0) + 1
    try:
        fn(lo, hi)
    finally:
        _local.depth -= 1


def chunk_bounds(n: int, parts: int | None = None) -> list[tuple[int, int]]:
    """The contiguous ranges of ``range(n)`` ``run_chunks`` runs side by side: ``parts``
    (default one per core) of them, or the whole inside a chunk."""
    parts = min(parts or WORKERS, n)
    if parts <= 1 or in_chunk():
        return [(0, n)]
    return [(n * k // parts, n * (k + 1) // parts) for k in range(parts)]


def run_chunks(fn: Callable[[int, int], object], n: int, parts: int | None = None) -> None:
    """``fn(lo, hi)`` over ``parts`` contiguous ranges of ``range(n)``, side by side.

    The calling thread runs the first range itself; exceptions propagate.  Called from
    inside a chunk it runs ``fn(0, n)`` in the calling thread."""
    bounds = chunk_bounds(n, parts)
    futures = [_executor().submit(_as_chunk, fn, lo, hi) for lo, hi in bounds[1:]]
    try:
        _as_chunk(fn, *bounds[0])
    finally:
        for f in futures:
            f.result()


class MatmulPlan:
    """How ``a @ b`` (2-D x 2-D, or stacks with equal batch shapes) is computed: whole,
    or in ``parts`` chunks of columns, rows or stacked matrices, one per core.

    The interpreter's fused regions (``neuron_ir.interp.fusion``) run the same plan as
    the MatMul kernel, so a fused product rounds exactly like the unfused one: OpenBLAS's
    result depends on the shape it is called with (edge tiles, small-matrix kernels), so
    the split must be the same, not merely equivalent."""

    def __init__(self, a: np.ndarray, b: np.ndarray):
        m, k = a.shape[-2:]
        n = b.shape[-1]
        batch = a.shape[:-2]
        self.a, self.b = a, b
        self.shape = (*batch, m, n)
        self.dtype = np.result_type(a, b)
        flops = 2.0 * m * k * n * (int(np.prod(batch)) if batch else 1)
        same_batch = a.ndim == b.ndim and a.shape[:-2] == b.shape[:-2]
        # Broadcasting stacks are left to numpy whole (``shape`` does not hold for them).
        self.covered = a.ndim == 2 and b.ndim == 2 or same_batch
        self.scheme: str | None = None
        self.parts = 0
        if not _can_split() or flops < MIN_FLOPS or not self.covered:
            return
        if a.ndim == 2:
            # Each chunk packs the whole operand it does not split: split the bigger
            # one.  BERT's (128 x 768) @ (768 x 3072) split by rows packed the weight
            # twice and ran at half the speed of the column split.
            if n >= 2 * WORKERS and (n >= m or m < 2 * WORKERS):
                self.scheme, self.parts = "cols", n
            else:
                self.scheme, self.parts = "rows", m
            return
        self.a3, self.b3 = a.reshape(-1, m, k), b.reshape(-1, k, n)
        if self.a3.shape[0] >= WORKERS:
            self.scheme, self.parts = "stack", self.a3.shape[0]
        else:
            self.scheme, self.parts = "stack-rows", m

    def chunk(self, out: np.ndarray, lo: int, hi: int) -> None:
        """Compute chunk [lo, hi) of the split into ``out`` (C-contiguous, ``shape``)."""
        a, b = self.a, self.b
        if self.scheme == "cols":
            np.matmul(a, b[:, lo:hi], out=out[:, lo:hi])
        elif self.scheme == "rows":
            np.matmul(a[lo:hi], b, out=out[lo:hi])
        else:
            o3 = out.reshape(-1, *self.shape[-2:])
            if self.scheme == "stack":
                np.matmul(self.a3[lo:hi], self.b3[lo:hi], out=o3[lo:hi])
            else:
                np.matmul(self.a3[:, lo:hi], self.b3, out=o3[:, lo:hi])

    def into(self, out: np.ndarray) -> None:
        """The whole product into ``out`` (``covered`` products only), in ``parts``
        chunks side by side (or one)."""
        with serial_blas():
            if self.parts:
                run_chunks(lambda lo, hi: self.chunk(out, lo, hi), self.parts)
            else:
                np.matmul(self.a, self.b, out=out)

    def run(self) -> np.ndarray:
        if not self.covered:
            with serial_blas():
                return np.matmul(self.a, self.b)
        out = np.empty(self.shape, dtype=self.dtype)
        self.into(out)
        return out


def matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``np.matmul(a, b)`` for 2-D x 2-D and for stacks with equal batch shapes,
    single-threaded BLAS per chunk, chunks over both cores when large enough."""
    return MatmulPlan(a, b).run()


def matmul_into(a: np.ndarray, b: np.ndarray, out: np.ndarray) -> None:
    """2-D ``np.matmul(a, b, out=out)`` (a convolution's weights x im2col columns),
    split by columns (output positions) when large, else by rows.

    Measured, not guaranteed: the column split reproduces the rounding that onnx's
    light_squeezenet shipped output depends on (its 9.5e9 logits, equal up to one ulp,
    go through Softmax), as OpenBLAS's own 2-thread product does; a row split and a
    1-thread unsplit product round a few channels differently and fail that test."""
    m, k = a.shape
    n = b.shape[1]
    with serial_blas():
        if not _can_split() or 2.0 * m * k * n < MIN_FLOPS:
            np.matmul(a, b, out=out)
        elif n >= 2 * WORKERS:
            run_chunks(lambda lo, hi: np.matmul(a, b[:, lo:hi], out=out[:, lo:hi]), n)
        else:
            run_chunks(lambda lo, hi: np.matmul(a[lo:hi], b, out=out[lo:hi]), m)
