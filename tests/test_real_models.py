"""Real-architecture models: CLI round trip, and interpreter results against
onnxruntime (rtol 1e-3, atol 1e-4)."""

from __future__ import annotations

import functools
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import neuron_ir
from neuron_ir import zoo

HF_DIR = Path(__file__).resolve().parent / "models" / "hf"
HF_MODELS = sorted(HF_DIR.glob("*/*.onnx"))


@functools.cache
def _zoo_file(name: str, tmp_root: str) -> Path:
    path = Path(tmp_root) / f"{name}.onnx"
    onnx.save(zoo.build(name), path)
    return path


@pytest.fixture(scope="module")
def zoo_dir(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("zoo"))


def _opt(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "neuron_ir.cli.opt", *args],
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.parametrize("name", ["tiny_bert", "tiny_resnet", "loop_greedy", "if_model"])
def test_neuron_opt_round_trip_is_identical(name, zoo_dir, tmp_path):
    src = _zoo_file(name, zoo_dir)
    a, b = tmp_path / "a.mlir", tmp_path / "b.mlir"
    first = _opt(str(src), "-o", str(a))
    assert first.returncode == 0, first.stderr
    second = _opt(str(a), "-o", str(b))
    assert second.returncode == 0, second.stderr
    assert a.read_bytes() == b.read_bytes()


@pytest.mark.parametrize(
    "path",
    [HF_DIR / "dynamo" / "hf_bert.onnx", HF_DIR / "torchscript" / "hf_bart_decoder_step.onnx"],
    ids=lambda p: f"{p.parent.name}/{p.stem}",
)
def test_neuron_opt_round_trip_of_exported_models(path, tmp_path):
    a, b = tmp_path / "a.mlir", tmp_path / "b.mlir"
    assert _opt(str(path), "-o", str(a)).returncode == 0
    assert _opt(str(a), "-o", str(b)).returncode == 0
    assert a.read_bytes() == b.read_bytes()


def _ort(model: onnx.ModelProto | Path, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    src = str(model) if isinstance(model, Path) else model.SerializeToString()
    return ort.InferenceSession(src, options, providers=["CPUExecutionProvider"]).run(None, feeds)


def _compare(model: onnx.ModelProto, got: dict[str, np.ndarray], want: list[np.ndarray]):
    for out, ref in zip(model.graph.output, want, strict=True):
        have = got[out.name]
        assert have.dtype == ref.dtype and have.shape == ref.shape, out.name
        np.testing.assert_allclose(have, ref, rtol=1e-3, atol=1e-4, err_msg=out.name)


@pytest.mark.parametrize("name", zoo.names())
def test_zoo_model_matches_onnxruntime(name):
    model = zoo.build(name)
    feeds = zoo.example_inputs(name)
    got = neuron_ir.run(neuron_ir.import_model(model), feeds)
    _compare(model, got, _ort(model, feeds))


def _hf_inputs(model: onnx.ModelProto, batch: int = 3, seq: int = 7) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    feeds = {}
    for value in model.graph.input:
        tensor = value.type.tensor_type
        dims = [d.dim_value or (batch if k == 0 else seq) for k, d in enumerate(tensor.shape.dim)]
        if tensor.elem_type == onnx.TensorProto.INT64:
            if "mask" in value.name:
                mask = np.ones(dims, np.int64)
                mask[0, -2:] = 0  # some padding, so that masking is exercised
                feeds[value.name] = mask
            elif "type" in value.name:
                feeds[value.name] = np.zeros(dims, np.int64)
            else:
                feeds[value.name] = rng.integers(0, 100, dims).astype(np.int64)
        else:
            feeds[value.name] = rng.standard_normal(dims).astype(np.float32)
    return feeds


@pytest.mark.parametrize("path", HF_MODELS, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_exported_transformer_matches_onnxruntime(path):
    model = onnx.load(path)
    feeds = _hf_inputs(model)
    got = neuron_ir.run(neuron_ir.import_model(path), feeds)
    _compare(model, got, _ort(path, feeds))


def test_if_model_both_branches_match_onnxruntime():
    model = zoo.build("if_model")
    interpreter = neuron_ir.Interpreter(neuron_ir.import_model(model))
    for sign in (1.0, -1.0):
        feeds = {
            "x": (sign * np.abs(np.random.default_rng(3).standard_normal((2, 3)))).astype(
                np.float32
            )
        }
        _compare(model, interpreter.run(feeds), _ort(model, feeds))


LIGHT = sorted((Path(onnx.__file__).parent / "backend" / "test" / "data" / "light").glob("*.onnx"))


@pytest.mark.parametrize("path", LIGHT, ids=lambda p: p.stem)
def test_light_model_matches_its_shipped_output(path):
    from onnx.backend.test.runner import Runner

    model = onnx.load(path)
    inits = {t.name for t in model.graph.initializer}
    # The inputs onnx's own backend runner feeds these models (arange / n).
    feeds = {
        x.name: Runner.generate_dummy_data(x, seed=0, random=False)
        for x in model.graph.input
        if x.name not in inits
    }
    want = onnx.numpy_helper.to_array(
        onnx.load_tensor(str(path.with_name(path.stem + "_output_0.pb")))
    )
    got = neuron_ir.run(neuron_ir.import_model(path), feeds)[model.graph.output[0].name]
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-5)
