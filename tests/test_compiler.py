"""The compile API, the artifact format, the simulated timeline and neuron-run."""

from __future__ import annotations

import json
import os

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from conftest import run_tool

from neuron_ir import zoo
from neuron_ir.compiler import DEFAULT_PIPELINE, CompiledModel, compile, load
from neuron_ir.errors import NeuronIRError, PassError
from neuron_ir.runtime.artifact import ArtifactError
from neuron_ir.runtime.timeline import to_chrome_trace

# name -> compile options; None: pin the shapes of the example inputs
MODELS = {
    "tiny_resnet": None,
    "tiny_bert": {"dims": {"batch": 2, "sequence": 16}},
    "tiny_ssd": None,
    "loop_greedy": None,
}


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    """name -> (onnx path, inputs, CompiledModel), compiled once for the module."""
    root = tmp_path_factory.mktemp("models")
    out = {}
    for name, options in MODELS.items():
        model = zoo.build(name)
        path = root / f"{name}.onnx"
        onnx.save(model, path)
        feeds = zoo.example_inputs(name)
        if options is None:
            options = {"input_shapes": {k: v.shape for k, v in feeds.items()}}
        out[name] = (path, feeds, compile(str(path), **options))
    return out


def test_default_pipeline_is_a_flat_pass_string():
    spec = DEFAULT_PIPELINE("inf1", {"a": (1, 128), "b": (1, 128)}, {"batch": 1})
    # Options left at their defaults are omitted (partition's target defaults to inf1).
    assert spec == (
        'shape-inference{input-shapes="a:1x128,b:1x128" dims="batch:1"},'
        "lower-control-flow,partition,lower-to-nc,nc-place-weights,nc-estimate"
    )
    assert DEFAULT_PIPELINE("inf2", "a:1x2") == (
        'shape-inference{input-shapes="a:1x2"},'
        'lower-control-flow,partition{target="inf2"},'
        "lower-to-nc,nc-place-weights,nc-estimate"
    )
    assert DEFAULT_PIPELINE("inf2", "a:1x2", batch=4, cores="auto").endswith(
        'lower-to-nc{batch=4},pipeline-shard{cores="auto"},nc-place-weights,nc-estimate'
    )


def test_pipeline_text_parses_back_to_the_same_passes():
    from passes.pipeline import default_pipeline, parse_pipeline

    passes = default_pipeline("inf2", {"a": (1, 3)}, {"batch": 2}, batch=4, cores="auto")
    text = DEFAULT_PIPELINE("inf2", {"a": (1, 3)}, {"batch": 2}, batch=4, cores="auto")
    assert "lower-to-nc{batch=4},pipeline-shard{cores=" in text
    assert parse_pipeline(text) == passes


@pytest.mark.parametrize("name", list(MODELS))
def test_compiled_model_matches_onnxruntime(compiled, name):
    path, feeds, model = compiled[name]
    assert isinstance(model, CompiledModel) and model.target == "inf1"
    assert model.report.subgraphs, "nothing went to the NeuronCore"
    ours = model.run(feeds)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    for key, expected in zip(names, sess.run(names, feeds), strict=True):
        np.testing.assert_allclose(ours[key], expected, rtol=1e-3, atol=1e-4, err_msg=key)


@pytest.mark.parametrize("name", list(MODELS))
def test_save_load_run_is_bit_identical_and_small(compiled, name, tmp_path):
    path, feeds, model = compiled[name]
    artifact = tmp_path / f"{name}.nir"
    model.save(artifact)
    assert os.path.getsize(artifact) <= 1.3 * os.path.getsize(path)
    loaded = load(artifact)
    assert loaded.target == model.target and loaded.pipeline == model.pipeline
    before, after = model.run(feeds), loaded.run(feeds)
    assert list(before) == list(after)
    for key in before:
        assert before[key].dtype == after[key].dtype
        assert before[key].tobytes() == after[key].tobytes(), key
    # Loading twice in one process (xDSL's resource keys are process-global).
    again = load(artifact).run(feeds)
    assert all(again[k].tobytes() == before[k].tobytes() for k in before)


def test_compile_does_not_mutate_a_module_argument():
    import neuron_ir

    module = neuron_ir.import_model(zoo.build("tiny_resnet"))
    text = neuron_ir.print_ir(module)
    compile(module, dims={"N": 2})
    assert neuron_ir.print_ir(module) == text


def test_dynamic_input_is_a_pass_error():
    with pytest.raises(PassError, match="dynamic"):
        compile(zoo.build("tiny_resnet"))


@pytest.mark.parametrize("damage", ["magic", "truncate", "flip"])
def test_bad_artifact_names_the_file(compiled, tmp_path, damage):
    artifact = tmp_path / "m.nir"
    compiled["tiny_resnet"][2].save(artifact)
    data = bytearray(artifact.read_bytes())
    if damage == "magic":
        data[:4] = b"ONNX"
    elif damage == "truncate":
        data = data[: len(data) // 2]
    else:
        data[-100] ^= 0xFF
    artifact.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match=str(artifact)) as info:
        load(artifact)
    assert isinstance(info.value, NeuronIRError)


def test_timeline_uses_engines_and_overlaps(compiled):
    model = compiled["tiny_ssd"][2]
    timeline = model.timeline()
    tracks = {e.track for e in timeline.events}
    assert {"tensor", "vector", "cpu"} <= tracks
    assert model.simulated_latency == timeline.latency > 0
    # Per track, events never overlap; every event ends by the latency.
    for track in tracks:
        evs = sorted((e for e in timeline.events if e.track == track), key=lambda e: e.start)
        for a, b in zip(evs, evs[1:], strict=False):
            assert a.start + a.duration <= b.start + 1e-15
    assert max(e.start + e.duration for e in timeline.events) <= timeline.latency
    trace = to_chrome_trace(timeline.events)
    xs = [e for e in trace["traceEvents"] if e["ph"] == "X"]
    assert xs and all({"name", "ts", "dur", "pid", "tid"} <= set(e) for e in xs)


def test_neuron_run_artifact_with_npz(compiled, tmp_path):
    _, feeds, model = compiled["tiny_resnet"]
    artifact, inputs = tmp_path / "r.nir", tmp_path / "x.npz"
    out, trace = tmp_path / "y.npz", tmp_path / "t.json"
    model.save(artifact)
    np.savez(inputs, **feeds)
    proc = run_tool(
        "neuron_ir.cli.run",
        str(artifact),
        "--inputs",
        str(inputs),
        "--output",
        str(out),
        "--trace",
        str(trace),
    )
    assert proc.returncode == 0, proc.stderr
    assert "simulated latency" in proc.stdout and "logits" in proc.stdout
    expected = model.run(feeds)
    with np.load(out) as got:
        assert sorted(got.files) == sorted(expected)
        for k in expected:
            assert got[k].tobytes() == expected[k].tobytes()
    events = json.loads(trace.read_text())["traceEvents"]
    threads = {
        (e["pid"], e["tid"]): e["args"]["name"]
        for e in events
        if e["ph"] == "M" and e["name"] == "thread_name"
    }
    xs = [e for e in events if e["ph"] == "X"]
    assert xs
    named = {threads[(e["pid"], e["tid"])] for e in xs}
    assert named <= {"tensor", "vector", "scalar", "gpsimd", "dma", "cpu"}
    assert "tensor" in named
    assert any(e["ph"] == "M" and e["args"].get("name") == "NeuronCore 0" for e in events)


def test_neuron_run_bad_artifact_is_one_error_line(tmp_path):
    bad, out = tmp_path / "bad.nir", tmp_path / "y.npz"
    bad.write_bytes(b"NEURONIR\x01\x00")
    proc = run_tool("neuron_ir.cli.run", str(bad), "--output", str(out))
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {bad}: "), proc.stderr
    assert not out.exists()


def test_neuron_run_wrong_shape_is_one_error_line(compiled, tmp_path):
    artifact, x, out = tmp_path / "r.nir", tmp_path / "x.npy", tmp_path / "y.npz"
    compiled["tiny_resnet"][2].save(artifact)
    np.save(x, np.zeros((1, 2), np.float32))
    proc = run_tool(
        "neuron_ir.cli.run", str(artifact), "--input", f"input={x}", "--output", str(out)
    )
    assert proc.returncode == 1 and not out.exists()
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "expected shape" in lines[0], proc.stderr


def test_compile_verifies_once_and_still_names_the_pass_that_broke_the_ir(monkeypatch):
    """compile verifies the passes' output once, at the end; a failure re-runs the
    pipeline verifying after each pass, so the error names the culprit."""
    from dataclasses import dataclass

    from xdsl.dialects.func import ReturnOp
    from xdsl.passes import ModulePass

    import passes

    calls = []

    @dataclass(frozen=True)
    class BreakIR(ModulePass):
        name = "break-ir"

        def apply(self, ctx, op) -> None:
            calls.append(self.name)
            main = next(f for f in op.ops if f.sym_name.data == "main")
            ret = main.body.block.last_op
            ret.detach()
            ret.erase(safe_erase=False)
            main.body.block.add_op(ReturnOp())  # returns nothing: @main returns a value

    table = dict(passes.PASSES, **{"break-ir": lambda: BreakIR})
    monkeypatch.setattr(passes, "available_passes", lambda: dict(table))
    with pytest.raises(PassError, match="after pass 'break-ir'"):
        compile(zoo.build("tiny_bert"), pipeline="break-ir,partition")
    assert calls == ["break-ir", "break-ir"]  # the first run verified only at the end


def test_verifier_names_the_pass_that_broke_the_ir(monkeypatch):
    # xDSL calls the callback as (previous_pass, module, next_pass): blame the first.
    from dataclasses import dataclass

    from xdsl.dialects.func import FuncOp
    from xdsl.passes import ModulePass

    import passes
    from neuron_ir.compiler import run_pipeline
    from neuron_ir.importer import import_model

    @dataclass(frozen=True)
    class BreakReturnType(ModulePass):
        name = "break-return-type"

        def apply(self, ctx, op) -> None:
            from xdsl.dialects.builtin import FunctionType

            func = next(f for f in op.ops if isinstance(f, FuncOp))
            func.function_type = FunctionType.from_lists(func.function_type.inputs.data, [])

    monkeypatch.setitem(passes.PASSES, "break-return-type", lambda: BreakReturnType)
    module = import_model(zoo.build("tiny_resnet"))
    with pytest.raises(PassError, match="after pass 'break-return-type'"):
        run_pipeline(
            module,
            'shape-inference{input-shapes="input:1x3x64x64"},break-return-type,lower-control-flow',
        )


def test_data_dependent_results_run_on_the_cpu_not_an_error():
    # Static inputs, but the reduction axes come from a runtime tensor: the result's
    # shape depends on data, so ReduceSum stays on the CPU with that reason.
    from onnx import TensorProto, helper

    nodes = [
        helper.make_node("Relu", ["x"], ["r"]),
        helper.make_node("ReduceSum", ["r", "axes"], ["y"], keepdims=0),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 4]),
            helper.make_tensor_value_info("axes", TensorProto.INT64, [1]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    compiled = compile(model, "inf1", {"x": (2, 3, 4), "axes": (1,)})
    (cpu,) = compiled.report.cpu_ops
    assert cpu.op == "ReduceSum" and "data-dependent" in cpu.reason
    x = np.random.default_rng(0).standard_normal((2, 3, 4)).astype(np.float32)
    for axis in (0, 2):
        got = compiled.run({"x": x, "axes": np.array([axis], np.int64)})["y"]
        np.testing.assert_allclose(got, np.maximum(x, 0).sum(axis=axis), rtol=1e-6)
    # A dim that pinning would fix is still an error naming the input.
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "n"
    with pytest.raises(PassError, match="input 'x' dim 0"):
        compile(model, "inf1")


def _shapes(name: str) -> dict:
    return {k: v.shape for k, v in zoo.example_inputs(name).items()}


def test_compile_parks_the_imported_ir_from_the_collector_and_returns_it(monkeypatch):
    """During the passes the objects that existed before them are frozen (full
    collections skip them); afterwards nothing is, and what the passes erased is
    collected."""
    import gc
    import weakref

    from neuron_ir import compiler

    seen = []
    real = compiler.run_passes

    def watching(module, passes, **kw):
        seen.append(gc.get_freeze_count())
        erased = [op for op in module.walk()][-1]
        seen.append(weakref.ref(erased))
        return real(module, passes, **kw)

    monkeypatch.setattr(compiler, "run_passes", watching)
    model = zoo.build("tiny_bert")
    assert gc.get_freeze_count() == 0
    compiled = compile(model, input_shapes=_shapes("tiny_bert"))
    assert seen[0] > 0  # frozen while the passes ran
    assert gc.get_freeze_count() == 0  # and given back
    del compiled
    gc.collect()
    # An op of the imported module, frozen during the passes, is still garbage the
    # collector finds once the module is dropped.
    assert seen[1]() is None


def test_compile_leaves_a_callers_frozen_objects_alone():
    import gc

    model = zoo.build("tiny_bert")
    shapes = _shapes("tiny_bert")
    gc.freeze()
    try:
        frozen = gc.get_freeze_count()
        compile(model, input_shapes=shapes)
        assert gc.get_freeze_count() == frozen  # not unfrozen by the compile
    finally:
        gc.unfreeze()


def test_frozen_ir_is_given_back_when_a_pass_fails():
    import gc

    from neuron_ir.compiler import imported_ir_frozen

    with pytest.raises(RuntimeError), imported_ir_frozen():
        assert gc.get_freeze_count() > 0
        raise RuntimeError("a pass failed")
    assert gc.get_freeze_count() == 0
