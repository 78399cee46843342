"""Shared pytest configuration: the slow marker and helpers for building models."""

from __future__ import annotations

import subprocess
import sys

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--run-slow", action="store_true", default=False,
                     help="also run tests marked slow (or select them with -m slow)")


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


def run_tool(*args: str, cwd: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run a neuron-ir command-line tool in a subprocess, capturing its output."""
    return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=300)
