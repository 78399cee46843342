#!/usr/bin/env python3
"""Compile time and run time of neuron_ir.compile against onnxruntime, same run.

python tools/bench_compile.py [--models resnet50 bert_base] [--repeat 5]

Per model (batch 1, BERT at sequence 128): compile time through the default pipeline,
median run time of the compiled model (nc-level interpreter), of the onnx-level
interpreter on the imported model, and of onnxruntime (2 intra-op threads), with
ratios, plus the simulated NeuronCore latency.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import onnxruntime as ort  # noqa: E402

import neuron_ir  # noqa: E402
from neuron_ir import zoo  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_interpreter import median_time  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["resnet50", "bert_base"])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--target", default="inf1")
    args = parser.parse_args()
    for name in args.models:
        model = zoo.build(name)
        feeds = zoo.example_inputs(name, batch=1, seq=128)
        start = time.perf_counter()
        compiled = neuron_ir.compile(model, target=args.target,
                                     input_shapes={k: v.shape for k, v in feeds.items()})
        compile_s = time.perf_counter() - start
        onnx_level = neuron_ir.Interpreter(neuron_ir.import_model(model))
        options = ort.SessionOptions()
        options.intra_op_num_threads = 2
        session = ort.InferenceSession(model.SerializeToString(), options,
                                       providers=["CPUExecutionProvider"])
        t_nc = median_time(lambda c=compiled, f=feeds: c.run(f), args.repeat)
        t_onnx = median_time(lambda i=onnx_level, f=feeds: i.run(f), args.repeat)
        t_ort = median_time(lambda s=session, f=feeds: s.run(None, f), args.repeat)
        print(f"{name}: compile {compile_s:.2f} s; run: compiled (nc) {t_nc * 1e3:.1f} ms, "
              f"onnx-level {t_onnx * 1e3:.1f} ms, onnxruntime {t_ort * 1e3:.1f} ms; "
              f"nc/onnx-level {t_nc / t_onnx:.2f}x, nc/onnxruntime {t_nc / t_ort:.2f}x; "
              f"simulated {args.target} latency {compiled.simulated_latency * 1e3:.2f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
