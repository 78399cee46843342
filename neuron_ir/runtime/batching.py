"""Dynamic batching: run a model compiled for batch N on any client batch B.

The client batch is cut into ``ceil(B / N)`` chunks along each input's batch axis; the
last chunk is padded to N by repeating its last sample (real data, so the padding
cannot produce NaNs or take a different branch); each chunk runs through one call of
the compiled program; the outputs are joined along their batch axes and the padding
dropped. Inputs without a batch axis go to every chunk unchanged. Outputs without a
batch axis must be identical in every chunk (they cannot depend on the samples);
otherwise the output is named in an error.

The pieces are separate so that other run-time features compose with them: a
bucketed model calls :func:`split` and :func:`join` around its own per-bucket call, and
``run_chunk`` may be any callable taking and returning ``{name: ndarray}`` (one
compiled program, a bucket dispatcher, a pipelined stream).

Whether a batch spec exists, its size and axes come from ``@main``'s attributes
(``neuron.batch``, ``neuron.batch_symbol``, ``neuron.dynamic_batching``) and each
argument's and result's ``onnx.dim_params``, so a saved artifact carries them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from xdsl.dialects.builtin import IntegerAttr, ModuleOp, StringAttr

from ..analysis.report import BATCH_ATTR, BATCH_SYMBOL_ATTR, DYNAMIC_BATCHING_ATTR
from ..errors import BatchError

RunChunk = Callable[[Mapping[str, Any]], Mapping[str, np.ndarray]]


@dataclass(frozen=True)
class BatchSpec:
    """A model's compiled batch and the batch axis of each input and output (None:
    the value has no batch axis)."""

    size: int
    symbol: str
    inputs: dict[str, int | None]
    outputs: dict[str, int | None]
    dynamic: bool = True

    @classmethod
    def from_module(cls, module: ModuleOp) -> BatchSpec | None:
        from passes.rebatch import batch_axes, io_symbols, main_func

        func = main_func(module)
        size = func.attributes.get(BATCH_ATTR)
        symbol = func.attributes.get(BATCH_SYMBOL_ATTR)
        if not isinstance(size, IntegerAttr) or not isinstance(symbol, StringAttr):
            return None
        dynamic = func.attributes.get(DYNAMIC_BATCHING_ATTR)
        names_in = [n for n, _, _ in io_symbols(func)]
        names_out = [n for n, _, _ in io_symbols(func, results=True)]
        return cls(
            int(size.value.data),
            symbol.data,
            dict(zip(names_in, batch_axes(func, symbol.data), strict=True)),
            dict(zip(names_out, batch_axes(func, symbol.data, True), strict=True)),
            not (isinstance(dynamic, IntegerAttr) and not dynamic.value.data),
        )


@dataclass
class Chunks:
    """A client batch cut into compiled-size chunks."""

    client_batch: int
    """0 when no input has a batch axis (one chunk, run as given)."""
    chunks: list[dict[str, Any]]
    compiled: int

    @property
    def padding(self) -> int:
        """Samples of padding in the last chunk."""
        return len(self.chunks) * self.compiled - self.client_batch if self.client_batch else 0


def client_batch(spec: BatchSpec, inputs: Mapping[str, Any]) -> int | None:
    """The batch size of ``inputs`` along their batch axes (None: no batched input
    given), or a BatchError naming the inputs that disagree."""
    sizes: dict[str, int] = {}
    for name, axis in spec.inputs.items():
        if axis is None or name not in inputs:
            continue
        array = np.asarray(inputs[name])
        if array.ndim <= axis:
            raise BatchError(
                f"input '{name}' has rank {array.ndim}, but its batch axis "
                f"('{spec.symbol}') is dim {axis}"
            )
        sizes[name] = int(array.shape[axis])
    if not sizes:
        return None
    if len(set(sizes.values())) > 1:
        listed = ", ".join(f"'{n}' has {b}" for n, b in sizes.items())
        raise BatchError(
            f"inputs disagree on the batch size (batch axis '{spec.symbol}'): {listed}"
        )
    batch = next(iter(sizes.values()))
    if batch == 0:
        raise BatchError(f"input '{next(iter(sizes))}' has an empty batch (size 0)")
    if batch != spec.size and not spec.dynamic:
        name = next(iter(sizes))
        raise BatchError(
            f"input '{name}' has batch size {batch}, but the model was "
            f"compiled for batch {spec.size} and dynamic batching is off"
        )
    return batch


def split(spec: BatchSpec, inputs: Mapping[str, Any]) -> Chunks:
    """Cut ``inputs`` into chunks of the compiled batch, the last padded."""
    batch = client_batch(spec, inputs)
    n = spec.size
    if batch is None:
        return Chunks(0, [dict(inputs)], n)
    chunks = []
    for start in range(0, batch, n):
        chunk: dict[str, Any] = {}
        # The last chunk repeats its last sample to fill the compiled batch.
        index = np.minimum(np.arange(start, start + n), batch - 1)
        for name, value in inputs.items():
            axis = spec.inputs.get(name)
            if axis is None:
                chunk[name] = value
            elif start == 0 and batch == n:
                chunk[name] = value
            else:
                array = np.asarray(value)
                chunk[name] = (
                    array[(slice(None),) * axis + (slice(start, start + n),)]
                    if start + n <= batch
                    else np.take(array, index, axis=axis)
                )
        chunks.append(chunk)
    return Chunks(batch, chunks, n)


def join(
    spec: BatchSpec, chunks: Chunks, results: list[Mapping[str, np.ndarray]]
) -> dict[str, np.ndarray]:
    """Join the chunks' outputs along their batch axes, dropping the padding."""
    if chunks.client_batch == 0 or len(results) == 1 and chunks.client_batch == spec.size:
        return {k: np.asarray(v) for k, v in results[0].items()}
    out: dict[str, np.ndarray] = {}
    n = spec.size
    for name in results[0]:
        axis = spec.outputs.get(name)
        parts = [np.asarray(r[name]) for r in results]
        if axis is None:
            first = parts[0]
            for k, part in enumerate(parts[1:], start=1):
                if part.shape != first.shape or not np.array_equal(
                    part, first, equal_nan=part.dtype.kind in "fc"
                ):
                    raise BatchError(
                        f"output '{name}' has no batch axis but differs between chunk 0 "
                        f"and chunk {k} of the client batch; it depends on the samples, "
                        "so the model cannot be run in chunks (run batches of exactly "
                        f"{n})"
                    )
            out[name] = first
            continue
        # A rebatched model may fold the batch into a leading dim (rows of a Gemm):
        # then each sample owns ``rows`` consecutive entries of that axis.
        sizes = {part.shape[axis] if part.ndim > axis else -1 for part in parts}
        if len(sizes) != 1 or next(iter(sizes)) <= 0 or next(iter(sizes)) % n:
            raise BatchError(
                f"output '{name}' has {sorted(sizes)} along its batch axis "
                f"{axis}, not a multiple of the compiled batch {n}"
            )
        rows = next(iter(sizes)) // n
        joined = np.concatenate(parts, axis=axis) if len(parts) > 1 else parts[0]
        out[name] = joined[(slice(None),) * axis + (slice(0, chunks.client_batch * rows),)]
    return out


def run_batched(
    spec: BatchSpec, run_chunk: RunChunk, inputs: Mapping[str, Any]
) -> dict[str, np.ndarray]:
    """Run ``inputs`` of any client batch through ``run_chunk`` (which takes exactly
    the compiled batch), chunk by chunk."""
    chunks = split(spec, inputs)
    results = [run_chunk(chunk) for chunk in chunks.chunks]
    return join(spec, chunks, results)


__all__ = ["BatchSpec", "Chunks", "RunChunk", "client_batch", "join", "run_batched", "split"]
