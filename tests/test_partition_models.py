"""Partitioning real-architecture models: deterministic, results match onnxruntime,
and the placement is what the seed promises (convolutions and transformer blocks on
the NeuronCore, NonMaxSuppression on the CPU)."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest
from conftest import pins
from test_real_models import _compare, _hf_inputs, _ort
from xdsl.passes import PassPipeline

import neuron_ir
from neuron_ir import zoo
from neuron_ir.analysis.report import partition_report
from passes import available_passes

HF = sorted((Path(__file__).resolve().parent / "models" / "hf").glob("*/*.onnx"))


def _partitioned(source, feeds) -> tuple[str, object]:
    spec = (
        f'shape-inference{{input-shapes="{pins(feeds)}"}},lower-control-flow,'
        "partition{target=inf1}"
    )
    texts = []
    for _ in range(2):
        module = neuron_ir.import_model(source)
        PassPipeline.parse_spec(available_passes(), spec, lambda _a, m, _b: m.verify()).apply(
            neuron_ir.make_context(), module
        )
        texts.append(neuron_ir.print_ir(module))
    assert texts[0] == texts[1], "partitioning is not deterministic"
    return texts[0], module


@pytest.mark.parametrize("name", zoo.names())
def test_zoo_model_partitions_and_matches_onnxruntime(name):
    model = zoo.build(name)
    feeds = zoo.example_inputs(name)
    _, module = _partitioned(model, feeds)
    _compare(model, neuron_ir.run(module, feeds), _ort(model, feeds))
    report = partition_report(module)
    assert report.subgraphs, "nothing went to the NeuronCore"
    if name in (
        "tiny_resnet",
        "tiny_resnext",
        "tiny_vgg",
        "tiny_bert",
        "tiny_yolo",
        "tiny_dlrm",
        "tiny_seq2seq_encoder",
        "tiny_seq2seq_decoder_step",
        "yolov5_detect",
        "ssd_vgg",
    ):
        assert report.cpu_ops == [] and len(report.subgraphs) == 1
    # The seed's promise for detection/classification/transformer models: the
    # NeuronCore does (nearly) all the arithmetic, whatever falls back to the CPU.
    if name in (
        "tiny_resnet",
        "tiny_resnext",
        "tiny_vgg",
        "tiny_bert",
        "tiny_yolo",
        "tiny_ssd",
        "yolov5_detect",
        "ssd_vgg",
        "dlrm_bag",
    ):
        assert report.flop_share >= 0.99, report.text()
    if name == "tiny_ssd":
        cpu = {c.op for c in report.cpu_ops}
        assert "NonMaxSuppression" in cpu and "Conv" not in cpu
        nc_text = neuron_ir.print_ir(module).split("@neuron_subgraph_0", 2)[-1]
        assert '"onnx.Conv"' in nc_text


@pytest.mark.parametrize("path", HF, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_exported_transformer_runs_entirely_on_the_neuroncore(path):
    model = onnx.load(path)
    feeds = _hf_inputs(model, batch=2, seq=6)
    _, module = _partitioned(path, feeds)
    _compare(model, neuron_ir.run(module, feeds), _ort(path, feeds))
    report = partition_report(module)
    assert report.cpu_ops == [] and len(report.subgraphs) == 1
    assert report.flop_share == 1.0


def test_report_and_dot_from_neuron_opt(tmp_path):
    import subprocess
    import sys

    src = tmp_path / "ssd.onnx"
    onnx.save(zoo.build("tiny_ssd"), src)
    dot = tmp_path / "g.dot"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "neuron_ir.cli.opt",
            str(src),
            "--elide-constants",
            "--dot",
            str(dot),
            "-p",
            "shape-inference,partition{target=inf1 report=true}",
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    assert "partition report (target inf1)" in proc.stderr
    assert "NonMaxSuppression '/postprocess/NonMaxSuppression': data-dependent" in proc.stderr
    text = dot.read_text()
    assert text.startswith("digraph") and "cluster_neuron_subgraph_0" in text
    assert "#fdae61" in text and "#7fc97f" in text  # CPU and NeuronCore colours
