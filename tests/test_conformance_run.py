"""The ONNX node test cases run through importer and interpreter.

Every 4th case runs by default; ``--run-slow`` runs all of them (as does
``python tools/conformance.py``). Cases in conformance_xfail.txt are strict xfails.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from neuron_ir.testing.conformance import node_cases, run_failure

XFAIL_FILE = Path(__file__).resolve().parent / "conformance_xfail.txt"


def _xfails() -> dict[str, str]:
    out = {}
    for line in XFAIL_FILE.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, reason = line.split(":", 1)
            out[name.strip()] = reason.strip()
    return out


XFAILS = _xfails()
CASES = list(node_cases())


def _params(cases):
    return [pytest.param(c, id=c.name, marks=[pytest.mark.xfail(reason=XFAILS[c.name],
                                                                   strict=True)]
                         if c.name in XFAILS else []) for c in cases]


def test_xfail_list_names_real_cases_and_stays_small():
    names = {c.name for c in CASES}
    assert set(XFAILS) <= names
    assert len(XFAILS) <= 0.05 * len(CASES)


# Every xfailed case runs by default, so that the list stays honest.
DEFAULT = [c for i, c in enumerate(CASES) if i % 4 == 0 or c.name in XFAILS]


@pytest.mark.parametrize("case", _params(DEFAULT))
def test_node_case(case):
    reason = run_failure(case)
    assert reason is None, reason


@pytest.mark.slow
@pytest.mark.parametrize("case", _params([c for i, c in enumerate(CASES)
                                          if not (i % 4 == 0 or c.name in XFAILS)]))
def test_node_case_full(case):
    reason = run_failure(case)
    assert reason is None, reason
