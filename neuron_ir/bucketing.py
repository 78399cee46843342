"""Bucketed compiles: one program per bucket in one model, padding checked on random
inputs, and bucket boundaries chosen from a sample of observed sizes.

``compile(..., buckets={"sequence": [32, 64, 128]})`` lands here. Each bucket is an
ordinary compile with the bucketed symbols pinned (the cartesian product when several
symbols are bucketed; batch, cores and replicas apply to each). Before the model is
returned, every bucket is checked: random inputs at a size smaller than the bucket run
once padded through the bucket's program and once at their exact size through the
onnx-level interpreter (the reference); an output whose unpadded part differs is named,
and the compile fails unless ``check_padding=False``. ``"auto:K"`` picks K boundaries
that minimise the expected simulated latency over ``size_samples``
(:func:`neuron_ir.runtime.buckets.choose_boundaries`), pricing each candidate size
with the cost model through a real compile at that size.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from xdsl.dialects.builtin import ModuleOp

from .interp import Interpreter
from .ir.util import dtype_of
from .runtime.buckets import (
    BucketAxes,
    BucketChoice,
    BucketedModel,
    BucketError,
    bucket_label,
    check_boundaries,
    choose_boundaries,
    expected_time,
    padding_waste,
    powers_of_two,
)
from .runtime.compiled import CompiledModel

CompileOne = Callable[[ModuleOp, dict[str, int]], CompiledModel]
MAX_CANDIDATES = 24  # sizes priced for "auto:K"; the DP is exact over them


def _candidates(samples: Sequence[int], limit: int) -> list[int]:
    """The distinct sample sizes, thinned to ``limit`` by quantiles when there are more
    (the largest sample always kept)."""
    distinct = sorted(set(samples))
    if len(distinct) <= limit:
        return distinct
    ordered = np.sort(np.asarray(samples))
    picks = {int(ordered[int(q * (len(ordered) - 1))]) for q in np.linspace(0, 1, limit)}
    return sorted(picks | {distinct[-1]})


def auto_boundaries(
    symbol: str,
    k: int,
    samples: Sequence[int],
    price: Callable[[int], float],
    limit: int = MAX_CANDIDATES,
) -> tuple[list[int], dict[str, tuple[list[int], float, float]]]:
    """``k`` boundaries for ``symbol`` from ``samples``, and how they compare: label ->
    (boundaries, expected seconds per call, padding waste) for the choice, padding to the
    maximum, and the ``k`` largest powers of two."""
    if not samples:
        raise BucketError(f"buckets for '{symbol}': auto:{k} needs size_samples")
    if any(isinstance(s, bool) or not isinstance(s, int | np.integer) or s < 1 for s in samples):
        raise BucketError(f"size_samples for '{symbol}' must be positive integers")
    cache: dict[int, float] = {}

    def cost(size: int) -> float:
        if size not in cache:
            cache[size] = price(size)
        return cache[size]

    choice: BucketChoice = choose_boundaries(samples, k, cost, _candidates(samples, limit))
    top = max(samples)
    compared = {}
    for label, bounds in [
        ("chosen", list(choice.boundaries)),
        ("pad to max", [top]),
        (f"{k} powers of two", powers_of_two(top, k)),
    ]:
        compared[label] = (
            bounds,
            expected_time(samples, bounds, cost),
            padding_waste(samples, bounds),
        )
    return list(choice.boundaries), compared


def _random_inputs(
    module: ModuleOp, sizes: Mapping[str, int], axes: BucketAxes, rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """Inputs of the bucket's program with the bucketed axes at ``sizes``. Integers are
    drawn from {0, 1} (valid token ids, masks and segment ids alike)."""
    from passes.rebatch import io_symbols, main_func

    feeds = {}
    for name, _, ttype in io_symbols(main_func(module)):
        shape = list(ttype.get_shape())
        for symbol, axis in axes.inputs.get(name, {}).items():
            shape[axis] = sizes[symbol]
        dtype = dtype_of(ttype.element_type) or np.dtype(np.float32)
        if dtype.kind == "f":
            feeds[name] = rng.standard_normal(shape).astype(dtype)
        elif dtype.kind == "b":
            feeds[name] = rng.integers(0, 2, shape).astype(bool)
        else:
            feeds[name] = rng.integers(0, 2, shape).astype(dtype)
    return feeds


def check_padding(
    model: BucketedModel, reference: ModuleOp, rtol: float = 1e-3, atol: float = 1e-4, seed: int = 0
) -> list[tuple[str, str]]:
    """(bucket, output) pairs whose unpadded part changes when padded: for each bucket,
    random inputs halfway between the previous bucket and it run padded through the
    model and exactly through ``reference`` (the onnx-level module)."""
    rng = np.random.default_rng(seed)
    exact = Interpreter(reference)
    bad = []
    for key in model.variants:
        sizes = {}
        for symbol, size in zip(model.symbols, key, strict=True):
            lower = [b for b in model.boundaries[symbol] if b < size]
            floor = lower[-1] if lower else 0
            sizes[symbol] = max(1, floor + (size - floor + 1) // 2) if size > 1 else 1
            if sizes[symbol] >= size and size > 1:
                sizes[symbol] = size - 1
        if all(sizes[s] == k for s, k in zip(model.symbols, key, strict=True)):
            continue  # a bucket of size 1 is never padded
        feeds = _random_inputs(model.variants[key].module, sizes, model.axes, rng)
        want = exact.run(feeds)
        got = model.run(feeds)
        for name, value in want.items():
            if value.shape != got[name].shape or not np.allclose(
                got[name], value, rtol=rtol, atol=atol, equal_nan=True
            ):
                bad.append((bucket_label(model.symbols, key), name))
    return bad


def compile_bucketed(
    module: ModuleOp,
    buckets: Mapping[str, Any],
    compile_one: CompileOne,
    pad_values: Mapping[str, float] | None = None,
    size_samples: Sequence[int] | Mapping[str, Sequence[int]] | None = None,
    check: bool = True,
) -> BucketedModel:
    """One compile per bucket of ``module`` (an imported, unpinned model), checked."""
    if not isinstance(buckets, Mapping) or not buckets:
        raise BucketError(f"buckets must map ONNX symbols to sizes, not {buckets!r}")
    symbols = list(buckets)
    axes = BucketAxes.from_module(module, symbols)
    for symbol in symbols:
        if not any(symbol in a for a in axes.inputs.values()):
            known = sorted({s for a in axes.inputs.values() for s in a} | _all_symbols(module))
            raise BucketError(
                f"no input has the symbol '{symbol}' (symbols of the inputs: "
                f"{', '.join(known) or 'none'})"
            )
    for name in pad_values or {}:
        if name not in axes.inputs:
            raise BucketError(
                f"pad value for unknown input '{name}' (inputs: {', '.join(axes.inputs)})"
            )
    report: list[str] = []
    boundaries: dict[str, list[int]] = {}
    choices: dict[str, dict[str, tuple[list[int], float, float]]] = {}
    for symbol, spec in buckets.items():
        if isinstance(spec, str) and spec.startswith("auto:"):
            try:
                k = int(spec[5:])
            except ValueError:
                raise BucketError(f"buckets for '{symbol}': {spec!r} is not auto:K") from None
            samples = (
                size_samples.get(symbol) if isinstance(size_samples, Mapping) else size_samples
            )
            boundaries[symbol], compared = auto_boundaries(
                symbol,
                k,
                list(samples or []),
                lambda size, s=symbol: compile_one(module, {s: size}).simulated_latency,
            )
            choices[symbol] = compared
            report.append(
                f"buckets for '{symbol}' chosen from {len(samples or [])} sizes "
                f"(auto:{k}): {boundaries[symbol]}"
            )
            for label, (bounds, seconds, waste) in compared.items():
                report.append(
                    f"  {label:<16} {bounds}: expected {seconds * 1e3:.4g} ms/call,"
                    f" padding waste {waste:.1%}"
                )
        elif isinstance(spec, str):
            raise BucketError(
                f"buckets for '{symbol}': {spec!r} is neither a list of sizes nor auto:K"
            )
        else:
            boundaries[symbol] = check_boundaries(symbol, list(spec))
    variants = {}
    for key in itertools.product(*(boundaries[s] for s in symbols)):
        variants[tuple(key)] = compile_one(module, dict(zip(symbols, key, strict=True)))
    model = BucketedModel(variants, symbols, axes, pad_values, report)
    model.auto_choices = choices
    if check:
        bad = check_padding(model, module)
        if bad:
            named = "; ".join(f"output '{o}' in bucket {b}" for b, o in bad)
            raise BucketError(
                f"padding changes what the caller sees: {named} (an op mixes "
                "padded positions into real ones, e.g. a mean over the "
                "sequence without the mask); pass check_padding=False to "
                "accept it"
            )
        model.padding_report.append(
            f"padding checked on random inputs: every output of {len(variants)} bucket(s) unchanged"
        )
    else:
        model.padding_report.append("padding NOT checked (check_padding=False)")
    return model


def _all_symbols(module: ModuleOp) -> set[str]:
    from passes.rebatch import io_symbols, main_func

    return {s for _, dims, _ in io_symbols(main_func(module)) for s in dims if s}
