#!/usr/bin/env python3
"""Compile time (per pass) and run time of neuron_ir.compile against onnxruntime.

python tools/bench_compile.py [--models resnet50 bert_base bert_24] [--repeat 5]
                              [--compile-repeat 3] [--exported DIR] [--from-proto | --fresh]

Per model (batch 1, BERT at sequence 128): the median compile time through the default
pipeline (import -> nc) of the model's .onnx file (written to a temporary folder first;
``--from-proto`` gives the compile the ModelProto in memory instead, and so keeps every
model's proto alive in this process, which on a VM makes each compile's page faults
dearer; ``--fresh`` runs each compile in a new process, as ``neuron-compile`` does) over
``--compile-repeat`` compiles, with its range, split into
import, each pass and the one verification compile runs after the last pass; the median run time of
the compiled model (nc-level interpreter), of the onnx-level interpreter and of
onnxruntime (2 intra-op threads), and the simulated NeuronCore latency.
``bert_24`` is BERT-base with 24 layers: its compile time should be about
twice BERT-base's.  ``--exported DIR`` also compiles the ``DIR/*.onnx`` models written by
``tools/export_models.py --big`` (torch exports; the zoo's inputs are used by name).
The machine is shared: figures are medians with their range, not single runs.  Each
compile's process CPU time is split into user and sys (the kernel's: mostly first-touch
page faults on the copied weights, whose cost per fault varies severalfold with the
host); the 24/12-layer ratio is given for both wall time and user CPU.
"""

from __future__ import annotations

import argparse
import gc
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import onnx
import onnxruntime as ort
from xdsl.passes import PassPipeline

import neuron_ir
from neuron_ir import zoo
from neuron_ir.compiler import DEFAULT_PIPELINE, imported_ir_frozen
from neuron_ir.testing.bench import exported_model, median_time, spread
from passes import available_passes


def timed_compile(model: onnx.ModelProto | Path, shapes: dict, target: str) -> dict[str, float]:
    """One compile as neuron_ir.compile does it, timing import, each pass and each
    verification separately."""
    times: dict[str, float] = {}
    # The last compile's module is garbage held in reference cycles (ops and their
    # blocks point at each other); free it now, or the collector frees it (hundreds of
    # MB of weights) inside whichever pass of this compile it happens to run in.
    gc.collect()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    start = time.perf_counter()
    module = neuron_ir.import_model(model)
    times["import"] = time.perf_counter() - start
    clock = [time.perf_counter()]

    def callback(previous, mod, next_) -> None:
        now = time.perf_counter()
        if previous is not None:
            times[previous.name] = now - clock[0]
        if next_ is None:  # compile verifies the passes' output once, at the end
            verify_start = time.perf_counter()
            mod.verify()
            times["verify"] = time.perf_counter() - verify_start
        clock[0] = time.perf_counter()

    spec = DEFAULT_PIPELINE(target, shapes)
    with imported_ir_frozen():
        PassPipeline.parse_spec(available_passes(), spec, callback).apply(
            neuron_ir.make_context(), module
        )
    times["total"] = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_SELF)
    times["user"] = after.ru_utime - usage.ru_utime
    times["sys"] = after.ru_stime - usage.ru_stime
    return times


def bench(
    name: str, source: onnx.ModelProto | Path, feeds: dict, args, runs: list | None = None
) -> float:
    """Print the compile figures of ``runs`` (compiled here if not given) and, with
    ``--repeat``, the run times; return the median compile time."""
    shapes = {k: v.shape for k, v in feeds.items()}
    if runs is None:
        runs = [one_compile(source, shapes, args) for _ in range(args.compile_repeat)]
    total = [r["total"] for r in runs]
    parts = ", ".join(
        f"{k} {statistics.median(r[k] for r in runs):.2f}"
        for k in runs[0]
        if k not in ("total", "user", "sys")
    )
    cpu = ", ".join(f"{k} {statistics.median(r[k] for r in runs):.2f}" for k in ("user", "sys"))
    print(
        f"{name}: compile {statistics.median(total):.2f} s {spread(total)} ({parts} s; CPU {cpu} s)"
    )
    if args.repeat > 0:
        model = source if isinstance(source, onnx.ModelProto) else onnx.load(source)
        compiled = neuron_ir.compile(model, target=args.target, input_shapes=shapes)
        onnx_level = neuron_ir.Interpreter(neuron_ir.import_model(model))
        options = ort.SessionOptions()
        options.intra_op_num_threads = 2
        session = ort.InferenceSession(
            model.SerializeToString(), options, providers=["CPUExecutionProvider"]
        )
        t_nc = median_time(lambda: compiled.run(feeds), args.repeat)
        t_onnx = median_time(lambda: onnx_level.run(feeds), args.repeat)
        t_ort = median_time(lambda: session.run(None, feeds), args.repeat)
        print(
            f"  run: compiled (nc) {t_nc * 1e3:.1f} ms, onnx-level {t_onnx * 1e3:.1f} ms, "
            f"onnxruntime {t_ort * 1e3:.1f} ms; nc/onnxruntime {t_nc / t_ort:.2f}x; "
            f"simulated {args.target} latency {compiled.simulated_latency * 1e3:.2f} ms"
        )
    return statistics.median(total)


def fresh_compile(path: Path, shapes: dict, target: str) -> dict[str, float]:
    """``timed_compile`` in a new Python process, as each ``neuron-compile`` runs: no
    memory left by an earlier compile to reuse or to free."""
    code = (
        "import json, sys; from pathlib import Path; sys.path.insert(0, sys.argv[1]); "
        "import bench_compile as b; "
        "shapes = {k: tuple(v) for k, v in json.loads(sys.argv[3]).items()}; "
        "print(json.dumps(b.timed_compile(Path(sys.argv[2]), shapes, sys.argv[4])))"
    )
    args = [str(Path(__file__).parent), str(path), json.dumps(shapes), target]
    done = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, check=True
    )
    return json.loads(done.stdout.splitlines()[-1])


def one_compile(source: onnx.ModelProto | Path, shapes: dict, args) -> dict[str, float]:
    if args.fresh:
        return fresh_compile(source, shapes, args.target)  # type: ignore[arg-type]
    return timed_compile(source, shapes, args.target)


def model_source(name: str, model: onnx.ModelProto, args) -> onnx.ModelProto | Path:
    """What each compile is given: the model's file, as ``neuron-compile`` reads it, or
    with ``--from-proto`` the ModelProto in memory. The file is written once and the
    proto dropped: memory this process holds makes every compile's page faults dearer
    on this VM (a 2.5 GB idle process tripled a BERT-24 import's kernel time)."""
    if args.from_proto:
        return model
    path = args.workdir / f"{name}.onnx"
    path.write_bytes(model.SerializeToString())
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["resnet50", "bert_base"])
    parser.add_argument("--repeat", type=int, default=5, help="runs per engine; 0 skips")
    parser.add_argument("--compile-repeat", type=int, default=3)
    parser.add_argument("--target", default="inf1")
    parser.add_argument(
        "--exported", type=Path, default=None, help="folder of tools/export_models.py --big models"
    )
    parser.add_argument(
        "--from-proto",
        action="store_true",
        help="compile the in-memory ModelProto instead of the model's file",
    )
    parser.add_argument(
        "--fresh",
        action="store_true",
        help="each compile in a new process, as neuron-compile runs (needs the file)",
    )
    args = parser.parse_args()
    if args.fresh and args.from_proto:
        parser.error("--fresh compiles the model's file: it cannot take --from-proto")
    with tempfile.TemporaryDirectory(prefix="bench_compile_") as workdir:
        args.workdir = Path(workdir)
        return run(args)


def run(args) -> int:
    models = {}
    for name in args.models:
        model = zoo.build("bert_base", layers=24) if name == "bert_24" else zoo.build(name)
        feeds = zoo.example_inputs("bert_base" if name == "bert_24" else name, batch=1, seq=128)
        models[name] = (model_source(name, model, args), feeds)
        del model
    paired: dict[str, list] = {}
    ratios: list[float] = []
    user_ratios: list[float] = []
    if "bert_base" in models and "bert_24" in models:
        # The two compiles alternate (in both orders) and the ratio is taken per pair:
        # most of a BERT compile is first-touch page faults on the weights' copy, whose
        # cost drifts with the host from one minute to the next.
        paired = {"bert_base": [], "bert_24": []}
        for k in range(args.compile_repeat):
            order = ["bert_base", "bert_24"][:: 1 if k % 2 == 0 else -1]
            for name in order:
                source, feeds = models[name]
                shapes = {n: v.shape for n, v in feeds.items()}
                paired[name].append(one_compile(source, shapes, args))
            ratios.append(paired["bert_24"][-1]["total"] / paired["bert_base"][-1]["total"])
            user_ratios.append(paired["bert_24"][-1]["user"] / paired["bert_base"][-1]["user"])
    for name, (source, feeds) in models.items():
        bench(name, source, feeds, args, paired.get(name))
    if ratios:
        # The user CPU ratio leaves out the kernel's time (sys), nearly all first-touch
        # page faults on the weights' copy: their count grows with the weights' bytes
        # (1.8x), their cost per fault with the host's mood (2-12 us measured).
        print(
            f"bert_24 / bert_base compile: {statistics.median(ratios):.2f}x {spread(ratios)} "
            f"wall, {statistics.median(user_ratios):.2f}x {spread(user_ratios)} user CPU "
            f"(medians of {len(ratios)} paired compiles)"
        )
    if args.exported is not None:
        for path in sorted(args.exported.glob("big_*.onnx")):
            name, model, feeds = exported_model(path)
            source = model if args.from_proto else path
            del model
            bench(name, source, feeds, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
