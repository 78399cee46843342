#!/usr/bin/env python3
"""Write the neuron_ir.zoo test models as ONNX files: DIR/NAME.onnx.

python tools/make_models.py --out models/             # the small default set
python tools/make_models.py --out models/ --only tiny_bert tiny_ssd
python tools/make_models.py --out models/ --bert-base # also the ~440 MB BERT-base
python tools/make_models.py --out models/ --only tiny_bert --inputs 3x11
                                  # also models/tiny_bert.npz: sample inputs, batch 3, size 11
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import onnx

from neuron_ir import zoo


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--out", required=True, type=Path, help="output directory (created if missing)"
    )
    parser.add_argument("--only", nargs="+", metavar="NAME", help="build only these models")
    parser.add_argument("--bert-base", action="store_true", help="also write bert_base (~440 MB)")
    parser.add_argument(
        "--check", action="store_true", help="run onnx.checker (full_check) on each model"
    )
    parser.add_argument(
        "--inputs",
        metavar="BxS",
        default=None,
        help="also write NAME.npz, sample inputs of batch B and sequence/image size S",
    )
    args = parser.parse_args(argv)
    shape = None
    if args.inputs is not None:
        try:
            shape = tuple(int(v) for v in args.inputs.lower().split("x"))
            if len(shape) != 2 or min(shape) < 1:
                raise ValueError
        except ValueError:
            parser.error(f"--inputs takes BxS with positive B and S, not {args.inputs!r}")

    if args.only:
        unknown = [n for n in args.only if n not in zoo.names(include_large=True)]
        if unknown:
            parser.error(
                f"unknown model(s): {', '.join(unknown)}; known: {', '.join(zoo.names(True))}"
            )
        selected = list(args.only)
    else:
        selected = zoo.names()
    if args.bert_base and "bert_base" not in selected:
        selected.append("bert_base")

    args.out.mkdir(parents=True, exist_ok=True)
    for name in selected:
        start = time.perf_counter()
        model = zoo.build(name)
        if args.check:
            onnx.checker.check_model(model, full_check=True)
        path = args.out / f"{name}.onnx"
        path.write_bytes(model.SerializeToString())
        size_mb = path.stat().st_size / 1e6
        print(f"{path}  {size_mb:8.2f} MB  {time.perf_counter() - start:6.2f} s")
        if shape is not None:
            feeds = zoo.example_inputs(name, batch=shape[0], seq=shape[1])
            np.savez(args.out / f"{name}.npz", **feeds)
            print(
                f"{args.out / (name + '.npz')}  inputs: "
                + ", ".join(
                    f"{k} {'x'.join(map(str, v.shape))} {v.dtype}" for k, v in feeds.items()
                )
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
