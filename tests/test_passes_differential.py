"""Differential tests of shape-inference and lower-control-flow: the interpreter gives
the same results before and after each pass, on real-architecture models."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest
from conftest import assert_same, pins
from xdsl.context import Context
from xdsl.dialects.builtin import DYNAMIC_INDEX, TensorType

import neuron_ir
from neuron_ir import zoo
from passes.lower_control_flow import LowerControlFlowPass
from passes.shape_inference import ShapeInferencePass

HF = sorted((Path(__file__).resolve().parent / "models" / "hf").glob("*/*.onnx"))


def _dynamic_values(module) -> list[str]:
    """Printable descriptions of non-static results outside data-dependent ops."""
    bad = []
    for op in module.walk():
        if op.attributes.get("onnx.data_dependent") is not None:
            continue
        for result in op.results:
            t = result.type
            if not (isinstance(t, TensorType) and DYNAMIC_INDEX not in t.get_shape()):
                name = op.attributes.get("onnx.name")
                bad.append(f"{op.name} {getattr(name, 'data', '')}: {t}")
    return bad


def _check(module, feeds) -> None:
    before = neuron_ir.run(module, feeds)
    ShapeInferencePass(input_shapes=pins(feeds)).apply(Context(), module)
    module.verify()
    assert _dynamic_values(module) == []
    after_shapes = neuron_ir.run(module, feeds)
    assert_same(before, after_shapes)
    LowerControlFlowPass().apply(Context(), module)
    module.verify()
    assert_same(before, neuron_ir.run(module, feeds))
    text = neuron_ir.print_ir(module)
    assert neuron_ir.print_ir(neuron_ir.parse_ir(text)) == text


@pytest.mark.parametrize("name", zoo.names())
def test_zoo_model_unchanged_by_shape_inference_and_control_flow_lowering(name):
    module = neuron_ir.import_model(zoo.build(name))
    _check(module, zoo.example_inputs(name))
    text = neuron_ir.print_ir(module)
    if name == "loop_greedy":
        assert "onnx.Loop" not in text  # constant trip count, no early exit: unrolled
    if name == "loop_early_exit":
        assert "scf.while" in text


@pytest.mark.parametrize("path", HF, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_exported_transformer_becomes_fully_static(path):
    model = onnx.load(path)
    from test_real_models import _hf_inputs

    feeds = _hf_inputs(model, batch=2, seq=5)
    module = neuron_ir.import_model(path)
    _check(module, feeds)
    # The exporters' shape arithmetic is folded away.
    ops = {op.name for op in module.walk()}
    assert "onnx.Shape" not in ops and "onnx.ConstantOfShape" not in ops
