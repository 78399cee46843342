#!/usr/bin/env python3
"""Compare shape-inference's output types with onnx.shape_inference on the node tests.

For every tensor-typed ONNX node test case, inputs are pinned to the case's shapes;
wherever onnx.shape_inference (data_prop on) infers a static output shape, ours must
agree in shape and element type. Prints the agreement count and each disagreement.
"""

from __future__ import annotations

import argparse
import sys
import time

from neuron_ir.testing.conformance import node_cases, shape_agreement


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-k", default=None, help="only cases whose name contains this")
    args = parser.parse_args()
    start = time.perf_counter()
    agree = compared = 0
    problems: dict[str, list[str]] = {}
    for case in node_cases():
        if args.k and args.k not in case.name:
            continue
        a, c, p = shape_agreement(case)
        agree += a
        compared += c
        if p:
            problems[case.name] = p
    print(
        f"{agree} of {compared} statically inferred output types agree with "
        f"onnx.shape_inference ({100.0 * agree / max(compared, 1):.1f}%) in "
        f"{time.perf_counter() - start:.1f} s"
    )
    for name, items in sorted(problems.items()):
        for item in items:
            print(f"  {name}: {item}")
    return 0 if agree == compared else 1


if __name__ == "__main__":
    sys.exit(main())
