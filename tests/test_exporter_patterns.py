"""The three exporter patterns of issue 9 compile whole with ``neuron_ir.compile`` and
match onnxruntime: a YOLOv5 Detect head (one Split, three used results), an SSD/VGG
backbone (MaxPool with ceil_mode=1) and a DLRM whose EmbeddingBag is a Loop over bags
(a Slice sized by the offsets input: data-dependent, so it runs on the CPU)."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from neuron_ir import zoo
from neuron_ir.compiler import compile as compile_model


def _ort(model, feeds):
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(None, feeds), strict=True))


def _compiled(name, feeds):
    model = zoo.build(name)
    compiled = compile_model(model, "inf1", {k: v.shape for k, v in feeds.items()})
    got, want = compiled.run(feeds), _ort(model, feeds)
    assert got.keys() == want.keys()
    for key in want:
        np.testing.assert_allclose(got[key], want[key], rtol=1e-4, atol=1e-4, err_msg=key)
    return compiled


def _nc_ops(compiled, name):
    return [op for op in compiled.module.walk() if op.name == name]


def test_yolov5_detect_split_runs_on_the_neuroncore():
    compiled = _compiled("yolov5_detect", zoo.example_inputs("yolov5_detect"))
    report = compiled.report
    assert not report.cpu_ops, report.text()
    # Each head's Split into xy, wh, conf: three slices of the last axis.
    slices = [op for op in _nc_ops(compiled, "nc.slice") if list(op.axes.get_values()) == [4]]
    assert len(slices) == 6


def test_ssd_vgg_ceil_mode_pools_run_on_the_neuroncore():
    compiled = _compiled("ssd_vgg", zoo.example_inputs("ssd_vgg"))
    assert not compiled.report.cpu_ops, compiled.report.text()
    ceil = [op for op in _nc_ops(compiled, "nc.pool") if op.ceil_mode is not None]
    assert len(ceil) == 3


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_dlrm_embedding_bag_loop_compiles_and_matches(seed):
    feeds = zoo.example_inputs("dlrm_bag", seed=seed)
    compiled = _compiled("dlrm_bag", feeds)
    report = compiled.report
    # The bag lookups are data-dependent and stay on the CPU; the MLPs do not.
    assert report.cpu_ops and all(
        "data-dependent" in op.reason or "dynamic shape" in op.reason for op in report.cpu_ops
    )
    assert {op.op for op in report.cpu_ops} == {"Slice", "Gather", "ReduceSum"}
    assert _nc_ops(compiled, "nc.matmul")
    # Same shapes, other bag boundaries: the compiled model follows the offsets.
    other = dict(feeds)
    rng = np.random.default_rng(100 + seed)
    for t in range(2):
        n = len(feeds[f"indices_{t}"])
        cuts = np.sort(rng.integers(0, n + 1, len(feeds[f"offsets_{t}"]) - 1))
        other[f"offsets_{t}"] = np.concatenate([[0], cuts]).astype(np.int64)
    want = _ort(zoo.build("dlrm_bag"), other)["click"]
    np.testing.assert_allclose(compiled.run(other)["click"], want, rtol=1e-4, atol=1e-5)
