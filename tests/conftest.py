"""Shared pytest configuration: the slow marker, the hypothesis profiles and helpers for
building models."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import Phase, settings

# Hypothesis profiles, chosen by NEURON_IR_HYPOTHESIS (default "ci"):
# - ci: derandomized, so every run tries the same examples and a bug is not missed by
#   luck on one run and found on the next; no example database (nothing to drift).
# - random: fresh random examples each run (for exploring; report the seed it prints).
# - mutation: derandomized and without shrinking, for the mutation-testing command
#   (tools/mutation.md): a killed mutant needs one failure, not a minimal one.
settings.register_profile("ci", derandomize=True, database=None, print_blob=True)
settings.register_profile("random", derandomize=False, print_blob=True)
settings.register_profile(
    "mutation",
    derandomize=True,
    database=None,
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
)
settings.load_profile(os.environ.get("NEURON_IR_HYPOTHESIS", "ci"))


def examples(n: int) -> int:
    """``max_examples`` for a property test: ``n``, or a quarter of it (at least 10) under
    the mutation profile, where every surviving mutant runs the test once more."""
    if os.environ.get("NEURON_IR_HYPOTHESIS") == "mutation":
        return max(10, n // 4)
    return n


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--run-slow",
        action="store_true",
        default=False,
        help="also run tests marked slow (or select them with -m slow)",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    markexpr = config.getoption("-m") or ""
    if config.getoption("--run-slow") or "slow" in markexpr:
        return
    # Slow suites are deselected (reported as such), not skipped: they are not
    # failures being hidden, just a separate command (pytest --run-slow).
    slow = [item for item in items if "slow" in item.keywords]
    if slow:
        config.hook.pytest_deselected(items=slow)
        items[:] = [item for item in items if "slow" not in item.keywords]


def pins(feeds: dict[str, np.ndarray]) -> str:
    """``shape-inference``'s input-shapes option pinning every input to its feed's shape."""
    from neuron_ir.compiler import input_shapes_spec

    return input_shapes_spec({name: value.shape for name, value in feeds.items()})


def assert_same(before: dict, after: dict) -> None:
    """Two runs' outputs agree in names, dtypes, shapes and (closely) values."""
    assert before.keys() == after.keys()
    for name in before:
        a, b = before[name], after[name]
        assert a.dtype == b.dtype and a.shape == b.shape, name
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6, err_msg=name)


def run_tool(*args: str, cwd: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run a neuron-ir command-line tool in a subprocess, capturing its output."""
    return subprocess.run(
        [sys.executable, "-m", *args], capture_output=True, text=True, cwd=cwd, timeout=300
    )
