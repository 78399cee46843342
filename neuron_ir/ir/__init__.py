"""The IR layer: text form (print/parse), builders and type helpers, attribute decoding,
dtypes. Everything above builds on it; it imports only the dialects and ``errors``."""

from .text import NeuronPrinter, make_context, parse_ir, print_ir

__all__ = ["NeuronPrinter", "make_context", "parse_ir", "print_ir"]
