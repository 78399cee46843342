"""Lossless text form of the IR: the context with every project dialect, a printer
that keeps constants bit-exact, and the parser entry point."""

from __future__ import annotations

import io
from dataclasses import dataclass, field

import ml_dtypes
import numpy as np
from xdsl.context import Context
from xdsl.dialects.arith import Arith
from xdsl.dialects.builtin import (
    BFloat16Type,
    Builtin,
    DenseIntOrFPElementsAttr,
    Float16Type,
    Float32Type,
    Float64Type,
    IndexType,
    IntegerType,
    ModuleOp,
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
    return "[" + ", ".join(
        _nest(values[i * step : (i + 1) * step], shape[1:]) for i in range(shape[0])
    ) + "]"


def print_ir(module: ModuleOp, *, elide_constants_over: int | None = None,
             generic: bool = False) -> str:
    """The module's text form; lossless unless ``elide_constants_over`` is set."""
    stream = io.StringIO()
    printer = NeuronPrinter(
        stream=stream, elide_limit=elide_constants_over, print_generic_format=generic
    )
    printer.print_op(module)
    stream.write("\n")
    return stream.getvalue()


def parse_ir(text: str, *, source: str = "<ir>", verify: bool = True) -> ModuleOp:
    """Parse (and verify) IR text produced by :func:`print_ir` or written by hand."""
    try:
        module = Parser(make_context(), text, source).parse_module()
        if verify:
            module.verify()
    except ParseError as exc:
        raise IRParseError(_parse_message(str(exc)), where=source) from None
    except VerifyException as exc:
        raise IRParseError(f"verification failed: {_describe_failure(module, exc)}",
                           where=source) from None
    return module


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
