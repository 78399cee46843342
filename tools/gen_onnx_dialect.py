#!/usr/bin/env python3
"""Generate ``dialects/onnx.py`` from the ONNX operator schemas in ``onnx.defs``.

One IRDL op per operator of the default domain, at the canonical opset: operands
(optional and variadic as the schema says), results, attributes as typed
properties, graph attributes as regions.  The hand-written support code the ops
share (the base class, the ``custom``/``yield`` ops and the dialect types) lives in
the ``SUPPORT`` template below, so that the generated file is complete on its own
and nobody needs to edit it.

Usage: python tools/gen_onnx_dialect.py [--check] [--out dialects/onnx.py]
"""

from __future__ import annotations

import argparse
import keyword
import sys
from pathlib import Path

import onnx
import onnx.defs
from onnx import AttributeProto, helper, numpy_helper

# The newest opset of onnx 1.23: onnx.version_converter brings every model of the
# onnx wheel's test data (opsets 6 to 28) to it without a failure; see README.
CANONICAL_OPSET = 28

ROOT = Path(__file__).resolve().parent.parent

# Field names an op class cannot use because IRDLOperation/Operation own them.
_RESERVED = {
    "name", "operands", "results", "regions", "attributes", "properties",
    "parent", "successors", "result", "traits", "verify", "verify_", "clone",
    "location", "irdl_options", "assembly_format", "custom_directives",
    "parent_op", "parent_block", "parent_region", "walk", "detach", "erase",
    "next_op", "prev_op", "print", "parse", "create", "build", "op_name",
    "dialect_name", "get_attr_or_prop", "has_trait", "get_trait",
    "onnx_inputs", "onnx_outputs", "onnx_attrs", "onnx_attr", "onnx_node_name",
}

_ATTR_KIND = {
    AttributeProto.INT: "int",
    AttributeProto.FLOAT: "float",
    AttributeProto.STRING: "string",
    AttributeProto.TENSOR: "tensor",
    AttributeProto.SPARSE_TENSOR: "tensor",
    AttributeProto.GRAPH: "graph",
    AttributeProto.INTS: "ints",
    AttributeProto.FLOATS: "floats",
    AttributeProto.STRINGS: "strings",
    AttributeProto.TENSORS: "tensors",
    AttributeProto.TYPE_PROTO: "type",
    AttributeProto.TYPE_PROTOS: "types",
}

_CONSTRAINT = {
    "int": "IntegerAttr[I64]",
    "float": "FloatAttr[Float32Type]",
    "string": "StringAttr",
    "tensor": "TensorValueAttr",
    "ints": "DenseArrayBase[I64]",
    "floats": "ArrayAttr[FloatAttr[Float32Type]]",
    "strings": "ArrayAttr[StringAttr]",
    "tensors": "ArrayAttr[TensorValueAttr]",
    "type": "StringAttr",
    "types": "ArrayAttr[StringAttr]",
}

SUPPORT = '''
CANONICAL_OPSET = {opset}
"""Every imported model is converted to this opset first (onnx.version_converter)."""

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


TensorValueAttr = (
    base(DenseIntOrFPElementsAttr) | base(StringTensorAttr) | base(DenseResourceAttr)
)


class OnnxOp(IRDLOperation):
    """Common behaviour of the generated ONNX operator classes."""

    ONNX_TYPE: ClassVar[str] = ""
    # (ONNX name, option, min arity, field): option is "single", "optional" or
    # "variadic"; field is the Python accessor of that operand or result.
    ONNX_INPUTS: ClassVar[tuple[tuple[str, str, int, str], ...]] = ()
    ONNX_OUTPUTS: ClassVar[tuple[tuple[str, str, int, str], ...]] = ()
    # attribute name -> kind ("int", "float", "string", "tensor", "graph", "ints",
    # "floats", "strings", "tensors", "type", "types")
    ONNX_ATTRS: ClassVar[dict[str, str]] = {{}}
    ONNX_REQUIRED: ClassVar[frozenset[str]] = frozenset()
    ONNX_DEFAULTS: ClassVar[dict[str, object]] = {{}}
    # graph attribute name -> region field, in region order
    ONNX_GRAPHS: ClassVar[dict[str, str]] = {{}}

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
                    f"{{self.name}}: input '{{arg_name}}' needs at least "
                    f"{{min_arity}} value(s)"
                )
        for arg_name, option, min_arity, field in self.ONNX_OUTPUTS:
            if option == "variadic" and len(getattr(self, field)) < min_arity:
                raise VerifyException(
                    f"{{self.name}}: output '{{arg_name}}' needs at least "
                    f"{{min_arity}} value(s)"
                )
        missing = [a for a in self.ONNX_REQUIRED if a not in self.properties]
        if missing:
            raise VerifyException(
                f"{{self.name}}: required attribute(s) {{', '.join(sorted(missing))}} missing"
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
'''

HEADER = '''\
# Generated by tools/gen_onnx_dialect.py from the onnx {onnx_version} operator
# schemas at opset {opset}. Do not edit: change the generator and run it again.
# ruff: noqa
from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from xdsl.dialects.builtin import (
    I64,
    ArrayAttr,
    DenseArrayBase,
    DenseIntOrFPElementsAttr,
    DenseResourceAttr,
    DictionaryAttr,
    Float32Type,
    FloatAttr,
    IntegerAttr,
    StringAttr,
    TensorType,
    UnrankedTensorType,
)
from xdsl.ir import Dialect, ParametrizedAttribute, SSAValue, TypeAttribute
from xdsl.irdl import (
    AttrSizedOperandSegments,
    AttrSizedResultSegments,
    IRDLOperation,
    base,
    irdl_attr_definition,
    irdl_op_definition,
    operand_def,
    opt_operand_def,
    opt_prop_def,
    opt_result_def,
    prop_def,
    region_def,
    result_def,
    traits_def,
    var_operand_def,
    var_region_def,
    var_result_def,
)
from xdsl.traits import IsTerminator
from xdsl.utils.exceptions import VerifyException
'''


def _field_name(raw: str, taken: set[str]) -> str:
    name = "".join(c if c.isalnum() or c == "_" else "_" for c in raw) or "arg"
    if name[0].isdigit():
        name = "v" + name
    if keyword.iskeyword(name) or name in _RESERVED or name.startswith("__"):
        name += "_"
    while name in taken:
        name += "_"
    taken.add(name)
    return name


def _option(param: onnx.defs.OpSchema.FormalParameter) -> str:
    opt = param.option
    if opt == onnx.defs.OpSchema.FormalParameterOption.Optional:
        return "optional"
    if opt == onnx.defs.OpSchema.FormalParameterOption.Variadic:
        return "variadic"
    return "single"


def _default_value(attr: onnx.defs.OpSchema.Attribute) -> object:
    proto = attr.default_value
    if proto is None or proto.type == AttributeProto.UNDEFINED:
        return None
    value = helper.get_attribute_value(proto)
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, onnx.TensorProto):
        array = numpy_helper.to_array(value)
        return ("tensor", str(array.dtype), array.tolist())
    if isinstance(value, list):
        return [v.decode("utf-8") if isinstance(v, bytes) else v for v in value]
    return value


def _gen_op(schema: onnx.defs.OpSchema) -> str:
    taken: set[str] = set()
    lines: list[str] = []
    cls = f"{schema.name}Op"
    inputs = [(p.name, _option(p), p.min_arity, _field_name(p.name, taken)) for p in schema.inputs]
    outputs = [(p.name, _option(p), p.min_arity, _field_name(p.name, taken)) for p in schema.outputs]
    # Sorted by name, except that If reads then-before-else like the source does.
    order = {"then_branch": 0, "else_branch": 1}
    attrs = {n: _ATTR_KIND[a.type] for n, a in
             sorted(schema.attributes.items(), key=lambda kv: (order.get(kv[0], 2), kv[0]))}
    # graph attributes are regions, which IRDL already requires
    required = sorted(
        n for n, a in schema.attributes.items() if a.required and attrs[n] != "graph"
    )
    defaults = {}
    for n, a in sorted(schema.attributes.items()):
        d = _default_value(a)
        if d is not None:
            defaults[n] = d
    attr_fields = {n: _field_name(n, taken) for n in attrs}
    graphs = {n: attr_fields[n] for n, k in attrs.items() if k == "graph"}

    lines.append("@irdl_op_definition")
    lines.append(f"class {cls}(OnnxOp):")
    doc = f"ONNX {schema.name}, opset {schema.since_version} semantics."
    lines.append(f'    """{doc}"""')
    lines.append("")
    lines.append(f'    name = "onnx.{schema.name}"')
    lines.append(f'    ONNX_TYPE: ClassVar[str] = "{schema.name}"')
    lines.append(f"    ONNX_INPUTS: ClassVar[tuple[tuple[str, str, int, str], ...]] = {tuple(inputs)!r}")
    lines.append(f"    ONNX_OUTPUTS: ClassVar[tuple[tuple[str, str, int, str], ...]] = {tuple(outputs)!r}")
    lines.append(f"    ONNX_ATTRS: ClassVar[dict[str, str]] = {attrs!r}")
    lines.append(f"    ONNX_REQUIRED: ClassVar[frozenset[str]] = frozenset({required!r})")
    lines.append(f"    ONNX_DEFAULTS: ClassVar[dict[str, object]] = {defaults!r}")
    lines.append(f"    ONNX_GRAPHS: ClassVar[dict[str, str]] = {graphs!r}")
    lines.append("")

    n_multi_in = sum(1 for _, o, _, _ in inputs if o != "single")
    n_multi_out = sum(1 for _, o, _, _ in outputs if o != "single")
    for _, option, _, field in inputs:
        fn = {"single": "operand_def", "optional": "opt_operand_def", "variadic": "var_operand_def"}[option]
        lines.append(f"    {field} = {fn}(TensorLike)")
    for _, option, _, field in outputs:
        fn = {"single": "result_def", "optional": "opt_result_def", "variadic": "var_result_def"}[option]
        lines.append(f"    {field} = {fn}(TensorLike)")
    for attr_name, kind in attrs.items():
        field = attr_fields[attr_name]
        if kind == "graph":
            lines.append(f"    {field} = region_def()")
            continue
        fn = "prop_def" if attr_name in required else "opt_prop_def"
        extra = f', prop_name="{attr_name}"' if field != attr_name else ""
        lines.append(f"    {field} = {fn}({_CONSTRAINT[kind]}{extra})")
    options = []
    if n_multi_in > 1:
        options.append("AttrSizedOperandSegments(as_property=True)")
    if n_multi_out > 1:
        options.append("AttrSizedResultSegments(as_property=True)")
    if options:
        lines.append(f"    irdl_options = ({', '.join(options)},)")
    lines.append("")
    lines.append("")
    return "\n".join(lines) + "\n"


def generate() -> str:
    names = sorted({s.name for s in onnx.defs.get_all_schemas_with_history() if s.domain == ""})
    schemas = []
    for op_name in names:
        try:
            schemas.append(onnx.defs.get_schema(op_name, CANONICAL_OPSET, ""))
        except onnx.defs.SchemaError:
            continue  # removed before the canonical opset
    parts = [HEADER.format(onnx_version=onnx.__version__, opset=CANONICAL_OPSET)]
    parts.append(SUPPORT.format(opset=CANONICAL_OPSET))
    parts.append("\n")
    for schema in schemas:
        parts.append(_gen_op(schema))
    op_classes = ", ".join(f"{s.name}Op" for s in schemas)
    parts.append(
        "ONNX_OPS: dict[str, type[OnnxOp]] = {\n"
        + "".join(f'    "{s.name}": {s.name}Op,\n' for s in schemas)
        + "}\n\n"
    )
    parts.append(
        "ONNX = Dialect(\n"
        '    "onnx",\n'
        f"    [CustomOp, YieldOp, {op_classes}],\n"
        "    [StringType, UnknownType, StringTensorAttr],\n"
        ")\n"
    )
    return "".join(parts)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "dialects" / "onnx.py"))
    parser.add_argument("--check", action="store_true", help="fail if the committed file is stale")
    args = parser.parse_args()
    text = generate()
    out = Path(args.out)
    if args.check:
        if not out.exists() or out.read_text() != text:
            print(f"error: {out} is stale; run tools/gen_onnx_dialect.py", file=sys.stderr)
            return 1
        return 0
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
