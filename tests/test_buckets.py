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
    assert [select_bucket("s", n, buckets) for n in (1, 16, 17, 32, 33, 64)] == [
        16,
        16,
        32,
        32,
        64,
        64,
    ]
    with pytest.raises(BucketError, match="size 65 along 's' is above the largest bucket 64"):
        select_bucket("s", 65, buckets, where="input 'ids'")


@pytest.mark.parametrize(
    "bad, message",
    [
        ([32, 16], "not strictly increasing"),
        ([16, 16], "not strictly increasing"),
        ([], "empty"),
        ([0, 8], "not a positive whole number"),
        ([2.5], "not a positive"),
    ],
)
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


@given(
    sizes=st.lists(st.integers(1, 40), min_size=1, max_size=30),
    k=st.integers(1, 4),
    cost=st.sampled_from(sorted(COSTS)),
)
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


# ---------------------------------------------------------------------------
# bucketed compiles: run time, padding check, automatic boundaries, artifact

import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

import neuron_ir  # noqa: E402

HF = __import__("pathlib").Path(__file__).parent / "models" / "hf"


def _text_feeds(sess, batch, size, rng):
    feeds = {}
    for inp in sess.get_inputs():
        if "mask" in inp.name:
            mask = np.ones((batch, size), np.int64)
            mask[0, size - size // 3 :] = 0  # a padded sentence inside the client batch
            feeds[inp.name] = mask
        elif "type" in inp.name:
            feeds[inp.name] = np.zeros((batch, size), np.int64)
        else:
            feeds[inp.name] = rng.integers(3, 100, (batch, size)).astype(np.int64)
    return feeds


@pytest.mark.parametrize(
    "path, symbol",
    [
        ("dynamo/hf_bert.onnx", "sequence"),
        ("torchscript/hf_marian_encoder.onnx", "src_len"),
        ("dynamo/hf_bart_encoder.onnx", "src_len"),
    ],
)
def test_bucketed_text_models_match_onnxruntime_at_the_exact_size(path, symbol):
    src = str(HF / path)
    sess = ort.InferenceSession(src, providers=["CPUExecutionProvider"])
    model = neuron_ir.compile(src, "inf1", buckets={symbol: [16, 32, 64, 128]}, batch=2)
    rng = np.random.default_rng(1)
    for batch in (1, 3):
        for size in (5, 16, 17, 63, 128):
            feeds = _text_feeds(sess, batch, size, rng)
            got = model.run(feeds)
            assert model.last_bucket == (min(b for b in (16, 32, 64, 128) if b >= size),)
            for out, want in zip(sess.get_outputs(), sess.run(None, feeds), strict=True):
                assert got[out.name].shape == want.shape
                np.testing.assert_allclose(got[out.name], want, rtol=1e-3, atol=1e-4)


def _pooling_model(masked: bool) -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((8, 8)).astype(np.float32), "w")
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Relu", ["h"], ["r"])]
    if masked:  # sum(r * mask) / sum(mask): padding-proof
        nodes += [
            helper.make_node("Unsqueeze", ["mask", "ax"], ["m3"]),
            helper.make_node("Mul", ["r", "m3"], ["rm"]),
            helper.make_node("ReduceSum", ["rm", "one"], ["s"], keepdims=0),
            helper.make_node("ReduceSum", ["m3", "one"], ["n"], keepdims=0),
            helper.make_node("Div", ["s", "n"], ["pooled"]),
        ]
    else:
        nodes += [helper.make_node("ReduceMean", ["r", "one"], ["pooled"], keepdims=0)]
    inits = [
        w,
        numpy_helper.from_array(np.array([1], np.int64), "one"),
        numpy_helper.from_array(np.array([2], np.int64), "ax"),
    ]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "sequence", 8])]
    if masked:
        inputs.append(
            helper.make_tensor_value_info("mask", TensorProto.FLOAT, ["batch", "sequence"])
        )
    outputs = [
        helper.make_tensor_value_info("pooled", TensorProto.FLOAT, ["batch", 8]),
        helper.make_tensor_value_info("r", TensorProto.FLOAT, ["batch", "sequence", 8]),
    ]
    graph = helper.make_graph(nodes, "pool", inputs, outputs, inits)
    # opset 18: ReduceMean takes its axes as an input
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def test_padding_check_refuses_a_mean_over_the_sequence_without_the_mask():
    with pytest.raises(neuron_ir.NeuronIRError, match="output 'pooled' in bucket sequence=8"):
        neuron_ir.compile(_pooling_model(False), dims={"batch": 1}, buckets={"sequence": [4, 8]})
    # Accepted on request, and the masked model passes the check.
    loose = neuron_ir.compile(
        _pooling_model(False), dims={"batch": 1}, buckets={"sequence": [4, 8]}, check_padding=False
    )
    assert "NOT checked" in loose.describe_deployment()
    masked = neuron_ir.compile(
        _pooling_model(True), dims={"batch": 1}, buckets={"sequence": [4, 8]}
    )
    x = np.random.default_rng(0).standard_normal((1, 5, 8)).astype(np.float32)
    got = masked.run({"x": x, "mask": np.ones((1, 5), np.float32)})
    assert got["r"].shape == (1, 5, 8) and masked.last_bucket == (8,)


def test_bucket_errors_name_what_and_where():
    model = neuron_ir.compile(
        _pooling_model(True),
        dims={"batch": 1},
        buckets={"sequence": [4, 8]},
        pad_values={"mask": 0},
    )
    x = np.zeros((1, 9, 8), np.float32)
    with pytest.raises(
        neuron_ir.NeuronIRError,
        match="input 'x': size 9 along 'sequence' is above the largest bucket 8",
    ):
        model.run({"x": x, "mask": np.ones((1, 9), np.float32)})
    with pytest.raises(
        neuron_ir.NeuronIRError, match="inputs 'x' and 'mask' disagree on 'sequence': 3 vs 4"
    ):
        model.run({"x": np.zeros((1, 3, 8), np.float32), "mask": np.ones((1, 4), np.float32)})
    with pytest.raises(neuron_ir.NeuronIRError, match="no input has the symbol 'seq'"):
        neuron_ir.compile(_pooling_model(True), dims={"batch": 1}, buckets={"seq": [4]})
    with pytest.raises(neuron_ir.NeuronIRError, match="not strictly increasing"):
        neuron_ir.compile(_pooling_model(True), dims={"batch": 1}, buckets={"sequence": [8, 4]})
    with pytest.raises(neuron_ir.NeuronIRError, match="pad value for unknown input 'ids'"):
        neuron_ir.compile(
            _pooling_model(True),
            dims={"batch": 1},
            buckets={"sequence": [4]},
            pad_values={"ids": 0},
        )


def test_pad_value_is_what_padded_positions_hold():
    # An identity-like model shows the padded positions before they are sliced away.
    model = neuron_ir.compile(
        _pooling_model(True), dims={"batch": 1}, buckets={"sequence": [8]}, pad_values={"mask": 0}
    )
    seen = {}
    inner = model.variants[(8,)].run

    def spy(feeds):
        seen.update(feeds)
        return inner(feeds)

    model.variants[(8,)].run = spy
    model.run({"x": np.ones((1, 3, 8), np.float32), "mask": np.ones((1, 3), np.float32)})
    assert seen["mask"].shape == (1, 8)
    assert (seen["mask"][0, 3:] == 0).all() and (seen["mask"][0, :3] == 1).all()


def _wide_model(hidden: int = 128) -> onnx.ModelProto:
    """Work that grows with the sequence: two matmuls over every position."""
    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(rng.standard_normal((hidden, hidden)).astype(np.float32), n)
        for n in ("w1", "w2")
    ]
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h"]),
        helper.make_node("Relu", ["h"], ["r"]),
        helper.make_node("MatMul", ["r", "w2"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "wide",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "sequence", hidden])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "sequence", hidden])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_auto_buckets_beat_padding_to_max_and_powers_of_two():
    rng = np.random.default_rng(0)
    # Sentence lengths: most short, a long tail to 512.
    samples = np.minimum(rng.lognormal(3.0, 0.7, 10_000).astype(int) + 1, 512).tolist()
    model = neuron_ir.compile(
        _wide_model(), dims={"batch": 4}, buckets={"sequence": "auto:4"}, size_samples=samples
    )
    chosen = model.boundaries["sequence"]
    assert len(chosen) <= 4 and chosen[-1] == max(samples)
    figures = {label: seconds for label, (_, seconds, _) in model.auto_choices["sequence"].items()}
    assert figures["chosen"] < figures["pad to max"]
    assert figures["chosen"] < figures["4 powers of two"]
    assert "chosen from 10000 sizes (auto:4)" in model.describe_deployment()


def test_bucketed_artifact_stores_weights_once_and_runs(tmp_path):
    src = str(HF / "dynamo" / "hf_bert.onnx")
    one = neuron_ir.compile(src, "inf1", dims={"batch": 1}, buckets={"sequence": [64]})
    four = neuron_ir.compile(
        src, "inf1", dims={"batch": 1}, buckets={"sequence": [16, 32, 64, 128]}
    )
    one.save(tmp_path / "one.nir")
    four.save(tmp_path / "four.nir")
    size_one = (tmp_path / "one.nir").stat().st_size
    size_four = (tmp_path / "four.nir").stat().st_size
    assert size_four <= 1.3 * size_one, (size_one, size_four)
    loaded = neuron_ir.load(str(tmp_path / "four.nir"))
    assert loaded.boundaries == {"sequence": [16, 32, 64, 128]}
    feeds = {
        "input_ids": np.arange(20, dtype=np.int64).reshape(1, 20) % 50,
        "attention_mask": np.ones((1, 20), np.int64),
        "token_type_ids": np.zeros((1, 20), np.int64),
    }
    want, got = four.run(feeds), loaded.run(feeds)
    assert loaded.last_bucket == (32,)
    for name in want:
        np.testing.assert_array_equal(got[name], want[name])


def test_neuron_run_names_the_bucket_that_served_and_prices_it(tmp_path, capsys):
    from neuron_ir.cli.run import main as run_main

    model = neuron_ir.compile(_pooling_model(True), buckets={"sequence": [4, 8]}, batch=2)
    model.save(tmp_path / "m.nir")
    x = np.random.default_rng(0).standard_normal((3, 5, 8)).astype(np.float32)
    np.savez(tmp_path / "in.npz", x=x, mask=np.ones((3, 5), np.float32))
    assert run_main([str(tmp_path / "m.nir"), "--inputs", str(tmp_path / "in.npz")]) == 0
    out = capsys.readouterr().out
    assert "bucket: sequence=8 (of sequence=4; sequence=8)" in out
    assert "client batch 3: 2 run(s) of the compiled batch 2" in out
    served = model.variants[(8,)].timeline().latency
    assert f"{served * 1e6:.1f} us per compiled batch" in out
