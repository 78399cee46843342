"""Floating-point operation counts of onnx-dialect ops, from their static types.

One count per op: multiply-adds count as 2 for the Tensor-engine ops (MatMul, Gemm,
Conv, ConvTranspose, Einsum is estimated as a MatMul), and elementwise or
normalisation ops count a small constant per output element. Layout and shape ops
(Reshape, Transpose, Gather, ...) move data and count 0.
"""

from __future__ import annotations

import math

from xdsl.ir import Operation

from dialects.onnx import OnnxOp

from ..ir.attrs import onnx_attrs
from ..ir.util import info_of_type

_NO_COMPUTE = {
    "Constant",
    "Reshape",
    "Transpose",
    "Flatten",
    "Squeeze",
    "Unsqueeze",
    "Identity",
    "Shape",
    "Size",
    "Concat",
    "Split",
    "Slice",
    "Gather",
    "GatherElements",
    "GatherND",
    "Expand",
    "Tile",
    "Cast",
    "CastLike",
    "ConstantOfShape",
    "Range",
    "Dropout",
    "Pad",
    "DepthToSpace",
    "SpaceToDepth",
    "ScatterND",
    "ScatterElements",
    "OneHot",
    "Trilu",
}
# Per output element: a rough count of the arithmetic a numerically sound kernel does.
_PER_ELEMENT = {
    "Softmax": 5,
    "LogSoftmax": 5,
    "LayerNormalization": 8,
    "BatchNormalization": 2,
    "InstanceNormalization": 8,
    "GroupNormalization": 8,
    "Erf": 10,
    "Gelu": 12,
    "Sigmoid": 4,
    "Tanh": 4,
    "Exp": 2,
    "Log": 2,
    "Pow": 2,
    "Sqrt": 2,
    "Resize": 4,
}


def _numel(shape) -> int:
    if shape is None or any(d is None for d in shape):
        return 0
    return math.prod(shape)


_NC_MOVES = {
    "nc.program",
    "nc.return",
    "nc.weight",
    "nc.reshape",
    "nc.broadcast",
    "nc.slice",
    "nc.concat",
    "nc.pad",
    "nc.transpose",
    "nc.dma_copy",
    "nc.send",
    "nc.recv",
    "nc.gather",
    "nc.iota",
    "nc.cast",
}


def _nc_flops(op: Operation) -> int:
    """The same counts for lowered nc ops, so reports agree before and after lowering."""
    if op.name in _NC_MOVES or not op.results:
        return 0
    out = _numel(info_of_type(op.results[0].type).shape)
    ins = [info_of_type(v.type) for v in op.operands]
    if op.name == "nc.matmul":
        lhs = ins[0].shape or ()
        transposed = op.properties.get("transpose_lhs")
        k = (
            lhs[-2]
            if transposed is not None and transposed.value.data and len(lhs) > 1
            else (lhs[-1] if lhs else 0)
        )
        return 2 * out * (k or 0)
    if op.name == "nc.conv":
        w = ins[1].shape
        return 2 * out * math.prod(w[1:]) if w and None not in w else 0
    if op.name == "nc.pool":
        return out * math.prod(op.properties["kernel"].get_values())  # type: ignore
    if op.name == "nc.reduce":
        return _numel(ins[0].shape)
    return out


def op_flops(op: Operation) -> int:
    """Estimated FLOPs of one op with static types; 0 when unknown or data movement."""
    if op.name.startswith("nc."):
        return _nc_flops(op)
    if not isinstance(op, OnnxOp):
        return 0
    kind = op.ONNX_TYPE
    if kind in _NO_COMPUTE:
        return 0
    outs = [info_of_type(v.type) for v in op.onnx_outputs() if v is not None]
    ins = [None if v is None else info_of_type(v.type) for v in op.onnx_inputs()]
    out_elems = _numel(outs[0].shape) if outs else 0
    if kind in ("MatMul", "MatMulInteger", "Gemm", "Einsum"):
        a = ins[0]
        if a is None or not a.shape:
            return 0
        attrs = onnx_attrs(op) if kind == "Gemm" else {}
        k = a.shape[0] if attrs.get("transA", 0) else a.shape[-1]
        return 2 * out_elems * (k or 0)
    if kind in ("Conv", "ConvInteger"):
        w = ins[1]
        if w is None or w.shape is None or any(d is None for d in w.shape):
            return 0
        return 2 * out_elems * math.prod(w.shape[1:])
    if kind == "ConvTranspose":
        x, w = ins[0], ins[1]
        if x is None or w is None or w.shape is None:
            return 0
        # W is (C, M/group, k...): each input element meets M/group * prod(k) weights.
        return 2 * _numel(x.shape) * (w.shape[1] or 0) * math.prod(w.shape[2:])
    if kind.startswith("Reduce") or kind in (
        "ArgMax",
        "ArgMin",
        "GlobalAveragePool",
        "GlobalMaxPool",
    ):
        return _numel(ins[0].shape) if ins and ins[0] is not None else 0
    if kind in ("MaxPool", "AveragePool", "LpPool"):
        k = onnx_attrs(op).get("kernel_shape", [1])
        return out_elems * math.prod(k)
    return out_elems * _PER_ELEMENT.get(kind, 1)
