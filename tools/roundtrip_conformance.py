#!/usr/bin/env python3
"""Import every tensor-typed ONNX node test case and check print -> parse -> print.

Prints the pass count and the failures grouped by reason; exits non-zero when fewer
than --min-rate of the cases pass.
"""

from __future__ import annotations

import argparse
import collections
import re
import sys
import time

from neuron_ir.testing.conformance import node_cases, roundtrip_failure


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--min-rate", type=float, default=0.95)
    parser.add_argument("-k", default=None, help="only cases whose name contains this")
    args = parser.parse_args()
    start = time.perf_counter()
    failures: dict[str, list[str]] = collections.defaultdict(list)
    total = 0
    for case in node_cases():
        if args.k and args.k not in case.name:
            continue
        total += 1
        reason = roundtrip_failure(case.model)
        if reason is not None:
            # Group by the reason with names and numbers blanked out.
            key = re.sub(r"'[^']*'", "'…'", reason)
            failures[key].append(case.name)
    failed = sum(len(v) for v in failures.values())
    passed = total - failed
    print(
        f"{passed} of {total} tensor-typed node test cases import and round-trip "
        f"({100.0 * passed / max(total, 1):.1f}%) in {time.perf_counter() - start:.1f} s"
    )
    for reason, names in sorted(failures.items(), key=lambda kv: -len(kv[1])):
        print(f"\n{len(names)} x {reason}")
        for name in names:
            print(f"    {name}")
    return 0 if passed >= args.min_rate * total else 1


if __name__ == "__main__":
    sys.exit(main())
