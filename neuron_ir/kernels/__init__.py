"""Hand-written numpy kernels for ONNX operators, keyed by op type.

A kernel has the signature ``fn(inputs, attrs, n_out) -> list[np.ndarray]``:

* ``inputs``: one entry per ONNX input position; ``None`` where an optional input
  is absent.  Kernels never modify their inputs in place.
* ``attrs``: only the attributes the node sets explicitly, as Python values
  (``int``, ``float``, ``str``, ``list[int]``, ``list[float]``, ``list[str]``,
  ``np.ndarray`` for tensors).  The kernel applies the ONNX defaults itself, for
  the canonical opset (``neuron_ir.CANONICAL_OPSET``).
* ``n_out``: how many outputs the node has; the kernel returns that many arrays.

Ops without a kernel here fall back to ``onnx.reference``'s implementation of that
one op (see ``neuron_ir.interp``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

Kernel = Callable[[list["np.ndarray | None"], dict[str, Any], int], list[np.ndarray]]

KERNELS: dict[str, Kernel] = {}


def kernel(*op_types: str) -> Callable[[Kernel], Kernel]:
    """Register ``fn`` as the kernel of each of ``op_types`` (default domain)."""

    def register(fn: Kernel) -> Kernel:
        for op_type in op_types:
            if op_type in KERNELS:
                raise RuntimeError(f"two kernels registered for {op_type}")
            KERNELS[op_type] = fn
        return fn

    return register


def _load_families() -> None:
    # Families register themselves on import; a missing family is a packaging bug.
    from . import nn, tensor  # noqa: F401


_load_families()
