"""``neuron-compile``: every flag, the artifact it writes, the plan it draws, and one
``error:`` line (exit 1, nothing written) for each bad value."""

from __future__ import annotations

import hashlib

import numpy as np
import onnx
import pytest

import neuron_ir
from neuron_ir import zoo
from neuron_ir.cli.compile import main
from neuron_ir.planner import plan


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("cli") / "tiny_bert.onnx"
    onnx.save(zoo.build("tiny_bert"), str(path))
    return path


def _digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_compile_writes_an_artifact_that_runs(model_path, tmp_path, capsys):
    out = tmp_path / "m.nir"
    code, stdout, err = _run(
        capsys,
        model_path,
        "-o",
        out,
        "--dims",
        "batch:2,sequence:16",
        "--cores",
        "2",
        "--replicas",
        "3",
        "--quiet",
    )
    assert code == 0, err
    assert "NeuronCore" in stdout and "simulated latency" in stdout and "3 copies" in stdout
    loaded = neuron_ir.load(str(out))
    assert loaded.cores == 2 and loaded.replicas == 3
    feeds = zoo.example_inputs("tiny_bert", batch=2, seq=16)
    direct = neuron_ir.compile(str(model_path), dims={"batch": 2, "sequence": 16})
    for name, value in direct.run(feeds).items():
        np.testing.assert_array_equal(loaded.run(feeds)[name], value)


def test_batch_flag_compiles_for_that_batch(model_path, tmp_path, capsys):
    out = tmp_path / "b.nir"
    code, stdout, err = _run(
        capsys, model_path, "-o", out, "--dims", "sequence:16", "--batch", "4", "--quiet"
    )
    assert code == 0, err
    assert neuron_ir.load(str(out)).batch == 4
    assert "batch of 4" in stdout


def test_inf2_target_and_auto_cores(model_path, tmp_path, capsys):
    out = tmp_path / "a.nir"
    code, _, err = _run(
        capsys,
        model_path,
        "-o",
        out,
        "--target",
        "inf2",
        "--dims",
        "batch:1,sequence:16",
        "--cores",
        "auto",
        "--quiet",
    )
    assert code == 0, err
    model = neuron_ir.load(str(out))
    assert model.target == "inf2" and model.cores >= 1


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--cores", "0"], "--cores must be a positive integer"),
        (["--cores", "65"], "inf1 has at most 64 NeuronCores"),
        (["--cores", "x"], "--cores must be a positive integer"),
        (["--replicas", "0"], "--replicas must be a positive integer"),
        (["--batch", "-1"], "--batch must be a positive integer"),
        (["--bucket", "sequence=32,16"], "strictly increasing"),
        (["--bucket", "sequence"], "expected SYMBOL=16,32,64"),
        (["--bucket", "sequence=auto:4"], "needs --size-samples"),
        (["--pad-value", "ids"], "expected INPUT=NUMBER"),
    ],
)
def test_bad_values_are_one_error_line_and_nothing_written(
    model_path, tmp_path, capsys, argv, message
):
    out = tmp_path / "never.nir"
    before = _digest(model_path)
    code, stdout, err = _run(capsys, model_path, "-o", out, "--dims", "batch:1,sequence:16", *argv)
    assert code == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], err
    assert "Traceback" not in err and not out.exists()
    assert _digest(model_path) == before


def test_plan_errors(model_path, tmp_path, capsys):
    for argv, message in [
        (["--plan"], "--plan needs --instance"),
        (["--plan", "--instance", "inf9.huge"], "unknown instance 'inf9.huge'"),
        (["--plan", "--instance", "inf1.xlarge", "--target", "inf2"], "does not match"),
        (
            ["--plan", "--instance", "inf1.xlarge", "--latency-budget", "soon"],
            "--latency-budget must look like",
        ),
        (
            ["--plan", "--instance", "inf1.xlarge", "--plot", str(model_path)],
            "refusing to overwrite",
        ),
    ]:
        code, _, err = _run(capsys, model_path, *argv)
        assert code == 1 and err.count("\n") == 1 and message in err, (argv, err)


def test_refuses_to_overwrite_the_model(model_path, capsys):
    before = _digest(model_path)
    code, _, err = _run(capsys, model_path, "-o", model_path, "--dims", "batch:1,sequence:16")
    assert code == 1 and "refusing to overwrite" in err
    assert _digest(model_path) == before


def test_plan_prints_table_frontier_choice_and_draws(model_path, tmp_path, capsys):
    png = tmp_path / "plan.png"
    code, stdout, err = _run(
        capsys,
        model_path,
        "--plan",
        "--instance",
        "inf1.xlarge",
        "--dims",
        "batch:1,sequence:16",
        "--latency-budget",
        "5ms",
        "--batches",
        "1,4,16",
        "--plot",
        png,
        "--quiet",
    )
    assert code == 0, err
    assert "Pareto frontier" in stdout and "* chosen" in stdout
    assert "compile it with: neuron-compile" in stdout and "--replicas" in stdout
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plan_choice_is_the_best_under_the_budget(model_path):
    result = plan(
        str(model_path),
        "inf1.xlarge",
        dims={"batch": 1, "sequence": 16},
        batches=[1, 2, 8, 32],
        latency_budget=None,
    )
    assert {p.total_cores for p in result.points} <= set(range(1, 5))
    best = max(p.throughput for p in result.points)
    assert result.choice.throughput == best
    budget = sorted(p.latency for p in result.points)[len(result.points) // 2]
    result.latency_budget = budget
    fits = [p for p in result.points if p.latency <= budget]
    assert result.choice.throughput == max(p.throughput for p in fits)
    assert result.choice.latency <= budget
    # The frontier: nothing beats a frontier point on both axes, and every point that is
    # not dominated is on it.
    for p in result.points:
        dominated = any(
            q.latency <= p.latency
            and q.throughput > p.throughput
            or q.latency < p.latency
            and q.throughput >= p.throughput
            for q in result.points
        )
        assert (p in result.frontier) == (not dominated) or any(
            q.latency == p.latency and q.throughput == p.throughput and q in result.frontier
            for q in result.points
            if q is not p
        )
    # Copies scale throughput and leave latency alone.
    one = {(p.batch, p.cores): p for p in result.points if p.replicas == 1}
    for p in result.points:
        base = one[(p.batch, p.cores)]
        assert p.latency == pytest.approx(base.latency)
        assert p.throughput == pytest.approx(base.throughput * p.replicas)


def test_bucket_pad_and_dynamic_batching_flags(model_path, tmp_path, capsys):
    out = tmp_path / "k.nir"
    code, stdout, err = _run(
        capsys,
        model_path,
        "-o",
        out,
        "--batch",
        "2",
        "--batch-dim",
        "batch",
        "--no-dynamic-batching",
        "--bucket",
        "sequence=8,16",
        "--pad-value",
        "input_ids=0",
        "--quiet",
    )
    assert code == 0, err
    assert "buckets:" in stdout and "sequence=16" in stdout
    model = neuron_ir.load(str(out))
    assert model.boundaries == {"sequence": [8, 16]} and model.pad_values == {"input_ids": 0}
    feeds = zoo.example_inputs("tiny_bert", batch=2, seq=11)
    model.run(feeds)
    assert model.last_bucket == (16,)
    with pytest.raises(neuron_ir.NeuronIRError, match="batch"):
        model.run(zoo.example_inputs("tiny_bert", batch=3, seq=11))  # not 2: refused


def test_auto_buckets_from_a_samples_file(model_path, tmp_path, capsys):
    samples = tmp_path / "sizes.txt"
    samples.write_text("3 5 5 6 7 9\n12, 30, 31 4\n")
    code, stdout, err = _run(
        capsys,
        model_path,
        "-o",
        tmp_path / "a.nir",
        "--dims",
        "batch:1",
        "--bucket",
        "sequence=auto:2",
        "--size-samples",
        samples,
        "--quiet",
    )
    assert code == 0, err
    assert "chosen from 10 sizes (auto:2)" in stdout
    assert neuron_ir.load(str(tmp_path / "a.nir")).boundaries["sequence"][-1] == 31


def test_allow_hbm_weights_flag_reaches_the_pipeline(model_path, tmp_path, capsys):
    code, _, err = _run(
        capsys,
        model_path,
        "-o",
        tmp_path / "h.nir",
        "--dims",
        "batch:1,sequence:16",
        "--cores",
        "2",
        "--allow-hbm-weights",
        "--quiet",
    )
    assert code == 0, err
    assert "allow-hbm-weights=true" in neuron_ir.load(str(tmp_path / "h.nir")).pipeline


def test_progress_lines_only_on_a_terminal(model_path, tmp_path, capsys, monkeypatch):
    argv = [model_path, "-o", tmp_path / "p.nir", "--dims", "batch:1,sequence:16"]
    code, _, err = _run(capsys, *argv)  # captured stderr is not a terminal
    assert code == 0 and err == ""
    import sys

    class Tty:
        def __init__(self):
            self.text = ""

        def isatty(self):
            return True

        def write(self, s):
            self.text += s

        def flush(self):
            pass

    tty = Tty()
    monkeypatch.setattr(sys, "stderr", tty)
    assert main([str(a) for a in argv]) == 0
    assert "compiling for inf1" in tty.text and "writing" in tty.text
