"""What is known at compile time about one tensor value (used by every layer above)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

Dim = int | None
Shape = tuple[Dim, ...]


@dataclass(frozen=True)
class TensorInfo:
    """What is known at compile time about one tensor value."""

    dtype: np.dtype | None
    """Element type; None if unknown. Strings are ``np.dtype(object)``."""
    shape: Shape | None
    """None if even the rank is unknown; a None entry is an unknown dim."""
    value: np.ndarray | None = None
    """The value, when it is a compile-time constant."""
    data_dependent: bool = False
    """Some dim depends on runtime data (NonZero, NonMaxSuppression, ...)."""

    @property
    def rank(self) -> int | None:
        return None if self.shape is None else len(self.shape)

    @property
    def is_static(self) -> bool:
        return self.shape is not None and all(d is not None for d in self.shape)

    @staticmethod
    def of_array(array: np.ndarray, *, with_value: bool = True) -> TensorInfo:
        array = np.asarray(array)
        return TensorInfo(array.dtype, tuple(array.shape), array if with_value else None)
