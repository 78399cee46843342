#!/usr/bin/env python3
"""Which tests kill given mutants: apply each (``mutmut apply``) to the work tree, run
pytest on the given tests, print the failing tests, and restore the file from git.

    python tools/mutant_check.py NAME [NAME ...] -- tests/test_mutation_killers.py

Run it with no other change to the mutated files (they are restored with
``git checkout``). See tools/mutation.md.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys


def _mutated_file(name: str) -> str:
    module = name.split(".x")[0] if ".x" in name else name.rsplit(".", 1)[0]
    return module.replace(".", "/") + ".py"


def main(argv: list[str]) -> int:
    if "--" not in argv:
        print(__doc__)
        return 2
    split = argv.index("--")
    names, tests = argv[:split], argv[split + 1 :]
    env = dict(os.environ, NEURON_IR_HYPOTHESIS=os.environ.get("NEURON_IR_HYPOTHESIS", "mutation"))
    survived = 0
    for name in names:
        path = _mutated_file(name)
        if subprocess.run(["git", "diff", "--quiet", "--", path]).returncode:
            print(f"error: {path} has uncommitted changes; commit or stash them first")
            return 2
        subprocess.run(["mutmut", "apply", name], check=True, capture_output=True)
        try:
            run = subprocess.run(
                [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rf", *tests],
                capture_output=True,
                text=True,
                env=env,
            )
        finally:
            subprocess.run(["git", "checkout", "-q", "--", path], check=True)
        failed = sorted(set(re.findall(r"^FAILED (\S+)", run.stdout, re.M)))
        if run.returncode == 0:
            survived += 1
        print(
            f"{name}: "
            + (
                ", ".join(f.split(" ")[0] for f in failed)
                if failed
                else "SURVIVED"
                if run.returncode == 0
                else f"pytest exit {run.returncode}"
            )
        )
    return 1 if survived else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
