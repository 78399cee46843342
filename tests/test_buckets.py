"""Bucket selection, padding helpers and the exact bucket-boundary DP (against brute force)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from neuron_ir.runtime.buckets import (
    BucketError,
    check_boundaries,
    choose_boundaries,
    expected_time,
    pad_axis,
    powers_of_two,
    select_bucket,
    slice_axis,
)


def test_select_bucket_takes_the_smallest_that_fits():
    buckets = [16, 32, 64]
    assert [select_bucket("s", n, buckets) for n in (1, 16, 17, 32, 33, 64)] == \
        [16, 16, 32, 32, 64, 64]
    with pytest.raises(BucketError, match="size 65 along 's' is above the largest bucket 64"):
        select_bucket("s", 65, buckets, where="input 'ids'")


@pytest.mark.parametrize("bad, message", [
    ([32, 16], "not strictly increasing"), ([16, 16], "not strictly increasing"),
    ([], "empty"), ([0, 8], "not a positive whole number"), ([2.5], "not a positive"),
])
def test_bad_bucket_lists_are_refused(bad, message):
    with pytest.raises(BucketError, match=message):
        check_boundaries("sequence", bad)


def test_pad_then_slice_gives_back_the_input():
    x = np.arange(12, dtype=np.int64).reshape(2, 6)
    padded = pad_axis(x, 1, 8, value=7)
    assert padded.shape == (2, 8) and (padded[:, 6:] == 7).all()
    assert np.array_equal(slice_axis(padded, 1, 6), x)
    assert pad_axis(x, 1, 6) is x


def _brute_force(sizes, k, cost):
    distinct = sorted(set(sizes))
    top = distinct[-1]
    best = None
    for m in range(1, k + 1):
        for rest in itertools.combinations(distinct[:-1], m - 1):
            value = expected_time(sizes, [*rest, top], cost)
            if best is None or value < best - 1e-12:
                best = value
    return best


COSTS = {
    "linear": lambda s: 1e-3 + 2e-5 * s,
    "quadratic": lambda s: 1e-3 + 1e-6 * s * s,
    "stepped": lambda s: 1e-3 * (1 + s // 8),
}


@given(sizes=st.lists(st.integers(1, 40), min_size=1, max_size=30),
       k=st.integers(1, 4), cost=st.sampled_from(sorted(COSTS)))
def test_dp_equals_brute_force_over_all_boundary_sets(sizes, k, cost):
    fn = COSTS[cost]
    choice = choose_boundaries(sizes, k, fn)
    assert len(choice.boundaries) <= k
    assert choice.boundaries[-1] == max(sizes)
    assert choice.expected_time == pytest.approx(_brute_force(sizes, k, fn), rel=1e-12)


def test_more_buckets_beat_padding_to_the_max_on_a_skewed_sample():
    rng = np.random.default_rng(0)
    sizes = np.minimum(rng.lognormal(3.0, 0.7, 5000).astype(int) + 1, 512)
    cost = COSTS["quadratic"]
    four = choose_boundaries(sizes, 4, cost)
    pad_max = expected_time(sizes, [int(sizes.max())], cost)
    pow2 = expected_time(sizes, powers_of_two(int(sizes.max())), cost)
    assert four.expected_time < pad_max
    assert four.expected_time < pow2 or len(powers_of_two(int(sizes.max()))) > 4
    assert four.padding_waste >= 0
