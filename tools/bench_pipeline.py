#!/usr/bin/env python3
"""Time of the pipeline-shard pass on BERT-base, and the deployments it finds.

python tools/bench_pipeline.py [--target inf1] [--repeat 5] [--cores 2 4 8 16 32 64]
python tools/bench_pipeline.py --deploy [--models bert_base resnet50] [--targets inf1 inf2]

Default: BERT-base (zoo, batch 1, sequence 128) goes through the default pipeline up
to lower-to-nc once (one nc.program of ~870 nc ops, ~670 of them compute); then, per
core count, the median over ``--repeat`` runs of ``pipeline-shard`` on a fresh clone
(the clone is not timed), split into reading the cost chain, the min-max DP and
rewriting the IR with placement and estimates.

``--deploy``: per model and target, ``cores="auto"``: the stage table, bottleneck /
ideal, and simulated latency and throughput against one core and against as many
one-core replicas as the pipeline uses cores.
"""

from __future__ import annotations

import argparse
import statistics
import time

import neuron_ir
from dialects import nc
from neuron_ir import zoo
from neuron_ir.compiler import DEFAULT_PIPELINE
from passes.lower_to_nc import LowerToNcPass
from passes.pipeline import default_pipeline, run_passes
from passes.pipeline_shard import (
    chain_model,
    fewest_fitting_stages,
    min_max_split,
    shard_program,
)


def _lowered(name: str, target: str):
    feeds = zoo.example_inputs(name, batch=1, seq=128)
    shapes = {k: v.shape for k, v in feeds.items()}
    module = neuron_ir.import_model(zoo.build(name))
    passes = default_pipeline(target, shapes)
    upto = next(k for k, p in enumerate(passes) if isinstance(p, LowerToNcPass))
    run_passes(module, passes[: upto + 1])
    return module, feeds, shapes


def _program(module) -> nc.ProgramOp:
    return next(op for op in module.walk() if isinstance(op, nc.ProgramOp))


def bench(target: str, repeat: int, cores: list[int | str]) -> None:
    module, _, _ = _lowered("bert_base", target)
    program = _program(module)
    ops = sum(1 for _ in program.walk()) - 1
    print(
        f"pipeline-shard on BERT-base ({target}, seq 128): {ops} nc ops in the program; "
        f"median of {repeat} runs, seconds (noisy machine: 2 cores shared)"
    )
    print(
        f"{'cores':>6} {'chain':>8} {'DP':>8} {'rewrite':>8} {'total':>8}  stages"
        "   (chain: cost chain from the IR; DP: the cut (auto: greedy pack + DP);"
        " rewrite: stages, sends, placement, estimates)"
    )
    for n in cores:
        chain_t, dp_t, total_t, stages = [], [], [], 0
        for _ in range(repeat):
            clone = module.clone()
            prog = _program(clone)
            t0 = time.perf_counter()
            model, _ = chain_model(prog)
            t1 = time.perf_counter()
            if n == "auto":
                count = len(fewest_fitting_stages(model)) - 1
                min_max_split(model, count, fit_only=True)
            else:
                min_max_split(model, int(n))
            t2 = time.perf_counter()
            chain_t.append(t1 - t0)
            dp_t.append(t2 - t1)
            clone = module.clone()
            prog = _program(clone)
            t3 = time.perf_counter()
            new = shard_program(prog, n)
            total_t.append(time.perf_counter() - t3)
            stages = new.cores.value.data
        c, d, t = (statistics.median(x) for x in (chain_t, dp_t, total_t))
        print(f"{n!s:>6} {c:8.3f} {d:8.3f} {t - c - d:8.3f} {t:8.3f}  {stages}")


def deploy(models: list[str], targets: list[str]) -> None:
    for name in models:
        for target in targets:
            feeds = zoo.example_inputs(name, batch=1, seq=128)
            shapes = {k: v.shape for k, v in feeds.items()}
            src = zoo.build(name)
            auto = neuron_ir.compile(src, target, input_shapes=shapes, cores="auto")
            one = neuron_ir.compile(src, target, input_shapes=shapes)
            reps = neuron_ir.compile(src, target, input_shapes=shapes, replicas=auto.cores)
            report = auto.stage_report()
            print(
                f"== {name} on {target}: cores=auto -> {auto.cores} core(s); "
                f"pipeline {DEFAULT_PIPELINE(target, shapes, None, cores='auto')!r}"
            )
            print(report.text(), end="")
            print(f"{'deployment':<28} {'cores':>5} {'latency ms':>11} {'inf/s':>10}")
            for label, m, n in [
                ("one core", one, 1),
                (f"pipeline of {auto.cores}", auto, auto.cores),
                (f"{auto.cores} one-core replicas", reps, auto.cores),
            ]:
                print(
                    f"{label:<28} {n:5d} {m.simulated_latency * 1e3:11.3f} "
                    f"{m.simulated_throughput:10.1f}"
                )
            out_one, out_auto = one.run(feeds), auto.run(feeds)
            same = all((out_one[k] == out_auto[k]).all() for k in out_one)
            print(f"outputs bit-identical to one core: {same}\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", default="inf1")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--cores", nargs="+", default=["2", "4", "8", "16", "32", "64", "auto"])
    parser.add_argument("--deploy", action="store_true")
    parser.add_argument("--models", nargs="+", default=["bert_base", "resnet50"])
    parser.add_argument("--targets", nargs="+", default=["inf1", "inf2"])
    args = parser.parse_args()
    if args.deploy:
        deploy(args.models, args.targets)
    else:
        bench(args.target, args.repeat, [c if c == "auto" else int(c) for c in args.cores])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
