#!/usr/bin/env python3
"""Run every tensor-typed ONNX node test case through importer and interpreter.

Prints the pass count and the failures with their reasons; with --write-xfail it
rewrites tests/conformance_xfail.txt, the expected-failures list the test suite uses
(each case's WHY is kept; its expected failure is the current one).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from neuron_ir.testing.conformance import run_failure, sweep

ROOT = Path(__file__).resolve().parent.parent

XFAIL = ROOT / "tests" / "conformance_xfail.txt"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-k", default=None, help="only cases whose name contains this")
    parser.add_argument("--write-xfail", action="store_true")
    args = parser.parse_args()
    start = time.perf_counter()
    total, failures = sweep(run_failure, args.k)
    passed = total - len(failures)
    print(
        f"{passed} of {total} tensor-typed node test cases pass "
        f"({100.0 * passed / max(total, 1):.1f}%) in {time.perf_counter() - start:.1f} s"
    )
    for name, reason in sorted(failures.items()):
        print(f"  {name}: {reason}")
    if args.write_xfail:
        # Keep the human-written WHY of cases already listed; the expected failure is
        # always the current one (the test suite matches it exactly).
        old = {}
        if XFAIL.exists():
            for line in XFAIL.read_text().splitlines():
                if line.strip() and not line.startswith("#"):
                    name, rest = line.split(":", 1)
                    old[name.strip()] = rest.partition(" | expect: ")[0].strip()
        lines = (
            [line for line in XFAIL.read_text().splitlines() if line.startswith("#")]
            if XFAIL.exists()
            else ["#   NAME: WHY | expect: FAILURE"]
        )
        lines += [
            f"{name}: {old.get(name, reason)} | expect: {reason}"
            for name, reason in sorted(failures.items())
        ]
        XFAIL.write_text("\n".join(lines) + "\n")
        print(f"wrote {XFAIL}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
