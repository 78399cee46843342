"""The per-target operator support table (``neuron_ir.target.legality``) used by ``partition``."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import pins
from onnx import TensorProto, helper, numpy_helper

import neuron_ir
from dialects.onnx import CustomOp, IfOp, OnnxOp
from neuron_ir import zoo
from neuron_ir.target.legality import (
    TABLE,
    TARGETS,
    supported_op_types,
    table_markdown,
    target_reason,
    unsupported_reason,
)
from passes.lower_control_flow import LowerControlFlowPass
from passes.shape_inference import ShapeInferencePass

HF = sorted((Path(__file__).resolve().parent / "models" / "hf").glob("*/*.onnx"))
F32, F64 = TensorProto.FLOAT, TensorProto.DOUBLE


def _model(
    op_type: str,
    inputs: list[tuple[str, int, list]],
    out_type: int = F32,
    inits: dict[str, np.ndarray] | None = None,
    domain: str = "",
    n_outputs: int = 1,
    **attrs,
) -> onnx.ModelProto:
    inits = inits or {}
    names = [n for n, _, _ in inputs] + list(inits)
    outs = [f"y{k}" for k in range(n_outputs)]
    node = helper.make_node(op_type, names, outs, domain=domain or None, **attrs)
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info(n, t, s) for n, t, s in inputs],
        [helper.make_tensor_value_info(o, out_type, None) for o in outs],
        [numpy_helper.from_array(v, k) for k, v in inits.items()],
    )
    opsets = [helper.make_opsetid("", 21)] + ([helper.make_opsetid(domain, 1)] if domain else [])
    return helper.make_model(graph, opset_imports=opsets)


def _ops(model: onnx.ModelProto, shapes: str | None = "", **pins) -> list:
    """The ops of ``@main`` (after shape-inference unless ``shapes`` is None)."""
    module = neuron_ir.import_model(model)
    if shapes is not None:
        ShapeInferencePass(input_shapes=shapes, **pins).apply(neuron_ir.make_context(), module)
    return [
        op
        for op in module.walk()
        if isinstance(op, OnnxOp | CustomOp) and op.name != "onnx.Constant"
    ]


def _single(model: onnx.ModelProto, shapes: str | None = "", **pins):
    ops = _ops(model, shapes, **pins)
    assert len(ops) == 1, [op.name for op in ops]
    return ops[0]


def _reasons(op) -> dict[str, str | None]:
    """The target's side of the table (the lowering's side: tests/test_legality.py)."""
    return {t: target_reason(op, t) for t in TARGETS}


def _conv(spatial: int) -> onnx.ModelProto:
    w = np.zeros((4, 3) + (3,) * spatial, np.float32)
    return _model(
        "Conv", [("x", F32, [1, 3] + [8] * spatial)], inits={"w": w}, pads=[1] * (2 * spatial)
    )


def test_conv_2d_runs_on_both_targets():
    assert _reasons(_single(_conv(2))) == {"inf1": None, "inf2": None}


def test_conv_1d_runs_on_both_targets():
    assert _reasons(_single(_conv(1))) == {"inf1": None, "inf2": None}


def test_conv_3d_only_on_inf2():
    reasons = _reasons(_single(_conv(3)))
    assert reasons["inf2"] is None
    assert reasons["inf1"] is not None and "3-D" in reasons["inf1"]
    assert reasons["inf1"].startswith("Conv:")


def test_non_max_suppression_is_data_dependent():
    model = _model(
        "NonMaxSuppression",
        [("boxes", F32, [1, 6, 4]), ("scores", F32, [1, 1, 6])],
        out_type=TensorProto.INT64,
        inits={"k": np.array([3], np.int64), "iou": np.array([0.5], np.float32)},
    )
    op = _single(model)
    assert op.attributes.get("onnx.data_dependent") is not None
    for reason in _reasons(op).values():
        assert reason is not None and "data-dependent" in reason
    # Even without shape inference (no marker yet), the table never takes it.
    for reason in _reasons(_single(model, shapes=None)).values():
        assert "data-dependent" in reason


def test_float64_add_is_refused_for_its_dtype():
    op = _single(_model("Add", [("a", F64, [2, 3]), ("b", F64, [2, 3])], out_type=F64))
    for reason in _reasons(op).values():
        assert reason is not None and "dtype" in reason and "float64" in reason


def test_dynamic_shape_is_refused():
    model = _model("Relu", [("x", F32, ["batch", 4])])
    op = _single(model, shapes=None)  # not pinned: tensor<?x4xf32>
    for reason in _reasons(op).values():
        assert reason is not None and "dynamic shape" in reason
    assert _reasons(_single(model, dims="batch:2")) == {"inf1": None, "inf2": None}


def test_custom_op_reason_names_the_domain():
    model = _model("FancyOp", [("x", F32, [2, 2])], domain="com.example")
    op = _single(model, shapes=None)
    assert isinstance(op, CustomOp)
    for reason in _reasons(op).values():
        assert "com.example" in reason and "FancyOp" in reason


def _resize(mode: str, scales=(1, 1, 2, 2), **attrs) -> onnx.ModelProto:
    return _model(
        "Resize",
        [("x", F32, [1, 3, 4, 4])],
        inits={"roi": np.zeros(0, np.float32), "scales": np.array(scales, np.float32)},
        mode=mode,
        **attrs,
    )


def test_resize_modes_per_target():
    assert _reasons(_single(_resize("nearest"))) == {"inf1": None, "inf2": None}
    assert _reasons(_single(_resize("linear"))) == {"inf1": None, "inf2": None}
    cubic = _reasons(_single(_resize("cubic")))
    assert cubic["inf2"] is None
    assert "cubic" in cubic["inf1"] and "inf1" in cubic["inf1"]
    # inf1 resizes the two innermost axes only.
    channels = _reasons(_single(_resize("nearest", scales=(1, 2, 2, 2))))
    assert channels["inf2"] is None and "2-D" in channels["inf1"]
    crop = _reasons(_single(_resize("linear", coordinate_transformation_mode="tf_crop_and_resize")))
    assert all("tf_crop_and_resize" in r for r in crop.values())


def test_pad_modes_per_target():
    def pad(mode: str):
        return _single(
            _model(
                "Pad",
                [("x", F32, [1, 1, 4, 4])],
                inits={"pads": np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64)},
                mode=mode,
            )
        )

    assert _reasons(pad("constant")) == {"inf1": None, "inf2": None}
    assert _reasons(pad("reflect")) == {"inf1": None, "inf2": None}
    edge = _reasons(pad("edge"))
    assert edge["inf2"] is None and "edge" in edge["inf1"]
    assert all("wrap" in r for r in _reasons(pad("wrap")).values())


def test_attribute_and_dtype_constraints():
    # TensorEngine ops take float inputs only.
    matmul = _single(
        _model(
            "MatMul",
            [("a", TensorProto.INT32, [2, 3]), ("b", TensorProto.INT32, [3, 2])],
            out_type=TensorProto.INT32,
        )
    )
    assert all("int32" in r for r in _reasons(matmul).values())
    # Einsum: transposes + matmul only.
    ok = _single(_model("Einsum", [("a", F32, [2, 3]), ("b", F32, [3, 4])], equation="ij,jk->ik"))
    assert _reasons(ok) == {"inf1": None, "inf2": None}
    trace = _single(_model("Einsum", [("a", F32, [3, 3])], equation="ii->i"))
    assert all("diagonal" in r for r in _reasons(trace).values())
    # Gather indices must be int32/int64 (the schema already insists).
    gather = _single(_model("Gather", [("d", F32, [5, 3]), ("i", TensorProto.INT32, [2])]))
    assert _reasons(gather) == {"inf1": None, "inf2": None}
    # float8: e5m2 on NeuronCore-v2 only; e4m3fn nowhere.
    e5m2 = _single(
        _model(
            "Cast", [("x", F32, [4])], out_type=TensorProto.FLOAT8E5M2, to=TensorProto.FLOAT8E5M2
        )
    )
    reasons = _reasons(e5m2)
    assert reasons["inf2"] is None and "dtype" in reasons["inf1"]
    e4m3 = _single(
        _model(
            "Cast",
            [("x", F32, [4])],
            out_type=TensorProto.FLOAT8E4M3FN,
            to=TensorProto.FLOAT8E4M3FN,
        )
    )
    assert all("float8_e4m3fn" in r for r in _reasons(e4m3).values())
    # ArgMax: first index on inf1.
    last = _single(
        _model(
            "ArgMax", [("x", F32, [2, 5])], out_type=TensorProto.INT64, axis=1, select_last_index=1
        )
    )
    reasons = _reasons(last)
    assert reasons["inf2"] is None and "select_last_index" in reasons["inf1"]


def test_scatter_is_inf2_only():
    op = _single(
        _model(
            "ScatterND", [("d", F32, [4, 3]), ("i", TensorProto.INT64, [2, 1]), ("u", F32, [2, 3])]
        )
    )
    reasons = _reasons(op)
    assert reasons["inf2"] is None and "not supported on inf1" in reasons["inf1"]


def test_compile_time_inputs():
    # CumSum keeps a static shape with a runtime axis, but the axis must be known.
    cumsum = _single(_model("CumSum", [("x", F32, [2, 3]), ("axis", TensorProto.INT64, [])]))
    assert all("'axis' must be a compile-time constant" in r for r in _reasons(cumsum).values())
    fixed = _model("CumSum", [("x", F32, [2, 3])], inits={"axis": np.array(1, np.int64)})
    assert _reasons(_single(fixed)) == {"inf1": None, "inf2": None}
    # A runtime exponent: inf2 only.
    power = _reasons(_single(_model("Pow", [("x", F32, [2, 3]), ("p", F32, [])])))
    assert power["inf2"] is None and "exponent" in power["inf1"]


def test_control_flow_and_non_onnx_ops_stay_on_the_cpu():
    module = neuron_ir.import_model(zoo.build("if_model"))
    ShapeInferencePass(input_shapes="x:2x3").apply(neuron_ir.make_context(), module)
    if_ops = [op for op in module.walk() if isinstance(op, IfOp)]
    assert if_ops
    for op in if_ops:
        assert all("control flow" in r for r in _reasons(op).values())
    LowerControlFlowPass().apply(neuron_ir.make_context(), module)
    foreign = [
        op
        for op in module.walk()
        if not isinstance(op, OnnxOp | CustomOp) and op.name != "builtin.module"
    ]
    assert {op.name for op in foreign} >= {"scf.if", "func.return", "tensor.extract"}
    for op in foreign:
        assert all("CPU" in r for r in _reasons(op).values()), op.name


def test_constants_go_with_their_users():
    module = neuron_ir.import_model(
        _model("Add", [("a", F64, [2])], out_type=F64, inits={"b": np.ones(2, np.float64)})
    )
    (const,) = [op for op in module.walk() if op.name == "onnx.Constant"]
    assert _reasons(const) == {"inf1": None, "inf2": None}


def test_unknown_target():
    op = _single(_conv(2))
    for call in (
        lambda: unsupported_reason(op, "trn1"),
        lambda: supported_op_types("inf3"),
    ):
        with pytest.raises(ValueError, match="unknown target"):
            call()


def test_table_shape_and_markdown():
    inf1, inf2 = supported_op_types("inf1"), supported_op_types("inf2")
    assert inf1 <= inf2 and inf2 - inf1 >= {"ScatterND", "GRU"}
    assert {"Conv", "MatMul", "Softmax", "LayerNormalization", "Resize", "Gather"} <= inf1
    never = {
        "NonMaxSuppression",
        "NonZero",
        "Unique",
        "RoiAlign",
        "RandomNormal",
        "StringNormalizer",
        "Loop",
        "If",
        "Scan",
        "SequenceAt",
        "ImageDecoder",
    }
    assert not never & inf2 and never <= set(TABLE)
    text = table_markdown()
    rows = {line.split("|")[1].strip() for line in text.splitlines() if line.startswith("| ")}
    assert set(TABLE) <= rows
    assert all(TABLE[name].note or name in inf1 for name in TABLE)  # every exclusion says why


# -- every op of the seed models runs on both targets (data-dependent ones aside)


@functools.cache
def _zoo_module(name: str):
    module = neuron_ir.import_model(zoo.build(name))
    ShapeInferencePass(input_shapes=pins(zoo.example_inputs(name))).apply(
        neuron_ir.make_context(), module
    )
    LowerControlFlowPass().apply(neuron_ir.make_context(), module)
    return module


def _hf_module(path: Path):
    model = onnx.load(path, load_external_data=False)
    symbols = {
        d.dim_param for i in model.graph.input for d in i.type.tensor_type.shape.dim if d.dim_param
    }
    # batch 2; every sequence-like symbol (sequence, src_len, tgt_len) 8.
    dims = ",".join(f"{s}:{2 if s == 'batch' else 8}" for s in sorted(symbols))
    assert "batch" in symbols
    module = neuron_ir.import_model(path)
    ShapeInferencePass(dims=dims).apply(neuron_ir.make_context(), module)
    return module


def _refused(module) -> set[str]:
    """Reasons against the onnx ops of ``module`` that are not data-dependent."""
    out = set()
    for op in module.walk():
        if not isinstance(op, OnnxOp) or op.attributes.get("onnx.data_dependent") is not None:
            continue
        for target in TARGETS:
            reason = unsupported_reason(op, target)
            if reason is not None:
                out.add(f"{target}: {reason}")
    return out


SEED = [
    "tiny_bert",
    "tiny_resnet",
    "tiny_resnext",
    "tiny_vgg",
    "tiny_yolo",
    "tiny_ssd",
    "tiny_dlrm",
    "tiny_seq2seq_encoder",
    "tiny_seq2seq_decoder_step",
    "yolov5_detect",
    "ssd_vgg",
]


@pytest.mark.parametrize("name", SEED)
def test_zoo_model_ops_are_supported(name):
    module = _zoo_module(name)
    assert _refused(module) == set()
    if name == "tiny_ssd":
        nms = [op for op in module.walk() if op.name == "onnx.NonMaxSuppression"]
        assert nms and all("data-dependent" in unsupported_reason(nms[0], t) for t in TARGETS)


@pytest.mark.parametrize("name", sorted(set(zoo.names()) - set(SEED)))
def test_control_flow_zoo_models(name):
    # Only the growing scan accumulators of a CPU while loop (early exit) and the sums
    # of variable-length embedding bags (after a data-dependent Slice) stay dynamic.
    refused = _refused(_zoo_module(name))
    assert all("dynamic shape" in r for r in refused), refused
    assert bool(refused) == (name in ("loop_early_exit", "dlrm_bag"))


@pytest.mark.parametrize("path", HF, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_exported_transformer_ops_are_supported(path):
    assert _refused(_hf_module(path)) == set()
