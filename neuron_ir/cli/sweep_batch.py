"""``neuron-sweep-batch``: compile a model for several batch sizes and print, per batch,
the simulated latency, throughput, SBUF use of weights and activations and spill bytes,
marking the best throughput (under ``--latency-bound-ms`` when given).

Every failure is one ``error: FILE: message`` line and exit code 1.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from ..errors import NeuronIRError


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="neuron-sweep-batch", description=__doc__.splitlines()[0])
    p.add_argument("model", metavar="MODEL", help=".onnx model (or .mlir module)")
    p.add_argument("--target", default="inf1", help="target profile (default inf1)")
    p.add_argument(
        "--batches",
        default="1,2,4,8,16,32,64",
        metavar="1,2,4,...",
        help="batch sizes to compile for (default 1,2,4,...,64)",
    )
    p.add_argument(
        "--latency-bound-ms",
        type=float,
        default=None,
        metavar="MS",
        help="best throughput only among batches at most this latency",
    )
    p.add_argument(
        "--dims", default=None, metavar="sequence:128,...", help="bind the other ONNX symbolic dims"
    )
    p.add_argument(
        "--input-shapes", default=None, metavar="a:1x128,...", help="pin whole input shapes"
    )
    p.add_argument(
        "--batch-dim",
        default=None,
        metavar="SYMBOL",
        help="the batch symbol, when the model's names do not say it",
    )
    return p


def _batches(text: str) -> list[int]:
    from ..errors import BatchError

    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise BatchError(f"--batches must be integers joined by ',', not '{text}'") from None


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    try:
        from ..ir import parse_ir
        from ..sweep import sweep_batch

        src = args.model
        if src.endswith(".mlir"):
            try:
                with open(src) as f:
                    src = parse_ir(f.read(), source=args.model)
            except OSError as exc:
                raise NeuronIRError(f"cannot read: {exc.strerror or exc}") from None
        bound = args.latency_bound_ms / 1e3 if args.latency_bound_ms is not None else None
        sweep = sweep_batch(
            src,
            args.target,
            _batches(args.batches),
            latency_bound=bound,
            input_shapes=args.input_shapes,
            dims=args.dims,
            batch_dim=args.batch_dim,
        )
    except NeuronIRError as exc:
        where = exc.where if exc.where and exc.where != args.model else None
        message = f"{where}: {exc.message}" if where else exc.message
        print(f"error: {args.model}: {' '.join(message.split())}", file=sys.stderr)
        return 1
    except Exception as exc:  # noqa: BLE001 - the tool promises no traceback
        print(f"error: {args.model}: internal error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    sys.stdout.write(sweep.text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
