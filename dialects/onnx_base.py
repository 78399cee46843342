"""Hand-written base of the generated ``onnx`` dialect (``dialects/onnx.py``): the
ONNX string/unknown element types, string tensor constants, the ``OnnxOp`` base class
every generated operator derives from, ``onnx.custom`` and ``onnx.yield``."""

from __future__ import annotations

from typing import ClassVar

from xdsl.dialects.builtin import (
    I64,
    ArrayAttr,
    DenseArrayBase,
    DenseIntOrFPElementsAttr,
    DenseResourceAttr,
    DictionaryAttr,
    StringAttr,
    TensorType,
    UnrankedTensorType,
)
from xdsl.ir import ParametrizedAttribute, SSAValue, TypeAttribute
from xdsl.irdl import (
    IRDLOperation,
    base,
    irdl_attr_definition,
    irdl_op_definition,
    opt_prop_def,
    prop_def,
    traits_def,
    var_operand_def,
    var_region_def,
    var_result_def,
)
from xdsl.traits import IsTerminator
from xdsl.utils.exceptions import VerifyException

TensorLike = base(TensorType) | base(UnrankedTensorType)


@irdl_attr_definition
class StringType(ParametrizedAttribute, TypeAttribute):
    """Element type of ONNX string tensors."""

    name = "onnx.string"


@irdl_attr_definition
class UnknownType(ParametrizedAttribute, TypeAttribute):
    """Element type that the importer could not determine (e.g. custom-op results)."""

    name = "onnx.unknown"


@irdl_attr_definition
class StringTensorAttr(ParametrizedAttribute):
    """A constant tensor of strings, which builtin dense attributes cannot hold."""

    name = "onnx.string_tensor"
    type: TensorType
    values: ArrayAttr[StringAttr]


TensorValueAttr = base(DenseIntOrFPElementsAttr) | base(StringTensorAttr) | base(DenseResourceAttr)


class OnnxOp(IRDLOperation):
    """Common behaviour of the generated ONNX operator classes."""

    ONNX_TYPE: ClassVar[str] = ""
    # (ONNX name, option, min arity, field): option is "single", "optional" or
    # "variadic"; field is the Python accessor of that operand or result.
    ONNX_INPUTS: ClassVar[tuple[tuple[str, str, int, str], ...]] = ()
    ONNX_OUTPUTS: ClassVar[tuple[tuple[str, str, int, str], ...]] = ()
    # attribute name -> kind ("int", "float", "string", "tensor", "graph", "ints",
    # "floats", "strings", "tensors", "type", "types")
    ONNX_ATTRS: ClassVar[dict[str, str]] = {}
    ONNX_REQUIRED: ClassVar[frozenset[str]] = frozenset()
    ONNX_DEFAULTS: ClassVar[dict[str, object]] = {}
    # graph attribute name -> region field, in region order
    ONNX_GRAPHS: ClassVar[dict[str, str]] = {}

    def onnx_node_name(self) -> str | None:
        attr = self.attributes.get("onnx.name")
        return attr.data if isinstance(attr, StringAttr) else None

    def _by_position(self, params: tuple[tuple[str, str, int, str], ...]) -> list:
        out = []
        for _, option, _, field in params:
            value = getattr(self, field)
            if option == "variadic":
                out.extend(value)
            else:
                out.append(value)
        return out

    def onnx_inputs(self) -> list[SSAValue | None]:
        """Operands by ONNX input position, None where an optional one is absent."""
        out = self._by_position(self.ONNX_INPUTS)
        while out and out[-1] is None:
            out.pop()
        return out

    def onnx_outputs(self) -> list[SSAValue | None]:
        """Results by ONNX output position, None where an optional one is absent."""
        return self._by_position(self.ONNX_OUTPUTS)

    def verify_(self) -> None:
        for arg_name, option, min_arity, field in self.ONNX_INPUTS:
            if option == "variadic" and len(getattr(self, field)) < min_arity:
                raise VerifyException(
                    f"{self.name}: input '{arg_name}' needs at least {min_arity} value(s)"
                )
        for arg_name, option, min_arity, field in self.ONNX_OUTPUTS:
            if option == "variadic" and len(getattr(self, field)) < min_arity:
                raise VerifyException(
                    f"{self.name}: output '{arg_name}' needs at least {min_arity} value(s)"
                )
        missing = [a for a in self.ONNX_REQUIRED if a not in self.properties]
        if missing:
            raise VerifyException(
                f"{self.name}: required attribute(s) {', '.join(sorted(missing))} missing"
            )


@irdl_op_definition
class CustomOp(IRDLOperation):
    """An operator of another domain, or one the canonical schemas do not know."""

    name = "onnx.custom"
    domain = prop_def(StringAttr)
    op_type = prop_def(StringAttr)
    attrs = prop_def(DictionaryAttr)
    # ONNX input positions that were left empty ("") in the node
    absent_inputs = opt_prop_def(DenseArrayBase[I64])
    inputs = var_operand_def(TensorLike)
    outputs = var_result_def()
    graphs = var_region_def()

    def onnx_node_name(self) -> str | None:
        attr = self.attributes.get("onnx.name")
        return attr.data if isinstance(attr, StringAttr) else None


@irdl_op_definition
class YieldOp(IRDLOperation):
    """Terminator of a graph-attribute region: the subgraph's outputs in order."""

    name = "onnx.yield"
    values = var_operand_def(TensorLike)
    traits = traits_def(IsTerminator())
