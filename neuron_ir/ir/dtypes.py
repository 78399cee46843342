"""One table of element types: ONNX data type <-> xDSL element type <-> numpy dtype."""

from __future__ import annotations

from dataclasses import dataclass

import ml_dtypes
import numpy as np
from onnx import TensorProto
from xdsl.dialects.builtin import (
    BFloat16Type,
    ComplexType,
    Float4E2M1FNType,
    Float6E2M3FNType,
    Float6E3M2FNType,
    Float8E4M3FNType,
    Float8E4M3FNUZType,
    Float8E5M2FNUZType,
    Float8E5M2Type,
    Float8E8M0FNUType,
    Float16Type,
    Float32Type,
    Float64Type,
    IntegerType,
    Signedness,
)
from xdsl.ir import Attribute

from dialects.onnx import StringType


@dataclass(frozen=True)
class ElementType:
    onnx: int
    xdsl: Attribute
    numpy: np.dtype
    packed: bool = False
    """Sub-byte types: ONNX packs them, the IR keeps one element a byte."""


def _int(width: int, signed: bool = True) -> IntegerType:
    return IntegerType(width, Signedness.SIGNLESS if signed else Signedness.UNSIGNED)


_TABLE = [
    ElementType(TensorProto.FLOAT, Float32Type(), np.dtype(np.float32)),
    ElementType(TensorProto.DOUBLE, Float64Type(), np.dtype(np.float64)),
    ElementType(TensorProto.FLOAT16, Float16Type(), np.dtype(np.float16)),
    ElementType(TensorProto.BFLOAT16, BFloat16Type(), np.dtype(ml_dtypes.bfloat16)),
    ElementType(TensorProto.INT8, _int(8), np.dtype(np.int8)),
    ElementType(TensorProto.INT16, _int(16), np.dtype(np.int16)),
    ElementType(TensorProto.INT32, _int(32), np.dtype(np.int32)),
    ElementType(TensorProto.INT64, _int(64), np.dtype(np.int64)),
    ElementType(TensorProto.UINT8, _int(8, False), np.dtype(np.uint8)),
    ElementType(TensorProto.UINT16, _int(16, False), np.dtype(np.uint16)),
    ElementType(TensorProto.UINT32, _int(32, False), np.dtype(np.uint32)),
    ElementType(TensorProto.UINT64, _int(64, False), np.dtype(np.uint64)),
    ElementType(TensorProto.BOOL, _int(1), np.dtype(np.bool_)),
    ElementType(TensorProto.COMPLEX64, ComplexType(Float32Type()), np.dtype(np.complex64)),
    ElementType(TensorProto.COMPLEX128, ComplexType(Float64Type()), np.dtype(np.complex128)),
    ElementType(TensorProto.FLOAT8E4M3FN, Float8E4M3FNType(), np.dtype(ml_dtypes.float8_e4m3fn)),
    ElementType(
        TensorProto.FLOAT8E4M3FNUZ, Float8E4M3FNUZType(), np.dtype(ml_dtypes.float8_e4m3fnuz)
    ),
    ElementType(TensorProto.FLOAT8E5M2, Float8E5M2Type(), np.dtype(ml_dtypes.float8_e5m2)),
    ElementType(
        TensorProto.FLOAT8E5M2FNUZ, Float8E5M2FNUZType(), np.dtype(ml_dtypes.float8_e5m2fnuz)
    ),
    ElementType(TensorProto.FLOAT8E8M0, Float8E8M0FNUType(), np.dtype(ml_dtypes.float8_e8m0fnu)),
    ElementType(TensorProto.INT4, _int(4), np.dtype(ml_dtypes.int4), packed=True),
    ElementType(TensorProto.UINT4, _int(4, False), np.dtype(ml_dtypes.uint4), packed=True),
    ElementType(TensorProto.INT2, _int(2), np.dtype(ml_dtypes.int2), packed=True),
    ElementType(TensorProto.UINT2, _int(2, False), np.dtype(ml_dtypes.uint2), packed=True),
    ElementType(
        TensorProto.FLOAT4E2M1, Float4E2M1FNType(), np.dtype(ml_dtypes.float4_e2m1fn), packed=True
    ),
    ElementType(
        TensorProto.FLOAT6E2M3, Float6E2M3FNType(), np.dtype(ml_dtypes.float6_e2m3fn), packed=True
    ),
    ElementType(
        TensorProto.FLOAT6E3M2, Float6E3M2FNType(), np.dtype(ml_dtypes.float6_e3m2fn), packed=True
    ),
    ElementType(TensorProto.STRING, StringType(), np.dtype(object)),
]

BY_ONNX: dict[int, ElementType] = {e.onnx: e for e in _TABLE}
BY_XDSL: dict[Attribute, ElementType] = {e.xdsl: e for e in _TABLE}
BY_NUMPY: dict[np.dtype, ElementType] = {e.numpy: e for e in _TABLE if e.numpy.kind != "O"}


def onnx_type_name(onnx_type: int) -> str:
    try:
        return TensorProto.DataType.Name(onnx_type)
    except ValueError:
        return f"data type {onnx_type}"


def numpy_dtype_of(element: Attribute) -> np.dtype:
    """The numpy dtype holding one element of ``element`` (KeyError if none)."""
    return BY_XDSL[element].numpy
