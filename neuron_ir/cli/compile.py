"""``neuron-compile``: ONNX in, a saved artifact out, with the report printed; or, with
``--plan``, a sweep of deployments for an instance, drawn.

    neuron-compile model.onnx -o model.nir --batch 4 --cores auto --bucket sequence=16,32,64
    neuron-compile model.onnx --plan --instance inf1.6xlarge --latency-budget 10ms --plot p.png

Every failure is one ``error: FILE: message`` line and exit code 1; nothing is written
unless everything succeeded. Progress goes to stderr on a terminal only.
"""

from __future__ import annotations

import argparse
import inspect
import os
import re
import sys
import time
from collections.abc import Sequence
from typing import Any

from ..compiler import compile
from ..errors import NeuronIRError
from ..planner import draw, plan
from ..runtime.compiled import CompiledModel
from ..target.profiles import INSTANCES, TARGETS, get_instance, max_cores


class UsageError(NeuronIRError):
    """A bad command-line value."""


def _arg_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="neuron-compile", description=__doc__.splitlines()[0])
    p.add_argument("model", metavar="MODEL", help="the .onnx model")
    p.add_argument("-o", "--output", metavar="OUT.nir", help="where to write the artifact")
    p.add_argument(
        "--target",
        default=None,
        choices=sorted(TARGETS),
        help="inf1 (default) or inf2; with --plan, the instance decides",
    )
    p.add_argument(
        "--input-shapes", default=None, metavar="a:1x128,...", help="pin whole input shapes"
    )
    p.add_argument(
        "--dims", default=None, metavar="sequence:128,...", help="bind ONNX symbolic dims by name"
    )
    p.add_argument("--batch", default=None, metavar="N", help="compiled batch size")
    p.add_argument(
        "--batch-dim",
        default=None,
        metavar="NAME",
        help="the ONNX symbol of the batch axis (default: found by name)",
    )
    p.add_argument(
        "--dynamic-batching",
        dest="dynamic_batching",
        action="store_true",
        default=None,
        help="accept any client batch at run time (default)",
    )
    p.add_argument(
        "--no-dynamic-batching",
        dest="dynamic_batching",
        action="store_false",
        help="a client batch other than N is an error",
    )
    p.add_argument(
        "--cores",
        default=None,
        metavar="N|auto",
        help="NeuronCore Pipeline stages per copy (auto: fewest that cache every weight)",
    )
    p.add_argument("--replicas", default=None, metavar="R", help="data-parallel copies")
    p.add_argument(
        "--allow-hbm-weights",
        action="store_true",
        help="stream a weight too big for one core from HBM instead of failing",
    )
    p.add_argument(
        "--bucket",
        action="append",
        default=[],
        metavar="SYM=16,32,64|auto:K",
        help="bucket an ONNX symbol (repeatable)",
    )
    p.add_argument(
        "--size-samples",
        default=None,
        metavar="FILE",
        help="observed sizes (whitespace or comma separated) for --bucket auto:K",
    )
    p.add_argument(
        "--pad-value",
        action="append",
        default=[],
        metavar="INPUT=V",
        help="pad value of an input (default 0; repeatable)",
    )
    p.add_argument(
        "--plan",
        action="store_true",
        help="sweep batch x cores x copies for --instance instead of compiling",
    )
    p.add_argument(
        "--instance",
        default=None,
        metavar="NAME",
        help=f"with --plan: one of {', '.join(INSTANCES)}",
    )
    p.add_argument(
        "--latency-budget",
        default=None,
        metavar="10ms",
        help="with --plan: the latency a batch may take (s, ms or us)",
    )
    p.add_argument(
        "--batches",
        default=None,
        metavar="1,2,4,...",
        help="with --plan: batch sizes to try (default 1..64, powers of two)",
    )
    p.add_argument(
        "--plot",
        default=None,
        metavar="PLAN.png",
        help="with --plan: draw latency against throughput",
    )
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    return p


def _positive(flag: str, text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise UsageError(f"{flag} must be a positive integer, not {text!r}") from None
    if value < 1:
        raise UsageError(f"{flag} must be a positive integer, not {text!r}")
    return value


def _cores(text: str, target: str) -> int | str:
    if text == "auto":
        return "auto"
    value = _positive("--cores", text)
    limit = max_cores(TARGETS[target])
    if value > limit:
        raise UsageError(f"--cores {value}: {target} has at most {limit} NeuronCores")
    return value


def _seconds(text: str) -> float:
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:e-?[0-9]+)?)\s*(s|ms|us)?\s*", text)
    if not match:
        raise UsageError(f"--latency-budget must look like 10ms, 2.5ms or 0.01s, not {text!r}")
    value = float(match.group(1)) * {"s": 1.0, "ms": 1e-3, "us": 1e-6}[match.group(2) or "s"]
    if value <= 0:
        raise UsageError(f"--latency-budget must be positive, not {text!r}")
    return value


def _buckets(specs: list[str], samples: str | None) -> tuple[dict[str, Any], list[int] | None]:
    buckets: dict[str, Any] = {}
    for spec in specs:
        symbol, sep, values = spec.partition("=")
        if not sep or not symbol or not values:
            raise UsageError(f"--bucket {spec!r}: expected SYMBOL=16,32,64 or SYMBOL=auto:K")
        if symbol in buckets:
            raise UsageError(f"--bucket: '{symbol}' is given twice")
        if values.startswith("auto:"):
            _positive(f"--bucket {symbol}=auto:K", values[5:])
            buckets[symbol] = values
            continue
        sizes = [_positive(f"--bucket {symbol}", v) for v in values.split(",")]
        if any(b <= a for a, b in zip(sizes, sizes[1:], strict=False)):
            raise UsageError(f"--bucket {symbol}={values}: sizes must be strictly increasing")
        buckets[symbol] = sizes
    sizes_list = None
    if samples is not None:
        try:
            with open(samples, encoding="utf-8") as f:
                text = f.read()
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"--size-samples {samples}: cannot read: {exc}") from None
        sizes_list = [
            _positive(f"--size-samples {samples}", t)
            for t in re.split(r"[\s,]+", text.strip())
            if t
        ]
        if not sizes_list:
            raise UsageError(f"--size-samples {samples}: no sizes in the file")
    if any(isinstance(v, str) for v in buckets.values()) and sizes_list is None:
        raise UsageError("--bucket SYMBOL=auto:K needs --size-samples FILE")
    return buckets, sizes_list


def _pad_values(specs: list[str]) -> dict[str, float]:
    out: dict[str, float] = {}
    for spec in specs:
        name, sep, value = spec.partition("=")
        try:
            out[name] = float(value) if sep and name else float("nan")
        except ValueError:
            raise UsageError(f"--pad-value {spec!r}: expected INPUT=NUMBER") from None
        if out[name] != out[name]:
            raise UsageError(f"--pad-value {spec!r}: expected INPUT=NUMBER")
        if out[name].is_integer():
            out[name] = int(out[name])
    return out


class _Progress:
    """A line per step on a terminal (stderr), with the time since the start; silent
    when piped or --quiet."""

    def __init__(self, enabled: bool):
        self.enabled = enabled and sys.stderr.isatty()
        self.start = time.perf_counter()

    def __call__(self, message: str) -> None:
        if self.enabled:
            print(
                f"[{time.perf_counter() - self.start:6.1f}s] {message}", file=sys.stderr, flush=True
            )


def _compile_options(args: argparse.Namespace, target: str) -> dict[str, Any]:
    options: dict[str, Any] = {
        "target": target,
        "input_shapes": args.input_shapes,
        "dims": args.dims,
    }
    if args.batch is not None:
        options["batch"] = _positive("--batch", args.batch)
    if args.batch_dim is not None:
        options["batch_dim"] = args.batch_dim
    if args.dynamic_batching is not None:
        options["dynamic_batching"] = args.dynamic_batching
    if args.cores is not None:
        options["cores"] = _cores(args.cores, target)
    if args.replicas is not None:
        options["replicas"] = _positive("--replicas", args.replicas)
    if args.allow_hbm_weights:
        options["allow_hbm_weights"] = True
    buckets, samples = _buckets(args.bucket, args.size_samples)
    if buckets:
        options["buckets"] = buckets
    if samples is not None:
        options["size_samples"] = samples
    pads = _pad_values(args.pad_value)
    if pads:
        options["pad_values"] = pads
    accepted = inspect.signature(compile).parameters
    for name in options:
        if name not in accepted:
            raise UsageError(
                f"this build of neuron-ir does not support the {name.replace('_', '-')} option"
            )
    return options


def _check_paths(args: argparse.Namespace, outputs: list[str]) -> None:
    given = os.path.realpath(args.model)
    for path in outputs:
        if os.path.realpath(path) == given:
            raise UsageError(f"{path} is the model itself; refusing to overwrite it")
        if os.path.isdir(path):
            raise UsageError(f"{path} is a directory")
        parent = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(parent):
            raise UsageError(f"{path}: no such directory {parent}")


def _report(model: CompiledModel) -> str:
    lines = [model.report.text()]
    stages = model.stage_report()
    if stages.rows:
        lines.append(stages.text())
    extra = getattr(model, "describe_deployment", None)
    if callable(extra):
        lines.append(extra())
    lines.append(
        f"simulated latency: {model.simulated_latency * 1e3:.3f} ms per batch of "
        f"{model.batch}; throughput: {model.simulated_throughput:.1f} inferences/s "
        f"({model.replicas} cop{'y' if model.replicas == 1 else 'ies'})"
    )
    return "\n".join(lines)


def _run(args: argparse.Namespace) -> int:
    progress = _Progress(not args.quiet)
    if not os.path.exists(args.model):
        raise UsageError("no such file")
    if args.plan:
        if args.instance is None:
            raise UsageError("--plan needs --instance (one of " + ", ".join(INSTANCES) + ")")
        instance = get_instance(args.instance)
        if args.target is not None and args.target != instance.target:
            raise UsageError(
                f"--target {args.target} does not match {instance.name} ({instance.target})"
            )
        budget = _seconds(args.latency_budget) if args.latency_budget is not None else None
        batches = (
            [_positive("--batches", b) for b in args.batches.split(",")] if args.batches else None
        )
        outputs = [args.plot] if args.plot else []
        _check_paths(args, outputs)
        kwargs: dict[str, Any] = {
            "latency_budget": budget,
            "progress": progress,
            "allow_hbm_weights": args.allow_hbm_weights,
        }
        if batches:
            kwargs["batches"] = batches
        result = plan(args.model, instance, args.input_shapes, args.dims, **kwargs)
        print(
            f"plan for {args.model} on {instance.name} ({instance.cores} NeuronCores, "
            f"{instance.target}): {len(result.points)} deployments priced"
        )
        for cores, why in sorted(result.skipped.items()):
            print(f"  {cores} core(s) a copy: skipped ({why})")
        print(result.table())
        print(
            "Pareto frontier (latency ms -> inferences/s): "
            + ", ".join(
                f"{p.latency * 1e3:.2f}->{p.throughput:.0f} (b{p.batch} c{p.cores} x{p.replicas})"
                for p in result.frontier
            )
        )
        choice = result.choice
        if choice is None:
            print(
                f"nothing meets the latency budget of {budget * 1e3:g} ms"  # type: ignore
                f"; the fastest takes {min(p.latency for p in result.points) * 1e3:.3f} ms"
            )
        else:
            print(
                f"best throughput{' under the budget' if budget else ''}: batch "
                f"{choice.batch}, {choice.cores} core(s) a copy x {choice.replicas} "
                f"cop{'y' if choice.replicas == 1 else 'ies'}: "
                f"{choice.latency * 1e3:.3f} ms, {choice.throughput:.1f} inferences/s"
            )
            extra = []
            if args.input_shapes:
                extra += ["--input-shapes", args.input_shapes]
            if args.dims:
                extra += ["--dims", args.dims]
            print("compile it with: " + result.command(args.model, choice, extra))
        if args.plot:
            draw(result, args.plot)
            print(f"wrote {args.plot}")
        return 0
    if args.output is None:
        raise UsageError("-o OUT.nir is required (or --plan)")
    target = args.target or "inf1"
    options = _compile_options(args, target)
    _check_paths(args, [args.output])
    progress(f"compiling for {target}")
    model = compile(args.model, **options)
    print(_report(model))
    progress(f"writing {args.output}")
    model.save(args.output)
    print(f"wrote {args.output}")
    return 0


def _error(where: str, message: str) -> int:
    print(f"error: {where}: {message}", file=sys.stderr)
    return 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = _arg_parser()
    try:
        args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    except SystemExit as exc:  # argparse already printed one usage error line
        return int(exc.code or 0)
    try:
        return _run(args)
    except NeuronIRError as exc:
        where = getattr(exc, "where", None) or args.model
        return _error(where, getattr(exc, "message", None) or str(exc))
    except Exception as exc:  # noqa: BLE001 - the tool promises no traceback
        return _error(
            args.model,
            f"internal error: {type(exc).__name__}: {exc} (please "
            "report this as a bug, with the command line)",
        )
    except BaseException as exc:  # xDSL's ArgSpecParseError is a BaseException
        if isinstance(exc, KeyboardInterrupt | SystemExit):
            raise
        return _error(args.model, f"{type(exc).__name__}: {exc}")


if __name__ == "__main__":
    sys.exit(main())
