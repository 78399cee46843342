"""Tests of the neuron_ir.zoo model generators (validity, determinism, semantics)."""

from __future__ import annotations

import functools

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from neuron_ir import zoo
from neuron_ir.zoo import control_flow, detection, seq2seq

NAMES = list(zoo.MODELS)

EXPECTED_OPSET = {
    "tiny_bert": 14,
    "tiny_resnet": 13,
    "tiny_resnext": 13,
    "tiny_vgg": 11,
    "loop_greedy": 13,
    "loop_early_exit": 13,
    "if_model": 13,
    "tiny_yolo": 11,
    "tiny_ssd": 13,
    "tiny_dlrm": 13,
    "tiny_seq2seq_encoder": 14,
    "tiny_seq2seq_decoder_step": 14,
    "yolov5_detect": 13,
    "ssd_vgg": 13,
    "dlrm_bag": 13,
}

# Output dims that depend on the data, not on the input shapes.
DATA_DEPENDENT_DIMS = {"num_steps", "num_detections"}


@functools.cache
def model(name: str) -> onnx.ModelProto:
    return zoo.build(name)


@functools.cache
def session(name: str) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(
        model(name).SerializeToString(), options, providers=["CPUExecutionProvider"]
    )


def run(name: str, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    sess = session(name)
    return dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feeds), strict=True))


def all_nodes(graph: onnx.GraphProto):
    for node in graph.node:
        yield node
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from all_nodes(attr.g)


def test_registry_contents():
    assert NAMES == list(EXPECTED_OPSET)
    assert "bert_base" not in zoo.MODELS and "bert_base" in zoo.LARGE_MODELS
    with pytest.raises(KeyError):
        zoo.build("no_such_model")


@pytest.mark.parametrize("name", NAMES)
def test_checker_full_check(name):
    onnx.checker.check_model(model(name), full_check=True)


@pytest.mark.parametrize("name", NAMES)
def test_strict_shape_inference(name):
    onnx.shape_inference.infer_shapes(model(name), check_type=True, strict_mode=True)


@pytest.mark.parametrize("name", NAMES)
def test_deterministic(name):
    assert zoo.build(name).SerializeToString() == zoo.build(name).SerializeToString()


@pytest.mark.parametrize("name", NAMES)
def test_metadata(name):
    m = model(name)
    assert [op.version for op in m.opset_import if op.domain in ("", "ai.onnx")] == [
        EXPECTED_OPSET[name]
    ]
    assert m.ByteSize() < 3_000_000
    names = [n.name for n in all_nodes(m.graph)]
    assert all(names) and len(set(names)) == len(names), "node names must be unique and non-empty"
    for value in [*m.graph.input, *m.graph.output]:
        tensor_type = value.type.tensor_type
        assert tensor_type.elem_type != onnx.TensorProto.UNDEFINED, value.name
        assert tensor_type.HasField("shape"), value.name
        for dim in tensor_type.shape.dim:
            assert dim.HasField("dim_value") or dim.HasField("dim_param"), value.name
    for tensor in m.graph.initializer:
        assert tensor.HasField("raw_data"), tensor.name


def _check_outputs(
    name: str, feeds: dict[str, np.ndarray], batch: int, seq: int
) -> dict[str, np.ndarray]:
    outputs = run(name, feeds)
    sizes = {"batch": batch, "N": batch, "sequence": seq, "src_len": seq, "tgt_len": seq}
    for decl in model(name).graph.output:
        value = outputs[decl.name]
        assert np.isfinite(value).all(), decl.name
        assert value.dtype == onnx.helper.tensor_dtype_to_np_dtype(decl.type.tensor_type.elem_type)
        dims = decl.type.tensor_type.shape.dim
        assert value.ndim == len(dims), decl.name
        for axis, dim in enumerate(dims):
            if dim.HasField("dim_value"):
                assert value.shape[axis] == dim.dim_value, (decl.name, axis)
            elif dim.dim_param not in DATA_DEPENDENT_DIMS:
                assert value.shape[axis] == sizes[dim.dim_param], (decl.name, dim.dim_param)
    return outputs


@pytest.mark.parametrize("name", NAMES)
def test_onnxruntime_runs_with_finite_outputs(name):
    _check_outputs(name, zoo.example_inputs(name, batch=2, seq=16, seed=0), 2, 16)


@pytest.mark.parametrize("name", NAMES)
def test_other_symbolic_sizes(name):
    feeds = zoo.example_inputs(name, batch=3, seq=5, seed=1)
    _check_outputs(name, feeds, 3, 5)


@pytest.mark.parametrize("name", NAMES)
def test_example_inputs_match_graph_inputs(name):
    feeds = zoo.example_inputs(name)
    declared = {v.name: v for v in model(name).graph.input}
    assert set(feeds) == set(declared)
    for key, value in feeds.items():
        elem_type = declared[key].type.tensor_type.elem_type
        assert value.dtype == onnx.helper.tensor_dtype_to_np_dtype(elem_type), key
        if "mask" in key:
            assert set(np.unique(value)) <= {0, 1} and (value.sum(axis=1) >= 1).all()
    assert all(np.array_equal(feeds[k], v) for k, v in zoo.example_inputs(name).items()), "seeded"


# ------------------------------------------------------------- semantics


def test_if_model_matches_reference_on_every_branch():
    m = model("if_model")
    base = np.array([[0.2, -0.1, 0.3], [0.1, 0.4, -0.2]], np.float32)  # sum > 0, max <= 1
    cases = [base, base * 5.0, -base, -base * 5.0]  # then/inner-else, then/inner-then, else, else
    for x in cases:
        out = run("if_model", {"x": x})
        want_y, want_z = control_flow.if_model_reference(m, x)
        np.testing.assert_allclose(out["y"], want_y, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(out["z"], want_z, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name,early_exit", [("loop_greedy", False), ("loop_early_exit", True)])
def test_loops_match_reference(name, early_exit):
    max_len = 12 if early_exit else control_flow.GREEDY_STEPS
    lengths = set()
    for start in range(control_flow.VOCAB):
        feeds = {"start_token": np.array([start], np.int64)}
        if early_exit:
            feeds["max_len"] = np.array(max_len, np.int64)
        out = run(name, feeds)
        want = control_flow.greedy_reference(model(name), start, max_len, early_exit)
        np.testing.assert_array_equal(out["tokens"], want)
        assert out["step_logits"].shape == (len(want), 1, control_flow.VOCAB)
        lengths.add(len(want))
    if early_exit:  # some start tokens hit EOS early, others run to max_len
        assert max_len in lengths and min(lengths) < max_len
    else:
        assert lengths == {max_len}


def test_loop_early_exit_zero_trip_count():
    out = run(
        "loop_early_exit",
        {"start_token": np.array([3], np.int64), "max_len": np.array(0, np.int64)},
    )
    assert out["tokens"].shape == (0, 1)


def test_tiny_bert_padding_is_masked():
    feeds = zoo.example_inputs("tiny_bert", batch=1, seq=8)
    feeds["attention_mask"][:] = [[1, 1, 1, 1, 1, 0, 0, 0]]
    base = run("tiny_bert", feeds)
    feeds["input_ids"][0, 5:] = (feeds["input_ids"][0, 5:] + 7) % 1000
    changed = run("tiny_bert", feeds)
    np.testing.assert_allclose(
        changed["last_hidden_state"][:, :5], base["last_hidden_state"][:, :5], atol=1e-5
    )
    np.testing.assert_allclose(changed["pooler_output"], base["pooler_output"], atol=1e-5)


def test_seq2seq_decoder_is_causal():
    feeds = zoo.example_inputs("tiny_seq2seq_decoder_step", batch=2, seq=8)
    base = run("tiny_seq2seq_decoder_step", feeds)["logits"]
    feeds["decoder_input_ids"][:, 5:] = (feeds["decoder_input_ids"][:, 5:] + 11) % 500
    changed = run("tiny_seq2seq_decoder_step", feeds)["logits"]
    np.testing.assert_allclose(changed[:, :5], base[:, :5], atol=1e-5)
    assert not np.allclose(changed[:, 5:], base[:, 5:])


def test_seq2seq_encoder_feeds_decoder():
    enc_feeds = zoo.example_inputs("tiny_seq2seq_encoder", batch=2, seq=6)
    hidden = run("tiny_seq2seq_encoder", enc_feeds)["last_hidden_state"]
    ids = np.full((2, 1), seq2seq.CONFIG.decoder_start_token_id, np.int64)
    logits = run(
        "tiny_seq2seq_decoder_step",
        {
            "decoder_input_ids": ids,
            "encoder_hidden_states": hidden,
            "encoder_attention_mask": enc_feeds["attention_mask"],
        },
    )["logits"]
    assert logits.shape == (2, 1, seq2seq.CONFIG.vocab_size) and np.isfinite(logits).all()


def test_tiny_ssd_selection_is_consistent():
    feeds = zoo.example_inputs("tiny_ssd")
    out = run("tiny_ssd", feeds)
    selected = out["selected_indices"]
    num_priors = len(detection.ssd_priors())
    assert len(selected) > 0
    assert (selected[:, 0] == 0).all()
    assert ((selected[:, 1] >= 0) & (selected[:, 1] < detection.SSD_CLASSES - 1)).all()
    assert ((selected[:, 2] >= 0) & (selected[:, 2] < num_priors)).all()
    assert (out["scores"] > detection.SSD_SCORE_THRESHOLD).all()
    for cls in range(detection.SSD_CLASSES - 1):
        assert (selected[:, 1] == cls).sum() <= detection.SSD_MAX_PER_CLASS
    # x1 <= x2 and y1 <= y2 for decoded corner boxes
    assert (out["boxes"][:, :2] <= out["boxes"][:, 2:]).all()


def test_tiny_dlrm_rows_are_independent():
    feeds = zoo.example_inputs("tiny_dlrm", batch=4)
    full = run("tiny_dlrm", feeds)["ctr"]
    single = run("tiny_dlrm", {k: v[1:2] for k, v in feeds.items()})["ctr"]
    np.testing.assert_allclose(single, full[1:2], rtol=1e-5)
    assert ((full > 0) & (full < 1)).all()


@pytest.mark.slow
def test_bert_base_parameter_count():
    m = zoo.build("bert_base")
    onnx.checker.check_model(m)
    params = sum(
        int(np.prod(t.dims)) for t in m.graph.initializer if t.data_type == onnx.TensorProto.FLOAT
    )
    assert 105_000_000 <= params <= 115_000_000
    assert any(n.op_type == "LayerNormalization" for n in m.graph.node)
    assert m.opset_import[0].version == 17
