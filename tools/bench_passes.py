#!/usr/bin/env python3
"""Time each pass of a pipeline on a zoo model (default: BERT-base, batch 1, seq 128).

python tools/bench_passes.py [--model bert_base] [--pipeline 'shape-inference{...},...']
"""

from __future__ import annotations

import argparse
import sys
import time

from xdsl.passes import PassPipeline

import neuron_ir
from neuron_ir import zoo
from passes import available_passes

DEFAULT_PIPELINE = {
    "bert_base": 'shape-inference{dims="batch:1,sequence:128"},lower-control-flow,partition',
    "resnet50": 'shape-inference{dims="N:1"},lower-control-flow,partition',
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="bert_base")
    parser.add_argument("--pipeline", default=None)
    args = parser.parse_args()
    pipeline = args.pipeline or DEFAULT_PIPELINE.get(args.model, "shape-inference")
    start = time.perf_counter()
    model = zoo.build(args.model)
    module = neuron_ir.import_model(model)
    print(
        f"{args.model}: built and imported in {time.perf_counter() - start:.2f} s, "
        f"{sum(1 for _ in module.walk())} ops"
    )
    timings: list[tuple[str, float]] = []
    clock = [time.perf_counter()]

    def callback(previous, _module, _next) -> None:
        now = time.perf_counter()
        if previous is not None:
            timings.append((previous.name, now - clock[0]))
        clock[0] = time.perf_counter()

    PassPipeline.parse_spec(available_passes(), pipeline, callback).apply(
        neuron_ir.make_context(), module
    )
    for name, seconds in timings:
        print(f"  {name}: {seconds:.2f} s")
    print(f"  after: {sum(1 for _ in module.walk())} ops")
    return 0


if __name__ == "__main__":
    sys.exit(main())
