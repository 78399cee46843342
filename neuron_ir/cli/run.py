"""``neuron-run``: run a saved artifact, an ``.mlir`` module or an ``.onnx`` model.

A saved artifact (recognised by its magic, whatever its name) runs as saved. An
``.onnx`` model, or an ``.mlir`` module that is not partitioned yet (no function marked
``neuron.target``), is compiled on the fly with the default pipeline, its input
shapes pinned from the given inputs unless ``--input-shapes``/``--dims`` say
otherwise. An already partitioned ``.mlir`` runs as it is.

Prints one summary line per output and the simulated latency. Every failure is one
``error: FILE: message`` line and exit code 1; no output file is written unless
everything succeeded.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence

import numpy as np
from xdsl.dialects.func import FuncOp

from ..analysis.report import TARGET_ATTR
from ..compiler import CompiledModel, compile, load
from ..errors import NeuronIRError
from ..importer import import_model
from ..ir import parse_ir
from ..runtime.artifact import is_artifact
from ..runtime.compiled import main_io_names


class _Failure(Exception):
    def __init__(self, where: str, message: str):
        super().__init__(message)
        self.where, self.message = where, message


def _arg_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="neuron-run", description=__doc__.splitlines()[0])
    p.add_argument("file", metavar="FILE", help="artifact, .mlir or .onnx")
    p.add_argument("--inputs", metavar="X.npz", help="inputs by name, as an .npz archive")
    p.add_argument("--input", metavar="NAME=X.npy", action="append", default=[],
                   help="one input from an .npy file (repeatable; overrides --inputs)")
    p.add_argument("--output", metavar="Y.npz", help="write the outputs to an .npz archive")
    p.add_argument("--trace", metavar="T.json",
                   help="write the simulated timeline as a Chrome/Perfetto trace")
    p.add_argument("--target", default="inf1", help="target when compiling (default inf1)")
    p.add_argument("--input-shapes", default=None, metavar="a:1x128,...",
                   help="pin input shapes when compiling (default: the inputs' shapes)")
    p.add_argument("--dims", default=None, metavar="batch:1,...",
                   help="bind ONNX symbolic dims when compiling")
    p.add_argument("--cores", default="1", metavar="N|auto",
                   help="pipeline stages (NeuronCores) when compiling (default 1)")
    p.add_argument("--requests", type=int, default=1, metavar="K",
                   help="simulate a stream of K requests through the stages (default 1)")
    return p


def _read_inputs(args: argparse.Namespace) -> dict[str, np.ndarray]:
    inputs: dict[str, np.ndarray] = {}
    if args.inputs:
        try:
            with np.load(args.inputs, allow_pickle=False) as archive:
                inputs.update({k: archive[k] for k in archive.files})
        except (OSError, ValueError, EOFError) as exc:
            raise _Failure(args.inputs, f"cannot read inputs: {exc}") from None
    for item in args.input:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise _Failure(item, "--input takes NAME=FILE.npy")
        try:
            inputs[name] = np.load(path, allow_pickle=False)
        except (OSError, ValueError, EOFError) as exc:
            raise _Failure(path, f"cannot read input '{name}': {exc}") from None
    return inputs


def _is_partitioned(module) -> bool:
    return any(isinstance(op, FuncOp) and TARGET_ATTR in op.attributes for op in module.ops)


def _load_model(args: argparse.Namespace, inputs: dict[str, np.ndarray]):
    path = args.file
    if not os.path.exists(path):
        raise _Failure(path, "no such file")
    if is_artifact(path):
        return load(path)
    if path.endswith(".mlir"):
        try:
            with open(path, encoding="utf-8") as f:
                module = parse_ir(f.read(), source=path)
        except (OSError, UnicodeDecodeError) as exc:
            raise _Failure(path, f"cannot read: {exc}") from None
        if _is_partitioned(module):
            return CompiledModel(module, args.target)
    elif path.endswith(".onnx"):
        module = import_model(path)
    else:
        raise _Failure(path, "not a neuron-ir artifact (bad magic), .mlir or .onnx file")
    shapes = args.input_shapes
    if shapes is None:
        # Pin only the model's own inputs; unknown names are reported by the run.
        names = set(main_io_names(module)[0])
        shapes = {k: v.shape for k, v in inputs.items() if k in names} or None
    return compile(module, target=args.target, input_shapes=shapes, dims=args.dims,
                   cores=_cores(args.cores))


def _cores(text: str) -> int | str:
    if text == "auto":
        return text
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise _Failure("--cores", f"takes a positive integer or 'auto', not {text!r}")
    return value


def _summary(name: str, value: np.ndarray) -> str:
    shape = "x".join(map(str, value.shape)) or "scalar"
    line = f"{name}: {shape} {value.dtype}"
    if value.size and (np.issubdtype(value.dtype, np.number) or value.dtype == np.bool_):
        v = value.astype(np.float64)
        line += f" mean={v.mean():.6g} min={v.min():.6g} max={v.max():.6g}"
    return line


def _run(args: argparse.Namespace) -> int:
    if args.requests < 1:
        raise _Failure("--requests", f"takes a positive integer, not {args.requests}")
    inputs = _read_inputs(args)
    model = _load_model(args, inputs)
    outputs = model.run(inputs)
    timeline = model.timeline(requests=args.requests)
    trace = json.dumps(timeline.to_chrome_trace()) if args.trace else None
    lines = [_summary(k, v) for k, v in outputs.items()]
    lines.append(f"simulated latency ({model.target}): {timeline.latency * 1e6:.1f} us")
    lines.append(f"simulated throughput: {model.simulated_throughput:.1f} inferences/s "
                 f"({model.cores} core(s), bottleneck {timeline.bottleneck * 1e6:.1f} us)")
    if args.requests > 1:
        lines.append(f"{args.requests} requests done after {timeline.makespan * 1e6:.1f} us")
    # Everything succeeded: only now touch the file system.
    if args.output:
        try:
            np.savez(args.output, **outputs)
        except OSError as exc:
            raise _Failure(args.output, f"cannot write outputs: {exc.strerror or exc}") from None
    if trace is not None:
        try:
            with open(args.trace, "w") as f:
                f.write(trace)
        except OSError as exc:
            raise _Failure(args.trace, f"cannot write trace: {exc.strerror or exc}") from None
    sys.stdout.write("\n".join(lines) + "\n")
    return 0


def _error(where: str, message: str) -> int:
    print(f"error: {where}: {' '.join(message.split())}", file=sys.stderr)
    return 1


def main(argv: Sequence[str] | None = None) -> int:
    args = _arg_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    try:
        return _run(args)
    except _Failure as exc:
        return _error(exc.where, exc.message)
    except NeuronIRError as exc:
        if exc.where and exc.where != args.file:
            return _error(args.file, f"{exc.where}: {exc.message}")
        return _error(args.file, exc.message)
    except Exception as exc:  # noqa: BLE001 - the tool promises no traceback
        return _error(args.file, f"internal error: {type(exc).__name__}: {exc}")
    except BaseException as exc:  # xDSL's ArgSpecParseError is a BaseException
        if isinstance(exc, KeyboardInterrupt | SystemExit):
            raise
        return _error(args.file, f"{type(exc).__name__}: {exc}")


if __name__ == "__main__":
    sys.exit(main())
