#!/usr/bin/env python3
"""Run every tensor-typed ONNX node test case through ``neuron_ir.compile`` (the default
pipeline down to the nc dialect, inputs pinned to the case's shapes) and compare.

Prints the count, then the failures grouped by cause (the failing op of a
``cannot lower`` / ``cannot infer`` message, else the first words of the reason);
with --write-xfail it rewrites tests/compile_conformance_xfail.txt.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from collections import defaultdict
from pathlib import Path

from neuron_ir.testing.conformance import compile_failure, sweep

XFAIL = Path(__file__).resolve().parent.parent / "tests" / "compile_conformance_xfail.txt"


def cause(reason: str) -> str:
    """A short grouping key for a failure reason."""
    m = re.search(r"cannot lower '([\w.]+)'", reason)
    if m:
        return f"lower-to-nc: {m.group(1)}"
    m = re.match(r"compile: ([\w-]+): .*?'(onnx\.\w+)'", reason)
    if m:
        return f"{m.group(1)}: {m.group(2)}"
    return " ".join(reason.split(":")[:2])[:60]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-k", default=None, help="only cases whose name contains this")
    parser.add_argument("--target", default="inf1")
    parser.add_argument("--write-xfail", action="store_true")
    args = parser.parse_args()
    start = time.perf_counter()
    total, failures = sweep(lambda case: compile_failure(case, args.target), args.k)
    passed = total - len(failures)
    print(
        f"{passed} of {total} tensor-typed node test cases compile ({args.target}) and "
        f"match ({100.0 * passed / max(total, 1):.1f}%) in {time.perf_counter() - start:.1f} s"
    )
    groups: dict[str, list[str]] = defaultdict(list)
    for name, reason in failures.items():
        groups[cause(reason)].append(name)
    for key, names in sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0])):
        print(f"{len(names):4d}  {key}")
        for name in sorted(names):
            print(f"        {name}: {failures[name]}")
    if args.write_xfail:
        lines = [
            "# Node test cases neuron_ir.compile does not reproduce, with the reason the",
            "# test must see (a substring of the failure). Written by",
            "# tools/compile_conformance.py --write-xfail. One case a line: NAME: REASON",
        ]
        lines += [f"{name}: {reason}" for name, reason in sorted(failures.items())]
        XFAIL.write_text("\n".join(lines) + "\n")
        print(f"wrote {XFAIL}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
