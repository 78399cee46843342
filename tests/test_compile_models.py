"""neuron_ir.compile end to end: every real-architecture model compiles through the
default pipeline (to the nc dialect), matches onnxruntime, keeps only nc ops inside
NeuronCore programs, and survives save -> load bit-identically; random graphs through
the whole pipeline agree with the onnx-level interpreter."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from hypothesis import HealthCheck, given, settings
from test_real_models import _compare, _hf_inputs, _ort
from test_shape_inference_property import graphs, random_feeds
from xdsl.dialects.func import FuncOp

import neuron_ir
from neuron_ir import zoo

HF = sorted((Path(__file__).resolve().parent / "models" / "hf").glob("*/*.onnx"))


def _only_nc_inside_programs(module) -> None:
    for func in module.ops:
        if isinstance(func, FuncOp) and func.attributes.get("neuron.target") is not None:
            names = {op.name for op in func.walk() if op is not func}
            assert names <= {"func.return"} | {n for n in names if n.startswith("nc.")}, names


def _check(model: onnx.ModelProto, source, feeds, tmp_path) -> None:
    shapes = {k: v.shape for k, v in feeds.items()}
    compiled = neuron_ir.compile(source, target="inf1", input_shapes=shapes)
    _only_nc_inside_programs(compiled.module)
    got = compiled.run(feeds)
    _compare(model, got, _ort(model if not isinstance(source, Path) else source, feeds))
    path = tmp_path / "m.nir"
    compiled.save(path)
    again = neuron_ir.load(path).run(feeds)
    for name, value in got.items():
        assert again[name].tobytes() == value.tobytes(), name


@pytest.mark.parametrize("name", zoo.names())
def test_zoo_model_compiles_and_matches_onnxruntime(name, tmp_path):
    model = zoo.build(name)
    _check(model, model, zoo.example_inputs(name), tmp_path)


@pytest.mark.parametrize("path", HF, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_exported_transformer_compiles_and_matches_onnxruntime(path, tmp_path):
    model = onnx.load(path)
    _check(model, path, _hf_inputs(model, batch=2, seq=5), tmp_path)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(graphs())
def test_random_graph_through_the_whole_pipeline(case):
    model, _ = case
    feeds = random_feeds(model)
    want = neuron_ir.run(neuron_ir.import_model(model), feeds)
    compiled = neuron_ir.compile(model, target="inf1")
    _only_nc_inside_programs(compiled.module)
    got = compiled.run(feeds)
    for name, value in want.items():
        np.testing.assert_allclose(got[name], value, rtol=1e-5, atol=1e-5, err_msg=name)


def test_default_pipeline_pass_is_what_compile_runs():
    from xdsl.passes import PassPipeline

    from passes import available_passes

    model = zoo.build("tiny_bert")
    feeds = zoo.example_inputs("tiny_bert")
    before = neuron_ir.run(neuron_ir.import_model(model), feeds)
    compiled = neuron_ir.compile(model, dims="batch:2,sequence:16")
    module = neuron_ir.import_model(model)
    PassPipeline.parse_spec(
        available_passes(), 'default-pipeline{target=inf1 dims="batch:2,sequence:16"}'
    ).apply(neuron_ir.make_context(), module)
    assert neuron_ir.print_ir(module) == neuron_ir.print_ir(compiled.module)
    after = neuron_ir.run(module, feeds)
    for name, value in before.items():
        np.testing.assert_allclose(after[name], value, rtol=1e-5, atol=1e-6)
