"""The ONNX backend node test cases as a conformance corpus for neuron-ir."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import onnx

from .errors import NeuronIRError
from .importer import import_model
from .ir import parse_ir, print_ir


def _is_tensor_typed(model: onnx.ModelProto) -> bool:
    values = list(model.graph.input) + list(model.graph.output)
    return all(v.type.WhichOneof("value") == "tensor_type" for v in values)


@dataclass(frozen=True)
class NodeCase:
    name: str
    model: onnx.ModelProto
    data_sets: list
    rtol: float
    atol: float


def node_cases() -> Iterator[NodeCase]:
    """Every tensor-typed node test case that ships with the onnx wheel."""
    from onnx.backend.test.case.node import collect_testcases

    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        cases = collect_testcases(None)
    for case in cases:
        if _is_tensor_typed(case.model):
            yield NodeCase(case.name, case.model, case.data_sets, case.rtol, case.atol)


def roundtrip_failure(model: onnx.ModelProto) -> str | None:
    """None if the model imports and print -> parse -> print is stable, else why not."""
    try:
        module = import_model(model)
    except NeuronIRError as exc:
        return f"import: {exc.message}"
    first = print_ir(module)
    try:
        again = print_ir(parse_ir(first))
    except NeuronIRError as exc:
        return f"parse: {exc.message}"
    if again != first:
        return "print -> parse -> print differs"
    return None
