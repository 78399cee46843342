"""The one legality table: which ONNX ops go to the NeuronCore of each target, read by
both ``partition`` (placement) and ``lower-to-nc`` (which refuses anything else).

An op is NeuronCore-legal only if the target supports it (the Neuron documentation,
below) *and* ``lower-to-nc`` lowers that exact case: entries say whether a lowering
pattern exists (``lowers``), which of the op's results it produces (``outputs``) and
which cases it cannot take (``lower_check``). ``tests/test_legality.py`` proves the
table and the patterns of ``passes/lower_to_nc.py`` agree.

``unsupported_reason(op, target)`` is None when the NeuronCore of ``target`` runs
``op``, else a short reason; ``supported_op_types(target)`` lists the table's op types
supported on ``target`` (per-op constraints aside); ``table_markdown()`` renders the
table for the docs.

Sources (facts only, AWS Neuron documentation; each entry's ``src`` names the one it
rests on):

- ``onnx``:  "Supported operators [ONNX]" (neuron-cc ONNX operator list, Inf1,
  release notes of neuron-cc 1.0.4680 to 1.0.9410): the 68 names of that list. Six of
  them (ConstantFill, FC, ParametricSoftplus, Scale, ScaledTanh, SpatialBN) are not
  operators of ONNX opset 28 and so have no entry here; SoftPlus is ``Softplus``.
- ``torch``: "PyTorch Neuron (torch-neuron) Supported operators" (Inf1).
- ``tf``:    "TensorFlow Neuron (tensorflow-neuron (TF1.x)) Supported operators" (Inf1).
- ``xla``:   "TensorFlow Neuron Supported operators [XLA]" (per-op notes on Pow,
  Reduce, Gather, DynamicUpdateSlice, Scatter).
- ``limits``: neuron-cc release notes, "Known issues and limitations" (only control
  flow static at compile time, e.g. static-length RNNs, top-k) and the Neuron FAQ (no
  control flow or dynamic shapes inside a compiled graph).
- ``types``: "Data Types" (NeuronCore v1: FP32/FP16/BF16; NeuronCore v2 adds TF32,
  FP8 e5m2/e4m3/e3m4 and UINT8; compiler INT8 support is only a roadmap item),
  "NeuronCore-v1/v2 Architecture" (the engines handle INT8/INT16/INT32), and the
  neuronx-cc error codes NCC_ESFH002 (64-bit integers are narrowed to 32 bits),
  NCC_EVRF005 (no FNUZ float8), NCC_EVRF051 (no float8 e4m3fn on NeuronCore-v2),
  NCC_EMOD025 (dynamic shapes are not supported).

``src="assumed"`` marks the project's own assumptions: ops that no Neuron list names
but that the seed model families need and that lower to supported primitives once
shapes are static (CumSum, GatherElements, GatherND, SpaceToDepth, RMSNormalization,
ReduceSumSquare, ReduceLogSumExp); every "inf2: yes" beyond the Inf1 lists (neuronx-cc
compiles XLA HLO, so ops that are plain HLO are taken as supported); the Resize, Pad,
Einsum and LSTM attribute limits; 3-D convolution being inf2-only (the TF front end of
Inf1 lists Conv3D, the ONNX and PyTorch front ends do not); the inf1 rules for
ArgMax/ArgMin (first index only) and Pow (constant exponent; the XLA list's "integer"
is not enforced); bool and uint8 tensors being fine as bytes; unsigned types wider than
8 bits being refused; and the exclusion of the random, sequence, optional and
region-sampling ops.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import ml_dtypes
import numpy as np
from xdsl.ir import Operation, SSAValue

from dialects.onnx import ConstantOp, CustomOp, OnnxOp

from ..ir.attrs import constant_array, onnx_attrs
from ..ir.util import info_of_type

TARGETS = ("inf1", "inf2")

# ---------------------------------------------------------------------------
# element types

_FLOATS = {np.dtype(np.float32), np.dtype(np.float16), np.dtype(ml_dtypes.bfloat16)}
# The engines compute INT8/16/32; int64 is narrowed to 32 bits by the compiler
# (NCC_ESFH002); bool is kept as one byte (assumed).
_INTS = {np.dtype(t) for t in (np.bool_, np.int8, np.uint8, np.int16, np.int32, np.int64)}
_DTYPES = {
    "inf1": _FLOATS | _INTS,
    "inf2": _FLOATS | _INTS | {np.dtype(ml_dtypes.float8_e5m2)},
}
# Why a dtype is refused (by numpy dtype name); anything else: "not supported".
_DTYPE_WHY = {
    "float64": "the NeuronCore computes in 32-bit or narrower types",
    "complex64": "no complex arithmetic",
    "complex128": "no complex arithmetic",
    "object": "string tensors stay on the CPU",
    "uint16": "only 8-bit unsigned integers",
    "uint32": "only 8-bit unsigned integers",
    "uint64": "only 8-bit unsigned integers",
    "float8_e4m3fn": "NeuronCore-v2 has no e4m3fn float8 (inf1: no float8 at all)",
    "float8_e5m2": "NeuronCore-v1 has no float8",
    "float8_e4m3fnuz": "FNUZ float8 variants are not supported",
    "float8_e5m2fnuz": "FNUZ float8 variants are not supported",
    "float8_e8m0fnu": "no microscaling types",
    "int4": "no sub-byte types",
    "uint4": "no sub-byte types",
    "int2": "no sub-byte types",
    "uint2": "no sub-byte types",
    "float4_e2m1fn": "no sub-byte types",
    "float6_e2m3fn": "no sub-byte types",
    "float6_e3m2fn": "no sub-byte types",
}

# ---------------------------------------------------------------------------
# the view of one op that constraint checkers get


@dataclass
class Node:
    op: OnnxOp
    type: str
    target: str
    attrs: dict
    """Explicit ONNX attributes over the schema defaults."""
    inputs: list[SSAValue | None]
    outputs: list[SSAValue | None]

    def shape(self, k: int, output: bool = False) -> tuple[int, ...] | None:
        values = self.outputs if output else self.inputs
        if k >= len(values) or values[k] is None:
            return None
        return info_of_type(values[k].type).shape  # type: ignore[return-value]

    def dtype(self, k: int) -> np.dtype | None:
        if k >= len(self.inputs) or self.inputs[k] is None:
            return None
        return info_of_type(self.inputs[k].type).dtype

    def is_const(self, k: int) -> bool:
        return (
            k < len(self.inputs)
            and self.inputs[k] is not None
            and isinstance(self.inputs[k].owner, ConstantOp)
        )

    def const(self, k: int) -> np.ndarray | None:
        """Input ``k``'s value if it is a (non-elided) constant."""
        if not self.is_const(k):
            return None
        owner = self.inputs[k].owner  # type: ignore[union-attr]
        try:
            if owner.value is not None:
                return constant_array(owner.value)
            (value,) = onnx_attrs(owner).values()
            return np.asarray(value)
        except Exception:
            return None


Checker = Callable[[Node], "str | None"]

# ---------------------------------------------------------------------------
# constraint checkers (a reason without the op-type prefix, or None)


def _spatial_rank(node: Node, inf1_max: int, inf2_max: int) -> str | None:
    """Convolutions and pools: how many spatial dims the target handles."""
    x = node.shape(0)
    if x is None:
        return None
    n = len(x) - 2
    limit = inf1_max if node.target == "inf1" else inf2_max
    if n < 1 or n > limit:
        return f"{n}-D not supported on {node.target} (1-D to {limit}-D)"
    return None


def _conv(node: Node) -> str | None:
    # Inf1 runs 2-D convolution; 1-D is a 2-D one with a unit dim. 3-D: inf2 only.
    return _spatial_rank(node, 2, 3)


def _max_pool(node: Node) -> str | None:
    # torch-neuron lists max_pool2d/max_pool3d (indices output included since 2.2.0).
    return _spatial_rank(node, 3, 3)


def _avg_pool(node: Node) -> str | None:
    # torch-neuron lists avg_pool2d and adaptive_avg_pool1d/2d only.
    return _spatial_rank(node, 2, 3)


_RESIZE_COORD = {
    "inf1": {
        "half_pixel",
        "pytorch_half_pixel",
        "align_corners",
        "asymmetric",
        "tf_half_pixel_for_nn",
    },
    "inf2": {
        "half_pixel",
        "pytorch_half_pixel",
        "align_corners",
        "asymmetric",
        "tf_half_pixel_for_nn",
        "half_pixel_symmetric",
    },
}
_RESIZE_MODES = {"inf1": ("nearest", "linear"), "inf2": ("nearest", "linear", "cubic")}


def _resize(node: Node) -> str | None:
    # Inf1: upsample_nearest2d / upsample_bilinear2d (torch), ResizeNearestNeighbor /
    # ResizeBilinear (tf), Upsample (onnx): nearest or linear over the two innermost
    # axes. Inf2 (assumed): also cubic, any axes. No target: crop-and-resize (needs an
    # roi) or antialiasing.
    mode = node.attrs.get("mode", "nearest")
    if mode not in _RESIZE_MODES[node.target]:
        return f"mode '{mode}' not supported on {node.target}"
    coord = node.attrs.get("coordinate_transformation_mode", "asymmetric")
    if coord not in _RESIZE_COORD[node.target]:
        return f"coordinate_transformation_mode '{coord}' not supported on {node.target}"
    if node.attrs.get("antialias", 0):
        return "antialias not supported"
    x, y = node.shape(0), node.shape(0, output=True)
    if node.target == "inf1" and x is not None and y is not None:
        scaled = [k for k, (a, b) in enumerate(zip(x, y, strict=True)) if a != b]
        if any(k < len(x) - 2 for k in scaled):
            return f"scales axes {scaled}; inf1 resizes only the two innermost axes (2-D)"
    return None


_PAD_MODES = {"inf1": ("constant", "reflect"), "inf2": ("constant", "reflect", "edge")}


def _pad(node: Node) -> str | None:
    # Inf1: constant_nd pads (torch), Pad/PadV2 and MirrorPad (tf), reflection_pad2d
    # (torch 2.9): constant or reflect. Inf2 (assumed): also edge. Wrap: nowhere.
    mode = node.attrs.get("mode", "constant")
    if mode not in _PAD_MODES[node.target]:
        return f"mode '{mode}' not supported on {node.target}"
    return None


def _pow(node: Node) -> str | None:
    # The XLA front end of neuron-cc wants a compile-time exponent.
    if node.target == "inf1" and not node.is_const(1):
        return "the exponent must be a compile-time constant on inf1"
    return None


def _arg_extreme(node: Node) -> str | None:
    # The framework ops (torch argmax, tf ArgMax) return the first index.
    if node.target == "inf1" and node.attrs.get("select_last_index", 0):
        return "select_last_index=1 not supported on inf1"
    return None


def _mod(node: Node) -> str | None:
    # torch-neuron lists aten::remainder (Python-style, fmod=0), not aten::fmod.
    if node.target == "inf1" and node.attrs.get("fmod", 0):
        return "fmod=1 not supported on inf1"
    return None


def _einsum(node: Node) -> str | None:
    # Limited (assumed): one or two operands, no diagonal/trace (a repeated index in one
    # operand), so the equation becomes transposes + a batched matmul.
    equation = str(node.attrs.get("equation", "")).replace(" ", "")
    terms = equation.split("->")[0].split(",")
    if len(terms) > 2:
        return f"equation '{equation}' has {len(terms)} operands (at most 2)"
    for term in terms:
        letters = term.replace("...", "")
        if len(set(letters)) != len(letters):
            return f"equation '{equation}' takes a diagonal or trace"
    return None


def _batch_norm(node: Node) -> str | None:
    if node.attrs.get("training_mode", 0):
        return "training mode (batch statistics) not supported; inference only"
    return None


def _dropout(node: Node) -> str | None:
    mode = node.const(2)
    if node.inputs[2:3] and node.inputs[2] is not None and (mode is None or mode.any()):
        return "training mode not supported; inference only (identity)"
    return None


def _recurrent(node: Node) -> str | None:
    # Static-length recurrences only (neuron-cc known limitations; torch-neuron's
    # limited LSTM support); custom activations only on inf2 (assumed).
    if len(node.inputs) > 4 and node.inputs[4] is not None:
        return "per-batch sequence_lens not supported (static length only)"
    if node.target == "inf1" and "activations" in node.attrs:
        return "custom activations not supported on inf1"
    return None


def _gather_indices(k: int) -> Checker:
    def check(node: Node) -> str | None:
        dtype = node.dtype(k)
        if dtype is not None and dtype not in (np.dtype(np.int32), np.dtype(np.int64)):
            return f"indices of dtype {dtype} (int32/int64 only)"
        return None

    return check


def _scatter(node: Node) -> str | None:
    reduction = node.attrs.get("reduction", "none")
    if reduction not in ("none", "add", "mul", "max", "min"):
        return f"reduction '{reduction}' not supported"
    return _gather_indices(1)(node)


def _stash_f32(node: Node) -> str | None:
    if int(node.attrs.get("stash_type", 1)) != 1:
        return "stash_type other than 1 (float32 statistics) has no lowering"
    return None


def _first_index(node: Node) -> str | None:
    if node.attrs.get("select_last_index", 0):
        return "select_last_index=1 has no lowering"
    return None


def _saturating(node: Node) -> str | None:
    if not int(node.attrs.get("saturate", 1)):
        return "saturate=0 has no lowering"
    return None


def _nd_batch(node: Node) -> str | None:
    if int(node.attrs.get("batch_dims", 0)):
        return "batch_dims != 0 has no lowering"
    return None


# ---------------------------------------------------------------------------
# the table


@dataclass(frozen=True)
class Entry:
    inf1: bool
    inf2: bool
    note: str
    """Constraints where supported; the reason where not."""
    src: str
    check: Checker | None = None
    const_inputs: tuple[int, ...] = ()
    """Input positions that must be compile-time constants (when present)."""
    floats_only: bool = False
    """TensorEngine ops: integer inputs would need the INT8 path."""
    lowers: bool = True
    """lower-to-nc has a pattern for this op type."""
    outputs: int | None = 1
    """How many leading results the lowering produces (None: all); a later result
    in use sends the op to the CPU."""
    lower_check: Checker | None = None
    """Cases the lowering cannot take (a reason), beyond what the target refuses."""

    def supports(self, target: str) -> bool:
        return self.inf1 if target == "inf1" else self.inf2


def _both(
    note: str = "",
    src: str = "onnx",
    check: Checker | None = None,
    const: tuple[int, ...] = (),
    floats_only: bool = False,
    lowers: bool = True,
    outputs: int | None = 1,
    lower_check: Checker | None = None,
) -> Entry:
    return Entry(True, True, note, src, check, const, floats_only, lowers, outputs, lower_check)


def _inf2(
    note: str,
    src: str = "assumed",
    check: Checker | None = None,
    const: tuple[int, ...] = (),
    lowers: bool = True,
) -> Entry:
    return Entry(False, True, note, src, check, const, lowers=lowers)


def _never(reason: str, src: str = "assumed") -> Entry:
    return Entry(False, False, reason, src)


_DATA_DEP = "data-dependent output size"
_RANDOM = "the device RNG ignores seeds; random ops stay on the CPU (reproducible results)"
_INT8 = "the compiler offers no INT8 quantization path"
_AXES = "axes must be a compile-time constant"

TABLE: dict[str, Entry] = {
    # -- elementwise arithmetic and math
    "Add": _both(),
    "Sub": _both(),
    "Mul": _both(),
    "Div": _both(),
    "Abs": _both(),
    "Neg": _both(),
    "Ceil": _both(),
    "Floor": _both(),
    "Exp": _both(),
    "Log": _both(),
    "Sqrt": _both(),
    "Reciprocal": _both(),
    "Pow": _both("inf1: compile-time exponent", check=_pow),
    "Max": _both(),
    "Min": _both(),
    "Mean": _both(),
    "Sum": _both(),
    "Sin": _both(src="torch"),
    "Cos": _both(src="torch"),
    "Erf": _both(src="torch"),
    "Sign": _both(src="tf"),
    "Round": _both(src="tf"),
    "Mod": _both("inf1: fmod=0 (remainder) only", src="torch", check=_mod),
    "IsNaN": _both(src="tf"),
    "Clip": _both(),
    # -- activations
    "Relu": _both(),
    "LeakyRelu": _both(),
    "PRelu": _both(),
    "Elu": _both(),
    "Selu": _both(),
    "Sigmoid": _both(),
    "HardSigmoid": _both(),
    "Tanh": _both(),
    "Softplus": _both(),
    "Softsign": _both(),
    "ThresholdedRelu": _both(),
    "Gelu": _both(src="torch"),
    "HardSwish": _both(src="torch"),
    "Swish": _both(src="torch"),
    "Mish": _both(src="assumed"),
    "Celu": _both(src="assumed"),
    "Softmax": _both(),
    "LogSoftmax": _both(),
    # -- comparisons and logic
    "Equal": _both(src="tf"),
    "Less": _both(src="tf"),
    "Greater": _both(src="tf"),
    "LessOrEqual": _both(src="tf"),
    "GreaterOrEqual": _both(src="tf"),
    "Not": _both(src="tf"),
    "And": _both(src="tf"),
    "Or": _both(src="tf"),
    "Xor": _both(src="torch"),
    "Where": _both("the three-input select; nonzero-style use is NonZero", src="torch"),
    # -- matmul and convolution (TensorEngine)
    "MatMul": _both(floats_only=True),
    "Gemm": _both(floats_only=True),
    "Einsum": _both(
        "at most 2 operands, no diagonal/trace (assumed)",
        src="torch",
        check=_einsum,
        floats_only=True,
        lowers=False,
    ),
    "Conv": _both(
        "1-D/2-D on inf1, up to 3-D on inf2 (assumed); groups, dilations ok",
        check=_conv,
        floats_only=True,
    ),
    "ConvTranspose": _both(
        "1-D/2-D on inf1, up to 3-D on inf2 (assumed)", check=_conv, floats_only=True
    ),
    # -- pooling and normalization
    "MaxPool": _both("1-D to 3-D", check=_max_pool),
    "AveragePool": _both("1-D/2-D on inf1, up to 3-D on inf2", check=_avg_pool),
    "GlobalAveragePool": _both(),
    "GlobalMaxPool": _both(),
    "BatchNormalization": _both(
        "inference mode only; statistics constant", check=_batch_norm, const=(1, 2, 3, 4)
    ),
    "LayerNormalization": _both(src="torch", outputs=3, lower_check=_stash_f32),
    "InstanceNormalization": _both(src="torch"),
    "GroupNormalization": _both(src="torch", lower_check=_stash_f32),
    "RMSNormalization": _both(
        "decomposes like LayerNormalization", src="assumed", lower_check=_stash_f32
    ),
    "LpNormalization": _both("p in {1, 2} (the schema's range)", src="torch"),
    "LRN": _both(lowers=False),
    "Dropout": _both("inference only (identity)", check=_dropout, outputs=2),
    # -- reductions
    "ReduceSum": _both(_AXES, const=(1,)),
    "ReduceMean": _both(_AXES, const=(1,)),
    "ReduceMax": _both(_AXES, const=(1,)),
    "ReduceMin": _both(_AXES, const=(1,)),
    "ReduceProd": _both(_AXES, src="tf", const=(1,)),
    "ReduceL1": _both(_AXES, src="torch", const=(1,)),
    "ReduceL2": _both(_AXES, src="torch", const=(1,)),
    "ReduceSumSquare": _both(_AXES, src="assumed", const=(1,)),
    "ReduceLogSumExp": _both(_AXES, src="assumed", const=(1,)),
    "ArgMax": _both(
        "inf1: select_last_index=0 (assumed)", check=_arg_extreme, lower_check=_first_index
    ),
    "ArgMin": _both(
        "inf1: select_last_index=0 (assumed)", check=_arg_extreme, lower_check=_first_index
    ),
    "TopK": _both("K a compile-time constant", src="torch", const=(1,), lowers=False),
    "CumSum": _both("axis a compile-time constant", src="assumed", const=(1,)),
    # -- shape and data movement
    "Identity": _both(),
    "Flatten": _both(),
    "Transpose": _both(),
    "Reshape": _both("static target shape", const=(1,)),
    "Squeeze": _both(_AXES, const=(1,)),
    "Unsqueeze": _both(_AXES, const=(1,)),
    "Concat": _both(),
    "Split": _both("split sizes a compile-time constant", const=(1,), outputs=None),
    "Slice": _both("starts/ends/axes/steps compile-time constants", const=(1, 2, 3, 4)),
    "Expand": _both("static target shape", src="torch", const=(1,)),
    "Tile": _both("repeats a compile-time constant", src="tf", const=(1,)),
    "Pad": _both(
        "inf1: constant/reflect; inf2: also edge (assumed); pads constant",
        check=_pad,
        const=(1, 2, 3),
    ),
    "Cast": _both("both element types supported on the target", lower_check=_saturating),
    "Gather": _both("int32/int64 indices", check=_gather_indices(1)),
    "GatherElements": _both(
        "int32/int64 indices; a Gather on the flattened data",
        src="assumed",
        check=_gather_indices(1),
    ),
    "GatherND": _both(
        "int32/int64 indices; a Gather on the flattened data",
        src="assumed",
        check=_gather_indices(1),
        lower_check=_nd_batch,
    ),
    "DepthToSpace": _both("static reshape + transpose", src="torch"),
    "SpaceToDepth": _both("static reshape + transpose", src="assumed"),
    "Trilu": _both("k a compile-time constant", src="torch", const=(1,)),
    "OneHot": _both("depth a compile-time constant", src="torch", const=(1,), lowers=False),
    "Resize": _both(
        "nearest/linear over the 2 innermost axes on inf1; inf2 also "
        "cubic, any axes (assumed); no crop-and-resize, no antialias (assumed)",
        src="torch",
        check=_resize,
        const=(1, 2, 3),
    ),
    "Upsample": _both("as Resize (deprecated form)", check=_resize, lowers=False),
    # -- constants and shape queries (static shapes make them constants)
    "Constant": _both("goes wherever its users go"),
    "ConstantOfShape": _both("static shape", src="tf", const=(0,)),
    "Range": _both("bounds compile-time constants", src="tf", const=(0, 1, 2)),
    # Folded by shape-inference (shapes are static), so never placed; no pattern needed.
    "Shape": _both("a constant once shapes are static", src="tf", lowers=False),
    "Size": _both("a constant once shapes are static", src="tf", lowers=False),
    # -- recurrences
    "LSTM": _both(
        "static length (no sequence_lens); inf1: default activations (assumed)",
        src="torch",
        check=_recurrent,
        lowers=False,
    ),  # "limited support"
    "GRU": _inf2("static length, unrolled; not in the Inf1 lists", check=_recurrent, lowers=False),
    "RNN": _inf2("static length, unrolled; not in the Inf1 lists", check=_recurrent, lowers=False),
    # -- inf2 only: plain XLA HLO that no Inf1 list names
    "ScatterND": _inf2(
        "XLA scatter; reduction none/add/mul/max/min; not in the Inf1 lists",
        src="xla",
        check=_scatter,
        lowers=False,
    ),
    "ScatterElements": _inf2(
        "XLA scatter; reduction none/add/mul/max/min; not in the Inf1 lists",
        src="xla",
        check=_scatter,
        lowers=False,
    ),
    # -- never on the NeuronCore
    "NonMaxSuppression": _never(_DATA_DEP, "limits"),
    "NonZero": _never(_DATA_DEP, "limits"),
    "Unique": _never(_DATA_DEP, "limits"),
    "Compress": _never(_DATA_DEP, "limits"),
    "RoiAlign": _never("samples at box coordinates read from the data"),
    "MaxRoiPool": _never("pools regions whose coordinates are read from the data"),
    "RandomNormal": _never(_RANDOM),
    "RandomUniform": _never(_RANDOM),
    "RandomNormalLike": _never(_RANDOM),
    "RandomUniformLike": _never(_RANDOM),
    "Bernoulli": _never(_RANDOM),
    "Multinomial": _never(_RANDOM),
    "StringNormalizer": _never("string tensors"),
    "StringConcat": _never("string tensors"),
    "StringSplit": _never("string tensors"),
    "RegexFullMatch": _never("string tensors"),
    "TfIdfVectorizer": _never("string/n-gram hashing, data-dependent"),
    "ImageDecoder": _never("decodes compressed image bytes"),
    "If": _never("control flow runs on the CPU; its bodies are partitioned separately", "limits"),
    "Loop": _never("control flow runs on the CPU; its body is partitioned separately", "limits"),
    "Scan": _never("control flow runs on the CPU; its body is partitioned separately", "limits"),
    "SequenceAt": _never("sequence values"),
    "SequenceConstruct": _never("sequence values"),
    "SequenceEmpty": _never("sequence values"),
    "SequenceErase": _never("sequence values"),
    "SequenceInsert": _never("sequence values"),
    "SequenceLength": _never("sequence values"),
    "SequenceMap": _never("sequence values"),
    "SplitToSequence": _never("sequence values"),
    "ConcatFromSequence": _never("sequence values"),
    "Optional": _never("optional values"),
    "OptionalGetElement": _never("optional values"),
    "OptionalHasElement": _never("optional values"),
    "QuantizeLinear": _never(_INT8, "types"),
    "DequantizeLinear": _never(_INT8, "types"),
    "DynamicQuantizeLinear": _never(_INT8, "types"),
    "QLinearConv": _never(_INT8, "types"),
    "QLinearMatMul": _never(_INT8, "types"),
    "ConvInteger": _never(_INT8, "types"),
    "MatMulInteger": _never(_INT8, "types"),
}

_SRC_NAMES = {
    "onnx": "neuron-cc ONNX operator list (Inf1)",
    "torch": "torch-neuron supported operators (Inf1)",
    "tf": "tensorflow-neuron supported operators (Inf1)",
    "xla": "Neuron XLA operator list",
    "types": "Neuron data-type and NeuronCore architecture pages",
    "limits": "neuron-cc known limitations / Neuron FAQ (static control flow and shapes)",
    "assumed": "project assumption",
}

# ---------------------------------------------------------------------------
# the API


def _check_target(target: str) -> None:
    if target not in TARGETS:
        raise ValueError(f"unknown target {target!r}; known: {', '.join(TARGETS)}")


def supported_op_types(target: str) -> frozenset[str]:
    """ONNX op types the table marks supported on ``target`` (constraints aside)."""
    _check_target(target)
    return frozenset(name for name, entry in TABLE.items() if entry.supports(target))


def _type_text(value: SSAValue) -> str:
    info = info_of_type(value.type)
    if info.shape is None:
        return "unranked"
    return "x".join("?" if d is None else str(d) for d in info.shape) or "scalar"


def unsupported_reason(op: Operation, target: str) -> str | None:
    """None if ``op`` goes to the NeuronCore of ``target`` (the target supports it and
    lower-to-nc lowers it), else a short reason: what partition and lower-to-nc read."""
    return _reason(op, target, lowering=True)


def target_reason(op: Operation, target: str) -> str | None:
    """Only the target's side: None if the Neuron documentation (or the project's
    stated assumptions) say the NeuronCore of ``target`` runs ``op``."""
    return _reason(op, target, lowering=False)


def _reason(op: Operation, target: str, lowering: bool) -> str | None:
    _check_target(target)
    if isinstance(op, ConstantOp):
        return None
    if isinstance(op, CustomOp):
        domain = op.domain.data or "ai.onnx"
        return f"{op.op_type.data}: custom operator of domain '{domain}' has no NeuronCore lowering"
    if not isinstance(op, OnnxOp):
        return f"{op.name}: control flow runs on the CPU"
    name = op.ONNX_TYPE
    entry = TABLE.get(name)
    if entry is None:
        return f"{name}: no NeuronCore lowering (not in the operator table)"
    if not entry.inf1 and not entry.inf2:
        return f"{name}: {entry.note}"
    if not entry.supports(target):
        return f"{name}: not supported on {target} ({entry.note})"
    if op.attributes.get("onnx.data_dependent") is not None:
        return f"{name}: {_DATA_DEP}"
    inputs, outputs = op.onnx_inputs(), op.onnx_outputs()
    values = [v for v in inputs + outputs if v is not None]
    for value in values:
        info = info_of_type(value.type)
        if info.shape is None or any(d is None for d in info.shape):
            return (
                f"{name}: dynamic shape ({_type_text(value)}); the NeuronCore needs static shapes"
            )
    for value in values:
        dtype = info_of_type(value.type).dtype
        if dtype is None:
            return f"{name}: unknown element type (dtype)"
        if dtype not in _DTYPES[target]:
            why = _DTYPE_WHY.get(dtype.name, "not supported")
            return f"{name}: dtype {dtype.name} not supported on {target} ({why})"
    if entry.floats_only:
        for value in inputs:
            dtype = None if value is None else info_of_type(value.type).dtype
            if dtype in _INTS:
                return (
                    f"{name}: integer dtype {dtype.name} would need the INT8 "
                    "TensorEngine path, which the compiler does not offer"
                )
    node = Node(op, name, target, {**op.ONNX_DEFAULTS, **onnx_attrs(op)}, inputs, outputs)
    for k in entry.const_inputs:
        if k < len(inputs) and inputs[k] is not None and not node.is_const(k):
            arg = op.ONNX_INPUTS[k][0]
            return f"{name}: input '{arg}' must be a compile-time constant"
    if entry.check is not None:
        reason = entry.check(node)
        if reason is not None:
            return f"{name}: {reason}"
    return _lowering_reason(name, entry, node) if lowering else None


def _lowering_reason(name: str, entry: Entry, node: Node) -> str | None:
    """Why lower-to-nc cannot take a case the target supports, or None."""
    if not entry.lowers:
        return f"{name}: lower-to-nc has no lowering for it"
    if entry.outputs is not None:
        for k, value in enumerate(node.outputs[entry.outputs :], entry.outputs):
            if value is not None and value.uses:
                arg = node.op.ONNX_OUTPUTS[min(k, len(node.op.ONNX_OUTPUTS) - 1)][0]
                return (
                    f"{name}: output '{arg}' is used; lower-to-nc produces only the "
                    f"first {entry.outputs}"
                )
    if entry.lower_check is not None:
        reason = entry.lower_check(node)
        if reason is not None:
            return f"{name}: {reason}"
    return None


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


def table_markdown() -> str:
    """The whole table for the docs: op, inf1, inf2, constraints / reason, source."""
    lines = ["| op | inf1 | inf2 | constraints / reason |", "|---|---|---|---|"]
    for name in sorted(TABLE):
        entry = TABLE[name]
        note = entry.note.replace("|", "\\|")
        tag = f"[{entry.src}]"
        text = f"{note} {tag}" if note else tag
        lines.append(f"| {name} | {_yes(entry.inf1)} | {_yes(entry.inf2)} | {text} |")
    lines.append("")
    lines.append("Sources: " + "; ".join(f"[{k}] {v}" for k, v in _SRC_NAMES.items()) + ".")
    lines.append("")
    lines.append(
        "Everywhere: static shapes only; element types float32/float16/bfloat16, "
        "bool and 8- to 64-bit signed integers (64-bit narrowed to 32), uint8; "
        "inf2 also float8 e5m2. Any op not listed has no NeuronCore lowering."
    )
    return "\n".join(lines) + "\n"


__all__ = [
    "TARGETS",
    "TABLE",
    "Entry",
    "supported_op_types",
    "table_markdown",
    "target_reason",
    "unsupported_reason",
]
