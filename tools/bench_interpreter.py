#!/usr/bin/env python3
"""Interpreter speed against onnxruntime and onnx's ReferenceEvaluator, same run.

python tools/bench_interpreter.py [--models resnet50 bert_base] [--repeat 10]

Prints, per model (batch 1, random weights from neuron_ir.zoo; BERT at sequence
128), the median run time of the prepared neuron-ir interpreter, of onnxruntime
with 2 intra-op threads, and of onnx.reference.ReferenceEvaluator, and the ratios.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import onnxruntime as ort  # noqa: E402
from onnx.reference import ReferenceEvaluator  # noqa: E402

import neuron_ir  # noqa: E402
from neuron_ir import zoo  # noqa: E402


def median_time(fn, repeat: int) -> float:
    fn()  # warm-up: first-touch allocations, lazy initialisation
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def bench(name: str, repeat: int, reference_repeat: int) -> None:
    model = zoo.build(name)
    feeds = zoo.example_inputs(name, batch=1, seq=128)
    start = time.perf_counter()
    interpreter = neuron_ir.Interpreter(neuron_ir.import_model(model))
    prepare = time.perf_counter() - start
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(model.SerializeToString(), options,
                                   providers=["CPUExecutionProvider"])
    ours = interpreter.run(feeds)
    theirs = session.run(None, feeds)
    worst = max(float(np.max(np.abs(ours[o.name] - t)))
                for o, t in zip(model.graph.output, theirs, strict=True))
    t_ours = median_time(lambda: interpreter.run(feeds), repeat)
    t_ort = median_time(lambda: session.run(None, feeds), repeat)
    line = (f"{name}: neuron-ir {t_ours * 1e3:.1f} ms, onnxruntime {t_ort * 1e3:.1f} ms, "
            f"ratio {t_ours / t_ort:.2f}x")
    if reference_repeat > 0:
        evaluator = ReferenceEvaluator(model)
        t_ref = median_time(lambda: evaluator.run(None, feeds), reference_repeat)
        line += f"; ReferenceEvaluator {t_ref * 1e3:.0f} ms ({t_ref / t_ort:.1f}x)"
    print(line)
    print(f"  import + plan {prepare:.2f} s; max |neuron-ir - onnxruntime| = {worst:.2e}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["resnet50", "bert_base"])
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--reference-repeat", type=int, default=1,
                        help="runs of the (slow) ReferenceEvaluator; 0 skips it")
    args = parser.parse_args()
    for name in args.models:
        bench(name, args.repeat, args.reference_repeat)
    return 0


if __name__ == "__main__":
    sys.exit(main())
