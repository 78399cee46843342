"""neuron_ir/kernels/parallel.py: split products equal numpy's, BLAS state restored."""

from __future__ import annotations

import numpy as np
import pytest

from neuron_ir.kernels import parallel

RNG = np.random.default_rng(3)


@pytest.mark.parametrize(
    "a_shape,b_shape",
    [
        ((256, 96), (96, 200)),  # split by rows
        ((3, 512), (512, 2000)),  # too few rows: split by columns
        ((12, 64, 48), (12, 48, 64)),  # a stack: split by matrices
        ((1, 300, 128), (1, 128, 96)),  # a stack of one: split by rows
        ((2, 3, 40, 64), (2, 3, 64, 50)),
        ((8, 8), (8, 8)),  # too small to split
        ((5, 64, 32), (32, 70)),  # broadcast stack: numpy's own matmul
    ],
)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_matmul_matches_numpy(a_shape, b_shape, dtype, monkeypatch):
    monkeypatch.setattr(parallel, "MIN_FLOPS", 1e4)  # make the small cases split too
    a = RNG.standard_normal(a_shape).astype(dtype)
    b = RNG.standard_normal(b_shape).astype(dtype)
    got = parallel.matmul(a, b)
    want = np.matmul(a, b)
    assert got.shape == want.shape and got.dtype == want.dtype
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol * a_shape[-1])
    if a.ndim == 2 and b.ndim == 2:
        out = np.empty_like(want)
        parallel.matmul_into(a, b, out)
        np.testing.assert_allclose(out, want, rtol=tol, atol=tol * a_shape[-1])


def test_serial_blas_restores_the_thread_count():
    parallel._probe_blas()
    assert parallel._blas_get is not None  # threadpoolctl finds numpy's OpenBLAS
    before = parallel._blas_get()
    with parallel.serial_blas():
        assert parallel._blas_get() == 1
    assert parallel._blas_get() == before


def test_run_chunks_covers_every_index_once_and_propagates_errors():
    seen = np.zeros(1000, dtype=np.int64)

    def mark(lo, hi):
        seen[lo:hi] += 1

    parallel.run_chunks(mark, 1000, parts=4)
    assert (seen == 1).all()

    def fail(lo, hi):
        if lo > 0:
            raise ValueError("chunk failed")

    with pytest.raises(ValueError, match="chunk failed"):
        parallel.run_chunks(fail, 10, parts=2)


@pytest.mark.parametrize(
    "attrs",
    [
        {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]},  # ResNet's stem
        {"kernel_shape": [2, 3], "strides": [1, 2], "dilations": [2, 1], "ceil_mode": 1},
    ],
)
def test_max_pool_split_by_channels_is_the_whole(attrs, monkeypatch):
    from neuron_ir.kernels import KERNELS

    x = np.random.default_rng(3).normal(0, 1, (2, 37, 48, 41)).astype(np.float32)
    x[0, 3, 5, 7], x[1, 20, 0, 0], x[0, 36, 47, 40] = np.nan, -np.inf, np.inf
    calls = []  # splits: the numpy and the compiled path both cut with chunk_bounds
    real = parallel.chunk_bounds
    monkeypatch.setattr(parallel, "chunk_bounds", lambda *a: calls.append(a) or real(*a))
    (split,) = KERNELS["MaxPool"]([x], attrs, 1)
    assert len(calls) == 1  # split over the channels
    monkeypatch.setattr(parallel, "MIN_ELEMENTS", x.size + 1)
    (whole,) = KERNELS["MaxPool"]([x], attrs, 1)
    assert len(calls) == 1
    np.testing.assert_array_equal(split.view(np.uint32), whole.view(np.uint32))
