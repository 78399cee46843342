#!/usr/bin/env python3
"""Write the neuron_ir.zoo test models as ONNX files: DIR/NAME.onnx.

python tools/make_models.py --out models/             # the small default set
python tools/make_models.py --out models/ --only tiny_bert tiny_ssd
python tools/make_models.py --out models/ --bert-base # also the ~440 MB BERT-base
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

# Runnable from a checkout without installing the package.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import onnx  # noqa: E402

from neuron_ir import zoo  # noqa: E402


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
    args = parser.parse_args(argv)

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
    return 0


if __name__ == "__main__":
    sys.exit(main())
