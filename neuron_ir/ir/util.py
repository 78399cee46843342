"""Small IR helpers shared by the passes: types <-> TensorInfo, constants from numpy."""

from __future__ import annotations

import numpy as np
from xdsl.dialects.builtin import (
    DYNAMIC_INDEX,
    ArrayAttr,
    BytesAttr,
    DenseIntOrFPElementsAttr,
    StringAttr,
    TensorType,
    UnrankedTensorType,
)
from xdsl.ir import Attribute, Operation, SSAValue
from xdsl.ir.region_utils import used_values_defined_above
from xdsl.traits import ConstantLike, IsTerminator

from dialects.onnx import ConstantOp, StringTensorAttr, StringType, UnknownType

from . import dtypes
from .tensor_info import TensorInfo


def element_of(dtype: np.dtype | None) -> Attribute:
    if dtype is None:
        return UnknownType()
    if dtype == np.dtype(object):
        return StringType()
    return dtypes.BY_NUMPY[np.dtype(dtype)].xdsl


def dtype_of(element: Attribute) -> np.dtype | None:
    entry = dtypes.BY_XDSL.get(element)
    return None if entry is None else entry.numpy


def tensor_type(dtype: np.dtype | None, shape: tuple[int | None, ...] | None) -> Attribute:
    element = element_of(dtype)
    if shape is None:
        return UnrankedTensorType(element)
    return TensorType(element, [DYNAMIC_INDEX if d is None else int(d) for d in shape])


def info_of_type(ttype: Attribute) -> TensorInfo:
    if isinstance(ttype, TensorType):
        shape = tuple(None if d == DYNAMIC_INDEX else d for d in ttype.get_shape())
        return TensorInfo(dtype_of(ttype.element_type), shape)
    if isinstance(ttype, UnrankedTensorType):
        return TensorInfo(dtype_of(ttype.element_type), None)
    return TensorInfo(None, None)


def is_static(ttype: Attribute) -> bool:
    return isinstance(ttype, TensorType) and all(d != DYNAMIC_INDEX for d in ttype.get_shape())


def dense_attr(array: np.ndarray) -> Attribute:
    """A constant attribute holding ``array``'s bytes (strings as a string tensor)."""
    array = np.asarray(array)
    ttype = tensor_type(array.dtype, tuple(array.shape))
    if array.dtype == np.dtype(object):
        return StringTensorAttr(ttype, ArrayAttr([StringAttr(str(v)) for v in array.reshape(-1)]))
    return DenseIntOrFPElementsAttr(ttype, BytesAttr(np.ascontiguousarray(array).tobytes()))


def constant_op(array: np.ndarray, name: str | None = None) -> Operation:
    attr = dense_attr(array)
    op = ConstantOp.build(properties={"value": attr}, result_types=[attr.type])  # type: ignore[attr-defined]
    if name:
        op.attributes["onnx.name"] = StringAttr(name)
    return op


def used_values(op: Operation) -> list[SSAValue]:
    """Operands of ``op`` and every value its regions read from outside them."""
    values = list(op.operands)
    for region in op.regions:
        values.extend(used_values_defined_above(region))
    return values


def is_structural(op: Operation) -> bool:
    """Terminators and constants: ops that hold values or end blocks but do no work
    (asked of the op's traits, so new dialects need no list here)."""
    return op.has_trait(IsTerminator) or op.has_trait(ConstantLike)
