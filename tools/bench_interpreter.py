#!/usr/bin/env python3
"""Interpreter speed against onnxruntime, as the median of paired runs.

python tools/bench_interpreter.py [--models resnet50 bert_base] [--repeat 10]
                                  [--exported DIR] [--reference-repeat 0]

Per model (batch 1, random weights; BERT at sequence 128): the prepared neuron-ir
interpreter and onnxruntime (2 intra-op threads) run alternately ``--repeat`` times;
each pair gives one ratio, and the line prints the median ratio with its range, and
the median times.  Pairing cancels most of the drift of a shared machine; the range
says how noisy the machine was.  The zoo models (neuron_ir.zoo) always run; with
``--exported DIR`` (default: /tmp/neuron-ir-exported when it exists) so do the
TorchScript exports ``tools/export_models.py --big --out DIR`` writes (BERT-base and
ResNet-50 with BatchNorm folded into Conv).  ``--reference-repeat N`` also times
onnx.reference.ReferenceEvaluator (slow).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

import neuron_ir
from neuron_ir import zoo
from neuron_ir.kernels import native
from neuron_ir.testing.bench import exported_models, median_time, paired, spread

DEFAULT_EXPORTED = Path("/tmp/neuron-ir-exported")


def bench(
    name: str, model: onnx.ModelProto, feeds: dict, repeat: int, reference_repeat: int
) -> None:
    start = time.perf_counter()
    interpreter = neuron_ir.Interpreter(neuron_ir.import_model(model))
    prepare = time.perf_counter() - start
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(
        model.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )
    ours = interpreter.run(feeds)
    theirs = session.run(None, feeds)
    worst = max(
        float(np.max(np.abs(ours[o.name] - t)))
        for o, t in zip(model.graph.output, theirs, strict=True)
    )
    t_ours, t_ort = paired(lambda: interpreter.run(feeds), lambda: session.run(None, feeds), repeat)
    ratios = [a / b for a, b in zip(t_ours, t_ort, strict=True)]
    line = (
        f"{name}: ratio {statistics.median(ratios):.2f}x {spread(ratios)} "
        f"(median of {repeat} pairs); neuron-ir {statistics.median(t_ours) * 1e3:.1f} ms, "
        f"onnxruntime {statistics.median(t_ort) * 1e3:.1f} ms"
    )
    if reference_repeat > 0:
        from onnx.reference import ReferenceEvaluator

        evaluator = ReferenceEvaluator(model)
        t_ref = median_time(lambda: evaluator.run(None, feeds), reference_repeat)
        line += f"; ReferenceEvaluator {t_ref * 1e3:.0f} ms"
    print(line, flush=True)
    print(f"  import + plan {prepare:.2f} s; max |neuron-ir - onnxruntime| = {worst:.2e}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", default=["resnet50", "bert_base"])
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument(
        "--exported",
        type=Path,
        default=None,
        help=f"folder of export_models.py --big models ({DEFAULT_EXPORTED} when it exists)",
    )
    parser.add_argument(
        "--reference-repeat",
        type=int,
        default=0,
        help="runs of the (slow) ReferenceEvaluator; 0 skips it",
    )
    args = parser.parse_args()
    # The figures differ with and without them (NEURON_IR_NATIVE=0 measures numpy alone).
    state = "on" if native.enabled() else ("off" if native.built() else "not built")
    conv = "on" if native.conv2d_enabled() else "off (needs AVX2 and FMA)"
    if state == "on":
        state += f"; compiled convolution {conv}"
    print(f"compiled kernels (neuron_ir.kernels.native): {state}", flush=True)
    for name in args.models:
        bench(
            name,
            zoo.build(name),
            zoo.example_inputs(name, batch=1, seq=128),
            args.repeat,
            args.reference_repeat,
        )
    folder = args.exported or (DEFAULT_EXPORTED if DEFAULT_EXPORTED.is_dir() else None)
    if folder is not None:
        for name, model, feeds in exported_models(folder):
            bench(name, model, feeds, args.repeat, args.reference_repeat)
    return 0


if __name__ == "__main__":
    sys.exit(main())
