"""Padding and bucketing: which compiled size serves a call, and which sizes to compile.

A bucketed model holds one program per bucket (a size along each bucketed ONNX symbol).
At run time :func:`select_bucket` takes the smallest bucket that fits, inputs carrying
the symbol are padded up to it (:func:`pad_axis`) and outputs carrying it are sliced back
(:func:`slice_axis`).

:func:`choose_boundaries` picks K bucket sizes from a sample of observed sizes so that
the expected time over the sample is least. The DP is exact over the candidates: with
``cost`` non-decreasing in the size (assumption: a bigger padded size never runs faster,
true of the cost model, whose work grows with every dim), an optimal boundary set can
always be moved down onto sample sizes without getting slower, so the sorted distinct
sample sizes are the only candidates needed, and the largest sample is always one.
"""

from __future__ import annotations

import bisect
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import NeuronIRError


class BucketError(NeuronIRError):
    """A size no bucket can serve, or a bad bucket specification."""


def check_boundaries(symbol: str, boundaries: Sequence[int]) -> list[int]:
    """Validated bucket sizes for ``symbol``: positive whole numbers, strictly increasing."""
    sizes = []
    for value in boundaries:
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
            raise BucketError(f"buckets for '{symbol}': {value!r} is not a positive whole number")
        sizes.append(int(value))
    if not sizes:
        raise BucketError(f"buckets for '{symbol}': the list is empty")
    if any(b <= a for a, b in zip(sizes, sizes[1:], strict=False)):
        raise BucketError(f"buckets for '{symbol}': {sizes} is not strictly increasing")
    return sizes


def select_bucket(symbol: str, size: int, boundaries: Sequence[int], where: str = "") -> int:
    """The smallest bucket >= ``size``; an error naming the input when none fits."""
    k = bisect.bisect_left(boundaries, size)
    if k == len(boundaries):
        raise BucketError(f"{where or 'input'}: size {size} along '{symbol}' is above the "
                          f"largest bucket {boundaries[-1]}")
    return boundaries[k]


def pad_axis(array: np.ndarray, axis: int, size: int, value: float | int = 0) -> np.ndarray:
    """``array`` grown to ``size`` along ``axis`` with ``value`` (no copy if it fits)."""
    have = array.shape[axis]
    if have == size:
        return array
    shape = list(array.shape)
    shape[axis] = size
    out = np.full(shape, value, dtype=array.dtype)
    index = [slice(None)] * array.ndim
    index[axis] = slice(0, have)
    out[tuple(index)] = array
    return out


def slice_axis(array: np.ndarray, axis: int, size: int) -> np.ndarray:
    """The first ``size`` entries of ``array`` along ``axis``."""
    index = [slice(None)] * array.ndim
    index[axis] = slice(0, size)
    return array[tuple(index)]


@dataclass(frozen=True)
class BucketChoice:
    """Chosen boundaries and what they cost over the sample."""

    boundaries: tuple[int, ...]
    expected_time: float  # seconds per call, averaged over the sample
    padding_waste: float  # padded elements / real elements - 1, averaged over the sample


def expected_time(sizes: Iterable[int], boundaries: Sequence[int],
                  cost: Callable[[int], float]) -> float:
    """Mean time per call over ``sizes`` when each runs in its smallest fitting bucket."""
    counts = Counter(int(s) for s in sizes)
    ordered = sorted(boundaries)
    time = sum(n * cost(select_bucket("size", s, ordered)) for s, n in counts.items())
    return time / sum(counts.values())


def padding_waste(sizes: Iterable[int], boundaries: Sequence[int]) -> float:
    """Padded size over real size, minus one, over the whole sample."""
    counts = Counter(int(s) for s in sizes)
    ordered = sorted(boundaries)
    real = sum(s * n for s, n in counts.items())
    padded = sum(select_bucket("size", s, ordered) * n for s, n in counts.items())
    return padded / real - 1.0


def choose_boundaries(sizes: Iterable[int], k: int, cost: Callable[[int], float],
                      candidates: Sequence[int] | None = None) -> BucketChoice:
    """At most ``k`` boundaries, the largest sample included, minimising the expected
    ``cost`` of the bucket each sample runs in; exact (a DP over sorted candidates).

    ``candidates`` defaults to the distinct sample sizes (see the module docstring for
    why that is enough); a caller may pass fewer to bound how many sizes it prices, and
    the DP is then exact over those (the largest sample is always added).
    """
    counts = Counter(int(s) for s in sizes)
    if not counts:
        raise BucketError("no sizes to choose buckets from")
    if k < 1:
        raise BucketError(f"need at least one bucket, got {k}")
    if min(counts) < 1:
        raise BucketError(f"sizes must be positive, got {min(counts)}")
    top = max(counts)
    points = sorted({int(c) for c in (candidates or counts) if int(c) <= top} | {top})
    # cum[j + 1]: how many samples are <= points[j].
    cum = [0]
    for p in points:
        cum.append(sum(n for s, n in counts.items() if s <= p))
    price = [cost(p) for p in points]
    n, inf = len(points), float("inf")
    k = min(k, n)
    # best[m][j]: least total time of the samples <= points[j] with m buckets, the last
    # ending at points[j]; back[m][j] the previous boundary index (-1: none).
    best = [[inf] * n for _ in range(k + 1)]
    back = [[-1] * n for _ in range(k + 1)]
    for j in range(n):
        best[1][j] = cum[j + 1] * price[j]
    for m in range(2, k + 1):
        for j in range(n):
            for i in range(j):
                if best[m - 1][i] == inf:
                    continue
                value = best[m - 1][i] + (cum[j + 1] - cum[i + 1]) * price[j]
                if value < best[m][j]:
                    best[m][j], back[m][j] = value, i
    m = min(range(1, k + 1), key=lambda mm: (best[mm][n - 1], mm))
    chosen, j = [], n - 1
    while j >= 0 and m >= 1:
        chosen.append(points[j])
        j, m = back[m][j], m - 1
    boundaries = tuple(sorted(chosen))
    return BucketChoice(boundaries, expected_time(counts.elements(), boundaries, cost),
                        padding_waste(counts.elements(), boundaries))


def powers_of_two(top: int) -> list[int]:
    """1, 2, 4, ... up to the first power of two >= ``top`` (the rule of thumb users
    reach for), for comparison in reports."""
    out, p = [], 1
    while p < top:
        out.append(p)
        p *= 2
    out.append(p)
    return out
