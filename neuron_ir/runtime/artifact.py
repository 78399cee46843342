"""The artifact format, a pure serializer: one file, IR as text, weights as raw bytes.

Layout (all integers little-endian)::

    magic    8 bytes   b"NEURONIR"
    version  u32       FORMAT_VERSION
    meta_len u64       then meta_len bytes of UTF-8 JSON: the caller's metadata under
                       "model" (target, pipeline, I/O names, ...), IR length and CRC, the blob table
                       {key: [offset, length]} (offsets from the start of the data)
    head_crc u32       CRC32 of everything before it (magic to the end of the JSON), so
                       that with the IR and data CRCs in the JSON every byte is covered
    ir       zlib-compressed UTF-8: the module printed by the project printer, every constant over
             ``BLOB_THRESHOLD`` bytes printed as ``dense_resource<wN> : tensor<...>``
    padding  to a multiple of 64 bytes, then the data: the blobs back to back, each
             starting at a multiple of 64, plus a CRC32 of all of it in the metadata

Why ``dense_resource`` handles with no ``{-# dialect_resources #-}`` section: xDSL 0.74
parses a bare handle into a ``DenseResourceAttr`` (key and type) and keeps no blob
for it. Its key registry is process-global, though: a key parsed before (by an earlier
load) comes back renamed ``w17_0``, ``w17_1``... So keys never contain ``_`` and the
loader drops such a suffix. The loader swaps each handle for
``DenseIntOrFPElementsAttr(type, BytesAttr(blob))`` itself, so the global blob store
is never used and loading twice in one process is safe.
The swap happens in the printer, so the caller's module is never mutated or cloned.
Constants are deduplicated by content.
"""

from __future__ import annotations

import io
import json
import os
import struct
import zlib
from dataclasses import dataclass, field
from typing import Any

from xdsl.dialects.builtin import (
    BytesAttr,
    DenseIntOrFPElementsAttr,
    DenseResourceAttr,
    ModuleOp,
)

from ..errors import NeuronIRError, UsageError
from ..ir import NeuronPrinter, parse_ir

MAGIC = b"NEURONIR"
FORMAT_VERSION = 3  # 2: caller metadata under "model"; 3: the header has its own CRC
BLOB_THRESHOLD = 64  # bytes; smaller constants stay inline in the text (hex costs 2x)
_ALIGN = 64
_HEADER = struct.Struct("<8sIQ")
_CRC = struct.Struct("<I")


class ArtifactError(NeuronIRError):
    """A saved artifact that is missing, truncated, corrupt or of another format."""


@dataclass(eq=False, repr=False)
class _BlobPrinter(NeuronPrinter):
    """Prints big constants as ``dense_resource<wN>`` and keeps their bytes aside."""

    threshold: int = field(default=BLOB_THRESHOLD)
    blobs: dict[str, bytes] = field(default_factory=dict)
    # By content, so that equal weights of several programs (buckets) are stored once.
    _keys: dict[bytes, str] = field(default_factory=dict)

    def _print_dense(self, attr: DenseIntOrFPElementsAttr) -> None:
        data = attr.data.data
        if len(data) <= self.threshold:
            super()._print_dense(attr)
            return
        key = self._keys.get(data)
        if key is None:
            key = f"w{len(self.blobs)}"
            self._keys[data] = key
            self.blobs[key] = data
        self.print_string(f"dense_resource<{key}> : ")
        self.print_attribute(attr.type)


def _pad(n: int) -> int:
    return -n % _ALIGN


def write(path: str | os.PathLike, module: ModuleOp, meta: dict[str, Any]) -> None:
    """Write ``module`` and the caller's JSON-able ``meta`` to ``path`` (written to a
    temporary file, then renamed, so a failed save never leaves a half-written artifact
    behind). :func:`read` gives both back."""
    stream = io.StringIO()
    printer = _BlobPrinter(stream=stream)
    printer.print_op(module)
    stream.write("\n")
    # The text is compressed: op-heavy, weight-light models (loops, small heads) would
    # otherwise take several times their ONNX size, and IR text compresses ~10x.
    ir = zlib.compress(stream.getvalue().encode("utf-8"), 6)
    table, offset, crc = {}, 0, 0
    for key, data in printer.blobs.items():
        table[key] = [offset, len(data)]
        offset += len(data) + _pad(len(data))
        crc = zlib.crc32(b"\0" * _pad(len(data)), zlib.crc32(data, crc))
    meta = {
        "model": meta,
        "ir_encoding": "zlib",
        "ir_length": len(ir),
        "ir_crc32": zlib.crc32(ir),
        "data_length": offset,
        "data_crc32": crc,
        "blobs": table,
    }
    meta_bytes = json.dumps(meta, sort_keys=True).encode("utf-8")
    path = os.fspath(path)
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            head = _HEADER.pack(MAGIC, FORMAT_VERSION, len(meta_bytes)) + meta_bytes
            f.write(head)
            f.write(_CRC.pack(zlib.crc32(head)))
            f.write(ir)
            f.write(b"\0" * _pad(len(head) + _CRC.size + len(ir)))
            for data in printer.blobs.values():
                f.write(data)
                f.write(b"\0" * _pad(len(data)))
        os.replace(tmp, path)
    except OSError as exc:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise ArtifactError(f"cannot write artifact: {exc.strerror or exc}", where=path) from None


def is_artifact(path: str | os.PathLike) -> bool:
    """Whether ``path`` starts with the artifact magic."""
    if not os.path.isfile(path):  # a FIFO would block the read
        return False
    try:
        with open(path, "rb") as f:
            return f.read(len(MAGIC)) == MAGIC
    except OSError:
        return False


def _byte_size(ttype) -> int | None:
    """Bytes a dense constant of ``ttype`` holds (booleans a byte each), if known."""
    elem = ttype.get_element_type()
    width = getattr(elem, "bitwidth", None)
    if not isinstance(width, int):
        return None
    count = 1
    for dim in ttype.get_shape():
        count *= dim
    return count * ((width + 7) // 8)


def _restore(module: ModuleOp, blobs: dict[str, memoryview], where: str) -> None:
    for op in module.walk():
        for attrs in (op.properties, op.attributes):
            for name, value in list(attrs.items()):
                if not isinstance(value, DenseResourceAttr):
                    continue
                # xDSL's global key registry may have renamed w17 to w17_0 (see above).
                key = value.resource_handle.data.split("_", 1)[0]
                if key not in blobs:
                    raise ArtifactError(
                        f"constant refers to missing weight blob '{key}'", where=where
                    )
                needed = _byte_size(value.type)
                if needed is not None and needed != len(blobs[key]):
                    raise ArtifactError(
                        f"weight blob '{key}' holds {len(blobs[key])} bytes, "
                        f"its type needs {needed}",
                        where=where,
                    )
                attrs[name] = DenseIntOrFPElementsAttr(value.type, BytesAttr(bytes(blobs[key])))


def read(path: str | os.PathLike) -> tuple[ModuleOp, dict[str, Any]]:
    """The module and the caller's metadata of an artifact written by :func:`write`."""
    if not isinstance(path, str | os.PathLike):
        raise UsageError(f"load takes a path, not {type(path).__name__}")
    where = os.fspath(path)
    if os.path.exists(where) and not os.path.isfile(where):
        raise ArtifactError("not a regular file", where=where)
    try:
        with open(where, "rb") as f:
            raw = f.read()
    except OSError as exc:
        raise ArtifactError(f"cannot read artifact: {exc.strerror or exc}", where=where) from None
    view = memoryview(raw)
    if len(raw) < _HEADER.size or raw[: len(MAGIC)] != MAGIC:
        raise ArtifactError("not a neuron-ir artifact (bad magic)", where=where)
    _, version, meta_len = _HEADER.unpack_from(raw)
    if version != FORMAT_VERSION:
        raise ArtifactError(
            f"artifact format version {version} is not supported "
            f"(this neuron-ir reads version {FORMAT_VERSION})",
            where=where,
        )
    pos = _HEADER.size
    if pos + meta_len + _CRC.size > len(raw):
        raise ArtifactError("artifact is truncated (in the metadata)", where=where)
    (head_crc,) = _CRC.unpack_from(raw, pos + meta_len)
    if zlib.crc32(view[: pos + meta_len]) != head_crc:
        raise ArtifactError("artifact header is corrupt (checksum mismatch)", where=where)
    try:
        meta = json.loads(bytes(view[pos : pos + meta_len]).decode("utf-8"))
        ir_len, data_len = int(meta["ir_length"]), int(meta["data_length"])
        table = {str(k): (int(o), int(n)) for k, (o, n) in meta["blobs"].items()}
        if ir_len < 0 or data_len < 0:
            raise ValueError("negative length")
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ArtifactError(f"artifact metadata is corrupt ({exc})", where=where) from None
    pos += meta_len + _CRC.size
    ir = view[pos : pos + ir_len]
    data_start = pos + ir_len + _pad(pos + ir_len)
    if data_start + data_len > len(raw) or len(ir) != ir_len:
        raise ArtifactError(
            f"artifact is truncated ({len(raw)} bytes, expected {data_start + data_len})",
            where=where,
        )
    data = view[data_start : data_start + data_len]
    if zlib.crc32(ir) != meta.get("ir_crc32") or zlib.crc32(data) != meta.get("data_crc32"):
        raise ArtifactError("artifact is corrupt (checksum mismatch)", where=where)
    blobs = {}
    for key, (offset, length) in table.items():
        if offset < 0 or length < 0 or offset + length > data_len:
            raise ArtifactError(f"weight blob '{key}' lies outside the data", where=where)
        blobs[key] = data[offset : offset + length]
    try:
        text = zlib.decompress(ir).decode("utf-8")
    except (zlib.error, UnicodeDecodeError):
        raise ArtifactError("artifact IR text is corrupt", where=where) from None
    # Verified here with the handles in place; the swap keeps every type unchanged.
    module = parse_ir(text, source=where)
    _restore(module, blobs, where)
    model_meta = meta.get("model")
    if not isinstance(model_meta, dict):
        raise ArtifactError("artifact metadata is corrupt (no model section)", where=where)
    return module, model_meta
