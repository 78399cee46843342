"""The ONNX node test cases run through importer and interpreter.

Every 4th case runs by default; ``--run-slow`` runs all of them (as does
``python tools/conformance.py``). Cases in conformance_xfail.txt are expected failures
that must fail exactly as listed (``expect:``); they then report as xfail.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from neuron_ir.testing.conformance import node_case_list, run_failure

XFAIL_FILE = Path(__file__).resolve().parent / "conformance_xfail.txt"


def _xfails() -> dict[str, tuple[str, str]]:
    """NAME -> (why, the exact failure run_failure must report)."""
    out = {}
    for line in XFAIL_FILE.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, rest = line.split(":", 1)
            why, sep, expect = rest.partition(" | expect: ")
            assert sep, f"conformance_xfail.txt: '{name}' lists no expected failure"
            out[name.strip()] = (why.strip(), expect.strip())
    return out


XFAILS = _xfails()
CASES = list(node_case_list())


def check_case(case) -> None:
    reason = run_failure(case)
    if case.name not in XFAILS:
        assert reason is None, reason
        return
    why, expect = XFAILS[case.name]
    if reason is None and why.startswith("random output"):
        return  # a random op's few values can match the expected ones by chance
    assert reason is not None, f"listed as failing ({why}) but passes: remove it from the list"
    reason = " ".join(reason.split())[:300]
    assert reason == expect, (
        f"fails for another reason than the listed one:\n  listed: {expect}\n  now:    {reason}"
    )
    pytest.xfail(why)


def test_xfail_list_names_real_cases_and_stays_small():
    names = {c.name for c in CASES}
    assert set(XFAILS) <= names
    assert len(XFAILS) <= 0.05 * len(CASES)


# Every xfailed case runs by default, so that the list stays honest.
DEFAULT = [c for i, c in enumerate(CASES) if i % 4 == 0 or c.name in XFAILS]


@pytest.mark.parametrize("case", DEFAULT, ids=lambda c: c.name)
def test_node_case(case):
    check_case(case)


@pytest.mark.slow
@pytest.mark.parametrize(
    "case",
    [c for i, c in enumerate(CASES) if not (i % 4 == 0 or c.name in XFAILS)],
    ids=lambda c: c.name,
)
def test_node_case_full(case):
    check_case(case)
