#!/usr/bin/env python3
"""Partition the zoo models (and shipped HF exports) and print each placement report.

python tools/partition_report.py [--target inf1] [--models tiny_bert tiny_ssd ...] [--hf]
Runs shape-inference (pinned to the example inputs), lower-control-flow and
partition, and prints the share of ops and FLOPs on the NeuronCore per model.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from xdsl.passes import PassPipeline

import neuron_ir
from neuron_ir import zoo
from neuron_ir.analysis.report import partition_report
from neuron_ir.compiler import input_shapes_spec
from passes import available_passes

ROOT = Path(__file__).resolve().parent.parent


def pipeline_for(feeds, target: str) -> str:
    pins = input_shapes_spec({k: v.shape for k, v in feeds.items()})
    return (
        f'shape-inference{{input-shapes="{pins}"}},lower-control-flow,partition{{target={target}}}'
    )


def run(name: str, module, feeds, target: str) -> None:
    start = time.perf_counter()
    PassPipeline.parse_spec(available_passes(), pipeline_for(feeds, target)).apply(
        neuron_ir.make_context(), module
    )
    seconds = time.perf_counter() - start
    report = partition_report(module)
    print(f"== {name}: passes {seconds:.2f} s")
    sys.stdout.write(report.text())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", default="inf1")
    parser.add_argument("--models", nargs="*", default=None)
    parser.add_argument("--hf", action="store_true", help="also the shipped HF exports")
    args = parser.parse_args()
    for name in args.models if args.models is not None else zoo.names():
        feeds = (
            zoo.example_inputs(name, batch=1, seq=128)
            if name in zoo.LARGE_MODELS
            else zoo.example_inputs(name)
        )
        run(name, neuron_ir.import_model(zoo.build(name)), feeds, args.target)
    if args.hf:
        import numpy as np
        import onnx

        for path in sorted((ROOT / "tests" / "models" / "hf").glob("*/*.onnx")):
            model = onnx.load(path)
            feeds = {}
            for value in model.graph.input:
                dims = [
                    d.dim_value or (2 if k == 0 else 8)
                    for k, d in enumerate(value.type.tensor_type.shape.dim)
                ]
                feeds[value.name] = np.zeros(dims)
            run(f"{path.parent.name}/{path.stem}", neuron_ir.import_model(path), feeds, args.target)
    return 0


if __name__ == "__main__":
    sys.exit(main())
