"""Compiling for a batch and running any client batch (issue 11): exported and
rebatched models against onnxruntime, partitioned models with CPU ops and inputs
without a batch axis, the artifact, and every wrong input's one clear error."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

import neuron_ir
from neuron_ir import zoo
from neuron_ir.errors import BatchError, NeuronIRError, PassError
from neuron_ir.runtime.batching import BatchSpec, join, run_batched, split
from passes.rebatch import RebatchError

MODELS = Path(__file__).resolve().parent / "models"
HF_BERT = MODELS / "hf" / "dynamo" / "hf_bert.onnx"
CLIENT_BATCHES = [1, 3, 4, 7, 16]


def _ort(path_or_model) -> ort.InferenceSession:
    data = (
        path_or_model.SerializeToString()
        if isinstance(path_or_model, onnx.ModelProto)
        else str(path_or_model)
    )
    return ort.InferenceSession(data, providers=["CPUExecutionProvider"])


def _ort_run(sess: ort.InferenceSession, feeds: dict) -> dict[str, np.ndarray]:
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(names, feeds), strict=True))


def _ort_per_sample(sess: ort.InferenceSession, feeds: dict, batch: int) -> dict:
    """onnxruntime run on each sample alone, outputs stacked (a batch-1 model)."""
    runs = [_ort_run(sess, {k: v[i : i + 1] for k, v in feeds.items()}) for i in range(batch)]
    return {k: np.concatenate([r[k] for r in runs]) for k in runs[0]}


def _assert_close(got: dict, want: dict) -> None:
    assert got.keys() == want.keys()
    for key in want:
        assert got[key].shape == want[key].shape, key
        np.testing.assert_allclose(got[key], want[key], rtol=1e-3, atol=1e-4, err_msg=key)


def _bert_feeds(rng, batch: int, seq: int, vocab: int = 1000) -> dict[str, np.ndarray]:
    return zoo.bert.example_inputs(
        dataclasses.replace(zoo.bert.TINY_BERT, vocab_size=vocab), rng, batch, seq
    )


# ---------------------------------------------------------------------------
# the "done when": exported dynamic BERT, rebatched static ResNet and BERT


@pytest.fixture(scope="module")
def hf_bert():
    return neuron_ir.compile(str(HF_BERT), dims={"sequence": 8}, batch=4)


@pytest.mark.parametrize("batch", CLIENT_BATCHES)
def test_exported_dynamic_bert_runs_any_client_batch(hf_bert, batch):
    feeds = _bert_feeds(np.random.default_rng(batch), batch, 8)
    _assert_close(hf_bert.run(feeds), _ort_run(_ort(HF_BERT), feeds))


def test_compiled_batch_is_recorded_everywhere(hf_bert, tmp_path):
    assert hf_bert.batch == 4
    assert hf_bert.batching.inputs == {"input_ids": 0, "attention_mask": 0, "token_type_ids": 0}
    assert hf_bert.batching.outputs == {"last_hidden_state": 0, "pooler_output": 0}
    programs = [op for op in hf_bert.module.walk() if op.name == "nc.program"]
    assert programs and all(p.batch.value.data == 4 for p in programs)
    assert hf_bert.report.batch == 4
    assert "compiled batch: 4 (batch axis 'batch')" in hf_bert.report.text()
    # The program itself is compiled at the batch: @main takes 4x8.
    assert "tensor<4x8xi64>" in neuron_ir.print_ir(hf_bert.module).split("\n")[1]
    hf_bert.save(tmp_path / "bert.nir")
    loaded = neuron_ir.load(tmp_path / "bert.nir")
    assert loaded.batching == hf_bert.batching
    feeds = _bert_feeds(np.random.default_rng(9), 7, 8)
    _assert_close(loaded.run(feeds), hf_bert.run(feeds))


STATIC = {
    "tiny_resnet_b1": lambda rng, b: zoo.vision.example_images(rng, b, 64),
    "tiny_bert_b1": lambda rng, b: _bert_feeds(rng, b, 16),
}


@pytest.fixture(scope="module")
def static_models():
    return {
        name: neuron_ir.compile(str(MODELS / "static" / f"{name}.onnx"), batch=4) for name in STATIC
    }


@pytest.mark.parametrize("batch", CLIENT_BATCHES)
@pytest.mark.parametrize("name", list(STATIC))
def test_static_batch1_model_rebatched_matches_per_sample_runs(static_models, name, batch):
    path = MODELS / "static" / f"{name}.onnx"
    # The shipped model really is batch 1: onnxruntime refuses a batch of 2.
    first = onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim[0]
    assert first.dim_value == 1
    feeds = STATIC[name](np.random.default_rng(batch), batch)
    cm = static_models[name]
    assert cm.batch == 4 and cm.batching.symbol == "batch"
    _assert_close(cm.run(feeds), _ort_per_sample(_ort(path), feeds, batch))


def test_static_bert_rebatch_rewrote_the_hard_coded_shapes(static_models):
    model = neuron_ir.import_model(str(MODELS / "static" / "tiny_bert_b1.onnx"))
    from neuron_ir.compiler import run_pipeline

    run_pipeline(model, "rebatch{batch=4}")
    text = neuron_ir.print_ir(model)
    # ORT folded MatMul + Add into Reshape [16, 64] / Gemm / Reshape [1, 16, 64]:
    # both now infer the batch instead of hard-coding it.
    assert "dense<[-1, 64]> : tensor<2xi64>" in text
    assert "dense<[-1, 16, 64]> : tensor<3xi64>" in text
    assert "dense<[1, 16, 64]> : tensor<3xi64>" not in text


def test_compiled_without_batch_runs_inputs_as_given():
    cm = neuron_ir.compile(str(HF_BERT), dims={"batch": 2, "sequence": 8})
    assert cm.batching is None and cm.batch == 1 and cm.report.batch is None
    feeds = _bert_feeds(np.random.default_rng(0), 2, 8)
    _assert_close(cm.run(feeds), _ort_run(_ort(HF_BERT), feeds))
    with pytest.raises(NeuronIRError, match="input 'input_ids': expected shape 2x8, got 3x8"):
        cm.run(_bert_feeds(np.random.default_rng(0), 3, 8))


def test_unnamed_leading_dims_are_the_batch(tmp_path):
    """An export whose dynamic axes got generated names (torch's dynamic_axes without
    names) is batched along them."""
    model = onnx.load(str(MODELS / "hf" / "torchscript" / "hf_bert.onnx"))
    for value in list(model.graph.input) + list(model.graph.output):
        value.type.tensor_type.shape.dim[0].dim_param = f"{value.name}_dynamic_axes_1"
    cm = neuron_ir.compile(model, dims={"sequence": 8}, batch=2)
    assert cm.batching.inputs == {"input_ids": 0, "attention_mask": 0, "token_type_ids": 0}
    feeds = _bert_feeds(np.random.default_rng(3), 5, 8)
    _assert_close(cm.run(feeds), _ort_run(_ort(model), feeds))


# ---------------------------------------------------------------------------
# a CPU op between two NeuronCore subgraphs, an input without a batch axis


def _cpu_between_model(static: bool = False) -> onnx.ModelProto:
    """x[batch,8] -> MatMul -> Mod(fmod=1, on the CPU for inf1) -> MatMul -> Add(scale),
    where scale[8] has no batch axis; outputs y[batch,8] and s2 = scale * 2 (no batch
    axis)."""
    rng = np.random.default_rng(0)
    batch = 1 if static else "batch"
    w1 = helper.make_tensor("w1", TensorProto.FLOAT, [8, 8], rng.standard_normal(64))
    w2 = helper.make_tensor("w2", TensorProto.FLOAT, [8, 8], rng.standard_normal(64))
    three = helper.make_tensor("three", TensorProto.FLOAT, [], [3.0])
    two = helper.make_tensor("two", TensorProto.FLOAT, [], [2.0])
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h1"], name="fc1"),
        helper.make_node("Mod", ["h1", "three"], ["h2"], name="wrap", fmod=1),
        helper.make_node("MatMul", ["h2", "w2"], ["h3"], name="fc2"),
        helper.make_node("Add", ["h3", "scale"], ["y"], name="add_scale"),
        helper.make_node("Mul", ["scale", "two"], ["s2"], name="double_scale"),
    ]
    graph = helper.make_graph(
        nodes,
        "cpu_between",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 8]),
            helper.make_tensor_value_info("scale", TensorProto.FLOAT, [8]),
        ],
        [
            helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 8]),
            helper.make_tensor_value_info("s2", TensorProto.FLOAT, [8]),
        ],
        [w1, w2, three, two],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("static", [False, True], ids=["symbolic", "static_b1"])
def test_cpu_op_between_subgraphs_and_input_without_batch_axis(static):
    model = _cpu_between_model(static)
    cm = neuron_ir.compile(model, target="inf1", batch=3)
    report = cm.report
    assert len(report.subgraphs) == 2, report.text()
    assert [c.node for c in report.cpu_ops] == ["wrap"], report.text()
    assert cm.batching.inputs == {"x": 0, "scale": None}
    assert cm.batching.outputs == {"y": 0, "s2": None}
    sess = _ort(_cpu_between_model(False))
    rng = np.random.default_rng(1)
    for batch in (1, 3, 5, 7):
        feeds = {
            "x": rng.standard_normal((batch, 8)).astype(np.float32),
            "scale": rng.standard_normal(8).astype(np.float32),
        }
        _assert_close(cm.run(feeds), _ort_run(sess, feeds))


def test_output_without_batch_axis_that_depends_on_samples_is_named():
    """An output reduced over the batch is per chunk, not per client batch."""
    nodes = [
        helper.make_node("ReduceSum", ["x", "axes"], ["total"], name="sum_batch", keepdims=0),
        helper.make_node("Relu", ["x"], ["y"], name="relu"),
    ]
    graph = helper.make_graph(
        nodes,
        "reduce_batch",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [
            helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4]),
            helper.make_tensor_value_info("total", TensorProto.FLOAT, [4]),
        ],
        [helper.make_tensor("axes", TensorProto.INT64, [1], [0])],
    )
    cm = neuron_ir.compile(
        helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), batch=2
    )
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    np.testing.assert_array_equal(cm.run({"x": x[:2]})["total"], x[:2].sum(0))
    with pytest.raises(
        BatchError, match="output 'total' has no batch axis but differs between chunk 0 and chunk 1"
    ):
        cm.run({"x": x})


# ---------------------------------------------------------------------------
# the chunking itself


def _spec(**kw) -> BatchSpec:
    options = {
        "size": 4,
        "symbol": "batch",
        "inputs": {"a": 0, "b": 1, "c": None},
        "outputs": {"y": 0, "z": None},
        "dynamic": True,
    }
    options.update(kw)
    return BatchSpec(**options)


def test_split_pads_the_last_chunk_with_its_last_sample_and_join_drops_it():
    spec = _spec()
    a = np.arange(7)
    b = np.arange(14).reshape(2, 7)
    c = np.array([5.0])
    chunks = split(spec, {"a": a, "b": b, "c": c})
    assert chunks.client_batch == 7 and chunks.padding == 1 and len(chunks.chunks) == 2
    np.testing.assert_array_equal(chunks.chunks[0]["a"], [0, 1, 2, 3])
    np.testing.assert_array_equal(chunks.chunks[1]["a"], [4, 5, 6, 6])
    np.testing.assert_array_equal(chunks.chunks[1]["b"], b[:, [4, 5, 6, 6]])
    assert all(ch["c"] is c for ch in chunks.chunks)
    seen = []

    def run_chunk(feeds):
        seen.append(feeds["a"].shape[0])
        return {"y": feeds["a"] * 10, "z": feeds["c"]}

    out = run_batched(spec, run_chunk, {"a": a, "b": b, "c": c})
    assert seen == [4, 4]
    np.testing.assert_array_equal(out["y"], a * 10)
    np.testing.assert_array_equal(out["z"], c)
    results = [run_chunk(ch) for ch in chunks.chunks]
    np.testing.assert_array_equal(join(spec, chunks, results)["y"], a * 10)


def test_exact_batch_runs_once_unchanged():
    spec = _spec()
    calls = []
    a = np.arange(4)
    out = run_batched(
        spec,
        lambda f: calls.append(f) or {"y": f["a"], "z": f["c"]},
        {"a": a, "b": np.zeros((1, 4)), "c": np.zeros(1)},
    )
    assert len(calls) == 1 and calls[0]["a"] is a
    np.testing.assert_array_equal(out["y"], a)


# ---------------------------------------------------------------------------
# wrong inputs: one clear error each


@pytest.mark.parametrize("batch", [0, -1, 2.5, "4", True])
def test_bad_batch_size_is_one_clear_error(batch):
    with pytest.raises(BatchError, match=r"batch must be a positive integer, not "):
        neuron_ir.compile(str(HF_BERT), dims={"sequence": 8}, batch=batch)


def test_bad_batch_dim_names_it_and_the_symbols():
    with pytest.raises(
        RebatchError,
        match="batch_dim 'batchh' is not a symbolic dim of any "
        r"input \(symbols: batch, sequence\)",
    ):
        neuron_ir.compile(str(HF_BERT), dims={"sequence": 8}, batch=2, batch_dim="batchh")
    with pytest.raises(BatchError, match="batch_dim='batch' needs batch=N"):
        neuron_ir.compile(str(HF_BERT), dims={"sequence": 8}, batch_dim="batch")
    with pytest.raises(
        PassError,
        match="dims pins the batch symbol 'batch' to 2, but the model is compiled for batch 4",
    ):
        neuron_ir.compile(str(HF_BERT), dims={"sequence": 8, "batch": 2}, batch=4)


def test_batch_dim_names_a_non_leading_symbol():
    """The user may say which symbol is the batch; here the sequence, as a test."""
    cm = neuron_ir.compile(str(HF_BERT), dims={"batch": 2}, batch=8, batch_dim="sequence")
    assert cm.batching.inputs["input_ids"] == 1
    assert cm.batching.outputs == {"last_hidden_state": 1, "pooler_output": None}


def test_mismatched_client_batches_name_the_inputs(hf_bert):
    feeds = _bert_feeds(np.random.default_rng(0), 3, 8)
    feeds["attention_mask"] = feeds["attention_mask"][:2]
    with pytest.raises(
        BatchError,
        match="inputs disagree on the batch size .*'input_ids' has 3, 'attention_mask' has 2",
    ):
        hf_bert.run(feeds)


def test_without_dynamic_batching_another_batch_names_input_size_and_n(tmp_path):
    cm = neuron_ir.compile(str(HF_BERT), dims={"sequence": 8}, batch=2, dynamic_batching=False)
    ok = _bert_feeds(np.random.default_rng(0), 2, 8)
    _assert_close(cm.run(ok), _ort_run(_ort(HF_BERT), ok))
    bad = _bert_feeds(np.random.default_rng(0), 3, 8)
    message = (
        "input 'input_ids' has batch size 3, but the model was compiled for batch 2 "
        "and dynamic batching is off"
    )
    with pytest.raises(BatchError, match=message):
        cm.run(bad)
    cm.save(tmp_path / "m.nir")
    with pytest.raises(BatchError, match=message):
        neuron_ir.load(tmp_path / "m.nir").run(bad)


def test_empty_and_rank_deficient_client_batches(hf_bert):
    feeds = _bert_feeds(np.random.default_rng(0), 1, 8)
    with pytest.raises(BatchError, match="input 'input_ids' has an empty batch"):
        hf_bert.run({k: v[:0] for k, v in feeds.items()})
    with pytest.raises(BatchError, match="input 'input_ids' has rank 0"):
        hf_bert.run({**feeds, "input_ids": np.int64(3)})


def test_unrebatchable_static_model_names_the_node():
    nodes = [helper.make_node("Concat", ["x", "x"], ["y"], name="pair_up", axis=0)]
    graph = helper.make_graph(
        nodes,
        "concat_batch",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(
        RebatchError,
        match="node 'pair_up' \\(Concat\\) concatenates along "
        "the batch axis; the model cannot be rebatched",
    ):
        neuron_ir.compile(model, batch=2)
    # Batch 1 needs no rewrite of a static model... but still follows its batch axis.
    with pytest.raises(RebatchError, match="pair_up"):
        neuron_ir.compile(model, batch=1)


def test_errors_are_neuron_ir_errors():
    assert issubclass(BatchError, NeuronIRError) and issubclass(RebatchError, NeuronIRError)


# ---------------------------------------------------------------------------
# the rebatch pass on its own: interpreter before vs after


@pytest.mark.parametrize("name", list(STATIC))
def test_rebatch_differential(name):
    from neuron_ir.compiler import run_pipeline
    from passes.rebatch import main_func

    path = MODELS / "static" / f"{name}.onnx"
    before = neuron_ir.import_model(str(path))
    after = neuron_ir.import_model(str(path))
    run_pipeline(after, "rebatch{batch=3}")
    assert main_func(after).attributes["neuron.batch"].value.data == 3
    rng = np.random.default_rng(0)
    feeds = STATIC[name](rng, 3)
    # Batch 1: the same program, the same results.
    one = {k: v[:1] for k, v in feeds.items()}
    want1, got1 = neuron_ir.run(before, one), neuron_ir.run(after, one)
    for key in want1:
        np.testing.assert_allclose(got1[key], want1[key], rtol=1e-5, atol=1e-6)
    # Batch 3: the three batch-1 runs stacked.
    per = [neuron_ir.run(before, {k: v[i : i + 1] for k, v in feeds.items()}) for i in range(3)]
    got = neuron_ir.run(after, feeds)
    for key in got:
        np.testing.assert_allclose(
            got[key], np.concatenate([p[key] for p in per]), rtol=1e-4, atol=1e-5, err_msg=key
        )


# ---------------------------------------------------------------------------
# the batch sweep


def test_sweep_marks_the_best_throughput_under_the_bound():
    from neuron_ir.sweep import sweep_batch

    model = _cpu_between_model(False)
    sweep = sweep_batch(model, "inf1", [4, 1, 2, 2])
    assert [p.batch for p in sweep.points] == [1, 2, 4]
    assert sweep.best == max(range(3), key=lambda k: sweep.points[k].throughput)
    for p in sweep.points:
        assert p.latency > 0 and p.throughput > 0
        # Two 8x8 fp32 matmul weights, stored as bf16 under Neuron's default autocast.
        assert p.memory.sbuf_weight_bytes + p.memory.hbm_weight_bytes == 2 * 8 * 8 * 2
    text = sweep.text()
    assert text.count("<- best") == 1
    # A bound only the smallest batch meets makes it the best.
    bounded = sweep_batch(model, "inf1", [1, 2, 4], latency_bound=sweep.points[0].latency)
    assert bounded.best_batch == 1 and "(over the bound)" in bounded.text()
    none = sweep_batch(model, "inf1", [1, 2], latency_bound=sweep.points[0].latency / 10)
    assert none.best is None and "no batch meets the latency bound" in none.text()


def test_sweep_errors():
    from neuron_ir.sweep import sweep_batch

    with pytest.raises(BatchError, match="batches must name at least one batch size"):
        sweep_batch(_cpu_between_model(False), "inf1", [])
    with pytest.raises(BatchError, match="batch must be a positive integer, not 0"):
        sweep_batch(_cpu_between_model(False), "inf1", [1, 0])
    with pytest.raises(BatchError, match="latency_bound must be a positive number"):
        sweep_batch(_cpu_between_model(False), "inf1", [1], latency_bound=-1.0)


def test_sweep_command_line(tmp_path):
    from conftest import run_tool

    path = tmp_path / "m.onnx"
    onnx.save(_cpu_between_model(False), path)
    proc = run_tool("neuron_ir.cli.sweep_batch", str(path), "--batches", "1,2", "--target", "inf1")
    assert proc.returncode == 0, proc.stderr
    assert "batch sweep (inf1)" in proc.stdout and proc.stdout.count("<- best") == 1
    for args, message in [
        (["--batches", "1,x"], "--batches must be integers"),
        (["--batches", "0"], "batch must be a positive integer, not 0"),
        (["--batch-dim", "seq"], "batch_dim 'seq' is not a symbolic dim"),
    ]:
        proc = run_tool("neuron_ir.cli.sweep_batch", str(path), *args)
        assert proc.returncode == 1 and proc.stdout == ""
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"error: {path}: "), proc.stderr
        assert message in lines[0]


def test_batch_too_big_for_device_memory_is_one_clear_error():
    big = 100_000
    with pytest.raises(BatchError) as info:
        neuron_ir.compile(str(HF_BERT), dims={"sequence": 128}, batch=big)
    message = str(info.value)
    assert message.startswith(f"batch {big} does not fit the device memory: weights ")
    assert "but an inf1 chip has 8 GiB; the largest batch this allows is about " in message
    assert f"producing {big}x" in message
    # The batch it suggests does compile (the floor is linear in the batch).
    fits = int(message.rsplit(" ", 1)[1])
    assert 1 <= fits < big
    neuron_ir.compile(str(HF_BERT), dims={"sequence": 128}, batch=fits)


def test_model_too_big_even_at_batch_1():
    rows = 2**30  # 4 GiB a tensor: the Add holds 12 GiB, an inf1 chip has 8
    graph = helper.make_graph(
        [
            helper.make_node("Relu", ["x"], ["h"], name="r1"),
            helper.make_node("Add", ["h", "x"], ["y"], name="a1"),
        ],
        "huge",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", rows])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", rows])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(
        BatchError,
        match="batch 1 does not fit the device memory: .* it does not fit even at batch 1",
    ):
        neuron_ir.compile(model, batch=1)


def test_static_model_takes_the_batch_symbol_the_user_names():
    model = onnx.load(str(MODELS / "static" / "tiny_resnet_b1.onnx"))
    cm = neuron_ir.compile(model, batch=2, batch_dim="samples")
    assert cm.batching.symbol == "samples" and cm.batching.inputs == {"input": 0}
    x = np.random.default_rng(0).standard_normal((3, 3, 64, 64)).astype(np.float32)
    _assert_close(
        cm.run({"input": x}),
        _ort_per_sample(_ort(MODELS / "static" / "tiny_resnet_b1.onnx"), {"input": x}, 3),
    )
