"""The ONNX node test cases as an importer corpus: import and round-trip.

The default run takes every 8th case; ``--run-slow`` (or ``-m slow``) runs all of
them, as does ``python tools/roundtrip_conformance.py``.
"""

from __future__ import annotations

import glob
import os

import onnx
import pytest

import neuron_ir
from neuron_ir.testing.conformance import node_cases, roundtrip_failure

CASES = list(node_cases())


def test_corpus_is_the_tensor_typed_node_cases():
    # onnx 1.23 ships 1884 node cases, 1855 of them tensor-typed.
    assert len(CASES) > 1800


@pytest.mark.parametrize("case", CASES[::8], ids=lambda c: c.name)
def test_node_case_round_trips(case):
    assert roundtrip_failure(case.model) is None


@pytest.mark.slow
def test_all_node_cases_round_trip():
    failures = {c.name: r for c in CASES if (r := roundtrip_failure(c.model)) is not None}
    assert len(failures) <= 0.05 * len(CASES), failures


DATA = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data")
BACKEND_MODELS = sorted(
    glob.glob(os.path.join(DATA, "light", "*.onnx"))
    + glob.glob(os.path.join(DATA, "*", "*", "model.onnx"))
)

# The only backend models that are refused: they use ONNX sequences.
SEQUENCE_MODELS = {f"test_sequence_model{i}" for i in range(1, 9)}


@pytest.mark.parametrize(
    "path", BACKEND_MODELS[::3] if BACKEND_MODELS else [], ids=lambda p: os.path.relpath(p, DATA)
)
def test_backend_model_imports_or_fails_clearly(path):
    name = os.path.basename(os.path.dirname(path))
    if name in SEQUENCE_MODELS:
        with pytest.raises(neuron_ir.ModelImportError, match="sequence type"):
            neuron_ir.import_model(path)
        return
    text = neuron_ir.print_ir(neuron_ir.import_model(path))
    assert neuron_ir.print_ir(neuron_ir.parse_ir(text)) == text
