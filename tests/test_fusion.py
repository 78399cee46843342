"""Plan-time fusion (neuron_ir/interp/fusion.py) against the unfused reference plan."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import neuron_ir
from neuron_ir.interp import fusion

RNG = np.random.default_rng(7)


def _init(name: str, array: np.ndarray) -> onnx.TensorProto:
    return numpy_helper.from_array(array, name)


def _bn_stats(prefix: str, c: int) -> list[onnx.TensorProto]:
    """Non-trivial inference statistics: scales around +-1, means and shifts off zero,
    variances from 0.05 to 3 (so 1/sqrt(var + eps) is far from 1)."""
    return [
        _init(
            f"{prefix}_s", (RNG.uniform(0.5, 1.5, c) * RNG.choice([-1, 1], c)).astype(np.float32)
        ),
        _init(f"{prefix}_b", RNG.normal(0, 0.5, c).astype(np.float32)),
        _init(f"{prefix}_m", RNG.normal(0, 1.0, c).astype(np.float32)),
        _init(f"{prefix}_v", RNG.uniform(0.05, 3.0, c).astype(np.float32)),
    ]


def _bn(prefix: str, x: str, y: str, **attrs) -> onnx.NodeProto:
    return helper.make_node(
        "BatchNormalization",
        [x, f"{prefix}_s", f"{prefix}_b", f"{prefix}_m", f"{prefix}_v"],
        [y],
        epsilon=1e-3,
        **attrs,
    )


def _residual_model() -> onnx.ModelProto:
    """A ResNet bottleneck (Conv+BN+Relu, Conv+BN, projection Conv+BN, Add, Relu) and a
    BERT attention score chain (MatMul, Div, Add mask) and a Gemm+Relu head."""
    c_in, c = 8, 16
    inits = [
        _init("w1", RNG.normal(0, 0.3, (c, c_in, 3, 3)).astype(np.float32)),
        _init("b1", RNG.normal(0, 0.2, c).astype(np.float32)),
        _init("w2", RNG.normal(0, 0.3, (c, c, 1, 1)).astype(np.float32)),
        _init("wp", RNG.normal(0, 0.3, (c, c_in, 1, 1)).astype(np.float32)),
        _init("q", RNG.normal(0, 0.5, (10, 6)).astype(np.float32)),
        _init("scale", np.array(2.5, np.float32)),
        _init("mask", np.where(RNG.random((1, 6)) < 0.3, -1e4, 0.0).astype(np.float32)),
        _init("gw", RNG.normal(0, 0.5, (6, 5)).astype(np.float32)),
        _init("gb", RNG.normal(0, 0.5, 5).astype(np.float32)),
        *_bn_stats("bn1", c),
        *_bn_stats("bn2", c),
        *_bn_stats("bnp", c),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
        _bn("bn1", "c1", "n1"),
        helper.make_node("Relu", ["n1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2"], ["c2"]),
        _bn("bn2", "c2", "n2"),
        helper.make_node("Conv", ["x", "wp"], ["cp"]),
        _bn("bnp", "cp", "np_"),
        helper.make_node("Add", ["np_", "n2"], ["s"]),  # the chain's value second
        helper.make_node("Relu", ["s"], ["y"]),
        helper.make_node("MatMul", ["t", "q"], ["m"]),
        helper.make_node("Div", ["m", "scale"], ["d"]),
        helper.make_node("Add", ["d", "mask"], ["scores"]),
        helper.make_node("Gemm", ["scores", "gw", "gb"], ["g"]),
        helper.make_node("Relu", ["g"], ["head"]),
    ]
    graph = helper.make_graph(
        nodes,
        "fusion",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, c_in, 9, 9]),
            helper.make_tensor_value_info("t", TensorProto.FLOAT, [4, 10]),
        ],
        [
            helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, c, 9, 9]),
            helper.make_tensor_value_info("scores", TensorProto.FLOAT, [4, 6]),
            helper.make_tensor_value_info("head", TensorProto.FLOAT, [4, 5]),
        ],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _feeds() -> dict[str, np.ndarray]:
    return {
        "x": RNG.normal(0, 1, (2, 8, 9, 9)).astype(np.float32),
        "t": RNG.normal(0, 1, (4, 10)).astype(np.float32),
    }


def _main_ops(module) -> list:
    main = next(op for op in module.ops if op.sym_name.data == "main")
    return list(main.body.block.ops)


def _groups(module) -> list[list[str]]:
    return [g.kinds for g in fusion.find_groups(_main_ops(module))]


def _count_splits(monkeypatch) -> list[int]:
    """The item count of every split from now on: ``parallel.run_chunks`` and the
    compiled convolutions' ``native.run_parts`` both cut their ranges with
    ``parallel.chunk_bounds``, once a split."""
    from neuron_ir.kernels import parallel

    calls: list[int] = []
    original = parallel.chunk_bounds

    def counting(n, parts=None):
        calls.append(n)
        return original(n, parts)

    monkeypatch.setattr(parallel, "chunk_bounds", counting)
    return calls


def test_fused_plan_matches_unfused_and_onnxruntime():
    model = _residual_model()
    module = neuron_ir.import_model(model)
    assert _groups(module) == [
        ["Conv", "BatchNormalization", "Relu"],
        ["Conv", "BatchNormalization", "Add", "Relu"],  # Add reads the projection first
        ["Conv", "BatchNormalization"],
        ["MatMul", "Div", "Add"],
        ["Gemm", "Relu"],
    ]
    feeds = _feeds()
    fused = neuron_ir.Interpreter(module).run(feeds)
    with fusion.disabled():
        reference = neuron_ir.Interpreter(module).run(feeds)
    # BatchNorm folding changes rounding only: a few float32 ulp of the output.
    np.testing.assert_allclose(fused["y"], reference["y"], rtol=1e-5, atol=1e-5)
    assert np.abs(reference["y"]).max() > 1.0 and (reference["y"] == 0).any()
    # Epilogues are the same ufuncs in the same order: bit-identical.
    np.testing.assert_array_equal(fused["scores"], reference["scores"])
    np.testing.assert_array_equal(fused["head"], reference["head"])
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    for name, want in zip(["y", "scores", "head"], session.run(None, feeds), strict=True):
        np.testing.assert_allclose(fused[name], want, rtol=1e-4, atol=1e-4, err_msg=name)


def test_inputs_are_not_written_by_in_place_epilogues():
    module = neuron_ir.import_model(_residual_model())
    feeds = _feeds()
    copies = {k: v.copy() for k, v in feeds.items()}
    interpreter = neuron_ir.Interpreter(module)
    first = interpreter.run(feeds)
    second = interpreter.run(feeds)  # constants (folded weights, biases) unchanged too
    for k in feeds:
        np.testing.assert_array_equal(feeds[k], copies[k])
    for k in first:
        np.testing.assert_array_equal(first[k], second[k])


def _chain_model(bn_attrs: dict, shared: bool, stats_from_input: bool) -> onnx.ModelProto:
    c = 4
    inits = [_init("w", RNG.normal(0, 0.5, (c, 3, 1, 1)).astype(np.float32)), *_bn_stats("bn", c)]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 5, 5])]
    if stats_from_input:
        inits = [i for i in inits if i.name != "bn_m"]
        inputs.append(helper.make_tensor_value_info("bn_m", TensorProto.FLOAT, [c]))
    bn = _bn("bn", "c", "y", **bn_attrs)
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)]
    if bn_attrs.get("training_mode"):  # training mode must also yield the running stats
        bn.output.extend(["bn_rm", "bn_rv"])
        outputs += [
            helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("bn_rm", "bn_rv")
        ]
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"]), bn]
    if shared:  # the conv result has a second use: it must stay materialized
        outputs.append(helper.make_tensor_value_info("c", TensorProto.FLOAT, None))
    graph = helper.make_graph(nodes, "chain", inputs, outputs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 15)])


@pytest.mark.parametrize(
    "bn_attrs,shared,stats_from_input",
    [
        ({"training_mode": 1}, False, False),
        ({}, True, False),
        ({}, False, True),
    ],
)
def test_not_fused_when_unsafe(bn_attrs, shared, stats_from_input):
    module = neuron_ir.import_model(_chain_model(bn_attrs, shared, stats_from_input))
    assert _groups(module) == []


def test_epilogue_that_would_broadcast_runs_unfused():
    # y is (?, 4); at run time (1, 4) + (3, 4) broadcasts to (3, 4): not in place.
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["a", "w"], ["m"]),
            helper.make_node("Add", ["m", "bias"], ["y"]),
        ],
        "broadcast",
        [
            helper.make_tensor_value_info("a", TensorProto.FLOAT, ["n", 2]),
            helper.make_tensor_value_info("bias", TensorProto.FLOAT, ["k", 4]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [_init("w", RNG.normal(0, 1, (2, 4)).astype(np.float32))],
    )
    module = neuron_ir.import_model(
        helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    )
    assert _groups(module) == [["MatMul", "Add"]]
    feeds = {
        "a": RNG.normal(0, 1, (1, 2)).astype(np.float32),
        "bias": RNG.normal(0, 1, (3, 4)).astype(np.float32),
    }
    got = neuron_ir.Interpreter(module).run(feeds)["y"]
    np.testing.assert_array_equal(got, feeds["a"] @ module_weight(module) + feeds["bias"])


def module_weight(module) -> np.ndarray:
    from neuron_ir.ir.attrs import constant_array

    main = next(op for op in module.ops if op.sym_name.data == "main")
    const = next(op for op in main.body.block.ops if op.name == "onnx.Constant")
    return constant_array(const.properties["value"])


# ---------------------------------------------------------------------------
# regions: elementwise DAGs and a row-wise last op, split over both cores


def _bert_layer_model(seq: int = 64, hidden: int = 128, ffn: int = 512) -> onnx.ModelProto:
    """The shapes of a BERT layer's three region kinds, big enough that the products
    split (2 * seq * hidden * ffn > parallel.MIN_FLOPS; 4 heads of 128 x 128 scores):
    Gelu after the first FFN
    product (a DAG: the biased product is read by Div and by Mul), bias, residual and
    LayerNormalization after the second, and the attention scores' Div, mask Add and
    Softmax after a batched product."""
    heads = 4
    inits = [
        _init("w1", RNG.normal(0, 0.1, (hidden, ffn)).astype(np.float32)),
        _init("b1", RNG.normal(0, 1, ffn).astype(np.float32)),
        _init("w2", RNG.normal(0, 0.05, (ffn, hidden)).astype(np.float32)),
        _init("b2", RNG.normal(0, 1, hidden).astype(np.float32)),
        _init("gamma", RNG.normal(1, 0.1, hidden).astype(np.float32)),
        _init("beta", RNG.normal(0, 0.1, hidden).astype(np.float32)),
        _init("sqrt2", np.array(1.4142135, np.float32)),
        _init("one", np.array(1.0, np.float32)),
        _init("half", np.array(0.5, np.float32)),
        _init("scale", np.array(8.0, np.float32)),
    ]
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["m1"]),
        helper.make_node("Add", ["b1", "m1"], ["h"]),
        helper.make_node("Div", ["h", "sqrt2"], ["d"]),
        helper.make_node("Erf", ["d"], ["e"]),
        helper.make_node("Add", ["e", "one"], ["e1"]),
        helper.make_node("Mul", ["h", "e1"], ["g0"]),
        helper.make_node("Mul", ["g0", "half"], ["g"]),
        helper.make_node("MatMul", ["g", "w2"], ["m2"]),
        helper.make_node("Add", ["b2", "m2"], ["o"]),
        helper.make_node("Add", ["o", "x"], ["r"]),
        helper.make_node("LayerNormalization", ["r", "gamma", "beta"], ["ln"], epsilon=1e-12),
        helper.make_node("MatMul", ["q", "k"], ["s"]),
        helper.make_node("Div", ["s", "scale"], ["sd"]),
        helper.make_node("Add", ["sd", "mask"], ["sm"]),
        helper.make_node("Softmax", ["sm"], ["probs"], axis=-1),
    ]
    graph = helper.make_graph(
        nodes,
        "bert_layer",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, seq, hidden]),
            helper.make_tensor_value_info("q", TensorProto.FLOAT, [1, heads, 128, 64]),
            helper.make_tensor_value_info("k", TensorProto.FLOAT, [1, heads, 64, 128]),
            helper.make_tensor_value_info("mask", TensorProto.FLOAT, [1, 1, 1, 128]),
        ],
        [
            helper.make_tensor_value_info("ln", TensorProto.FLOAT, None),
            helper.make_tensor_value_info("probs", TensorProto.FLOAT, None),
        ],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _bert_layer_feeds(seq: int = 64, hidden: int = 128) -> dict[str, np.ndarray]:
    return {
        "x": RNG.normal(0, 1, (1, seq, hidden)).astype(np.float32),
        "q": RNG.normal(0, 1, (1, 4, 128, 64)).astype(np.float32),
        "k": RNG.normal(0, 1, (1, 4, 64, 128)).astype(np.float32),
        "mask": np.where(RNG.random((1, 1, 1, 128)) < 0.2, -1e4, 0.0).astype(np.float32),
    }


def test_bert_regions_are_found_and_match_unfused_bit_for_bit(monkeypatch):
    # The regions one by one: the FFN's reduction chain reassociates (tested below).
    monkeypatch.setattr(fusion, "find_reduction_chains", lambda *args: [])
    model = _bert_layer_model()
    module = neuron_ir.import_model(model)
    assert _groups(module) == [
        ["MatMul", "Add", "Div", "Erf", "Add", "Mul", "Mul"],
        ["MatMul", "Add", "Add", "LayerNormalization"],
        ["MatMul", "Div", "Add", "Softmax"],
    ]
    feeds = _bert_layer_feeds()
    fused = neuron_ir.Interpreter(module).run(feeds)
    with fusion.disabled():
        reference = neuron_ir.Interpreter(module).run(feeds)
    # The products run the kernels' own split and every region op is its kernel or
    # the same ufunc: bit-identical, chunked or not.
    for name in ("ln", "probs"):
        np.testing.assert_array_equal(fused[name], reference[name], err_msg=name)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    for name, want in zip(["ln", "probs"], session.run(None, feeds), strict=True):
        np.testing.assert_allclose(fused[name], want, rtol=1e-4, atol=1e-5, err_msg=name)


def test_softmax_and_layer_norm_end_regions_over_the_buffer(monkeypatch):
    """In BERT's regions, Softmax and LayerNormalization write over the region's own
    buffer: their copying kernels are not called, and the result is unchanged."""
    calls = []
    for name in ("Softmax", "LayerNormalization"):
        kernel = fusion.KERNELS[name]

        def counted(inputs, attrs, n_out, kernel=kernel, name=name):
            calls.append(name)
            return kernel(inputs, attrs, n_out)

        monkeypatch.setitem(fusion.KERNELS, name, counted)
    monkeypatch.setattr(fusion, "find_reduction_chains", lambda *args: [])  # bit for bit
    module = neuron_ir.import_model(_bert_layer_model())
    feeds = _bert_layer_feeds()
    fused = neuron_ir.Interpreter(module).run(feeds)
    assert calls == []
    with fusion.disabled():
        reference = neuron_ir.Interpreter(module).run(feeds)
    assert sorted(set(calls)) == ["LayerNormalization", "Softmax"]  # the unfused plan's
    for name in ("ln", "probs"):
        np.testing.assert_array_equal(fused[name], reference[name], err_msg=name)


def test_regions_split_across_cores(monkeypatch):
    """The BERT-shaped regions really run in chunks (else the test above proves only
    the unsplit path)."""
    from neuron_ir.kernels import parallel

    if parallel.WORKERS == 1 or not parallel._can_split():
        pytest.skip("one core, or no control of BLAS threads: nothing is split")
    calls = _count_splits(monkeypatch)
    module = neuron_ir.import_model(_bert_layer_model())
    neuron_ir.Interpreter(module).run(_bert_layer_feeds())
    # FFN1 and FFN2 split their columns (512, 128 wide), the scores their 4 heads.
    assert 512 in calls and 4 in calls


def _reduction_chains(module) -> list[tuple[list[str], list[str]]]:
    ops = _main_ops(module)
    groups = fusion.find_groups(ops)
    return [(a.kinds, b.kinds) for a, b in fusion.find_reduction_chains(groups)]


def test_reduction_chain_is_one_split_and_close_to_unfused(monkeypatch):
    """BERT's FFN: the Gelu region's column chunks each multiply their slice of the
    second weight's rows, so both products take one split; the second product's sum
    is reassociated, hence close to, not equal to, the unfused result."""
    from neuron_ir.kernels import parallel

    model = _bert_layer_model()
    module = neuron_ir.import_model(model)
    assert _reduction_chains(module) == [
        (
            ["MatMul", "Add", "Div", "Erf", "Add", "Mul", "Mul"],
            ["MatMul", "Add", "Add", "LayerNormalization"],
        )
    ]
    feeds = _bert_layer_feeds()
    calls = _count_splits(monkeypatch)
    chained = neuron_ir.Interpreter(module).run(feeds)["ln"]
    chained_calls = list(calls)
    with fusion.disabled():
        unfused = neuron_ir.Interpreter(module).run(feeds)["ln"]
    np.testing.assert_allclose(chained, unfused, rtol=1e-5, atol=1e-5)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(chained, session.run(["ln"], feeds)[0], rtol=1e-4, atol=1e-5)
    if parallel.WORKERS > 1 and parallel._can_split():
        # FFN1's 512 columns split once; FFN2's own 128-column split is gone.
        assert chained_calls.count(512) == 1 and 128 not in chained_calls


def test_reduction_chain_falls_back_where_the_first_product_splits_by_rows(monkeypatch):
    # 1024 rows by 512 columns: the product splits by rows, whose chunks are not a
    # slice of the second product's inner dimension; the regions run one by one.
    module = neuron_ir.import_model(_bert_layer_model(seq=1024))
    assert len(_reduction_chains(module)) == 1
    feeds = _bert_layer_feeds(seq=1024)
    chained = neuron_ir.Interpreter(module).run(feeds)["ln"]
    monkeypatch.setattr(fusion, "find_reduction_chains", lambda *args: [])
    np.testing.assert_array_equal(chained, neuron_ir.Interpreter(module).run(feeds)["ln"])


def test_reduction_chain_not_formed_when_the_first_result_is_read_elsewhere():
    model = _bert_layer_model()
    model.graph.output.append(helper.make_tensor_value_info("g", TensorProto.FLOAT, None))
    module = neuron_ir.import_model(model)
    assert _reduction_chains(module) == []


def test_region_value_read_outside_is_not_fused():
    # h is read by Div (in the region) and returned: the region stops before it.
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "w"], ["m"]),
            helper.make_node("Add", ["m", "b"], ["h"]),
            helper.make_node("Erf", ["h"], ["e"]),
        ],
        "escape",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [8, 16])],
        [
            helper.make_tensor_value_info("h", TensorProto.FLOAT, None),
            helper.make_tensor_value_info("e", TensorProto.FLOAT, None),
        ],
        [
            _init("w", RNG.normal(0, 1, (16, 4)).astype(np.float32)),
            _init("b", RNG.normal(0, 1, 4).astype(np.float32)),
        ],
    )
    module = neuron_ir.import_model(
        helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    )
    assert _groups(module) == [["MatMul", "Add"]]
    feeds = {"x": RNG.normal(0, 1, (8, 16)).astype(np.float32)}
    fused = neuron_ir.Interpreter(module).run(feeds)
    with fusion.disabled():
        reference = neuron_ir.Interpreter(module).run(feeds)
    for name in ("h", "e"):
        np.testing.assert_array_equal(fused[name], reference[name])


def test_softmax_over_the_split_axis_is_not_split_there():
    # Softmax over axis 1 of (1, 512, 64) @ (64, 256): the product splits its 256
    # columns, which a Softmax over axis 1 may not be split by along its own axis;
    # the region's ops must then split another way and still match.
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "w"], ["m"]),
            helper.make_node("Softmax", ["m"], ["y"], axis=1),
        ],
        "softmax_axis",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 512, 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [_init("w", RNG.normal(0, 1, (64, 256)).astype(np.float32))],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    module = neuron_ir.import_model(model)
    assert _groups(module) == [["MatMul", "Softmax"]]
    feeds = {"x": RNG.normal(0, 1, (1, 512, 64)).astype(np.float32)}
    fused = neuron_ir.Interpreter(module).run(feeds)["y"]
    with fusion.disabled():
        reference = neuron_ir.Interpreter(module).run(feeds)["y"]
    np.testing.assert_array_equal(fused, reference)


def _attention_model(heads: int = 4, probs_read_first: bool = False) -> onnx.ModelProto:
    """Scores, scale, mask and Softmax (a region), then the probabilities times V;
    optionally with the probabilities also read (by a Neg, returned) before that."""
    nodes = [
        helper.make_node("MatMul", ["q", "k"], ["s"]),
        helper.make_node("Div", ["s", "scale"], ["sd"]),
        helper.make_node("Add", ["sd", "mask"], ["sm"]),
        helper.make_node("Softmax", ["sm"], ["probs"], axis=-1),
        helper.make_node("MatMul", ["probs", "v"], ["ctx"]),
    ]
    outputs = [helper.make_tensor_value_info("ctx", TensorProto.FLOAT, None)]
    if probs_read_first:
        nodes.insert(4, helper.make_node("Neg", ["probs"], ["neg"]))
        outputs.append(helper.make_tensor_value_info("neg", TensorProto.FLOAT, None))
    graph = helper.make_graph(
        nodes,
        "attention",
        [
            helper.make_tensor_value_info("q", TensorProto.FLOAT, [1, heads, 128, 64]),
            helper.make_tensor_value_info("k", TensorProto.FLOAT, [1, heads, 64, 128]),
            helper.make_tensor_value_info("v", TensorProto.FLOAT, [1, heads, 128, 64]),
            helper.make_tensor_value_info("mask", TensorProto.FLOAT, [1, 1, 1, 128]),
        ],
        outputs,
        [_init("scale", np.array(8.0, np.float32))],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _attention_feeds(heads: int = 4) -> dict[str, np.ndarray]:
    return {
        "q": RNG.normal(0, 1, (1, heads, 128, 64)).astype(np.float32),
        "k": RNG.normal(0, 1, (1, heads, 64, 128)).astype(np.float32),
        # V as attention gets it: a transposed view of a (1, 128, heads, 64) array
        "v": RNG.normal(0, 1, (1, 128, heads, 64)).astype(np.float32).transpose(0, 2, 1, 3),
        "mask": np.where(RNG.random((1, 1, 1, 128)) < 0.2, -1e4, 0.0).astype(np.float32),
    }


def _stack_chains(module) -> list[tuple[list[str], str]]:
    ops = _main_ops(module)
    groups = fusion.find_groups(ops)
    return [(g.kinds, fusion._type(r)) for g, r in fusion.find_stack_chains(groups, set())]


@pytest.mark.parametrize("heads", [4, 1])  # one head: split by rows, the steps one by one
def test_stack_chain_is_one_split_and_bit_identical(heads, monkeypatch):
    from neuron_ir.kernels import parallel

    module = neuron_ir.import_model(_attention_model(heads))
    assert _stack_chains(module) == [(["MatMul", "Div", "Add", "Softmax"], "MatMul")]
    feeds = _attention_feeds(heads)
    calls = _count_splits(monkeypatch)
    chained = neuron_ir.Interpreter(module).run(feeds)["ctx"]
    chained_splits = len(calls)
    monkeypatch.setattr(fusion, "find_stack_chains", lambda *args: [])
    calls.clear()
    regions = neuron_ir.Interpreter(module).run(feeds)["ctx"]
    region_splits = len(calls)
    # Each chunk is the call the unchained steps make at the same bounds.
    np.testing.assert_array_equal(chained, regions)
    with fusion.disabled():
        unfused = neuron_ir.Interpreter(module).run(feeds)["ctx"]
    np.testing.assert_array_equal(chained, unfused)
    if parallel.WORKERS > 1 and parallel._can_split():
        if heads > 1:
            assert (chained_splits, region_splits) == (1, 2)
        else:
            assert chained_splits == region_splits


def test_stack_chain_not_formed_when_the_probabilities_are_read_elsewhere():
    # The chain would run where the second MatMul stands, after the Neg reading its
    # probabilities.
    module = neuron_ir.import_model(_attention_model(probs_read_first=True))
    assert _stack_chains(module) == []
    feeds = _attention_feeds()
    fused = neuron_ir.Interpreter(module).run(feeds)
    with fusion.disabled():
        unfused = neuron_ir.Interpreter(module).run(feeds)
    for name in ("ctx", "neg"):
        np.testing.assert_array_equal(fused[name], unfused[name])


def _qkv_model(
    ks=(32, 32, 32),
    biased=(True, True, True),
    shared_use=False,
    scalar_bias=False,
    hidden=32,
    seq=48,
) -> onnx.ModelProto:
    """x (1, seq, hidden) times three weights (query, key, value), each + its bias."""
    inits, nodes, outputs = [], [], []
    for i, (name, k) in enumerate(zip("qkv", ks, strict=True)):
        rows = hidden if k == hidden else k
        inits.append(_init(f"w{name}", RNG.normal(0, 0.2, (rows, 16 + 8 * i)).astype(np.float32)))
        x = "x" if rows == hidden else "x_other"
        nodes.append(helper.make_node("MatMul", [x, f"w{name}"], [f"m{name}"]))
        if biased[i]:
            width = 1 if scalar_bias and name == "k" else 16 + 8 * i  # (1,) broadcasts
            inits.append(_init(f"b{name}", RNG.normal(0, 1, width).astype(np.float32)))
            # As TorchScript exports it: the bias through an Identity, first operand.
            nodes.append(helper.make_node("Identity", [f"b{name}"], [f"bi{name}"]))
            pair = [f"bi{name}", f"m{name}"] if i != 1 else [f"m{name}", f"bi{name}"]
            nodes.append(helper.make_node("Add", pair, [name]))
        else:
            nodes.append(helper.make_node("Relu", [f"m{name}"], [name]))
        outputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, None))
    if shared_use:
        outputs.append(helper.make_tensor_value_info("mq", TensorProto.FLOAT, None))
    graph = helper.make_graph(
        nodes,
        "qkv",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, seq, hidden]),
            helper.make_tensor_value_info("x_other", TensorProto.FLOAT, [1, seq, 24]),
        ],
        outputs,
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _qkv_feeds(seq: int = 48) -> dict[str, np.ndarray]:
    return {
        "x": RNG.normal(0, 1, (1, seq, 32)).astype(np.float32),
        "x_other": RNG.normal(0, 1, (1, seq, 24)).astype(np.float32),
    }


def _siblings(module) -> list[int]:
    return [len(s.matmuls) for s in fusion.find_siblings(_main_ops(module))]


def test_sibling_products_run_as_one_and_match_unfused(monkeypatch):
    from neuron_ir.kernels import parallel

    model = _qkv_model()
    module = neuron_ir.import_model(model)
    assert _siblings(module) == [3]
    monkeypatch.setattr(parallel, "MIN_FLOPS", 0)  # split the small product too
    calls = _count_splits(monkeypatch)
    feeds = _qkv_feeds()
    fused = neuron_ir.Interpreter(module).run(feeds)
    if parallel.WORKERS > 1 and parallel._can_split():
        assert calls == [16 + 24 + 32]  # one product, the three weights side by side
    with fusion.disabled():
        reference = neuron_ir.Interpreter(module).run(feeds)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    for name, want in zip("qkv", session.run(None, feeds), strict=True):
        # One wide GEMM cuts its columns elsewhere than three narrow ones: equal to
        # float32 rounding, not bit for bit.
        np.testing.assert_allclose(fused[name], reference[name], rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(fused[name], want, rtol=1e-4, atol=1e-5)
        assert fused[name].shape == want.shape


@pytest.mark.parametrize(
    "kwargs",
    [
        {"ks": (32, 24, 32)},  # one weight has other rows (reads x_other): two siblings
        {"biased": (True, False, True)},  # a bias on some only: not fused
        {"shared_use": True},  # the query product is also an output: not fused
        {"biased": (False, False, False)},  # no bias at all: three siblings, no Add
        {"scalar_bias": True},  # a bias that broadcasts, not one per column: not fused
    ],
)
def test_siblings_only_when_safe(kwargs):
    model = _qkv_model(**kwargs)
    module = neuron_ir.import_model(model)
    found = _siblings(module)
    want = {"ks": [2], "biased": [3] if not any(kwargs.get("biased", [1])) else []}
    assert found == next((v for k, v in want.items() if k in kwargs), [])
    feeds = _qkv_feeds()
    fused = neuron_ir.Interpreter(module).run(feeds)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [o.name for o in model.graph.output]
    for name, want in zip(names, session.run(None, feeds), strict=True):
        np.testing.assert_allclose(fused[name], want, rtol=1e-4, atol=1e-5, err_msg=name)


def _bottleneck_model(batch: int = 1, early_use: bool = False, next_k: int = 1) -> onnx.ModelProto:
    """x -> 1x1+BN+Relu -> 3x3+BN+Relu -> 1x1+BN, + x, Relu -> the next block's 1x1+Relu:
    ResNet's bottleneck and the start of the next block."""
    c, m = 16, 8
    inits = [
        _init("w1", RNG.normal(0, 0.3, (m, c, 1, 1)).astype(np.float32)),
        _init("w2", RNG.normal(0, 0.3, (m, m, 3, 3)).astype(np.float32)),
        _init("w3", RNG.normal(0, 0.3, (c, m, 1, 1)).astype(np.float32)),
        _init("w4", RNG.normal(0, 0.3, (m, c, next_k, next_k)).astype(np.float32)),
        _init("b4", RNG.normal(0, 0.3, m).astype(np.float32)),
        *_bn_stats("bn1", m),
        *_bn_stats("bn2", m),
        *_bn_stats("bn3", c),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"]),
        _bn("bn1", "c1", "n1"),
        helper.make_node("Relu", ["n1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2"], ["c2"], pads=[1, 1, 1, 1]),
        _bn("bn2", "c2", "n2"),
        helper.make_node("Relu", ["n2"], ["r2"]),
        helper.make_node("Conv", ["r2", "w3"], ["c3"]),
        _bn("bn3", "c3", "n3"),
        helper.make_node("Add", ["n3", "x"], ["s"]),
        helper.make_node("Relu", ["s"], ["block"]),
    ]
    outputs = ["y"]
    if early_use:  # the block output read before the next block's region ends
        nodes.append(helper.make_node("Sigmoid", ["block"], ["side"]))
        outputs.append("side")
    nodes += [
        helper.make_node("Conv", ["block", "w4", "b4"], ["c4"]),
        helper.make_node("Relu", ["c4"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "bottleneck",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, c, 12, 10])],
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, None) for name in outputs],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _chains(module) -> list[list[str]]:
    ops = _main_ops(module)
    return [
        [g.kinds[0] + str(len(g.ops)) for g in chain]
        for chain in fusion.find_chains(ops, fusion.find_groups(ops))
    ]


@pytest.mark.parametrize("batch", [1, 2])  # batch 2 splits by images: regions run one by one
def test_row_chain_is_one_split_and_bit_identical(batch, monkeypatch):
    from neuron_ir.kernels import parallel

    model = _bottleneck_model(batch)
    module = neuron_ir.import_model(model)
    # The 3x3 region, the 1x1 expansion with the residual, the next block's 1x1.
    assert _chains(module) == [["Conv3", "Conv4", "Conv2"]]
    monkeypatch.setattr(parallel, "MIN_FLOPS", 0)  # split these small convolutions too
    calls = _count_splits(monkeypatch)
    feeds = {"x": RNG.normal(0, 1, (batch, 16, 12, 10)).astype(np.float32)}
    chained = neuron_ir.Interpreter(module).run(feeds)["y"]
    split_chained = list(calls)
    calls.clear()
    monkeypatch.setattr(fusion, "find_chains", lambda ops, groups: [])
    one_by_one = neuron_ir.Interpreter(module).run(feeds)["y"]
    # Each region's chunk is the call its own step makes, at the same row bounds.
    np.testing.assert_array_equal(chained, one_by_one)
    if parallel.WORKERS > 1 and parallel._can_split():
        if batch == 1:
            assert split_chained == [12, 12] and calls == [12, 12, 12, 12]
        else:
            assert split_chained == calls == [2, 2, 2, 2]
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(chained, session.run(None, feeds)[0], rtol=1e-4, atol=1e-4)


def test_a_chain_declined_for_a_shape_is_not_planned_again(monkeypatch):
    """Four workers split these 12x10 images by channels, which a row chain cannot take:
    the first run finds out after planning the chain's first region, later runs go
    straight to the regions one by one (one plan a convolution), with the same result."""
    from neuron_ir.kernels import nn, parallel

    monkeypatch.setattr(parallel, "WORKERS", 4)
    monkeypatch.setattr(parallel, "MIN_FLOPS", 0)
    module = neuron_ir.import_model(_bottleneck_model())
    assert _chains(module) == [["Conv3", "Conv4", "Conv2"]]
    plans = []
    real = nn.Conv2dPlan.__init__

    def counted(self, *args):
        plans.append(args[0].shape)
        real(self, *args)

    monkeypatch.setattr(nn.Conv2dPlan, "__init__", counted)
    interpreter = neuron_ir.Interpreter(module)
    feeds = {"x": RNG.normal(0, 1, (1, 16, 12, 10)).astype(np.float32)}
    first = interpreter.run(feeds)["y"]
    assert len(plans) == 5  # the four convolutions, and the chain's first region once more
    plans.clear()
    second = interpreter.run(feeds)["y"]
    assert len(plans) == 4
    np.testing.assert_array_equal(first, second)
    monkeypatch.setattr(fusion, "find_chains", lambda ops, groups: [])
    np.testing.assert_array_equal(neuron_ir.Interpreter(module).run(feeds)["y"], first)


@pytest.mark.parametrize("early_use, next_k", [(True, 1), (False, 3)])
def test_row_chain_stops_before_a_value_read_early(early_use, next_k):
    # Read early by an op outside the chain, or by a 3x3 conv (its row r reads input
    # rows r..r+2, which the other core may not have written yet): the chain ends.
    model = _bottleneck_model(early_use=early_use, next_k=next_k)
    module = neuron_ir.import_model(model)
    assert _chains(module) == [["Conv3", "Conv4"]]
    feeds = {"x": RNG.normal(0, 1, (1, 16, 12, 10)).astype(np.float32)}
    got = neuron_ir.Interpreter(module).run(feeds)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [o.name for o in model.graph.output]
    for name, want in zip(names, session.run(None, feeds), strict=True):
        np.testing.assert_allclose(got[name], want, rtol=1e-4, atol=1e-4, err_msg=name)
