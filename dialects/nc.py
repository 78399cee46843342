"""The ``nc`` dialect: a NeuronCore program, in the spirit of the NKI ISA.

A NeuronCore subgraph lowers to one ``nc.program`` (inside its
``func.func @neuron_subgraph_K``) that records its target, compiled batch size and
core count, with one stage region per core. Stages pass activations with
``nc.send`` / ``nc.recv``; weights are ``nc.weight`` values placed in SBUF (cached on
the core: free per inference) or HBM (fetched every inference).

Compute ops name their engine by class (``ENGINE``) and say which memory each
operand is read from (``reads``: "sbuf", "psum" or "hbm"); ``est_time`` (seconds) is
the cost model's estimate, set by ``lower-to-nc``.

- Tensor engine: ``nc.matmul``, ``nc.conv``.
- Scalar engine: ``nc.activation`` (a function applied element-wise, with optional
  scale and bias: ``f(x * scale + bias)``).
- Vector engine: ``nc.tensor_tensor``, ``nc.tensor_scalar``, ``nc.reduce``,
  ``nc.transpose``, ``nc.select``, ``nc.cast``, ``nc.pool`` and the layout ops
  ``nc.reshape``, ``nc.broadcast``, ``nc.slice``, ``nc.concat``, ``nc.pad``.
- GpSimd engine: ``nc.gather``, ``nc.iota``.
- DMA: ``nc.dma_copy``, ``nc.send``, ``nc.recv``.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import ClassVar

from xdsl.dialects.builtin import (
    I64,
    ArrayAttr,
    DenseArrayBase,
    DenseIntOrFPElementsAttr,
    DenseResourceAttr,
    Float64Type,
    FloatAttr,
    IntegerAttr,
    StringAttr,
    TensorType,
)
from xdsl.ir import Dialect
from xdsl.irdl import (
    IRDLOperation,
    ParsePropInAttrDict,
    base,
    irdl_op_definition,
    operand_def,
    opt_prop_def,
    prop_def,
    result_def,
    traits_def,
    var_operand_def,
    var_region_def,
    var_result_def,
)
from xdsl.traits import ConstantLike, HasParent, IsTerminator, Pure
from xdsl.utils.exceptions import VerifyException

MEMORIES = ("sbuf", "psum", "hbm")
ENGINES = ("tensor", "vector", "scalar", "gpsimd", "dma")

# The op kinds of the nc ops, each defined once here: the lowering (ONNX -> kind) and the
# interpreter (kind -> numpy kernel) both read these tables, and the verifiers check
# against their keys.
#
# Activation kind -> (the ONNX op with the same semantics, or None for the ones the
# interpreter computes itself; the ONNX attributes ``alpha`` and ``beta`` carry).
ACTIVATIONS: dict[str, tuple[str | None, tuple[str, ...]]] = {
    "identity": (None, ()),
    "square": (None, ()),
    "rsqrt": (None, ()),
    "gelu_tanh": (None, ()),
    "silu": (None, ()),
    "relu": ("Relu", ()),
    "sigmoid": ("Sigmoid", ()),
    "tanh": ("Tanh", ()),
    "exp": ("Exp", ()),
    "log": ("Log", ()),
    "sqrt": ("Sqrt", ()),
    "erf": ("Erf", ()),
    "gelu": ("Gelu", ()),
    "softplus": ("Softplus", ()),
    "abs": ("Abs", ()),
    "neg": ("Neg", ()),
    "reciprocal": ("Reciprocal", ()),
    "sin": ("Sin", ()),
    "cos": ("Cos", ()),
    "sign": ("Sign", ()),
    "floor": ("Floor", ()),
    "ceil": ("Ceil", ()),
    "round": ("Round", ()),
    "mish": ("Mish", ()),
    "softsign": ("Softsign", ()),
    "hard_swish": ("HardSwish", ()),
    "leaky_relu": ("LeakyRelu", ("alpha",)),
    "elu": ("Elu", ("alpha",)),
    "celu": ("Celu", ("alpha",)),
    "thresholded_relu": ("ThresholdedRelu", ("alpha",)),
    "hard_sigmoid": ("HardSigmoid", ("alpha", "beta")),
    "selu": ("Selu", ("alpha", "gamma")),
}
# Binary kind -> (ONNX op, its fixed attributes); "ne" is Equal negated.
BINARY_OPS: dict[str, tuple[str, dict[str, int]]] = {
    "add": ("Add", {}),
    "sub": ("Sub", {}),
    "mul": ("Mul", {}),
    "div": ("Div", {}),
    "max": ("Max", {}),
    "min": ("Min", {}),
    "pow": ("Pow", {}),
    "mod": ("Mod", {}),
    "fmod": ("Mod", {"fmod": 1}),
    "eq": ("Equal", {}),
    "ne": ("Equal", {}),
    "lt": ("Less", {}),
    "le": ("LessOrEqual", {}),
    "gt": ("Greater", {}),
    "ge": ("GreaterOrEqual", {}),
    "and": ("And", {}),
    "or": ("Or", {}),
    "xor": ("Xor", {}),
}
# Reduction kind -> ONNX op.
REDUCE_OPS: dict[str, str] = {
    "sum": "ReduceSum",
    "mean": "ReduceMean",
    "max": "ReduceMax",
    "min": "ReduceMin",
    "prod": "ReduceProd",
    "sum_square": "ReduceSumSquare",
    "log_sum_exp": "ReduceLogSumExp",
    "l1": "ReduceL1",
    "l2": "ReduceL2",
    "argmax": "ArgMax",
    "argmin": "ArgMin",
}

StaticTensor = base(TensorType)
WeightValue = base(DenseIntOrFPElementsAttr) | base(DenseResourceAttr)


def _check_choice(
    op: IRDLOperation, name: str, value: StringAttr | None, allowed: Collection[str]
) -> None:
    if value is not None and value.data not in allowed:
        raise VerifyException(
            f"{op.name}: {name} '{value.data}' is not one of {', '.join(sorted(allowed))}"
        )


class NcOp(IRDLOperation):
    """An op of a NeuronCore program: its engine, operand memories and estimated time."""

    ENGINE: ClassVar[str] = "vector"
    # Properties print inside the attribute dictionary of the assembly format.
    irdl_options = (ParsePropInAttrDict(),)

    reads = opt_prop_def(ArrayAttr[StringAttr])
    est_time = opt_prop_def(FloatAttr[Float64Type])

    def verify_(self) -> None:
        if self.reads is not None:
            if len(self.reads.data) != len(self.operands):
                raise VerifyException(
                    f"{self.name}: reads lists {len(self.reads.data)} "
                    f"memories for {len(self.operands)} operand(s)"
                )
            for memory in self.reads.data:
                _check_choice(self, "memory", memory, MEMORIES)
        for value in (*self.operands, *self.results):
            if isinstance(value.type, TensorType) and any(d < 0 for d in value.type.get_shape()):
                raise VerifyException(f"{self.name}: NeuronCore tensors need static shapes")


_UNARY = "$input attr-dict `:` type($input) `->` type($output)"
_BINARY = "$lhs `,` $rhs attr-dict `:` type($lhs) `,` type($rhs) `->` type($output)"


# -- structure ---------------------------------------------------------------


@irdl_op_definition
class ProgramOp(IRDLOperation):
    """One NeuronCore program: ``cores`` stage regions, compiled for ``batch``."""

    name = "nc.program"
    target = prop_def(StringAttr)
    batch = prop_def(IntegerAttr[I64])
    cores = prop_def(IntegerAttr[I64])
    inputs = var_operand_def(StaticTensor)
    outputs = var_result_def(StaticTensor)
    stages = var_region_def("single_block")
    irdl_options = (ParsePropInAttrDict(),)
    assembly_format = (
        "`(` $inputs `)` attr-dict-with-keyword `:` functional-type($inputs, $outputs) $stages"
    )

    def verify_(self) -> None:
        cores = self.cores.value.data
        if cores < 1 or self.batch.value.data < 1:
            raise VerifyException("nc.program: cores and batch must be positive")
        if len(self.stages) != cores:
            raise VerifyException(
                f"nc.program: {cores} core(s) but {len(self.stages)} stage region(s)"
            )
        in_types = [v.type for v in self.inputs]
        for k, stage in enumerate(self.stages):
            block = stage.block
            if [a.type for a in block.args] != in_types:
                raise VerifyException(
                    f"nc.program: stage {k} arguments must match the program inputs"
                )
            last = block.last_op
            if not isinstance(last, ReturnOp):
                raise VerifyException(f"nc.program: stage {k} must end in nc.return")
            want = [r.type for r in self.outputs] if k == cores - 1 else []
            if [v.type for v in last.values] != want:
                raise VerifyException(
                    f"nc.program: stage {k} must return "
                    + ("the program results" if want else "nothing")
                )
        self._verify_channels()

    def _verify_channels(self) -> None:
        """Every channel has one send and one recv, from an earlier stage to a later
        one, naming each other's stage and carrying one type."""
        sends: dict[int, tuple[int, SendOp]] = {}
        recvs: dict[int, tuple[int, RecvOp]] = {}
        for k, stage in enumerate(self.stages):
            for op in stage.block.ops:
                if isinstance(op, SendOp | RecvOp):
                    table = sends if isinstance(op, SendOp) else recvs
                    channel = op.channel.value.data
                    if channel in table:
                        raise VerifyException(
                            f"nc.program: channel {channel} has two {op.name} ops"
                        )
                    table[channel] = (k, op)
        for channel in sorted(sends.keys() | recvs.keys()):
            if channel not in recvs or channel not in sends:
                missing = "nc.recv" if channel not in recvs else "nc.send"
                raise VerifyException(f"nc.program: channel {channel} has no {missing}")
            (ks, send), (kr, recv) = sends[channel], recvs[channel]
            if send.to_stage.value.data != kr or recv.from_stage.value.data != ks:
                raise VerifyException(
                    f"nc.program: channel {channel} is sent by stage {ks} to stage "
                    f"{send.to_stage.value.data} but received by stage {kr} from stage "
                    f"{recv.from_stage.value.data}"
                )
            if not ks < kr:
                raise VerifyException(
                    f"nc.program: channel {channel} must go to a later "
                    f"stage (stage {ks} to stage {kr})"
                )
            if send.input.type != recv.output.type:
                raise VerifyException(
                    f"nc.program: channel {channel} sends "
                    f"{send.input.type} but receives {recv.output.type}"
                )


@irdl_op_definition
class ReturnOp(IRDLOperation):
    """Ends a stage; the last stage returns the program's results."""

    name = "nc.return"
    values = var_operand_def(StaticTensor)
    traits = traits_def(IsTerminator(), HasParent(ProgramOp))
    assembly_format = "($values^ `:` type($values))? attr-dict"


@irdl_op_definition
class WeightOp(IRDLOperation):
    """A weight placed in SBUF (cached on the core) or HBM (fetched per inference)."""

    name = "nc.weight"
    value = prop_def(WeightValue)
    memory = prop_def(StringAttr)
    output = result_def(StaticTensor)
    traits = traits_def(ConstantLike(), Pure())
    irdl_options = (ParsePropInAttrDict(),)
    assembly_format = "attr-dict `:` type($output)"

    def verify_(self) -> None:
        _check_choice(self, "memory", self.memory, ("sbuf", "hbm"))
        if self.value.type != self.output.type:  # type: ignore[union-attr]
            raise VerifyException("nc.weight: the value's type must be the result type")


# -- DMA -----------------------------------------------------------------------


@irdl_op_definition
class DmaCopyOp(NcOp):
    """Copy a tensor between memories (e.g. an HBM weight into SBUF)."""

    name = "nc.dma_copy"
    ENGINE: ClassVar[str] = "dma"
    input = operand_def(StaticTensor)
    output = result_def(StaticTensor)
    src = prop_def(StringAttr)
    dst = prop_def(StringAttr)
    assembly_format = _UNARY

    def verify_(self) -> None:
        super().verify_()
        _check_choice(self, "src", self.src, MEMORIES)
        _check_choice(self, "dst", self.dst, MEMORIES)
        if self.input.type != self.output.type:
            raise VerifyException("nc.dma_copy: the copy must keep the type")


def _check_non_negative(op: IRDLOperation, **values: IntegerAttr) -> None:
    for key, attr in values.items():
        if attr.value.data < 0:
            raise VerifyException(f"{op.name}: {key} must be >= 0, not {attr.value.data}")


@irdl_op_definition
class SendOp(NcOp):
    """Send an activation to a later stage (another core) on ``channel``.

    ``nc.program``'s verifier pairs every send with exactly one ``nc.recv`` of the same
    channel and type in stage ``to_stage``, which must come after the sender."""

    name = "nc.send"
    ENGINE: ClassVar[str] = "dma"
    input = operand_def(StaticTensor)
    to_stage = prop_def(IntegerAttr[I64])
    channel = prop_def(IntegerAttr[I64])
    traits = traits_def(HasParent(ProgramOp))
    assembly_format = "$input attr-dict `:` type($input)"

    def verify_(self) -> None:
        super().verify_()
        _check_non_negative(self, to_stage=self.to_stage, channel=self.channel)


@irdl_op_definition
class RecvOp(NcOp):
    """Receive the activation stage ``from_stage`` sent on ``channel``."""

    name = "nc.recv"
    ENGINE: ClassVar[str] = "dma"
    from_stage = prop_def(IntegerAttr[I64])
    channel = prop_def(IntegerAttr[I64])
    output = result_def(StaticTensor)
    traits = traits_def(HasParent(ProgramOp))
    assembly_format = "attr-dict `:` type($output)"

    def verify_(self) -> None:
        super().verify_()
        _check_non_negative(self, from_stage=self.from_stage, channel=self.channel)


# -- Tensor engine -------------------------------------------------------------


@irdl_op_definition
class MatmulOp(NcOp):
    """Batched matrix product with numpy broadcasting of the leading dims."""

    name = "nc.matmul"
    ENGINE: ClassVar[str] = "tensor"
    lhs = operand_def(StaticTensor)
    rhs = operand_def(StaticTensor)
    output = result_def(StaticTensor)
    transpose_lhs = opt_prop_def(IntegerAttr[I64])
    transpose_rhs = opt_prop_def(IntegerAttr[I64])
    assembly_format = _BINARY


@irdl_op_definition
class ConvOp(NcOp):
    """Convolution (NCHW / NCW), ONNX Conv semantics with explicit pads."""

    name = "nc.conv"
    ENGINE: ClassVar[str] = "tensor"
    lhs = operand_def(StaticTensor)
    rhs = operand_def(StaticTensor)
    output = result_def(StaticTensor)
    strides = prop_def(DenseArrayBase[I64])
    pads = prop_def(DenseArrayBase[I64])
    dilations = prop_def(DenseArrayBase[I64])
    group = prop_def(IntegerAttr[I64])
    assembly_format = _BINARY


# -- Scalar engine -------------------------------------------------------------


@irdl_op_definition
class ActivationOp(NcOp):
    """``func(input * scale + bias)`` element-wise."""

    name = "nc.activation"
    ENGINE: ClassVar[str] = "scalar"
    input = operand_def(StaticTensor)
    output = result_def(StaticTensor)
    func = prop_def(StringAttr)
    scale = opt_prop_def(FloatAttr[Float64Type])
    bias = opt_prop_def(FloatAttr[Float64Type])
    alpha = opt_prop_def(FloatAttr[Float64Type])
    beta = opt_prop_def(FloatAttr[Float64Type])
    assembly_format = _UNARY

    def verify_(self) -> None:
        super().verify_()
        _check_choice(self, "func", self.func, ACTIVATIONS)


# -- Vector engine -------------------------------------------------------------


@irdl_op_definition
class TensorTensorOp(NcOp):
    """Element-wise binary op with broadcasting."""

    name = "nc.tensor_tensor"
    lhs = operand_def(StaticTensor)
    rhs = operand_def(StaticTensor)
    output = result_def(StaticTensor)
    op = prop_def(StringAttr)
    assembly_format = _BINARY

    def verify_(self) -> None:
        super().verify_()
        _check_choice(self, "op", self.op, BINARY_OPS)


@irdl_op_definition
class TensorScalarOp(NcOp):
    """Element-wise binary op with an immediate scalar: ``input op scalar`` (or reversed)."""

    name = "nc.tensor_scalar"
    input = operand_def(StaticTensor)
    output = result_def(StaticTensor)
    op = prop_def(StringAttr)
    scalar = prop_def(FloatAttr[Float64Type])
    reverse = opt_prop_def(IntegerAttr[I64])
    assembly_format = _UNARY

    def verify_(self) -> None:
        super().verify_()
        _check_choice(self, "op", self.op, BINARY_OPS)


@irdl_op_definition
class ReduceOp(NcOp):
    name = "nc.reduce"
    input = operand_def(StaticTensor)
    output = result_def(StaticTensor)
    op = prop_def(StringAttr)
    axes = prop_def(DenseArrayBase[I64])
    keepdims = prop_def(IntegerAttr[I64])
    assembly_format = _UNARY

    def verify_(self) -> None:
        super().verify_()
        _check_choice(self, "op", self.op, REDUCE_OPS)


@irdl_op_definition
class TransposeOp(NcOp):
    name = "nc.transpose"
    input = operand_def(StaticTensor)
    output = result_def(StaticTensor)
    perm = prop_def(DenseArrayBase[I64])
    assembly_format = _UNARY


@irdl_op_definition
class SelectOp(NcOp):
    """``cond ? on_true : on_false`` element-wise, with broadcasting."""

    name = "nc.select"
    cond = operand_def(StaticTensor)
    on_true = operand_def(StaticTensor)
    on_false = operand_def(StaticTensor)
    output = result_def(StaticTensor)
    assembly_format = (
        "$cond `,` $on_true `,` $on_false attr-dict `:` type($cond) `,` "
        "type($on_true) `,` type($on_false) `->` type($output)"
    )


@irdl_op_definition
class CastOp(NcOp):
    name = "nc.cast"
    input = operand_def(StaticTensor)
    output = result_def(StaticTensor)
    assembly_format = _UNARY


@irdl_op_definition
class PoolOp(NcOp):
    """Max or average pooling windows (explicit pads)."""

    name = "nc.pool"
    input = operand_def(StaticTensor)
    output = result_def(StaticTensor)
    kind = prop_def(StringAttr)
    kernel = prop_def(DenseArrayBase[I64])
    strides = prop_def(DenseArrayBase[I64])
    pads = prop_def(DenseArrayBase[I64])
    count_include_pad = opt_prop_def(IntegerAttr[I64])
    dilations = opt_prop_def(DenseArrayBase[I64])
    ceil_mode = opt_prop_def(IntegerAttr[I64])
    """Windows may run past the padded end (never counted), as ONNX ceil_mode=1."""
    assembly_format = _UNARY

    def verify_(self) -> None:
        super().verify_()
        _check_choice(self, "kind", self.kind, ("max", "avg"))


@irdl_op_definition
class ReshapeOp(NcOp):
    """Reinterpret the same elements with another static shape (free on device)."""

    name = "nc.reshape"
    input = operand_def(StaticTensor)
    output = result_def(StaticTensor)
    assembly_format = _UNARY


@irdl_op_definition
class BroadcastOp(NcOp):
    name = "nc.broadcast"
    input = operand_def(StaticTensor)
    output = result_def(StaticTensor)
    assembly_format = _UNARY


@irdl_op_definition
class SliceOp(NcOp):
    name = "nc.slice"
    input = operand_def(StaticTensor)
    output = result_def(StaticTensor)
    starts = prop_def(DenseArrayBase[I64])
    ends = prop_def(DenseArrayBase[I64])
    steps = prop_def(DenseArrayBase[I64])
    axes = prop_def(DenseArrayBase[I64])
    assembly_format = _UNARY


@irdl_op_definition
class ConcatOp(NcOp):
    name = "nc.concat"
    inputs = var_operand_def(StaticTensor)
    output = result_def(StaticTensor)
    axis = prop_def(IntegerAttr[I64])
    assembly_format = "$inputs attr-dict `:` type($inputs) `->` type($output)"


@irdl_op_definition
class PadOp(NcOp):
    name = "nc.pad"
    input = operand_def(StaticTensor)
    output = result_def(StaticTensor)
    pads = prop_def(DenseArrayBase[I64])
    value = prop_def(FloatAttr[Float64Type])
    assembly_format = _UNARY


# -- GpSimd engine -------------------------------------------------------------


@irdl_op_definition
class GatherOp(NcOp):
    """Gather along ``axis`` (ONNX Gather), by element (GatherElements) or ND."""

    name = "nc.gather"
    ENGINE: ClassVar[str] = "gpsimd"
    lhs = operand_def(StaticTensor)
    rhs = operand_def(StaticTensor)
    output = result_def(StaticTensor)
    axis = prop_def(IntegerAttr[I64])
    mode = prop_def(StringAttr)
    assembly_format = _BINARY

    def verify_(self) -> None:
        super().verify_()
        _check_choice(self, "mode", self.mode, ("take", "elements", "nd"))


@irdl_op_definition
class IotaOp(NcOp):
    """``start + step * i`` along ``axis`` of the result."""

    name = "nc.iota"
    ENGINE: ClassVar[str] = "gpsimd"
    output = result_def(StaticTensor)
    start = prop_def(FloatAttr[Float64Type])
    step = prop_def(FloatAttr[Float64Type])
    axis = prop_def(IntegerAttr[I64])
    assembly_format = "attr-dict `:` type($output)"


NC = Dialect(
    "nc",
    [
        ProgramOp,
        ReturnOp,
        WeightOp,
        DmaCopyOp,
        SendOp,
        RecvOp,
        MatmulOp,
        ConvOp,
        ActivationOp,
        TensorTensorOp,
        TensorScalarOp,
        ReduceOp,
        TransposeOp,
        SelectOp,
        CastOp,
        PoolOp,
        ReshapeOp,
        BroadcastOp,
        SliceOp,
        ConcatOp,
        PadOp,
        GatherOp,
        IotaOp,
    ],
    [],
)
