"""The generated onnx dialect: freshness, arity and attribute-type verification."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import neuron_ir
from dialects.onnx import CANONICAL_OPSET, ONNX_OPS

ROOT = Path(__file__).resolve().parent.parent


def test_generated_dialect_is_up_to_date():
    proc = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "gen_onnx_dialect.py"), "--check"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr


def test_every_default_domain_operator_has_an_op():
    import onnx.defs

    names = {s.name for s in onnx.defs.get_all_schemas() if s.domain == ""}
    assert names <= set(ONNX_OPS)
    assert CANONICAL_OPSET == 28


def _parse(body: str):
    return neuron_ir.parse_ir(
        "func.func @main(%x: tensor<2xf32>, %i: tensor<2xi64>) {\n" + body + "\n  func.return\n}\n"
    )


def test_verifier_accepts_well_formed_ops():
    _parse('%y = "onnx.LeakyRelu"(%x) <{alpha = 0.5 : f32}> : (tensor<2xf32>) -> tensor<2xf32>')


@pytest.mark.parametrize(
    "body, message",
    [
        ('%y = "onnx.Relu"(%x, %x) : (tensor<2xf32>, tensor<2xf32>) -> tensor<2xf32>', "operand"),
        (
            '%y = "onnx.LeakyRelu"(%x) <{alpha = 1 : i64}> : (tensor<2xf32>) -> tensor<2xf32>',
            "'onnx.LeakyRelu'.*should be of base attribute float",
        ),
        ('%y = "onnx.Concat"(%x) : (tensor<2xf32>) -> tensor<2xf32>', "axis"),
        ('%y = "onnx.Concat"() <{axis = 0 : i64}> : () -> tensor<2xf32>', "at least 1"),
        (
            '%y = "onnx.Transpose"(%x) <{perm = [1, 0]}> : (tensor<2xf32>) -> tensor<2xf32>',
            "'onnx.Transpose'.*array",
        ),
    ],
)
def test_verifier_rejects_bad_arity_and_attribute_types(body, message):
    with pytest.raises(neuron_ir.IRParseError, match=message):
        _parse(body)
