"""Padding and bucketing: which compiled size serves a call, and which sizes to compile.

A bucketed model holds one program per bucket (a size along each bucketed ONNX symbol).
At run time :func:`select_bucket` takes the smallest bucket that fits, inputs carrying
the symbol are padded up to it (:func:`pad_axis`) and outputs carrying it are sliced back
(:func:`slice_axis`).

:func:`choose_boundaries` picks K bucket sizes from a sample of observed sizes so that
the expected time over the sample is least. The DP is exact over the candidates: with
``cost`` non-decreasing in the size (assumption: a bigger padded size never runs faster,
true of the cost model, whose work grows with every dim), an optimal boundary set can
always be moved down onto sample sizes without getting slower, so the sorted distinct
sample sizes are the only candidates needed, and the largest sample is always one.
"""

from __future__ import annotations

import bisect
import os
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from xdsl.dialects.builtin import ModuleOp, StringAttr

from ..errors import NeuronIRError
from . import artifact
from .compiled import CompiledModel
from .timeline import Timeline


class BucketError(NeuronIRError):
    """A size no bucket can serve, or a bad bucket specification."""


def check_boundaries(symbol: str, boundaries: Sequence[int]) -> list[int]:
    """Validated bucket sizes for ``symbol``: positive whole numbers, strictly increasing."""
    sizes = []
    for value in boundaries:
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
            raise BucketError(f"buckets for '{symbol}': {value!r} is not a positive whole number")
        sizes.append(int(value))
    if not sizes:
        raise BucketError(f"buckets for '{symbol}': the list is empty")
    if any(b <= a for a, b in zip(sizes, sizes[1:], strict=False)):
        raise BucketError(f"buckets for '{symbol}': {sizes} is not strictly increasing")
    return sizes


def select_bucket(symbol: str, size: int, boundaries: Sequence[int], where: str = "") -> int:
    """The smallest bucket >= ``size``; an error naming the input when none fits."""
    k = bisect.bisect_left(boundaries, size)
    if k == len(boundaries):
        raise BucketError(
            f"{where or 'input'}: size {size} along '{symbol}' is above the "
            f"largest bucket {boundaries[-1]}"
        )
    return boundaries[k]


def pad_axis(array: np.ndarray, axis: int, size: int, value: float | int = 0) -> np.ndarray:
    """``array`` grown to ``size`` along ``axis`` with ``value`` (no copy if it fits)."""
    have = array.shape[axis]
    if have == size:
        return array
    shape = list(array.shape)
    shape[axis] = size
    out = np.full(shape, value, dtype=array.dtype)
    index = [slice(None)] * array.ndim
    index[axis] = slice(0, have)
    out[tuple(index)] = array
    return out


def slice_axis(array: np.ndarray, axis: int, size: int) -> np.ndarray:
    """The first ``size`` entries of ``array`` along ``axis``."""
    index = [slice(None)] * array.ndim
    index[axis] = slice(0, size)
    return array[tuple(index)]


@dataclass(frozen=True)
class BucketChoice:
    """Chosen boundaries and what they cost over the sample."""

    boundaries: tuple[int, ...]
    expected_time: float  # seconds per call, averaged over the sample
    padding_waste: float  # padded elements / real elements - 1, averaged over the sample


def expected_time(
    sizes: Iterable[int], boundaries: Sequence[int], cost: Callable[[int], float]
) -> float:
    """Mean time per call over ``sizes`` when each runs in its smallest fitting bucket."""
    counts = Counter(int(s) for s in sizes)
    ordered = sorted(boundaries)
    time = sum(n * cost(select_bucket("size", s, ordered)) for s, n in counts.items())
    return time / sum(counts.values())


def padding_waste(sizes: Iterable[int], boundaries: Sequence[int]) -> float:
    """Padded size over real size, minus one, over the whole sample."""
    counts = Counter(int(s) for s in sizes)
    ordered = sorted(boundaries)
    real = sum(s * n for s, n in counts.items())
    padded = sum(select_bucket("size", s, ordered) * n for s, n in counts.items())
    return padded / real - 1.0


def choose_boundaries(
    sizes: Iterable[int],
    k: int,
    cost: Callable[[int], float],
    candidates: Sequence[int] | None = None,
) -> BucketChoice:
    """At most ``k`` boundaries, the largest sample included, minimising the expected
    ``cost`` of the bucket each sample runs in; exact (a DP over sorted candidates).

    ``candidates`` defaults to the distinct sample sizes (see the module docstring for
    why that is enough); a caller may pass fewer to bound how many sizes it prices, and
    the DP is then exact over those (the largest sample is always added).
    """
    counts = Counter(int(s) for s in sizes)
    if not counts:
        raise BucketError("no sizes to choose buckets from")
    if k < 1:
        raise BucketError(f"need at least one bucket, got {k}")
    if min(counts) < 1:
        raise BucketError(f"sizes must be positive, got {min(counts)}")
    top = max(counts)
    points = sorted({int(c) for c in (candidates or counts) if int(c) <= top} | {top})
    # cum[j + 1]: how many samples are <= points[j].
    cum = [0]
    for p in points:
        cum.append(sum(n for s, n in counts.items() if s <= p))
    price = [cost(p) for p in points]
    n, inf = len(points), float("inf")
    k = min(k, n)
    # best[m][j]: least total time of the samples <= points[j] with m buckets, the last
    # ending at points[j]; back[m][j] the previous boundary index (-1: none).
    best = [[inf] * n for _ in range(k + 1)]
    back = [[-1] * n for _ in range(k + 1)]
    for j in range(n):
        best[1][j] = cum[j + 1] * price[j]
    for m in range(2, k + 1):
        for j in range(n):
            for i in range(j):
                if best[m - 1][i] == inf:
                    continue
                value = best[m - 1][i] + (cum[j + 1] - cum[i + 1]) * price[j]
                if value < best[m][j]:
                    best[m][j], back[m][j] = value, i
    m = min(range(1, k + 1), key=lambda mm: (best[mm][n - 1], mm))
    chosen, j = [], n - 1
    while j >= 0 and m >= 1:
        chosen.append(points[j])
        j, m = back[m][j], m - 1
    boundaries = tuple(sorted(chosen))
    return BucketChoice(
        boundaries,
        expected_time(counts.elements(), boundaries, cost),
        padding_waste(counts.elements(), boundaries),
    )


def powers_of_two(top: int, k: int | None = None) -> list[int]:
    """The rule of thumb users reach for, for comparison in reports: powers of two below
    ``top``, then ``top`` itself (a model's position table may end there); with ``k``,
    only the ``k`` largest of them."""
    out, p = [], 1
    while p < top:
        out.append(p)
        p *= 2
    out.append(top)
    return out if k is None else out[-k:]


# ---------------------------------------------------------------------------
# the bucketed model: one program per bucket, dispatched at run time

BUCKET_ATTR = "neuron.bucket"  # on each variant module in a saved artifact


def bucket_label(symbols: Sequence[str], key: Sequence[int]) -> str:
    """``sequence=32`` (``a=2,b=16`` for several symbols)."""
    return ",".join(f"{s}={k}" for s, k in zip(symbols, key, strict=True))


@dataclass(frozen=True)
class BucketAxes:
    """Which axis of each input and output carries each bucketed symbol."""

    inputs: dict[str, dict[str, int]]  # input -> symbol -> axis
    outputs: dict[str, dict[str, int]]

    @classmethod
    def from_module(cls, module: ModuleOp, symbols: Sequence[str]) -> BucketAxes:
        from passes.rebatch import io_symbols, main_func

        func = main_func(module)

        def axes(results: bool) -> dict[str, dict[str, int]]:
            return {
                name: {s: dims.index(s) for s in symbols if s in dims}
                for name, dims, _ in io_symbols(func, results)
            }

        return cls(axes(False), axes(True))


class BucketedModel(CompiledModel):
    """Several compiled programs of one model, one per bucket, run as one: each call
    pads the inputs that carry a bucketed symbol to the smallest bucket that fits and
    slices the outputs that carry it back. The representative ``module`` (report,
    stage report, default timeline) is the largest bucket's."""

    def __init__(
        self,
        variants: dict[tuple[int, ...], CompiledModel],
        symbols: Sequence[str],
        axes: BucketAxes,
        pad_values: Mapping[str, float] | None = None,
        padding_report: Sequence[str] = (),
    ):
        self.variants = dict(sorted(variants.items()))
        self.symbols = list(symbols)
        self.boundaries = {
            s: sorted({k[i] for k in self.variants}) for i, s in enumerate(self.symbols)
        }
        self.axes = axes
        self.pad_values = dict(pad_values or {})
        self.padding_report = list(padding_report)
        # symbol -> label -> (boundaries, expected s/call, padding waste), for "auto:K"
        self.auto_choices: dict[str, dict[str, tuple[list[int], float, float]]] = {}
        self.last_bucket: tuple[int, ...] | None = None
        largest = self.variants[max(self.variants)]
        super().__init__(largest.module, largest.profile, largest.pipeline, largest.replicas)

    def sizes(self, inputs: Mapping[str, Any]) -> dict[str, int]:
        """The size of each bucketed symbol in ``inputs``; inputs that share a symbol
        must agree."""
        found: dict[str, tuple[int, str]] = {}
        for name, by_symbol in self.axes.inputs.items():
            if name not in inputs:
                continue
            array = np.asarray(inputs[name])
            for symbol, axis in by_symbol.items():
                if array.ndim <= axis:
                    raise BucketError(
                        f"input '{name}': rank {array.ndim} has no axis {axis} for '{symbol}'"
                    )
                size = int(array.shape[axis])
                if symbol in found and found[symbol][0] != size:
                    other, first = found[symbol][1], found[symbol][0]
                    raise BucketError(
                        f"inputs '{other}' and '{name}' disagree on '{symbol}': {first} vs {size}"
                    )
                found.setdefault(symbol, (size, name))
        missing = [s for s in self.symbols if s not in found]
        if missing:
            raise BucketError(f"no input carries the bucketed symbol '{missing[0]}'")
        return {s: found[s][0] for s in self.symbols}

    def bucket_for(self, inputs: Mapping[str, Any]) -> tuple[int, ...]:
        """The bucket (one size per symbol) that would serve ``inputs``."""
        sizes = self.sizes(inputs)
        key = []
        for symbol in self.symbols:
            carriers = [n for n, a in self.axes.inputs.items() if symbol in a and n in inputs]
            key.append(
                select_bucket(
                    symbol, sizes[symbol], self.boundaries[symbol], where=f"input '{carriers[0]}'"
                )
            )
        return tuple(key)

    def run(self, inputs: Mapping[str, Any]) -> dict[str, np.ndarray]:
        sizes = self.sizes(inputs)
        key = self.bucket_for(inputs)
        padded = {}
        for name, value in inputs.items():
            array = np.asarray(value)
            for symbol, axis in self.axes.inputs.get(name, {}).items():
                bucket = key[self.symbols.index(symbol)]
                array = pad_axis(array, axis, bucket, self.pad_values.get(name, 0))
            padded[name] = array
        outputs = self.variants[key].run(padded)
        self.last_bucket = key
        return {
            name: _unpad(value, self.axes.outputs.get(name, {}), sizes)
            for name, value in outputs.items()
        }

    def bucket_label(self, key: Sequence[int]) -> str:
        return bucket_label(self.symbols, key)

    def timeline(
        self,
        cpu_flops_per_s: float | None = None,
        requests: int = 1,
        bucket: tuple[int, ...] | None = None,
    ) -> Timeline:
        """The simulated timeline of ``bucket`` (default: the largest)."""
        if bucket is None:
            return super().timeline(cpu_flops_per_s, requests)
        if bucket not in self.variants:
            raise BucketError(
                f"no bucket {self.bucket_label(bucket)}; buckets: "
                + "; ".join(self.bucket_label(k) for k in self.variants)
            )
        return self.variants[bucket].timeline(cpu_flops_per_s, requests)

    def describe_deployment(self) -> str:
        lines = ["buckets:"]
        for key, variant in self.variants.items():
            lines.append(
                f"  {self.bucket_label(key):<24} simulated latency "
                f"{variant.simulated_latency * 1e3:9.3f} ms"
            )
        pads = ", ".join(f"{k}={v:g}" for k, v in self.pad_values.items()) or "0 for all"
        lines.append(f"pad values: {pads}")
        lines.extend(self.padding_report)
        return "\n".join(lines)

    def save(self, path: str | os.PathLike) -> None:
        """One file; weights equal across buckets are stored once (the artifact keeps
        blobs by content)."""
        wrapper = ModuleOp([])
        try:
            for key, variant in self.variants.items():
                variant.module.attributes[BUCKET_ATTR] = StringAttr(self.bucket_label(key))
                wrapper.body.block.add_op(variant.module)
            artifact.write(
                path,
                wrapper,
                {
                    "target": self.target,
                    "pipeline": self.pipeline,
                    "replicas": self.replicas,
                    "batch": self.batch,
                    "inputs": self.input_names,
                    "outputs": self.output_names,
                    "buckets": {
                        "symbols": self.symbols,
                        "keys": [list(k) for k in self.variants],
                        "pad_values": self.pad_values,
                        "axes": {"inputs": self.axes.inputs, "outputs": self.axes.outputs},
                    },
                },
            )
        finally:
            for variant in self.variants.values():
                variant.module.detach()
                variant.module.attributes.pop(BUCKET_ATTR, None)

    @classmethod
    def from_artifact(cls, wrapper: ModuleOp, meta: Mapping[str, Any], where: str) -> BucketedModel:
        spec = meta["buckets"]
        modules = [op for op in wrapper.ops if isinstance(op, ModuleOp)]
        keys = [tuple(int(v) for v in k) for k in spec["keys"]]
        if len(modules) != len(keys):
            raise artifact.ArtifactError(
                f"artifact holds {len(modules)} bucket programs but lists {len(keys)}", where=where
            )
        variants = {}
        for key, module in zip(keys, modules, strict=True):
            module.detach()
            module.attributes.pop(BUCKET_ATTR, None)
            variants[key] = CompiledModel(
                module, meta["target"], meta.get("pipeline"), int(meta.get("replicas", 1))
            )
        axes = BucketAxes(
            {k: dict(v) for k, v in spec["axes"]["inputs"].items()},
            {k: dict(v) for k, v in spec["axes"]["outputs"].items()},
        )
        return cls(variants, spec["symbols"], axes, spec.get("pad_values", {}))


def _unpad(array: np.ndarray, axes: Mapping[str, int], sizes: Mapping[str, int]) -> np.ndarray:
    for symbol, axis in axes.items():
        array = slice_axis(array, axis, sizes[symbol])
    return array
