"""The compiled convolution (``native.conv2d`` through ``nn.Conv2dPlan``): within float32
rounding of a float64 reference, bit-identical however the interpreter splits it, its
epilogue bit-identical to the unfused steps, declined where it does not apply, and its
packed weights kept only for arrays that cannot change."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from neuron_ir.kernels import KERNELS, native, nn

RNG = np.random.default_rng(11)

needs_conv2d = pytest.mark.skipif(
    not native.conv2d_enabled(),
    reason="the compiled convolution needs the extension and a CPU with AVX2 and FMA",
)
pytestmark = needs_conv2d


def _reference(x, w, b, attrs):
    """The convolution in float64 by the numpy path, and the bound float32 rounding
    allows: 2 (K + 1) 2^-23 times the sum of |w x| (plus |b|), per output (K + 1 roundings:
    the multiply-adds and the bias)."""
    x64, w64 = x.astype(np.float64), w.astype(np.float64)
    b64 = None if b is None else b.astype(np.float64)
    with native.disabled():
        exact = nn.Conv2dPlan(x64, w64, b64, attrs).run()
        magnitude = nn.Conv2dPlan(np.abs(x64), np.abs(w64), None, attrs).run()
    if b is not None:
        magnitude += np.abs(b64).reshape(1, -1, 1, 1)
    k = w[0].size + 1
    return exact, 2.0 * k * 2.0**-23 * magnitude + 1e-30


geometries = st.fixed_dictionaries(
    {
        "n": st.integers(1, 2),
        "c": st.integers(1, 12),
        "h": st.integers(1, 19),
        "w": st.integers(1, 19),
        "m": st.integers(1, 20),
        "k": st.tuples(st.integers(1, 4), st.integers(1, 4)),
        "stride": st.integers(1, 3),
        "dil": st.tuples(st.integers(1, 2), st.integers(1, 2)),
        "pads": st.tuples(*[st.integers(0, 3)] * 4),
        "bias": st.booleans(),
    }
)


def _case(g):
    x = RNG.normal(0, 1, (g["n"], g["c"], g["h"], g["w"])).astype(np.float32)
    w = RNG.normal(0, 1, (g["m"], g["c"], *g["k"])).astype(np.float32)
    b = RNG.normal(0, 1, g["m"]).astype(np.float32) if g["bias"] else None
    attrs = {"pads": list(g["pads"]), "strides": [g["stride"]] * 2, "dilations": list(g["dil"])}
    return x, w, b, attrs


@given(geometries)
@settings(max_examples=150, deadline=None)
def test_conv2d_is_the_convolution(g):
    x, w, b, attrs = _case(g)
    try:
        plan = nn.Conv2dPlan(x, w, b, attrs)
    except ValueError:  # the windows do not fit: no output
        return
    assert plan.padded is not None  # every float32 case here takes the compiled product
    y = plan.run()
    exact, bound = _reference(x, w, b, attrs)
    assert np.all(np.abs(y - exact) <= bound)


@pytest.mark.parametrize(
    ("c", "size", "k", "stride", "pad"),
    [
        (3, 57, 7, 2, 3),  # a ResNet stem: 24 outputs of a row are 48 input floats
        (8, 52, 1, 2, 0),  # a 1x1 downsample
        (6, 53, 3, 2, 1),
        (5, 80, 3, 3, 1),  # gathered one by one
    ],
)
def test_wide_strided_rows(c, size, k, stride, pad):
    x = RNG.normal(0, 1, (1, c, size, size)).astype(np.float32)
    w = RNG.normal(0, 1, (13, c, k, k)).astype(np.float32)
    attrs = {"pads": [pad] * 4, "strides": [stride] * 2}
    plan = nn.Conv2dPlan(x, w, None, attrs)
    assert plan.padded is not None and plan.shape[3] >= native.GEMM_COLS
    exact, bound = _reference(x, w, None, attrs)
    assert np.all(np.abs(plan.run() - exact) <= bound)


@pytest.mark.parametrize("k", [1, 3])
def test_strided_views_in(k):
    """A transposed image, or a weight that is a view, gives what their copies give."""
    x = RNG.normal(0, 1, (1, 6, 11, 9)).astype(np.float32)
    w = RNG.normal(0, 1, (7, 6, k, k)).astype(np.float32)
    view_x = np.ascontiguousarray(x.transpose(0, 1, 3, 2)).transpose(0, 1, 3, 2)
    view_w = np.ascontiguousarray(w[:, ::-1])[:, ::-1]
    assert not view_x.flags.c_contiguous and not view_w.flags.c_contiguous
    attrs = {"pads": [k // 2] * 4}
    expected = nn.Conv2dPlan(x, w, None, attrs).run()
    got = nn.Conv2dPlan(view_x, view_w, None, attrs).run()
    np.testing.assert_array_equal(got.view(np.uint32), expected.view(np.uint32))


@pytest.mark.parametrize(("k", "blocks"), [(1, 1), (3, 1), (1, 2), (3, 2)])
def test_every_column_count_of_a_last_panel(k, blocks):
    """Images of one and two rows, 1 to 49 wide: the last panel of columns takes each
    count from 1 to 24 (its narrower tiles), straight to the output (1x1) or through the
    partial sums (3x3, or two K blocks)."""
    c = 3 if blocks == 1 else 300 // (k * k)  # K = 27 or 300: one K block or two
    w = RNG.normal(0, 1, (5, c, k, k)).astype(np.float32)
    attrs = {"pads": [k // 2] * 4}
    for rows in (1, 2):
        for width in range(1, 50):
            x = RNG.normal(0, 1, (1, c, rows, width)).astype(np.float32)
            exact, bound = _reference(x, w, None, attrs)
            got = nn.Conv2dPlan(x, w, None, attrs).run()
            assert np.all(np.abs(got - exact) <= bound), (rows, width)


def _conv2d_call(padded, packed, shape, kernel, dil, stride, rows, chans, tail):
    """One ``native.conv2d`` call into a fresh NaN-filled output."""
    out = np.full(shape, np.nan, np.float32)
    assert native.conv2d(padded, packed, out, kernel, dil, stride, rows, chans, *tail)
    return out


@given(geometries, st.data())
@settings(max_examples=80, deadline=None)
def test_any_split_gives_the_same_bits(g, data):
    """Rows and channels in any ranges (channel ranges need not meet the four-channel
    panels): every output is the same multiply-add chain, so the same bits."""
    x, w, b, attrs = _case(g)
    try:
        plan = nn.Conv2dPlan(x, w, b, attrs)
    except ValueError:
        return
    n, m, oh, ow = plan.shape
    residual = RNG.normal(0, 1, (m, oh, ow)).astype(np.float32)
    tail = (plan.tail[0], residual, data.draw(st.sampled_from([None, "Relu"])), 0.0)
    if plan.padded is not x:
        native.pad(x[0], plan.padded[0], tuple(plan.begin), (0, plan.padded.shape[2]))
    geometry = (plan.padded[0], plan.w_packed, (m, oh, ow), tuple(plan.k), tuple(plan.dil))
    whole = _conv2d_call(*geometry, plan.strides[0], (0, oh), (0, m), tail)
    row_cut = data.draw(st.integers(0, oh))
    chan_cut = data.draw(st.integers(0, m))
    pieces = np.full((m, oh, ow), np.nan, np.float32)
    for rows in ((0, row_cut), (row_cut, oh)):
        for chans in ((0, chan_cut), (chan_cut, m)):
            if rows[0] < rows[1] and chans[0] < chans[1]:
                part = _conv2d_call(*geometry, plan.strides[0], rows, chans, tail)
                r, c = slice(*rows), slice(*chans)
                pieces[c, r] = part[c, r]
                part[c, r] = np.nan
                assert np.isnan(part).all()  # nothing written outside its rows and channels
    np.testing.assert_array_equal(pieces.view(np.uint32), whole.view(np.uint32))


SPECIALS = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 1e-45, -1e30, 3e38], np.float32)


@pytest.mark.parametrize("activation", [None, "Relu", "LeakyRelu"])
@pytest.mark.parametrize("size", [(9, 9, 3, 1), (16, 16, 1, 1), (12, 12, 3, 2), (7, 7, 1, 1)])
@pytest.mark.parametrize("with_bias", [False, True])
def test_epilogue_is_the_unfused_steps(activation, size, with_bias):
    """act((conv + bias) + residual) in the product's epilogue against the product
    without it, then the bias, the Add and the activation as the kernels do them, with
    NaN, infinities and signed zeros in the residual; straight rows (1x1 at stride 1),
    padded rows (3x3) and strided ones."""
    h, w_, k, stride = size
    c, m = 5, 14  # three full panels of four channels and a part one
    x = RNG.normal(0, 1, (1, c, h, w_)).astype(np.float32)
    w = RNG.normal(0, 1, (m, c, k, k)).astype(np.float32)
    b = RNG.normal(0, 1, m).astype(np.float32) if with_bias else None
    attrs = {"pads": [k // 2] * 4, "strides": [stride] * 2}
    plan = nn.Conv2dPlan(x, w, None, attrs)
    product = plan.run()
    residual = RNG.normal(0, 1, product.shape).astype(np.float32)
    residual.reshape(-1)[: SPECIALS.size * 3 : 3] = SPECIALS
    expected = product.copy()
    with native.disabled(), np.errstate(all="ignore"):
        if b is not None:
            expected += b.reshape(-1, 1, 1)
        np.add(expected, residual, out=expected)
        if activation is not None:
            expected = KERNELS[activation]([expected], {"alpha": 0.1}, 1)[0]
    fused = nn.Conv2dPlan(x, w, None, attrs)
    assert fused.fuse_tail(b, residual, activation, 0.1)
    got = fused.run()
    np.testing.assert_array_equal(np.isnan(got), np.isnan(expected))
    numbers = ~np.isnan(got)
    np.testing.assert_array_equal(got[numbers].view(np.uint32), expected[numbers].view(np.uint32))


def test_declines_what_it_cannot_take():
    x = RNG.normal(0, 1, (1, 4, 8, 8)).astype(np.float32)
    w = RNG.normal(0, 1, (3, 4, 3, 3)).astype(np.float32)
    attrs = {"pads": [1] * 4}
    assert nn.Conv2dPlan(x, w, None, attrs).padded is not None
    # float64, grouped, unequal strides: the numpy path
    assert nn.Conv2dPlan(x.astype(np.float64), w.astype(np.float64), None, attrs).padded is None
    assert nn.Conv2dPlan(x, w, None, {**attrs, "strides": [1, 2]}).padded is None
    with native.disabled():
        assert nn.Conv2dPlan(x, w, None, attrs).padded is None
    plan = nn.Conv2dPlan(x, w, None, attrs)
    out = np.empty((3, 8, 8), np.float32)
    native.pad(x[0], plan.padded[0], (1, 1), (0, plan.padded.shape[2]))
    args = (plan.padded[0], plan.w_packed, out, (3, 3), (1, 1), 1, (0, 8), (0, 3))
    assert native.conv2d(*args)
    assert not native.conv2d(*args, None, out, None)  # the residual is the output
    assert not native.conv2d(*args, None, None, "LeakyRelu", 2.0)  # outside max(v, v * a)
    assert not native.conv2d(*args, None, None, "Sigmoid")
    assert not native.conv2d(plan.padded[0][:, ::2], *args[1:])  # not contiguous
    assert not plan.fuse_tail(None, np.ones((1, 3, 8, 7), np.float32), "Relu", 0.0)
    assert not plan.fuse_tail(np.ones(4, np.float32), None, "Relu", 0.0)
    with pytest.raises(ValueError, match="packed weights"):
        native.conv2d(plan.padded[0], plan.w_packed[:, :-1].copy(), *args[2:])
    with pytest.raises(ValueError, match="rows or channels"):
        native.conv2d(*args[:6], (0, 9), (0, 3))
    # No input channels: the generic kernel (the product's K would be 0: the plan refuses
    # it), and the C entry point refuses it rather than divide by zero.
    empty_x, empty_w = np.zeros((1, 0, 8, 8), np.float32), np.zeros((3, 0, 3, 3), np.float32)
    bias = np.ones(3, np.float32)
    with pytest.raises(ValueError, match="no images, input channels or output channels"):
        nn.Conv2dPlan(empty_x, empty_w, bias, attrs)
    (y,) = KERNELS["Conv"]([empty_x, empty_w, bias], attrs, 1)
    np.testing.assert_array_equal(y, np.ones((1, 3, 8, 8), np.float32))
    packed = native.pack_weights(np.zeros((3, 0), np.float32))
    with pytest.raises(ValueError, match="no input or no output channels"):
        native.conv2d(
            np.zeros((0, 10, 10), np.float32), packed, out, (3, 3), (1, 1), 1, (0, 8), (0, 3)
        )


def test_packed_weights_are_kept_only_for_arrays_that_cannot_change():
    x = RNG.normal(0, 1, (1, 4, 8, 8)).astype(np.float32)
    w = RNG.normal(0, 1, (3, 4, 3, 3)).astype(np.float32)
    attrs = {"pads": [1] * 4}
    first = nn.Conv2dPlan(x, w, None, attrs).run()
    w *= 2  # a writeable weight is packed again each time
    np.testing.assert_array_equal(nn.Conv2dPlan(x, w, None, attrs).run(), first * 2)
    w.flags.writeable = False
    plan = nn.Conv2dPlan(x, w, None, attrs)
    assert nn.Conv2dPlan(x, w, None, attrs).w_packed is plan.w_packed
    key = id(w)
    del w, plan
    assert key not in nn._PACKED  # dropped with its array


def test_geometry_is_kept_per_constant_weight_shape_and_attributes(monkeypatch):
    from neuron_ir.kernels import parallel

    x = RNG.normal(0, 1, (1, 4, 8, 8)).astype(np.float32)
    w = RNG.normal(0, 1, (3, 4, 3, 3)).astype(np.float32)
    attrs = {"pads": [1] * 4}
    writeable = nn.Conv2dPlan(x, w, None, attrs)
    assert nn.Conv2dPlan(x, w, None, attrs).shape == writeable.shape
    assert not any(key[0] == id(w) for key in nn._GEOMETRY)  # a weight that may change
    w.flags.writeable = False
    plan = nn.Conv2dPlan(x, w, None, attrs)
    want = plan.run()
    assert [key[0] for key in nn._GEOMETRY].count(id(w)) == 1
    again = nn.Conv2dPlan(x, w, None, attrs)
    assert again.k is plan.k and again.run().tobytes() == want.tobytes()
    # Anything the geometry depends on plans it again: the input's shape, the attributes
    # (changed in place too), the settings.
    assert nn.Conv2dPlan(x[:, :, :6], w, None, attrs).shape == (1, 3, 6, 8)
    attrs["pads"] = [0] * 4
    assert nn.Conv2dPlan(x, w, None, attrs).shape == (1, 3, 6, 6)
    monkeypatch.setattr(parallel, "MIN_FLOPS", 0)
    assert nn.Conv2dPlan(x, w, None, attrs).parts == 6
    with native.disabled():
        numpy_plan = nn.Conv2dPlan(x, w, None, attrs)
        assert numpy_plan.padded is None and numpy_plan.run().shape == (1, 3, 6, 6)
    key = id(w)
    del w, plan, again, writeable, numpy_plan  # (plans hold views of it)
    assert not any(k[0] == key for k in nn._GEOMETRY)  # dropped with its weight
