"""Decoding of op properties and constants into the plain values kernels take."""

from __future__ import annotations

from typing import Any

import numpy as np
from xdsl.dialects.builtin import (
    ArrayAttr,
    DenseArrayBase,
    DenseIntOrFPElementsAttr,
    DenseResourceAttr,
    FloatAttr,
    IntegerAttr,
    StringAttr,
)
from xdsl.ir import Attribute, Operation

from dialects.onnx import CustomOp, StringTensorAttr

from ..errors import InterpreterError
from . import dtypes


def constant_array(attr: Attribute) -> np.ndarray:
    """The numpy value of a constant attribute (read-only, no copy where possible)."""
    if isinstance(attr, DenseIntOrFPElementsAttr):
        dtype = dtypes.numpy_dtype_of(attr.get_element_type())
        array = np.frombuffer(attr.data.data, dtype=dtype).reshape(attr.get_shape())
        return array
    if isinstance(attr, StringTensorAttr):
        values = np.array([s.data for s in attr.values.data], dtype=object)
        return values.reshape(attr.type.get_shape())
    if isinstance(attr, DenseResourceAttr):
        raise InterpreterError(
            "constant data was elided when the IR was printed; "
            "re-import the model or print without --elide-constants"
        )
    raise InterpreterError(f"cannot decode constant attribute {attr}")


def python_attr(attr: Attribute) -> Any:
    """An op property as the plain Python value the kernels take."""
    if isinstance(attr, IntegerAttr):
        return int(attr.value.data)
    if isinstance(attr, FloatAttr):
        return float(attr.value.data)
    if isinstance(attr, StringAttr):
        return attr.data
    if isinstance(attr, DenseArrayBase):
        return [int(v) for v in attr.get_values()]
    if isinstance(attr, DenseIntOrFPElementsAttr | StringTensorAttr | DenseResourceAttr):
        return constant_array(attr)
    if isinstance(attr, ArrayAttr):
        return [python_attr(a) for a in attr.data]
    raise InterpreterError(f"cannot decode attribute {attr}")


def onnx_attrs(op: Operation) -> dict[str, Any]:
    """The node's explicitly set ONNX attributes (regions excluded)."""
    if isinstance(op, CustomOp):
        return {k: python_attr(v) for k, v in op.attrs.data.items() if k != "__graphs__"}
    kinds = getattr(op, "ONNX_ATTRS", {})
    return {name: python_attr(value) for name, value in op.properties.items() if name in kinds}


def describe_op(op: Operation) -> str:
    name = op.attributes.get("onnx.name")
    label = f"'{op.name}'"
    if isinstance(name, StringAttr):
        label += f" (node '{name.data}')"
    return label
