#!/usr/bin/env python3
"""Paired A/B of two interpreter settings in one process, for changes too small for
tools/bench_interpreter.py's ratio to onnxruntime to resolve on a noisy machine.

python tools/ab_interpreter.py --model bert_base \\
    --a "fusion.find_siblings = lambda ops: []" [--b STATEMENT] [--repeat 20] [--settle 0.05]
python tools/ab_interpreter.py --model /tmp/neuron-ir-exported/big_bert_base.onnx ...

Each side is a Python statement, run with ``fusion`` (neuron_ir.interp.fusion),
``parallel``, ``nn`` and ``tensor`` (neuron_ir.kernels.*) and ``np`` in scope: once
before that side's interpreter is planned, and again before each of its runs (settings
read at run time must be in effect then), each time after the module attributes the
other side's statement assigned are put back (an empty statement is the code as it is;
a class attribute is not put back, so a statement setting one needs its counterpart on
the other side).  The two interpreters then run alternately, ``--settle`` seconds
apart, and the line prints each side's median, the median of the paired differences
(A - B) and in how many pairs B was faster.  Measured this way, a 3% change stands out
from a machine whose minute-to-minute drift is 15%.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import onnx

import neuron_ir
from neuron_ir import zoo
from neuron_ir.interp import fusion
from neuron_ir.kernels import nn, parallel, tensor
from neuron_ir.testing.bench import exported_model


def load(name: str) -> tuple[onnx.ModelProto, dict]:
    if name.endswith(".onnx"):
        _, model, feeds = exported_model(Path(name))
        return model, feeds
    return zoo.build(name), zoo.example_inputs(name, batch=1, seq=128)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="bert_base", help="a zoo name or an exported .onnx")
    parser.add_argument("--a", required=True, help="statement setting up side A")
    parser.add_argument("--b", default="", help="statement setting up side B")
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--settle", type=float, default=0.05)
    args = parser.parse_args()
    modules = (fusion, parallel, nn, tensor)
    missing = object()
    undo: list[tuple] = []  # (module, name, value before the last statement, or missing)

    def setup(statement: str) -> None:
        # Undo only what the last statement assigned: restoring whole module dicts would
        # also reset the caches the runs fill (parallel's thread pool, its BLAS probe).
        for module, name, value in reversed(undo):
            if value is missing:
                delattr(module, name)
            else:
                setattr(module, name, value)
        undo.clear()
        before = [dict(vars(module)) for module in modules]
        exec(
            statement,
            {"fusion": fusion, "parallel": parallel, "nn": nn, "tensor": tensor, "np": np},
        )
        for module, saved in zip(modules, before, strict=True):
            for name, value in vars(module).items():
                if saved.get(name, missing) is not value:
                    undo.append((module, name, saved.get(name, missing)))

    model, feeds = load(args.model)
    sides = []
    for statement in (args.a, args.b):
        setup(statement)
        interpreter = neuron_ir.Interpreter(neuron_ir.import_model(model))
        interpreter.run(feeds)
        sides.append((statement, interpreter, []))
    for _ in range(args.repeat):
        for statement, interpreter, times in sides:
            setup(statement)
            time.sleep(args.settle)
            start = time.perf_counter()
            interpreter.run(feeds)
            times.append(time.perf_counter() - start)
    (_, _, a), (_, _, b) = sides
    diffs = [x - y for x, y in zip(a, b, strict=True)]
    print(
        f"{args.model}: A {statistics.median(a) * 1e3:.1f} ms, B {statistics.median(b) * 1e3:.1f}"
        f" ms; A - B median {statistics.median(diffs) * 1e3:+.1f} ms; B faster in "
        f"{sum(d > 0 for d in diffs)} of {args.repeat} pairs"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
