"""``native.run_parts``: the compiled convolution's and max pool's jobs split over the
extension's own worker threads.  Any cut gives the same bits as one part, a bad job
anywhere stops the call before any job runs, the pool survives concurrent callers and a
fork, and the compiled max pool takes numpy's maxima."""

from __future__ import annotations

import multiprocessing
import threading
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_native_conv import _case, geometries

from neuron_ir.kernels import KERNELS, native, nn

pytestmark = pytest.mark.skipif(
    not native.conv2d_enabled(),
    reason="the compiled convolution needs the extension and a CPU with AVX2 and FMA",
)

RNG = np.random.default_rng(5)


def _plan(g):
    x, w, b, attrs = _case(g)
    try:
        return nn.Conv2dPlan(x, w, b, attrs)
    except ValueError:
        return None


def _split(plan, cuts: list[int]) -> np.ndarray:
    """The result with the split axis cut at ``cuts``, one part a range."""
    out = np.full(plan.shape, np.nan, np.float32)
    bounds = [0, *cuts, plan.shape[plan.axis]]
    native.run_parts(
        [plan.jobs(out, lo, hi) for lo, hi in zip(bounds[:-1], bounds[1:], strict=True)]
    )
    return out


@given(geometries, st.data())
@settings(max_examples=80, deadline=None)
def test_any_cut_into_parts_gives_the_bits_of_one_part(g, data):
    plan = _plan(g)
    if plan is None or not plan.compiled():
        return
    n = plan.shape[plan.axis]
    whole = _split(plan, [])
    cuts = sorted(data.draw(st.lists(st.integers(1, n), max_size=5)))
    cuts = [c for c in dict.fromkeys(cuts) if c < n]  # ranges must not be empty
    np.testing.assert_array_equal(_split(plan, cuts).view(np.uint32), whole.view(np.uint32))
    # Conv2dPlan's own split (one part a core) and its unsplit chunk agree too.
    out = np.empty(plan.shape, np.float32)
    plan.into(out)
    np.testing.assert_array_equal(out.view(np.uint32), whole.view(np.uint32))


def _bottleneck_plan():
    x = RNG.normal(0, 1, (1, 16, 12, 12)).astype(np.float32)
    w = RNG.normal(0, 1, (24, 16, 3, 3)).astype(np.float32)
    return nn.Conv2dPlan(x, w, None, {"pads": [1, 1, 1, 1]})


def test_a_bad_job_in_any_part_stops_the_call_before_any_job_runs():
    plan = _bottleneck_plan()
    out = np.full(plan.shape, np.nan, np.float32)
    good = plan.jobs(out, 0, 6)
    kind, args = plan.jobs(out, 6, 12)[-1]
    bad = (kind, (*args[:6], (6, 13), *args[7:]))  # rows past the output
    with pytest.raises(ValueError, match="out-of-range rows"):
        native.run_parts([good, [bad]])
    assert np.isnan(out).all()
    with pytest.raises(ValueError, match="pad_f32"):
        native.run_parts([good, [(0, (out[0], plan.padded[0], (0, 0), (0, 99)))]])
    assert np.isnan(out).all()


@pytest.mark.parametrize(
    ("parts", "error"),
    [
        (3, TypeError),  # not a list
        ([], ValueError),  # no part
        ([[]] * 9, ValueError),  # more parts than the pool's threads and the caller
        ([[(1,)]], TypeError),  # a job without arguments
        ([["job"]], TypeError),  # a job that is not a tuple
        ([[(7, ())]], ValueError),  # an unknown kind
        ([[(1, (1, 2))]], TypeError),  # conv2d_f32's arguments wrong
    ],
)
def test_malformed_parts_raise(parts, error):
    with pytest.raises(error):
        native.run_parts(parts)


def test_empty_parts_do_nothing():
    native.run_parts([[], []])


def test_callers_on_several_threads():
    """Two Python threads splitting at once (the pool takes one caller at a time) and two
    running single parts (which need no pool): every result right, none stuck."""
    plan = _bottleneck_plan()
    want = _split(plan, [])
    errors: list[BaseException] = []

    def caller(cuts):
        try:
            for _ in range(30):
                got = _split(plan, cuts)
                np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32))
        except BaseException as e:  # reported by the main thread
            errors.append(e)

    threads = [threading.Thread(target=caller, args=(c,)) for c in ([6], [3, 9], [], [])]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads), "a caller is stuck"
    assert not errors, errors[0]


def _child_splits(queue) -> None:
    plan = _bottleneck_plan()
    queue.put(_split(plan, [4]).tobytes() == _split(plan, []).tobytes())


@pytest.mark.parametrize("mid_split", [False, True])
def test_a_forked_child_splits_too(mid_split):
    """The child has none of the parent's worker threads: it starts its own.  Forked
    while another thread splits (holding the pool's lock), it must not wait for it."""
    _split(_bottleneck_plan(), [6])  # the parent's pool is running
    stop = threading.Event()
    x = RNG.normal(0, 1, (1, 64, 32, 32)).astype(np.float32)
    w = RNG.normal(0, 1, (64, 64, 3, 3)).astype(np.float32)
    big = nn.Conv2dPlan(x, w, None, {"pads": [1, 1, 1, 1]})

    def busy():
        while not stop.is_set():
            _split(big, [16])

    splitter = threading.Thread(target=busy)
    if mid_split:
        splitter.start()
    try:
        for _ in range(8 if mid_split else 1):  # some forks land inside the other's split
            _fork_and_split()
    finally:
        stop.set()
        if mid_split:
            splitter.join(timeout=60)


def _fork_and_split() -> None:
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    with warnings.catch_warnings():  # newer Pythons warn on fork in a threaded process
        warnings.simplefilter("ignore", DeprecationWarning)
        child = context.Process(target=_child_splits, args=(queue,))
        child.start()
    child.join(timeout=30)
    if child.is_alive():
        child.kill()
        pytest.fail("the forked child hung in run_parts")
    assert child.exitcode == 0
    assert queue.get(timeout=5) is True


SPECIALS = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 3e38, -3e38], np.float32)

pools = st.fixed_dictionaries(
    {
        "c": st.integers(1, 5),
        "h": st.integers(1, 17),
        "w": st.integers(1, 17),
        "k": st.tuples(st.integers(1, 4), st.integers(1, 4)),
        "strides": st.tuples(st.integers(1, 3), st.integers(1, 3)),
        "dilations": st.tuples(st.integers(1, 2), st.integers(1, 2)),
        "pads": st.tuples(*[st.integers(0, 3)] * 4),
        "ceil_mode": st.integers(0, 1),
        "specials": st.floats(0, 0.3),
    }
)


@given(pools)
@settings(max_examples=200, deadline=None)
def test_compiled_max_pool_takes_numpys_maxima(g):
    k, pads = list(g["k"]), list(g["pads"])
    if any(p >= kk for p, kk in zip(pads, k + k, strict=True)):
        return  # onnx: pads below the window
    sizes = (g["h"] + pads[0] + pads[2], g["w"] + pads[1] + pads[3])
    if any((kk - 1) * d + 1 > n for kk, d, n in zip(k, g["dilations"], sizes, strict=True)):
        return  # a window wider than the padded image: no output
    x = RNG.normal(0, 1, (2, g["c"], g["h"], g["w"])).astype(np.float32)
    mask = RNG.random(x.shape) < g["specials"]
    x[mask] = RNG.choice(SPECIALS, int(mask.sum()))
    attrs = {
        "kernel_shape": k,
        "strides": list(g["strides"]),
        "dilations": list(g["dilations"]),
        "pads": pads,
        "ceil_mode": g["ceil_mode"],
    }
    with native.disabled():
        (want,) = KERNELS["MaxPool"]([x], attrs, 1)
    (got,) = KERNELS["MaxPool"]([x], attrs, 1)
    # The same maxima, NaN where numpy has NaN; a tie of zeros may keep either sign.
    np.testing.assert_array_equal(got, want)
    assert got.dtype == np.float32 and got.shape == want.shape


def test_compiled_max_pool_in_parts_gives_the_bits_of_one_part():
    x = RNG.normal(0, 1, (7, 20, 19)).astype(np.float32)
    x[2, 3, 4] = np.nan
    window = ((3, 3), (2, 2), (1, 1), (1, 1))
    whole = np.full((7, 10, 10), np.nan, np.float32)
    native.run_parts([[native.maxpool_job(x, whole, *window, (0, 7))]])
    parts = np.full((7, 10, 10), np.nan, np.float32)
    native.run_parts([[native.maxpool_job(x, parts, *window, c)] for c in [(0, 2), (2, 3), (3, 7)]])
    np.testing.assert_array_equal(parts.view(np.uint32), whole.view(np.uint32))
    assert np.isnan(whole[2, 1, 2])  # the NaN's window
    with pytest.raises(ValueError, match="maxpool_f32"):
        native.run_parts([[native.maxpool_job(x, whole, *window, (0, 8))]])
