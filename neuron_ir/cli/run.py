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
import io
import json
import os
import sys
import warnings
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


BUG_HINT = "this is a bug in neuron-ir; please report it with the command line and the input files"


class _ArgumentParser(argparse.ArgumentParser):
    """argparse, but a bad command line is one ``error:`` line and exit code 1."""

    def error(self, message: str):  # type: ignore[override]
        print(f"error: {' '.join(message.split())} (see {self.prog} --help)", file=sys.stderr)
        sys.exit(1)


def _arg_parser() -> argparse.ArgumentParser:
    p = _ArgumentParser(prog="neuron-run", description=__doc__.splitlines()[0])
    p.add_argument("file", metavar="FILE", help="artifact, .mlir or .onnx")
    p.add_argument("--inputs", metavar="X.npz", help="inputs by name, as an .npz archive")
    p.add_argument(
        "--input",
        metavar="NAME=X.npy",
        action="append",
        default=[],
        help="one input from an .npy file (repeatable; overrides --inputs)",
    )
    p.add_argument("--output", metavar="Y.npz", help="write the outputs to an .npz archive")
    p.add_argument(
        "--trace", metavar="T.json", help="write the simulated timeline as a Chrome/Perfetto trace"
    )
    p.add_argument("--target", default="inf1", help="target when compiling (default inf1)")
    p.add_argument(
        "--input-shapes",
        default=None,
        metavar="a:1x128,...",
        help="pin input shapes when compiling (default: the inputs' shapes)",
    )
    p.add_argument(
        "--dims", default=None, metavar="batch:1,...", help="bind ONNX symbolic dims when compiling"
    )
    p.add_argument(
        "--cores",
        default="1",
        metavar="N|auto",
        help="pipeline stages (NeuronCores) when compiling (default 1)",
    )
    p.add_argument(
        "--requests",
        type=int,
        default=1,
        metavar="K",
        help="simulate a stream of K requests through the stages (default 1)",
    )
    return p


_NPZ_MAGIC = b"PK\x03\x04"  # a zip archive
_NPY_MAGIC = b"\x93NUMPY"


def _read_bytes(path: str, magic: bytes, kind: str) -> bytes:
    """The whole file, if it is a regular file starting with ``magic``: np.load would
    take anything else for a pickle (and say so), or block on a FIFO."""
    if not os.path.exists(path):
        raise _Failure(path, "no such file")
    if not os.path.isfile(path):
        raise _Failure(path, f"not a regular file (expected {kind})")
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise _Failure(path, f"cannot read: {exc.strerror or exc}") from None
    if not data.startswith(magic):
        raise _Failure(path, f"not {kind}")
    return data


def _read_inputs(args: argparse.Namespace) -> dict[str, np.ndarray]:
    inputs: dict[str, np.ndarray] = {}
    if args.inputs:
        data = _read_bytes(args.inputs, _NPZ_MAGIC, "an .npz archive")
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as archive:
                inputs.update({k: archive[k] for k in archive.files})
        except Exception as exc:  # zipfile and numpy raise many kinds on corrupt data
            raise _Failure(
                args.inputs, f"cannot read inputs: {type(exc).__name__}: {exc}"
            ) from None
    for item in args.input:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise _Failure(item, "--input takes NAME=FILE.npy")
        data = _read_bytes(path, _NPY_MAGIC, "an .npy file")
        try:
            inputs[name] = np.load(io.BytesIO(data), allow_pickle=False)
        except Exception as exc:
            raise _Failure(
                path, f"cannot read input '{name}': {type(exc).__name__}: {exc}"
            ) from None
    return inputs


def _given_files(args: argparse.Namespace) -> list[str]:
    files = [args.file]
    if args.inputs:
        files.append(args.inputs)
    files.extend(item.partition("=")[2] for item in args.input if "=" in item)
    return [f for f in files if f]


def _same_file(a: str, b: str) -> bool:
    try:
        if os.path.exists(a) and os.path.exists(b):
            return os.path.samefile(a, b)
    except OSError:
        pass
    return os.path.realpath(a) == os.path.realpath(b)


def _check_output_paths(args: argparse.Namespace) -> None:
    """Refuse, before any work, an output path that would overwrite a given file or
    the other output, or that is not a place a regular file can be written."""
    outputs = [
        (flag, path) for flag, path in (("--output", args.output), ("--trace", args.trace)) if path
    ]
    for flag, path in outputs:
        for given in _given_files(args):
            if _same_file(path, given):
                raise _Failure(path, f"{flag} would overwrite the input file '{given}'")
        if os.path.isdir(path):
            raise _Failure(path, f"{flag} is a directory")
        if os.path.exists(path) and not os.path.isfile(path):
            raise _Failure(path, f"{flag} is not a regular file")
        parent = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(parent):
            raise _Failure(path, f"{flag}: no such directory '{parent}'")
    if len(outputs) == 2 and _same_file(outputs[0][1], outputs[1][1]):
        raise _Failure(args.output, "--output and --trace name the same file")


def _write_all(files: list[tuple[str, bytes, str]]) -> None:
    """Write every (path, data, what) or none: each goes to a temporary file next to
    its path first, and the renames happen only once all were written."""
    temps: list[tuple[str, str]] = []
    try:
        for path, data, what in files:
            tmp = os.path.join(
                os.path.dirname(os.path.abspath(path)),
                f".{os.path.basename(path)}.tmp{os.getpid()}",
            )
            try:
                with open(tmp, "xb") as f:
                    temps.append((tmp, path))
                    f.write(data)
            except OSError as exc:
                raise _Failure(path, f"cannot write {what}: {exc.strerror or exc}") from None
        for tmp, path in temps:
            os.replace(tmp, path)
        temps = []
    finally:
        for tmp, _path in temps:
            try:
                os.remove(tmp)
            except OSError:
                pass


def _is_partitioned(module) -> bool:
    return any(isinstance(op, FuncOp) and TARGET_ATTR in op.attributes for op in module.ops)


def _load_model(args: argparse.Namespace, inputs: dict[str, np.ndarray]):
    path = args.file
    if not os.path.exists(path):
        raise _Failure(path, "no such file")
    if not os.path.isfile(path):
        raise _Failure(path, "not a regular file")
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
    return compile(
        module, target=args.target, input_shapes=shapes, dims=args.dims, cores=_cores(args.cores)
    )


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
    _check_output_paths(args)
    inputs = _read_inputs(args)
    # Inf and NaN inputs are data, not faults: the summary shows what they produced.
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        model = _load_model(args, inputs)
        outputs = model.run(inputs)
        # A bucketed model is priced in the bucket that served this call.
        bucket = getattr(model, "last_bucket", None)
        served = model.variants[bucket] if bucket is not None else model
        timeline = served.timeline(requests=args.requests)
        lines = [_summary(k, v) for k, v in outputs.items()]
    if bucket is not None:
        lines.append(
            f"bucket: {model.bucket_label(bucket)} (of "
            + "; ".join(model.bucket_label(k) for k in model.variants)
            + ")"
        )
    if served.batching is not None:
        client = max(
            (
                int(np.asarray(inputs[n]).shape[a])
                for n, a in served.batching.inputs.items()
                if a is not None and n in inputs
            ),
            default=served.batch,
        )
        runs = -(-client // served.batch)
        lines.append(f"client batch {client}: {runs} run(s) of the compiled batch {served.batch}")
    lines.append(
        f"simulated latency ({model.target}): {timeline.latency * 1e6:.1f} us per compiled batch"
    )
    lines.append(
        f"simulated throughput: {served.simulated_throughput:.1f} inferences/s "
        f"({served.cores} core(s) x {served.replicas} cop"
        f"{'y' if served.replicas == 1 else 'ies'}, bottleneck "
        f"{timeline.bottleneck * 1e6:.1f} us)"
    )
    if args.requests > 1:
        lines.append(f"{args.requests} requests done after {timeline.makespan * 1e6:.1f} us")
    files = []
    if args.output:
        buffer = io.BytesIO()  # a file object: np.savez adds no ".npz" to it
        np.savez(buffer, **outputs)
        files.append((args.output, buffer.getvalue(), "outputs"))
    if args.trace:
        trace = json.dumps(timeline.to_chrome_trace()).encode("utf-8")
        files.append((args.trace, trace, "trace"))
    # Everything succeeded: only now touch the file system, all files or none.
    _write_all(files)
    sys.stdout.write("\n".join(lines) + "\n")
    return 0


def _error(where: str, message: str) -> int:
    print(f"error: {where}: {' '.join(message.split())}", file=sys.stderr)
    return 1


def _internal_error(where: str, exc: BaseException) -> int:
    """The one catch-all: whatever escaped is still one line, with a way forward."""
    if isinstance(exc, RecursionError):
        return _error(where, "the input nests too deeply")
    if isinstance(exc, MemoryError):
        return _error(where, "out of memory")
    text = " ".join(str(exc).split())[:300]
    return _error(where, f"internal error: {type(exc).__name__}: {text} ({BUG_HINT})")


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
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as exc:  # noqa: BLE001 - the tool promises no traceback
        # (xDSL's ArgSpecParseError is a BaseException, hence not just Exception)
        return _internal_error(args.file, exc)


if __name__ == "__main__":
    sys.exit(main())
