"""Lossless text form of the IR: the context with every project dialect, a printer
that keeps constants bit-exact, and the parser entry point."""

from __future__ import annotations

import io
import re
from dataclasses import dataclass, field

import ml_dtypes
import numpy as np
from xdsl.context import Context
from xdsl.dialects.arith import Arith
from xdsl.dialects.builtin import (
    ArrayAttr,
    BFloat16Type,
    Builtin,
    BytesAttr,
    DenseIntOrFPElementsAttr,
    DictionaryAttr,
    Float16Type,
    Float32Type,
    Float64Type,
    IndexType,
    IntegerType,
    ModuleOp,
    StringAttr,
)
from xdsl.dialects.func import Func
from xdsl.dialects.scf import Scf
from xdsl.dialects.tensor import Tensor
from xdsl.ir import Attribute
from xdsl.parser import Parser
from xdsl.printer import Printer
from xdsl.utils.exceptions import ParseError, VerifyException

from dialects.nc import NC
from dialects.onnx import ONNX

from ..errors import IRParseError

# Constants up to this many elements print as readable lists when that is exact;
# bigger ones print as one hex string of their bytes, which is exact and fast.
MAX_LIST_ELEMENTS = 16

_FLOAT_DTYPES = {
    Float16Type: np.dtype(np.float16),
    Float32Type: np.dtype(np.float32),
    Float64Type: np.dtype(np.float64),
    BFloat16Type: np.dtype(ml_dtypes.bfloat16),
}


def make_context() -> Context:
    """A context with every dialect a neuron-ir module may contain."""
    ctx = Context()
    for dialect in (Builtin, Func, Arith, Scf, Tensor, ONNX, NC):
        ctx.load_dialect(dialect)
    return ctx


def _exact_float_text(value: np.generic, dtype: np.dtype) -> str | None:
    """Shortest decimal text that parses back to exactly ``value``, or None."""
    if not np.isfinite(value):
        return None
    text = str(value)
    if "e" in text and "." not in text.split("e")[0]:
        mantissa, exponent = text.split("e")
        text = f"{mantissa}.0e{exponent}"
    elif "." not in text and "e" not in text:
        text += ".0"
    back = np.array(float(text)).astype(dtype)
    if back.tobytes() != np.array(value, dtype=dtype).tobytes():
        return None
    return text


@dataclass(eq=False, repr=False)
class NeuronPrinter(Printer):
    """xDSL's printer, with dense constants printed so that they re-parse bit-exactly.

    xDSL 0.74 prints non-finite floats inside dense lists as hex integers, which its
    parser then reads as integer values, and it builds a Python list of every
    element even when it prints hex. Here small exact cases print as lists and
    everything else as one hex string, built straight from the bytes.
    """

    elide_limit: int | None = field(default=None)
    """Print constants with more than this many bytes as an elided resource."""

    def print_string_literal(self, string: str) -> None:
        # xDSL escapes every non-ASCII byte, and its lexer reads such a literal back as
        # bytes (a BytesAttr): print non-ASCII text as itself so it stays a string.
        if string.isascii():
            super().print_string_literal(string)
            return
        out = []
        for char in string:
            if char == "\\":
                out.append("\\\\")
            elif char == '"' or ord(char) < 0x20 or ord(char) == 0x7F:
                out.append(f"\\{ord(char):02X}")
            elif 0xDC80 <= ord(char) <= 0xDCFF:  # a byte kept by surrogateescape
                out.append(f"\\{ord(char) - 0xDC00:02X}")
            else:
                out.append(char)
        self.print_string('"' + "".join(out) + '"')

    def print_attribute(self, attribute: Attribute) -> None:
        if isinstance(attribute, DenseIntOrFPElementsAttr):
            self._print_dense(attribute)
            return
        super().print_attribute(attribute)

    def _print_dense(self, attr: DenseIntOrFPElementsAttr) -> None:
        data = attr.data.data
        if self.elide_limit is not None and len(data) > self.elide_limit:
            self.print_string("dense_resource<__elided__> : ")
            self.print_attribute(attr.type)
            return
        self.print_string("dense<")
        self.print_string(self._dense_body(attr, data))
        self.print_string("> : ")
        self.print_attribute(attr.type)

    def _dense_body(self, attr: DenseIntOrFPElementsAttr, data: bytes) -> str:
        elem = attr.get_element_type()
        count = len(attr)
        if count == 0:
            return ""
        width = len(data) // count
        splat = data[:width] * count == data if count > 1 else False
        if splat or count <= MAX_LIST_ELEMENTS:
            text = self._dense_list_text(attr, data[:width] if splat else data, elem)
            if text is not None:
                return text
        return f'"0x{(data[:width] if splat else data).hex().upper()}"'

    def _dense_list_text(
        self, attr: DenseIntOrFPElementsAttr, data: bytes, elem: Attribute
    ) -> str | None:
        shape = attr.get_shape()
        single = len(data) == len(attr.data.data) // max(len(attr), 1)
        if isinstance(elem, IntegerType | IndexType):
            if isinstance(elem, IntegerType) and elem.width.data == 1:
                return None  # booleans stay hex: unambiguous whatever the parser does
            values = [str(v) for v in attr.get_values()]
            if single:
                return values[0]
        elif type(elem) in _FLOAT_DTYPES:
            dtype = _FLOAT_DTYPES[type(elem)]
            texts = [_exact_float_text(v, dtype) for v in np.frombuffer(data, dtype=dtype)]
            if any(t is None for t in texts):
                return None
            values = texts  # type: ignore[assignment]
            if single:
                return values[0]
        else:
            return None
        return _nest(values, list(shape) if shape else [len(values)])


def _nest(values: list[str], shape: list[int]) -> str:
    if len(shape) <= 1:
        return "[" + ", ".join(values) + "]"
    step = len(values) // shape[0] if shape[0] else 0
    return (
        "["
        + ", ".join(_nest(values[i * step : (i + 1) * step], shape[1:]) for i in range(shape[0]))
        + "]"
    )


def print_ir(
    module: ModuleOp, *, elide_constants_over: int | None = None, generic: bool = False
) -> str:
    """The module's text form; lossless unless ``elide_constants_over`` is set."""
    stream = io.StringIO()
    printer = NeuronPrinter(
        stream=stream, elide_limit=elide_constants_over, print_generic_format=generic
    )
    printer.print_op(module)
    stream.write("\n")
    return stream.getvalue()


# Comments and string literals, each matched in linear time. A string must end on its
# line and use only the escapes xDSL's lexer knows; a lone '"' is one that does not.
_STRING_SCAN = re.compile(
    r'//[^\n]*|"[^"\\\n\v\f]*(?:\\(?:["nt\\]|[0-9A-Fa-f]{2})[^"\\\n\v\f]*)*"|"'
)


def _check_strings(text: str, source: str) -> None:
    """Reject a string literal that is unterminated or has a bad escape.

    xDSL 0.74 lexes strings with ``"(?:[^"\\...]+|\\...)*"``, whose nested repetition
    backtracks exponentially when no closing quote follows: 40 characters never
    return. Only text that passes this linear scan reaches it, and on such text its
    regex matches at the first try.
    """
    for match in _STRING_SCAN.finditer(text):
        if match.group() != '"':
            continue
        start = match.start()
        line = text.count("\n", 0, start) + 1
        column = start - (text.rfind("\n", 0, start) + 1) + 1
        raise IRParseError(
            f"{line}:{column}: string literal is not terminated on its "
            'line or has an escape other than \\n \\t \\\\ \\" \\XX',
            where=source,
        )


def parse_ir(text: str, *, source: str = "<ir>", verify: bool = True) -> ModuleOp:
    """Parse (and verify) IR text produced by :func:`print_ir` or written by hand."""
    if not isinstance(text, str):
        raise IRParseError(f"IR text must be a str, not {type(text).__name__}", where=source)
    _check_strings(text, source)
    try:
        module = Parser(make_context(), text, source).parse_module()
        _repair_strings(module)
        _check_dense(module, source)
        if verify:
            module.verify()
    except ParseError as exc:
        raise IRParseError(_parse_message(str(exc)), where=source) from None
    except VerifyException as exc:
        raise IRParseError(
            f"verification failed: {_describe_failure(module, exc)}", where=source
        ) from None
    except RecursionError:
        raise IRParseError("the IR nests too deeply to parse", where=source) from None
    return module


def _attr_values(op) -> list[tuple[dict, str, Attribute]]:
    """(container, key, value) of every attribute and property of ``op``."""
    found = [(d, k, v) for d in (op.attributes, op.properties) for k, v in d.items()]
    for name in ("arg_attrs", "res_attrs"):
        holder = op.properties.get(name) or op.attributes.get(name)
        if isinstance(holder, ArrayAttr):
            for entry in holder.data:
                if isinstance(entry, DictionaryAttr):
                    found.extend((entry.data, k, v) for k, v in entry.data.items())
    return found


def _repair_strings(module: ModuleOp) -> None:
    """A string holding non-ASCII text *and* an escape lexes as bytes in xDSL 0.74;
    the project never uses a bare BytesAttr as an attribute, so such a value is a
    string that must come back as one (the printer makes this rare, not impossible)."""
    for op in module.walk():
        for container in (op.attributes, op.properties):
            for key, value in list(container.items()):
                fixed = _as_strings(value)
                if fixed is not value:
                    container[key] = fixed


def _as_strings(attr: Attribute) -> Attribute:
    """``attr`` with UTF-8 BytesAttrs (also inside arrays and dictionaries) as strings;
    ``attr`` itself when there are none."""
    if isinstance(attr, BytesAttr):
        try:
            return StringAttr(attr.data.decode("utf-8"))
        except UnicodeDecodeError:
            return attr
    if isinstance(attr, ArrayAttr):
        items = [_as_strings(a) for a in attr.data]
        changed = any(a is not b for a, b in zip(items, attr.data, strict=True))
        return ArrayAttr(items) if changed else attr
    if isinstance(attr, DictionaryAttr):
        entries = {k: _as_strings(v) for k, v in attr.data.items()}
        changed = any(entries[k] is not v for k, v in attr.data.items())
        return DictionaryAttr(entries) if changed else attr
    return attr


def _check_dense(module: ModuleOp, source: str) -> None:
    """A dense hex constant must hold exactly the bytes its type needs (xDSL takes any
    length, and the mismatch would only show when the interpreter reads it)."""
    for op in module.walk():
        for _container, key, value in _attr_values(op):
            if not isinstance(value, DenseIntOrFPElementsAttr):
                continue
            elem = value.get_element_type()
            width = getattr(elem, "bitwidth", None)
            if isinstance(elem, IntegerType) and elem.width.data == 1:
                width = 8  # booleans take a byte each
            if not isinstance(width, int):
                continue
            count = 1
            for dim in value.get_shape():
                count *= dim
            expected = count * ((width + 7) // 8)
            got = len(value.data.data)
            splat = count > 0 and got == (width + 7) // 8
            if got != expected and not splat:
                raise IRParseError(
                    f"constant '{key}' of {op.name} holds {got} bytes, its type needs {expected}",
                    where=source,
                )


def _describe_failure(module: ModuleOp, exc: VerifyException) -> str:
    """Name the innermost op that fails to verify, with its ONNX node name if any."""
    failing = None
    for op in module.walk():
        try:
            op.verify(verify_nested_ops=False)
        except VerifyException:
            failing = op
            break
    message = _first_line(str(exc))
    if failing is None:
        return message
    label = f"'{failing.name}'"
    node = failing.attributes.get("onnx.name")
    if node is not None and hasattr(node, "data"):
        label += f" (node '{node.data}')"
    return f"op {label}: {message}"


def _parse_message(text: str) -> str:
    """xDSL's parse errors are location, source line, caret, message: keep the ends."""
    lines = [line for line in text.strip().splitlines() if line.strip()]
    if len(lines) >= 2:
        return f"{lines[0].strip()}: {lines[-1].strip()}"
    return lines[0] if lines else "parse error"


def _first_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return " | ".join(lines[:3]) if lines else "unknown error"
