"""ONNX model -> ``onnx`` dialect module holding ``func.func @main``.

The model is first brought to the canonical opset with ``onnx.version_converter``.
Large weights never go through the converter: it copies the model several times,
so it gets a skeleton whose big tensors are stripped, and the importer takes the
weight bytes from the original model (or external data) afterwards.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnx.inliner
import onnx.shape_inference
from google.protobuf.message import DecodeError
from onnx import AttributeProto, GraphProto, ModelProto, NodeProto, TensorProto, numpy_helper
from xdsl.dialects.builtin import (
    DYNAMIC_INDEX,
    ArrayAttr,
    BytesAttr,
    DenseArrayBase,
    DenseIntOrFPElementsAttr,
    DictionaryAttr,
    FloatAttr,
    IntegerAttr,
    ModuleOp,
    StringAttr,
    TensorType,
    UnrankedTensorType,
    f32,
    i64,
)
from xdsl.dialects.func import FuncOp, ReturnOp
from xdsl.ir import Attribute, Block, Operation, Region, SSAValue
from xdsl.utils.exceptions import VerifyException

from dialects.onnx import (
    CANONICAL_OPSET,
    ONNX_OPS,
    ConstantOp,
    CustomOp,
    StringTensorAttr,
    UnknownType,
    YieldOp,
)

from . import onnx_wire
from .errors import ExternalDataError, ModelImportError, ModelLoadError, UsageError
from .ir import dtypes
from .onnx_wire import ByteSource

# Tensors bigger than this skip the version converter and shape inference.
STRIP_BYTES = 1024

_DEFAULT_DOMAINS = ("", "ai.onnx")
# SSA name hints xDSL's lexer accepts: ASCII only (``\w`` would admit any letter).
_NAME_OK = re.compile(r"[A-Za-z_$.-][A-Za-z0-9_$.-]*")
_NAME_BAD = re.compile(r"[^A-Za-z0-9_$.-]")
_NUMBER_SUFFIX = re.compile(r"(_[0-9]+)+$")


# ---------------------------------------------------------------------------
# loading


class _Source:
    """The model proto plus where its external data may come from, and where the
    weights that ``onnx_wire.strip_weights`` left out of it lie."""

    def __init__(
        self,
        model: ModelProto,
        base_dir: Path | None,
        where: str,
        owned: bool,
        stripped: tuple[ByteSource, dict[str, tuple[int, int]]] | None = None,
    ):
        self.model = model
        self.base_dir = base_dir
        self.where = where
        self.owned = owned  # the proto is ours to free tensor data from
        self.bytes, self.weights = stripped if stripped else (None, {})

    def weight(self, name: str) -> bytes | None:
        """The raw data of the top-level initializer ``name`` if it was left out of
        the parsed model (read once, here, straight into the bytes the IR keeps)."""
        found = self.weights.pop(name, None)
        if found is None or self.bytes is None:
            return None
        offset, length = found
        try:
            return self.bytes.read(offset, length)
        except OSError as exc:
            raise ModelLoadError(
                f"cannot read initializer '{name}': {exc.strerror or exc}", where=self.where
            ) from None

    def close(self) -> None:
        if self.bytes is not None:
            self.bytes.close()
            self.bytes = None


def _load(src: Any) -> _Source:
    if isinstance(src, ModelProto):
        return _Source(src, None, "<model>", owned=False)
    if isinstance(src, bytes | bytearray | memoryview):
        data = bytes(src)
        return _parse_source(ByteSource.of_bytes(data), "<bytes>", None)
    if isinstance(src, str | os.PathLike):
        path = Path(src)
        where = str(path)
        if not path.exists():
            raise ModelLoadError("no such file", where=where)
        if not path.is_file():
            raise ModelLoadError("not a file", where=where)
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError as exc:
            raise ModelLoadError(f"cannot read: {exc.strerror}", where=where) from None
        # The descriptor is kept, not the path: renaming or replacing the file while
        # the import runs cannot mix two files' bytes.
        data = ByteSource.of_file(fd)
        try:
            source = _parse_source(data, where, path.resolve().parent)
        except BaseException:
            data.close()
            raise
        if source.bytes is None:
            data.close()
        return source
    raise UsageError(
        f"import_model takes a path, bytes or onnx.ModelProto, not {type(src).__name__}"
    )


# The types whose raw_data is the array's bytes as they are (not bit-packed, not strings).
_PLAIN_ITEMSIZES = {
    e.onnx: e.numpy.itemsize
    for e in dtypes.BY_ONNX.values()
    if not e.packed and e.onnx != TensorProto.STRING
}


def _parse_source(data: ByteSource, where: str, base_dir: Path | None) -> _Source:
    """Parse the model without its large weights when the scan can, whole otherwise.
    A broken file gets protobuf's own error either way: the scan only vouches for the
    fields it took data out of, and protobuf still parses all the rest."""
    stripped = onnx_wire.strip_weights(data, STRIP_BYTES, _PLAIN_ITEMSIZES)
    if stripped is not None:
        model = _parse_bytes(stripped.skeleton, where)
        return _Source(model, base_dir, where, True, (data, stripped.weights))
    try:
        whole = data.read(0, data.size)
    except OSError as exc:
        raise ModelLoadError(f"cannot read: {exc.strerror or exc}", where=where) from None
    return _Source(_parse_bytes(whole, where), base_dir, where, owned=True)


def _parse_bytes(data: bytes, where: str) -> ModelProto:
    if not data:
        raise ModelLoadError("empty file: not an ONNX model", where=where)
    model = ModelProto()
    try:
        model.ParseFromString(data)
    except (DecodeError, RuntimeError, ValueError) as exc:
        raise ModelLoadError(
            f"not an ONNX model (truncated or corrupt protobuf: {exc})", where=where
        ) from None
    # Protobuf accepts many random byte strings as some message: demand a graph.
    if not model.HasField("graph") or not (model.graph.output or model.graph.node):
        raise ModelLoadError("not an ONNX model (no graph in the protobuf)", where=where)
    if not model.opset_import:
        raise ModelLoadError("not an ONNX model (no opset_import)", where=where)
    return model


# ---------------------------------------------------------------------------
# validation: strings, the onnx checker, what the checker lets through


# A tensor's fields that can hold text (raw_data and string_data are bytes by design).
_TENSOR_TEXT_FIELDS = [
    fd for fd in TensorProto.DESCRIPTOR.fields if fd.type in (fd.TYPE_STRING, fd.TYPE_MESSAGE)
]


def _set_fields(msg: Any) -> list[tuple[Any, Any]]:
    """``msg.ListFields()``, but for a tensor only its text and message fields: upb
    copies a bytes field each time it is read, and ListFields reading every weight's
    raw_data copied the whole model once more (BERT-base: 440 MB) for nothing."""
    if not isinstance(msg, TensorProto):
        return msg.ListFields()
    fields = []
    for fd in _TENSOR_TEXT_FIELDS:
        value = getattr(msg, fd.name)
        if len(value) if fd.is_repeated else msg.HasField(fd.name):
            fields.append((fd, value))
    return fields


def _check_strings(msg: Any, path: str, where: str, node: str | None = None) -> None:
    """Every string field of ``msg`` (recursively) must be valid UTF-8.

    upb hands back a proto2 string field that is not UTF-8 as ``bytes``; checking once
    here means the rest of the importer only ever sees ``str``. Attribute values
    (``s``, ``strings``) are bytes in the schema but strings in every ONNX op, so they
    are held to the same rule; string *tensors* may hold any bytes.
    """
    for fd, value in _set_fields(msg):
        if fd.type == fd.TYPE_STRING or (
            isinstance(msg, AttributeProto) and fd.name in ("s", "strings")
        ):
            items = value if fd.is_repeated else [value]
            for k, item in enumerate(items):
                if isinstance(item, str):
                    continue
                try:
                    item.decode("utf-8")
                    continue
                except UnicodeDecodeError:
                    pass
                field = f"{path}.{fd.name}" + (f"[{k}]" if fd.is_repeated else "")
                raise ModelLoadError(
                    f"{field} is not valid UTF-8" + (f" (in node {node})" if node else ""),
                    where=where,
                )
        elif fd.type == fd.TYPE_MESSAGE:
            items = value if fd.is_repeated else [value]
            for k, sub in enumerate(items):
                sub_path = f"{path}.{fd.name}" + (f"[{k}]" if fd.is_repeated else "")
                label = node
                if isinstance(sub, NodeProto):
                    name = sub.name if isinstance(sub.name, str) else ""
                    op_type = sub.op_type if isinstance(sub.op_type, str) else "?"
                    label = f"'{name}' ({op_type})" if name else f"#{k} ({op_type})"
                _check_strings(sub, sub_path, where, label)


_CPP_ASSERT = re.compile(r"^\S+:\d+: \w+: Assertion `.*?` failed: ")


def _onnx_message(exc: BaseException) -> str:
    """One readable line from an onnx C++ error: no assertion prefix, no '%s'."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    first = _CPP_ASSERT.sub("", lines[0])
    if re.search(r"%l*[a-z]", first):
        # The converter appends its unformatted arguments after the format text.
        head, dot, _tail = first.rpartition(".")
        first = re.sub(r"%l*[a-z]", "?", head + dot if dot else first)
    context = [line for line in lines[1:] if line.startswith("==> Context:")]
    if context:
        found = re.search(r"Name:\s*(\S*)\s+OpType:\s*(\S+)", context[0])
        if found:
            name, op_type = found.groups()
            first += f" (node '{name}', {op_type})" if name else f" (a {op_type} node)"
    return first


def _checker_view(skel: ModelProto, stash: dict[str, TensorProto]) -> ModelProto:
    """The skeleton as the onnx checker can take it: stripped tensors carry no data,
    which it rejects, so top-level ones become typed graph inputs instead (their type
    is all that inference reads from a tensor over STRIP_BYTES)."""
    if not stash:
        return skel
    view = ModelProto()
    view.CopyFrom(skel)
    graph = view.graph
    stripped = {key.split("init:", 1)[1] for key in stash if key.startswith("init:")}
    inputs = {i.name for i in graph.input}
    kept = [t for t in graph.initializer if t.name not in stripped]
    moved = [t for t in graph.initializer if t.name in stripped]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    for t in moved:
        if t.name not in inputs:
            graph.input.append(
                onnx.helper.make_tensor_value_info(t.name, t.data_type, list(t.dims))
            )
    consts = {key.split("const:", 1)[1] for key in stash if key.startswith("const:")}
    nodes = [
        n
        for n in graph.node
        if not (n.op_type == "Constant" and n.output and n.output[0] in consts)
    ]
    for n in graph.node:
        if n.op_type == "Constant" and n.output and n.output[0] in consts:
            t = n.attribute[0].t
            graph.input.append(
                onnx.helper.make_tensor_value_info(n.output[0], t.data_type, list(t.dims))
            )
    del graph.node[:]
    graph.node.extend(nodes)
    nested = {key.rsplit("/", 1)[1]: t for key, t in stash.items() if "/" in key}
    if nested:
        for node in graph.node:
            _restore_nested(node, nested)
    return view


def _restore_nested(node: NodeProto, nested: dict[str, TensorProto]) -> None:
    """Put the full tensors back into subgraphs (rare, so their size rarely matters):
    a subgraph's signature is fixed, so they cannot become inputs there."""
    for attr in node.attribute:
        graphs = (
            [attr.g]
            if attr.type == AttributeProto.GRAPH
            else (list(attr.graphs) if attr.type == AttributeProto.GRAPHS else [])
        )
        for g in graphs:
            for t in g.initializer:
                if f"init:{t.name}" in nested:
                    t.CopyFrom(nested[f"init:{t.name}"])
            for inner in g.node:
                if (
                    inner.op_type == "Constant"
                    and inner.output
                    and f"const:{inner.output[0]}" in nested
                ):
                    inner.attribute[0].t.CopyFrom(nested[f"const:{inner.output[0]}"])
                _restore_nested(inner, nested)


def _check_model(skel: ModelProto, stash: dict[str, TensorProto], where: str) -> None:
    """The onnx checker in full (structure, SSA form, types, strict inference), plus
    what it lets through that the importer cannot give a meaning to."""
    version = _default_opset(skel)
    newest = onnx.defs.onnx_opset_version()
    if version is not None and not 1 <= version <= newest:
        raise ModelImportError(
            f"the model's default opset {version} is outside the "
            f"range this onnx knows (1 to {newest})",
            where=where,
        )
    if not skel.graph.output:
        raise ModelImportError("the graph has no outputs", where=where)
    view = _checker_view(skel, stash)
    try:
        # full_check is these two steps; the structural one gets unranked graph I/O
        # filled in (see _declared_io), strict inference the model as it is.
        onnx.checker.check_model(_declared_io(view), full_check=False)
        onnx.shape_inference.infer_shapes(view, check_type=True, strict_mode=True)
    except Exception as exc:  # the checker raises its own C++ error types
        if not _inside_function_body(str(exc)):
            raise ModelImportError(
                f"invalid ONNX model: {_onnx_message(exc)}", where=where
            ) from None


def _inside_function_body(message: str) -> bool:
    """Whether strict inference failed inside the function body onnx expands a
    standard op into (MeanVarianceNormalization in onnx 1.23's own node test): that
    is onnx's expansion failing, not the model; a graph attribute's body (If, Loop,
    Scan) is the model's own and still counts."""
    found = re.search(r"Inference error\(s\): \(op_type:(\w+)[,)]", message)
    if found is None or message.count("Inference error(s): (op_type:") < 2:
        return False
    try:
        schema = onnx.defs.get_schema(found.group(1))
    except onnx.defs.SchemaError:
        return False
    has_graphs = any(
        a.type == onnx.defs.OpSchema.AttrType.GRAPH for a in schema.attributes.values()
    )
    return schema.has_function and not has_graphs


def _declared_io(model: ModelProto) -> ModelProto:
    """``model`` with every top-level input and output declaring an element type and a
    shape. The checker demands both; ONNX itself (and the importer) read a missing shape
    as "rank unknown" and a missing element type as "to be inferred", so only this
    declaration rule is waived (the structural check reads no types)."""
    incomplete = [
        vi
        for vi in list(model.graph.input) + list(model.graph.output)
        if vi.type.WhichOneof("value") in (None, "tensor_type")
        and (not vi.type.tensor_type.elem_type or not vi.type.tensor_type.HasField("shape"))
    ]
    if not incomplete:
        return model
    filled = ModelProto()
    filled.CopyFrom(model)
    for vi in list(filled.graph.input) + list(filled.graph.output):
        tt = vi.type.tensor_type
        if vi.type.WhichOneof("value") not in (None, "tensor_type"):
            continue
        if not tt.elem_type:
            tt.elem_type = TensorProto.FLOAT
        if not tt.HasField("shape"):
            tt.shape.SetInParent()
    return filled


# ---------------------------------------------------------------------------
# skeleton for the version converter


def _tensor_nbytes_hint(t: TensorProto) -> int:
    if t.data_location == TensorProto.EXTERNAL:
        return STRIP_BYTES + 1
    elem = dtypes.BY_ONNX.get(t.data_type)
    if elem is not None and elem.onnx != TensorProto.STRING and not elem.packed:
        # From the shape: upb's ByteSize() serializes the whole message to measure it
        # (1.8 s for BERT-base's weights), and reading raw_data copies it.
        return int(np.prod(t.dims, dtype=np.int64)) * elem.numpy.itemsize
    return t.ByteSize()


def _strip_tensor(t: TensorProto) -> TensorProto:
    """A copy of ``t`` with its data replaced by zeros of a tiny shape-free stand-in."""
    out = TensorProto()
    out.name = t.name
    out.data_type = t.data_type
    out.dims.extend(t.dims)
    return out


def _skeleton_graph(
    src: GraphProto, dst: GraphProto, stash: dict[str, TensorProto], scope: str
) -> None:
    for fd, value in src.ListFields():
        if fd.name == "initializer":
            for t in value:
                key = f"{scope}init:{t.name}"
                if _tensor_nbytes_hint(t) > STRIP_BYTES:
                    stash[key] = t
                    dst.initializer.append(_strip_tensor(t))
                else:
                    dst.initializer.append(t)
        elif fd.name == "node":
            for node in value:
                new = dst.node.add()
                _skeleton_node(node, new, stash, scope)
        elif fd.is_repeated:
            getattr(dst, fd.name).extend(value)
        elif fd.type == fd.TYPE_MESSAGE:
            getattr(dst, fd.name).CopyFrom(value)
        else:
            setattr(dst, fd.name, value)


def _skeleton_node(
    src: NodeProto, dst: NodeProto, stash: dict[str, TensorProto], scope: str
) -> None:
    for fd, value in src.ListFields():
        if fd.name != "attribute":
            if fd.is_repeated:
                getattr(dst, fd.name).extend(value)
            else:
                setattr(dst, fd.name, value)
            continue
        for attr in value:
            new = dst.attribute.add()
            if attr.type == AttributeProto.SPARSE_TENSOR:
                # The version converter cannot read sparse tensors: densify first.
                dense = _densify(attr.sparse_tensor)
                new.name = "value" if attr.name == "sparse_value" else attr.name
                new.type = AttributeProto.TENSOR
                new.t.CopyFrom(dense)
            elif (
                attr.type == AttributeProto.TENSOR
                and _tensor_nbytes_hint(attr.t) > STRIP_BYTES
                and src.op_type == "Constant"
                and src.domain in _DEFAULT_DOMAINS
                and src.output
            ):
                new.CopyFrom(attr)
                key = f"{scope}const:{src.output[0]}"
                stash[key] = attr.t
                new.t.CopyFrom(_strip_tensor(attr.t))
            elif attr.type in (AttributeProto.GRAPH, AttributeProto.GRAPHS):
                new.name = attr.name
                new.type = attr.type
                if attr.ref_attr_name:
                    new.ref_attr_name = attr.ref_attr_name
                graphs = [attr.g] if attr.type == AttributeProto.GRAPH else list(attr.graphs)
                for k, g in enumerate(graphs):
                    sub = new.g if attr.type == AttributeProto.GRAPH else new.graphs.add()
                    sub_scope = f"{scope}{src.name or src.output[0]}/{attr.name}/{k}/"
                    _skeleton_graph(g, sub, stash, sub_scope)
            else:
                new.CopyFrom(attr)


def _skeleton(model: ModelProto, stash: dict[str, TensorProto]) -> ModelProto:
    skel = ModelProto()
    for fd, value in model.ListFields():
        if fd.name == "graph":
            _skeleton_graph(value, skel.graph, stash, "")
        elif fd.is_repeated:
            getattr(skel, fd.name).extend(value)
        elif fd.type == fd.TYPE_MESSAGE:
            getattr(skel, fd.name).CopyFrom(value)
        else:
            setattr(skel, fd.name, value)
    return skel


def _default_opset(model: ModelProto) -> int | None:
    versions = [o.version for o in model.opset_import if o.domain in _DEFAULT_DOMAINS]
    return max(versions) if versions else None


def _to_canonical(skel: ModelProto, where: str) -> ModelProto:
    if skel.functions:
        try:
            skel = onnx.inliner.inline_local_functions(skel)
        except Exception as exc:  # the inliner raises bare C++ errors
            raise ModelImportError(
                f"cannot inline model-local functions: {_onnx_message(exc)}", where=where
            ) from None
    version = _default_opset(skel)
    if version is None or version == CANONICAL_OPSET:
        return skel
    try:
        from onnx import version_converter

        return version_converter.convert_version(skel, CANONICAL_OPSET)
    except Exception as exc:  # the converter raises bare C++ errors
        raise ModelImportError(
            f"cannot convert from opset {version} to the canonical opset "
            f"{CANONICAL_OPSET}: {_onnx_message(exc)}",
            where=where,
        ) from None


# ---------------------------------------------------------------------------
# tensors and types


def _tensor_bytes(
    t: TensorProto, source: _Source, what: str, raw: bytes | None = None
) -> tuple[dtypes.ElementType, bytes]:
    """The tensor's element type and data; ``raw`` is its raw data when that was
    read from the file instead of the proto."""
    elem = dtypes.BY_ONNX.get(t.data_type)
    if elem is None:
        raise ModelImportError(
            f"{what}: unsupported data type {dtypes.onnx_type_name(t.data_type)}",
            where=source.where,
        )
    if t.data_location == TensorProto.EXTERNAL:
        return elem, _external_bytes(t, elem, source, what)
    if raw is not None or (t.HasField("raw_data") and elem.onnx in _PLAIN_ITEMSIZES):
        data = t.raw_data if raw is None else raw
        expected = int(np.prod(t.dims, dtype=np.int64)) * elem.numpy.itemsize
        if len(data) != expected:
            raise ModelImportError(
                f"{what}: raw data holds {len(data)} bytes, its shape "
                f"{list(t.dims)} needs {expected}",
                where=source.where,
            )
        return elem, data
    try:
        array = numpy_helper.to_array(t)
    except Exception as exc:
        raise ModelImportError(
            f"{what}: unreadable tensor data ({exc})", where=source.where
        ) from None
    if elem.onnx == TensorProto.STRING:
        return elem, array  # type: ignore[return-value]
    return elem, np.ascontiguousarray(array, dtype=elem.numpy).tobytes()


def _external_bytes(t: TensorProto, elem: dtypes.ElementType, source: _Source, what: str) -> bytes:
    info = {e.key: e.value for e in t.external_data}
    location = info.get("location")
    if source.base_dir is None:
        raise ExternalDataError(
            f"{what}: external data '{location}' needs the model to be given as a path",
            where=source.where,
        )
    if not location:
        raise ExternalDataError(f"{what}: external data without a location", where=source.where)
    base = source.base_dir.resolve()
    target = (base / location).resolve()
    if os.path.isabs(location) or not target.is_relative_to(base):
        raise ExternalDataError(
            f"{what}: external data path '{location}' leaves the model's folder", where=source.where
        )
    if not target.exists():
        raise ExternalDataError(
            f"{what}: external data file '{location}' not found", where=source.where
        )
    if not target.is_file():
        # A FIFO or device would block or never end: only regular files are read.
        raise ExternalDataError(
            f"{what}: external data '{location}' is not a regular file", where=source.where
        )
    offset = int(info.get("offset", 0) or 0)
    size = os.path.getsize(target)
    count = int(np.prod(t.dims, dtype=np.int64))
    length = int(info["length"]) if info.get("length") else None
    if elem.packed:
        bits = 4 if elem.numpy.itemsize == 1 and "4" in elem.numpy.name else 2
        needed = (count * (8 if "6" in elem.numpy.name else bits) + 7) // 8
    else:
        needed = count * elem.numpy.itemsize
    if length is None:
        length = needed
    if offset < 0 or offset + length > size or length != needed:
        raise ExternalDataError(
            f"{what}: external data '{location}' (offset {offset}, length {length}) "
            f"does not hold the {needed} bytes the tensor needs (file has {size})",
            where=source.where,
        )
    with open(target, "rb") as f:
        f.seek(offset)
        data = f.read(length)
    if elem.packed:
        proto = TensorProto()
        proto.data_type = t.data_type
        proto.dims.extend(t.dims)
        proto.raw_data = data
        return np.ascontiguousarray(numpy_helper.to_array(proto), dtype=elem.numpy).tobytes()
    return data


def _constant_attr(
    t: TensorProto, source: _Source, what: str, raw: bytes | None = None
) -> Attribute:
    elem, data = _tensor_bytes(t, source, what, raw)
    shape = list(t.dims)
    ttype = TensorType(elem.xdsl, shape)
    if elem.onnx == TensorProto.STRING:
        values = [
            v.decode("utf-8", "surrogateescape") if isinstance(v, bytes) else str(v)
            for v in np.asarray(data).reshape(-1)
        ]
        return StringTensorAttr(ttype, ArrayAttr([StringAttr(v) for v in values]))
    return DenseIntOrFPElementsAttr(ttype, BytesAttr(data))


def _type_from_proto(
    tp: onnx.TypeProto, what: str, where: str
) -> tuple[Attribute, list[str]] | None:
    """(IR type, dim symbols) of a value's ONNX type; None if nothing is known."""
    kind = tp.WhichOneof("value")
    if kind is None:
        return None
    if kind != "tensor_type":
        kind_name = {
            "sequence_type": "sequence",
            "map_type": "map",
            "optional_type": "optional",
            "sparse_tensor_type": "sparse tensor",
        }.get(kind, kind)
        raise ModelImportError(
            f"value '{what}' has {kind_name} type; only tensors are supported", where=where
        )
    tt = tp.tensor_type
    if tt.elem_type == TensorProto.UNDEFINED:
        elem_attr: Attribute = UnknownType()
    else:
        elem = dtypes.BY_ONNX.get(tt.elem_type)
        if elem is None:
            raise ModelImportError(
                f"value '{what}' has unsupported element type "
                f"{dtypes.onnx_type_name(tt.elem_type)}",
                where=where,
            )
        elem_attr = elem.xdsl
    if not tt.HasField("shape"):
        return UnrankedTensorType(elem_attr), []
    dims: list[int] = []
    symbols: list[str] = []
    for d in tt.shape.dim:
        if d.HasField("dim_value") and d.dim_value >= 0:
            dims.append(d.dim_value)
            symbols.append("")
        else:
            dims.append(DYNAMIC_INDEX)
            symbols.append(d.dim_param if d.HasField("dim_param") else "")
    return TensorType(elem_attr, dims), symbols


_UNKNOWN = UnrankedTensorType(UnknownType())


def _ssa_name(name: str) -> str | None:
    if not name:
        return None
    clean = _NAME_BAD.sub("_", name)
    if not _NAME_OK.fullmatch(clean):
        clean = "v" + clean
    # xDSL's printer drops one "_<digits>" suffix of a hint and its parser another, so
    # "a_1_2" would print as %a_1 and come back as %a: drop them all here.
    return _NUMBER_SUFFIX.sub("", clean) or None


# ---------------------------------------------------------------------------
# graph import


class _Scope:
    def __init__(self, parent: _Scope | None):
        self.parent = parent
        self.values: dict[str, SSAValue] = {}

    def lookup(self, name: str) -> SSAValue | None:
        scope: _Scope | None = self
        while scope is not None:
            value = scope.values.get(name)
            if value is not None:
                return value
            scope = scope.parent
        return None


class _GraphImporter:
    def __init__(
        self, source: _Source, stash: dict[str, TensorProto], types: dict[str, onnx.TypeProto]
    ):
        self.source = source
        self.stash = stash
        self.types = types

    @property
    def where(self) -> str:
        return self.source.where

    def error(self, message: str, node: NodeProto | None = None) -> ModelImportError:
        if node is not None:
            return _node_error(node, message, self.where)
        return ModelImportError(message, where=self.where)

    def value_type(self, name: str) -> Attribute:
        tp = self.types.get(name)
        if tp is None:
            return _UNKNOWN
        found = _type_from_proto(tp, name, self.where)
        return _UNKNOWN if found is None else found[0]

    # -- constants --

    def initializer_tensor(self, t: TensorProto, scope: str) -> TensorProto:
        return self.stash.get(f"{scope}init:{t.name}", t)

    def constant_op(self, value: Attribute, name: str, ttype: Attribute) -> ConstantOp:
        op = ConstantOp.build(
            properties={"value": value},
            result_types=[ttype],
            attributes={"onnx.name": StringAttr(name)},
        )
        hint = _ssa_name(name)
        if hint:
            op.results[0].name_hint = hint
        return op

    # -- graphs --

    def import_graph(
        self,
        graph: GraphProto,
        block: Block,
        scope: _Scope,
        prefix: str,
        inputs: Iterable[tuple[str, SSAValue]],
    ) -> list[SSAValue]:
        for name, value in inputs:
            scope.values[name] = value
        for t in graph.initializer:
            what = f"initializer '{t.name}'"
            full = self.initializer_tensor(t, prefix)
            raw = None if prefix else self.source.weight(t.name)
            attr = _constant_attr(full, self.source, what, raw)
            op = self.constant_op(attr, t.name, attr.type)  # type: ignore[attr-defined]
            block.add_op(op)
            scope.values[t.name] = op.results[0]
            self.release(full)
        for node in self.topological(graph, scope):
            self.import_node(node, block, scope, prefix)
        outputs = []
        for out in graph.output:
            value = scope.lookup(out.name)
            if value is None:
                raise self.error(f"graph output '{out.name}' is not produced by any node")
            outputs.append(value)
        return outputs

    def release(self, t: TensorProto) -> None:
        # Frees the proto's copy once the IR holds the bytes, keeping peak memory
        # near one copy of the weights. Only for protos we parsed ourselves.
        if self.source.owned and t.HasField("raw_data"):
            t.ClearField("raw_data")

    def topological(self, graph: GraphProto, scope: _Scope) -> list[NodeProto]:
        return _topological(graph, lambda name: scope.lookup(name) is not None, self.where)

    # -- nodes --

    def import_node(self, node: NodeProto, block: Block, scope: _Scope, prefix: str) -> None:
        operands: list[SSAValue | None] = []
        for name in node.input:
            if not name:
                operands.append(None)
                continue
            value = scope.lookup(name)
            if value is None:
                raise self.error(f"input '{name}' is not defined", node)
            operands.append(value)
        op_class = ONNX_OPS.get(node.op_type) if node.domain in _DEFAULT_DOMAINS else None
        if op_class is ConstantOp:
            op = self.import_constant(node, prefix)
        elif op_class is not None:
            op = self.import_schema_op(op_class, node, operands, scope, prefix)
        else:
            op = self.import_custom(node, operands, scope, prefix)
        if node.name:
            op.attributes["onnx.name"] = StringAttr(node.name)
        block.add_op(op)
        results = op.onnx_outputs() if hasattr(op, "onnx_outputs") else list(op.results)
        present = [n for n in node.output]
        for name, value in zip(present, results, strict=False):
            if name and value is not None:
                scope.values[name] = value
                hint = _ssa_name(name)
                if hint:
                    value.name_hint = hint

    def import_constant(self, node: NodeProto, prefix: str) -> Operation:
        if len(node.attribute) != 1:
            raise self.error("Constant needs exactly one value attribute", node)
        attr = node.attribute[0]
        what = f"Constant '{node.output[0] if node.output else node.name}'"
        key = f"{prefix}const:{node.output[0]}" if node.output else ""
        if attr.name == "value":
            tensor = self.stash.get(key, attr.t)
            value = _constant_attr(tensor, self.source, what)
        elif attr.name == "sparse_value":
            value = _constant_attr(_densify(attr.sparse_tensor), self.source, what)
        elif attr.name in (
            "value_float",
            "value_floats",
            "value_int",
            "value_ints",
            "value_string",
            "value_strings",
        ):
            raw = onnx.helper.get_attribute_value(attr)
            dtype = {
                "value_float": np.float32,
                "value_floats": np.float32,
                "value_int": np.int64,
                "value_ints": np.int64,
                "value_string": object,
                "value_strings": object,
            }[attr.name]
            if dtype is object:
                array = np.array(raw, dtype=object)
            else:
                array = np.array(raw, dtype=dtype)
            value = _constant_attr(numpy_helper.from_array(array), self.source, what)
        else:
            raise self.error(f"unknown Constant attribute '{attr.name}'", node)
        name = node.output[0] if node.output else ""
        return self.constant_op(value, name, value.type)  # type: ignore[attr-defined]

    def result_types(self, node: NodeProto) -> list[Attribute]:
        return [self.value_type(name) if name else _UNKNOWN for name in node.output]

    def import_schema_op(
        self,
        op_class: type,
        node: NodeProto,
        operands: list[SSAValue | None],
        scope: _Scope,
        prefix: str,
    ) -> Operation:
        grouped_operands = self.group(op_class.ONNX_INPUTS, operands, node, "input")
        types = self.result_types(node)
        present_types: list[Attribute | None] = [
            t if name else None for t, name in zip(types, node.output, strict=True)
        ]
        grouped_results = self.group(op_class.ONNX_OUTPUTS, present_types, node, "output")
        properties: dict[str, Attribute] = {}
        regions: dict[str, Region] = {}
        for attr in node.attribute:
            if attr.ref_attr_name:
                raise self.error(f"attribute '{attr.name}' refers to a function attribute", node)
            kind = op_class.ONNX_ATTRS.get(attr.name)
            if kind is None:
                raise self.error(
                    f"unknown attribute '{attr.name}' for {node.op_type} "
                    f"at opset {CANONICAL_OPSET}",
                    node,
                )
            if kind == "graph":
                if attr.type != AttributeProto.GRAPH:
                    raise self.error(f"attribute '{attr.name}' must be a graph", node)
                regions[attr.name] = self.import_region(attr.g, node, attr.name, scope, prefix)
                continue
            properties[attr.name] = self.convert_attribute(attr, kind, node)
        missing = [g for g in op_class.ONNX_GRAPHS if g not in regions]
        if missing:
            raise self.error(f"graph attribute '{missing[0]}' missing", node)
        try:
            return op_class.build(
                operands=grouped_operands,
                result_types=grouped_results,
                properties=properties,
                regions=[regions[g] for g in op_class.ONNX_GRAPHS],
            )
        except (VerifyException, ValueError, TypeError) as exc:
            raise self.error(str(exc), node) from None

    def group(self, params: tuple, values: list, node: NodeProto, what: str) -> list:
        """Split a flat ONNX argument list into IRDL operand/result groups."""
        grouped: list[Any] = []
        index = 0
        for param_name, option, min_arity, _ in params:
            if option == "variadic":
                rest = values[index:]
                if any(v is None for v in rest):
                    raise self.error(f"variadic {what} '{param_name}' has an empty entry", node)
                if len(rest) < min_arity:
                    raise self.error(
                        f"{what} '{param_name}' needs at least {min_arity} "
                        f"value(s), got {len(rest)}",
                        node,
                    )
                grouped.append(list(rest))
                index = len(values)
                continue
            value = values[index] if index < len(values) else None
            index += 1
            if option == "single":
                if value is None:
                    if what == "output":
                        value = _UNKNOWN  # an unnamed required output still exists
                    else:
                        raise self.error(f"required {what} '{param_name}' is missing", node)
                grouped.append(value)
            else:
                grouped.append([] if value is None else [value])
        if index < len(values):
            raise self.error(
                f"too many {what}s: {len(values)} given, {node.op_type} takes at most {index}", node
            )
        return grouped

    def convert_attribute(self, attr: AttributeProto, kind: str, node: NodeProto) -> Attribute:
        expected = {
            "int": AttributeProto.INT,
            "float": AttributeProto.FLOAT,
            "string": AttributeProto.STRING,
            "tensor": AttributeProto.TENSOR,
            "ints": AttributeProto.INTS,
            "floats": AttributeProto.FLOATS,
            "strings": AttributeProto.STRINGS,
            "tensors": AttributeProto.TENSORS,
            "type": AttributeProto.TYPE_PROTO,
            "types": AttributeProto.TYPE_PROTOS,
        }[kind]
        actual = attr.type
        if kind == "tensor" and actual == AttributeProto.SPARSE_TENSOR:
            return _constant_attr(
                _densify(attr.sparse_tensor), self.source, f"attribute '{attr.name}'"
            )
        # Exporters sometimes write an empty list with no type set.
        if actual != expected and not (
            actual == AttributeProto.UNDEFINED and kind in ("ints", "floats", "strings")
        ):
            raise self.error(
                f"attribute '{attr.name}' is {AttributeProto.AttributeType.Name(actual)}, "
                f"expected {AttributeProto.AttributeType.Name(expected)}",
                node,
            )
        return _attribute_value(attr, kind, self.source)

    def import_region(
        self, graph: GraphProto, node: NodeProto, attr_name: str, scope: _Scope, prefix: str
    ) -> Region:
        sub_prefix = f"{prefix}{node.name or node.output[0]}/{attr_name}/0/"
        arg_types = []
        for inp in graph.input:
            found = _type_from_proto(inp.type, inp.name, self.where)
            arg_types.append(_UNKNOWN if found is None else found[0])
        block = Block(arg_types=arg_types)
        for arg, inp in zip(block.args, graph.input, strict=True):
            hint = _ssa_name(inp.name)
            if hint:
                arg.name_hint = hint
        inner = _Scope(scope)
        outputs = self.import_graph(
            graph,
            block,
            inner,
            sub_prefix,
            [(inp.name, arg) for inp, arg in zip(graph.input, block.args, strict=True)],
        )
        block.add_op(YieldOp.build(operands=[outputs]))
        return Region(block)

    def import_custom(
        self, node: NodeProto, operands: list[SSAValue | None], scope: _Scope, prefix: str
    ) -> Operation:
        attrs: dict[str, Attribute] = {}
        regions: list[Region] = []
        graph_names: list[str] = []
        for attr in node.attribute:
            if attr.type == AttributeProto.GRAPH:
                regions.append(self.import_region(attr.g, node, attr.name, scope, prefix))
                graph_names.append(attr.name)
                continue
            kind = _KIND_OF_TYPE.get(attr.type)
            if kind is None:
                raise self.error(
                    f"attribute '{attr.name}' has unsupported type "
                    f"{AttributeProto.AttributeType.Name(attr.type)}",
                    node,
                )
            attrs[attr.name] = _attribute_value(attr, kind, self.source)
        if graph_names:
            attrs["__graphs__"] = ArrayAttr([StringAttr(g) for g in graph_names])
        properties: dict[str, Attribute] = {
            "domain": StringAttr(node.domain),
            "op_type": StringAttr(node.op_type),
            "attrs": DictionaryAttr(attrs),
        }
        absent = [i for i, v in enumerate(operands) if v is None]
        if absent:
            properties["absent_inputs"] = DenseArrayBase.from_list(i64, absent)
        outputs = [name for name in node.output]
        return CustomOp.build(
            operands=[[v for v in operands if v is not None]],
            result_types=[[self.value_type(n) if n else _UNKNOWN for n in outputs]],
            properties=properties,
            regions=[regions],
        )


_KIND_OF_TYPE = {
    AttributeProto.INT: "int",
    AttributeProto.FLOAT: "float",
    AttributeProto.STRING: "string",
    AttributeProto.TENSOR: "tensor",
    AttributeProto.SPARSE_TENSOR: "tensor",
    AttributeProto.INTS: "ints",
    AttributeProto.FLOATS: "floats",
    AttributeProto.STRINGS: "strings",
    AttributeProto.TENSORS: "tensors",
    AttributeProto.TYPE_PROTO: "type",
    AttributeProto.TYPE_PROTOS: "types",
}


def _decode(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


def _float_attr(value: float) -> FloatAttr:
    # ONNX floats are float32; keep exactly that value.
    return FloatAttr(float(np.float32(value)), f32)


def _attribute_value(attr: AttributeProto, kind: str, source: _Source) -> Attribute:
    what = f"attribute '{attr.name}'"
    if kind == "int":
        return IntegerAttr(attr.i, i64)
    if kind == "float":
        return _float_attr(attr.f)
    if kind == "string":
        return StringAttr(_decode(attr.s))
    if kind == "tensor":
        if attr.type == AttributeProto.SPARSE_TENSOR:
            return _constant_attr(_densify(attr.sparse_tensor), source, what)
        return _constant_attr(attr.t, source, what)
    if kind == "ints":
        return DenseArrayBase.from_list(i64, list(attr.ints))
    if kind == "floats":
        return ArrayAttr([_float_attr(v) for v in attr.floats])
    if kind == "strings":
        return ArrayAttr([StringAttr(_decode(s)) for s in attr.strings])
    if kind == "tensors":
        return ArrayAttr([_constant_attr(t, source, what) for t in attr.tensors])
    if kind == "type":
        return StringAttr(str(attr.tp).strip())
    if kind == "types":
        return ArrayAttr([StringAttr(str(t).strip()) for t in attr.type_protos])
    raise AssertionError(kind)


def _densify(sparse: onnx.SparseTensorProto) -> TensorProto:
    values = numpy_helper.to_array(sparse.values)
    indices = numpy_helper.to_array(sparse.indices).astype(np.int64)
    dims = list(sparse.dims)
    dense = np.zeros(dims, dtype=values.dtype)
    if indices.ndim == 1:
        dense.reshape(-1)[indices] = values
    else:
        dense[tuple(indices.T)] = values
    return numpy_helper.from_array(dense)


def _node_error(node: NodeProto, message: str, where: str) -> ModelImportError:
    label = node.name or (node.output[0] if node.output else "?")
    return ModelImportError(f"node '{label}' ({node.op_type}): {message}", where=where)


def _topological(graph: GraphProto, defined: Any, where: str) -> list[NodeProto]:
    """The graph's nodes in an order where every input is defined first.

    ``defined(name)`` tells whether a name comes from outside the node list (graph
    inputs, initializers, enclosing scopes). Raises on cycles and undefined names.
    """
    nodes = list(graph.node)  # indexing a protobuf repeated field is slow
    producers: dict[str, int] = {}
    for index, node in enumerate(nodes):
        for out in node.output:
            if out:
                producers[out] = index
    order: list[NodeProto] = []
    state = [0] * len(nodes)  # 0 new, 1 on the stack, 2 done
    needs_of: dict[int, list[str]] = {}  # a node is revisited once per input
    for start in range(len(nodes)):
        if state[start]:
            continue
        stack = [(start, 0)]
        state[start] = 1
        while stack:
            index, next_input = stack[-1]
            node = nodes[index]
            needs = needs_of.get(index)
            if needs is None:
                needs = needs_of[index] = [n for n in node.input if n] + _implicit_inputs(node)
            if next_input < len(needs):
                stack[-1] = (index, next_input + 1)
                name = needs[next_input]
                dep = producers.get(name)
                if dep is None:
                    if not defined(name):
                        raise _node_error(
                            node,
                            f"input '{name}' is not defined by any "
                            "node, initializer or graph input",
                            where,
                        )
                    continue
                if state[dep] == 1:
                    raise _node_error(node, f"the graph has a cycle through value '{name}'", where)
                if state[dep] == 0:
                    state[dep] = 1
                    stack.append((dep, 0))
                continue
            state[index] = 2
            order.append(node)
            stack.pop()
    return order


def _implicit_inputs(node: NodeProto) -> list[str]:
    """Outer-scope names a node's subgraphs read: they must be defined first."""
    names: list[str] = []
    for attr in node.attribute:
        if attr.type == AttributeProto.GRAPH:
            names.extend(_free_names(attr.g))
        elif attr.type == AttributeProto.GRAPHS:
            for g in attr.graphs:
                names.extend(_free_names(g))
    return names


def _check_structure(graph: GraphProto, outer: frozenset[str], where: str) -> None:
    """Reject cycles and undefined names before the converter sees the graph."""
    known = set(outer) | {i.name for i in graph.input} | {t.name for t in graph.initializer}
    order = _topological(graph, known.__contains__, where)
    for node in order:
        for attr in node.attribute:
            subs = (
                [attr.g]
                if attr.type == AttributeProto.GRAPH
                else (list(attr.graphs) if attr.type == AttributeProto.GRAPHS else [])
            )
            for g in subs:
                _check_structure(g, frozenset(known), where)
        known.update(o for o in node.output if o)
    for out in graph.output:
        if out.name not in known:
            raise ModelImportError(
                f"graph output '{out.name}' is not produced by any node", where=where
            )


def _free_names(graph: GraphProto) -> list[str]:
    """Names a subgraph reads from enclosing scopes."""
    defined = {i.name for i in graph.input} | {t.name for t in graph.initializer}
    free: list[str] = []
    for node in graph.node:
        for name in node.input:
            if name and name not in defined:
                free.append(name)
        for attr in node.attribute:
            subs = (
                [attr.g]
                if attr.type == AttributeProto.GRAPH
                else (list(attr.graphs) if attr.type == AttributeProto.GRAPHS else [])
            )
            for g in subs:
                free.extend(n for n in _free_names(g) if n not in defined)
        defined.update(node.output)
    for out in graph.output:
        if out.name not in defined:
            free.append(out.name)
    return free


def _collect_types(model: ModelProto, where: str) -> dict[str, onnx.TypeProto]:
    try:
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False)
    except Exception:
        # Inference is only a source of result types; without it types stay unknown
        # and the shape-inference pass decides.
        inferred = model
    types: dict[str, onnx.TypeProto] = {}

    def visit(graph: GraphProto) -> None:
        for vi in list(graph.value_info) + list(graph.output) + list(graph.input):
            if vi.type.WhichOneof("value") is not None:
                types.setdefault(vi.name, vi.type)
        for node in graph.node:
            for attr in node.attribute:
                if attr.type == AttributeProto.GRAPH:
                    visit(attr.g)
                elif attr.type == AttributeProto.GRAPHS:
                    for g in attr.graphs:
                        visit(g)

    visit(inferred.graph)
    # Declared graph outputs win over inference (they are the contract).
    for vi in model.graph.output:
        if vi.type.WhichOneof("value") is not None:
            types[vi.name] = vi.type
    return types


def import_model(src: Any) -> ModuleOp:
    """Import an ONNX model (path, bytes or ``onnx.ModelProto``) into the ``onnx`` dialect.

    Returns a module holding ``func.func @main`` whose arguments and results are the
    graph's inputs (those not backed by an initializer) and outputs, in order.
    """
    source = _load(src)
    try:
        return _import(source)
    except RecursionError:
        raise ModelImportError("the graph nests too deeply to import", where=source.where) from None
    finally:
        source.close()


def _import(source: _Source) -> ModuleOp:
    _check_strings(source.model, "model", source.where)
    _check_structure(source.model.graph, frozenset(), source.where)
    stash: dict[str, TensorProto] = {}
    skeleton = _skeleton(source.model, stash)
    _check_model(skeleton, stash, source.where)
    converted = _to_canonical(skeleton, source.where)
    del skeleton
    graph = converted.graph
    types = _collect_types(converted, source.where)
    importer = _GraphImporter(source, stash, types)

    initializer_names = {t.name for t in graph.initializer}
    arg_types: list[Attribute] = []
    arg_attrs: list[DictionaryAttr] = []
    arg_names: list[str] = []
    for inp in graph.input:
        if inp.name in initializer_names:
            continue  # an input with a default value (IR < 4 style): a constant
        found = _type_from_proto(inp.type, inp.name, source.where)
        if found is None:
            raise ModelImportError(f"graph input '{inp.name}' has no type", where=source.where)
        ttype, symbols = found
        arg_types.append(ttype)
        arg_names.append(inp.name)
        attrs: dict[str, Attribute] = {"onnx.name": StringAttr(inp.name)}
        if any(symbols):
            attrs["onnx.dim_params"] = ArrayAttr([StringAttr(s) for s in symbols])
        arg_attrs.append(DictionaryAttr(attrs))

    block = Block(arg_types=arg_types)
    for arg, name in zip(block.args, arg_names, strict=True):
        hint = _ssa_name(name)
        if hint:
            arg.name_hint = hint
    outputs = importer.import_graph(
        graph, block, _Scope(None), "", zip(arg_names, block.args, strict=True)
    )
    res_attrs: list[DictionaryAttr] = []
    res_types: list[Attribute] = []
    for out, value in zip(graph.output, outputs, strict=True):
        attrs = {"onnx.name": StringAttr(out.name)}
        found = (
            _type_from_proto(out.type, out.name, source.where)
            if out.type.WhichOneof("value")
            else None
        )
        if found is not None and any(found[1]):
            attrs["onnx.dim_params"] = ArrayAttr([StringAttr(s) for s in found[1]])
        res_attrs.append(DictionaryAttr(attrs))
        res_types.append(value.type)
    block.add_op(ReturnOp(*outputs))
    func = FuncOp(
        "main",
        (arg_types, res_types),
        Region(block),
        arg_attrs=ArrayAttr(arg_attrs),
        res_attrs=ArrayAttr(res_attrs),
    )
    module = ModuleOp([func])
    module.attributes["onnx.opset"] = IntegerAttr(CANONICAL_OPSET, i64)
    if source.model.producer_name:
        module.attributes["onnx.producer"] = StringAttr(source.model.producer_name)
    try:
        module.verify()
    except VerifyException as exc:
        raise ModelImportError(
            f"imported IR does not verify: {str(exc).splitlines()[0]}", where=source.where
        ) from None
    return module


__all__ = ["import_model"]
