"""Reading a serialized ONNX model's weights without the protobuf library.

Parsing a model with protobuf copies every weight into the parser's arena, and reading
``raw_data`` back copies it again: a file import touched each weight's bytes three
times (read, parse, read back), and on a VM each first touch of a page is a fault.
``strip_weights`` walks the wire format just far enough to find the top-level
initializers' ``raw_data`` and returns the model without them (a few MB to parse) plus
where each one lies, so the importer reads each weight once, straight from the file.

It declines (returns None) whatever it is not sure of, and the caller then parses the
whole model as before: a malformed file gets protobuf's own error, never a new one.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

# Field numbers of onnx.proto (stable: they are the wire format).
_MODEL_GRAPH = 7
_GRAPH_INITIALIZER = 5
_TENSOR_DIMS = 1
_TENSOR_DATA_TYPE = 2
_TENSOR_NAME = 8
_TENSOR_RAW_DATA = 9
_TENSOR_DOC_STRING = 12
_TENSOR_DATA_LOCATION = 14
_TENSOR_METADATA = 16
# A tensor with any other field (typed data, segments, external data) is left alone.
_TENSOR_PLAIN_FIELDS = frozenset(
    {
        _TENSOR_DIMS,
        _TENSOR_DATA_TYPE,
        _TENSOR_NAME,
        _TENSOR_RAW_DATA,
        _TENSOR_DOC_STRING,
        _TENSOR_DATA_LOCATION,
        _TENSOR_METADATA,
    }
)

_VARINT, _I64, _LEN, _I32 = 0, 1, 2, 5
_WINDOW = 1 << 16


class _Decline(Exception):
    """Something the scan does not handle: parse the model the ordinary way."""


class ByteSource:
    """Random access to a model's bytes: a file (read with pread, so a file that
    shrinks under us gives a short read rather than a SIGBUS) or a bytes object."""

    def __init__(self, size: int, fd: int | None = None, data: bytes | None = None):
        self.size = size
        self._fd = fd
        self._data = memoryview(data) if data is not None else None
        self._window = b""
        self._window_at = 0

    @classmethod
    def of_file(cls, fd: int) -> ByteSource:
        return cls(os.fstat(fd).st_size, fd=fd)

    @classmethod
    def of_bytes(cls, data: bytes) -> ByteSource:
        return cls(len(data), data=data)

    def read(self, offset: int, length: int) -> bytes:
        """Exactly ``length`` bytes at ``offset``; OSError if the file ends sooner."""
        if self._data is not None:
            if offset + length > self.size:
                raise OSError("read past the end")
            return bytes(self._data[offset : offset + length])
        assert self._fd is not None
        parts = []
        while length:
            chunk = os.pread(self._fd, length, offset)
            if not chunk:
                raise OSError("the file is shorter than when it was opened")
            parts.append(chunk)
            offset += len(chunk)
            length -= len(chunk)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        self._data = None

    def _byte(self, offset: int) -> int:
        if self._data is not None:
            return self._data[offset]
        at = offset - self._window_at
        if not 0 <= at < len(self._window):
            self._window = self.read(offset, min(_WINDOW, self.size - offset))
            self._window_at = offset
            at = 0
        return self._window[at]

    def varint(self, offset: int, end: int) -> tuple[int, int]:
        """The varint at ``offset`` and the offset after it."""
        value = shift = 0
        while True:
            if offset >= end or shift > 63:
                raise _Decline
            byte = self._byte(offset)
            offset += 1
            value |= (byte & 0x7F) << shift
            if byte < 0x80:
                return value, offset
            shift += 7


@dataclass(frozen=True)
class _Field:
    number: int
    wire: int
    start: int  # of the tag
    value_at: int  # of the value (after a LEN field's length)
    end: int
    value: int  # a varint's value, a LEN field's length


def _fields(src: ByteSource, start: int, end: int):
    at = start
    while at < end:
        tag, value_at = src.varint(at, end)
        number, wire = tag >> 3, tag & 7
        if number == 0:
            raise _Decline
        value = 0
        if wire == _VARINT:
            value, after = src.varint(value_at, end)
        elif wire == _I64:
            after = value_at + 8
        elif wire == _I32:
            after = value_at + 4
        elif wire == _LEN:
            value, value_at = src.varint(value_at, end)
            after = value_at + value
        else:  # groups: never in onnx.proto
            raise _Decline
        if after > end:
            raise _Decline
        yield _Field(number, wire, at, value_at, after, value)
        at = after


def _varint_bytes(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _len_field(number: int, body: list[bytes]) -> list[bytes]:
    return [_varint_bytes(number << 3 | _LEN), _varint_bytes(sum(map(len, body)))] + body


@dataclass
class StrippedModel:
    """The model without its large initializers' raw data, and where that data lies."""

    skeleton: bytes
    weights: dict[str, tuple[int, int]]  # initializer name -> (offset, length)


def strip_weights(
    src: ByteSource, min_bytes: int, itemsizes: dict[int, int]
) -> StrippedModel | None:
    """The model in ``src`` with the ``raw_data`` of each top-level initializer over
    ``min_bytes`` taken out, when that initializer has a type in ``itemsizes`` (ONNX
    data type -> bytes per element), a name, no other data, and exactly the bytes its
    shape needs. None when nothing is taken out, when two initializers share a name,
    or when the bytes are not plainly a model."""
    weights: dict[str, tuple[int, int]] = {}
    names: set[bytes] = set()
    try:
        pieces: list[bytes] = []
        copied = 0
        for entry in _fields(src, 0, src.size):
            if entry.number != _MODEL_GRAPH or entry.wire != _LEN:
                continue
            body = _strip_graph(
                src, entry.value_at, entry.end, min_bytes, itemsizes, weights, names
            )
            if body is None:
                continue
            pieces.append(src.read(copied, entry.start - copied))
            pieces.extend(_len_field(_MODEL_GRAPH, body))
            copied = entry.end
        if not weights:
            return None
        pieces.append(src.read(copied, src.size - copied))
    except (_Decline, OSError):
        return None
    return StrippedModel(b"".join(pieces), weights)


def _strip_graph(
    src: ByteSource,
    start: int,
    end: int,
    min_bytes: int,
    itemsizes: dict[int, int],
    weights: dict[str, tuple[int, int]],
    names: set[bytes],
) -> list[bytes] | None:
    pieces: list[bytes] = []
    copied = start
    for entry in _fields(src, start, end):
        if entry.number != _GRAPH_INITIALIZER or entry.wire != _LEN:
            continue
        tensor = _Tensor.read(src, entry)
        if tensor.name in names:
            raise _Decline  # two initializers of one name: the checker reports it
        names.add(tensor.name)
        if not tensor.plain(min_bytes, itemsizes):
            continue
        raw = tensor.raw[0]
        weights[tensor.name.decode("utf-8")] = (raw.value_at, raw.value)
        pieces.append(src.read(copied, entry.start - copied))
        kept = [src.read(f.start, f.end - f.start) for f in tensor.kept]
        pieces.extend(_len_field(_GRAPH_INITIALIZER, kept))
        copied = entry.end
    if not pieces:
        return None
    pieces.append(src.read(copied, end - copied))
    return pieces


@dataclass
class _Tensor:
    """What the scan needs of a TensorProto: its raw data fields and the rest."""

    name: bytes = b""  # protobuf's default when the field is absent
    data_type: int = 0
    location: int = 0
    dims: list[int] = field(default_factory=list)
    raw: list[_Field] = field(default_factory=list)
    kept: list[_Field] = field(default_factory=list)
    other: bool = False  # typed data, segments, external data or an odd wire type

    @classmethod
    def read(cls, src: ByteSource, tensor: _Field) -> _Tensor:
        t = cls()
        for f in _fields(src, tensor.value_at, tensor.end):
            if f.number == _TENSOR_RAW_DATA:
                t.raw.append(f)
                continue
            t.kept.append(f)
            if f.number not in _TENSOR_PLAIN_FIELDS:
                t.other = True
            elif f.number == _TENSOR_NAME and f.wire == _LEN:
                t.name = src.read(f.value_at, f.value)  # the last one counts, as in protobuf
            elif f.number == _TENSOR_DATA_TYPE and f.wire == _VARINT:
                t.data_type = f.value
            elif f.number == _TENSOR_DATA_LOCATION and f.wire == _VARINT:
                t.location = f.value
            elif f.number == _TENSOR_DIMS and f.wire == _VARINT:
                t.dims.append(f.value)
            elif f.number == _TENSOR_DIMS and f.wire == _LEN:
                at = f.value_at
                while at < f.end:
                    dim, at = src.varint(at, f.end)
                    t.dims.append(dim)
            elif f.number in (_TENSOR_DIMS, _TENSOR_DATA_TYPE, _TENSOR_DATA_LOCATION):
                t.other = True  # a wire type protobuf would reject or read another way
        return t

    def plain(self, min_bytes: int, itemsizes: dict[int, int]) -> bool:
        """Whether the scan may take this tensor's raw data out: one raw data field
        holding exactly what the shape needs, over ``min_bytes``, nothing else."""
        if self.other or len(self.raw) != 1 or self.location != 0 or not self.name:
            return False
        if self.data_type not in itemsizes:
            return False  # a type read another way (packed, strings)
        try:
            self.name.decode("utf-8")
        except UnicodeDecodeError:
            return False  # the importer's string check reports it
        count = 1
        for dim in self.dims:
            count *= dim  # a negative dim reads as 2**64 - k: never the raw size
        size = self.raw[0].value
        return size > min_bytes and size == count * itemsizes[self.data_type]
