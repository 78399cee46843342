"""Timing helpers shared by the benchmark tools: medians of repeated runs, paired
alternating timings against a reference, and the big torch exports they read."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import onnx


def median_time(fn: Callable[[], object], repeat: int) -> float:
    fn()  # warm-up: first-touch allocations, lazy initialisation
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def spread(values: list[float]) -> str:
    return f"[{min(values):.2f}..{max(values):.2f}]"


# onnxruntime's intra-op worker spins for ~60 ms after each run (measured here: 56-60 ms
# of process CPU time in a 100-500 ms sleep after a ResNet-50 run; 0.1 ms with
# ``session.intra_op.allow_spinning=0``).  Timed back to back, whatever runs next
# starts with one of the two cores taken, so each timed run starts after a pause.
SETTLE_S = 0.1


def paired(
    ours: Callable[[], object],
    theirs: Callable[[], object],
    repeat: int,
    settle: float = SETTLE_S,
) -> tuple[list[float], list[float]]:
    """Alternating timings (ours, theirs), after one warm-up run of each; each timed
    run starts ``settle`` seconds after the previous one ended."""
    ours()
    theirs()
    a, b = [], []
    for _ in range(repeat):
        time.sleep(settle)
        start = time.perf_counter()
        ours()
        a.append(time.perf_counter() - start)
        time.sleep(settle)
        start = time.perf_counter()
        theirs()
        b.append(time.perf_counter() - start)
    return a, b


def exported_models(folder: Path) -> Iterator[tuple[str, onnx.ModelProto, dict]]:
    """(name, model, feeds) of the big exports in ``folder`` (export_models.py --big)."""
    for path in sorted(folder.glob("big_*.onnx")):
        yield exported_model(path)


def exported_model(path: Path) -> tuple[str, onnx.ModelProto, dict]:
    """(name, model, feeds) of one export: batch 1, dynamic lengths 128, token ids below
    1,000, masks of ones, float inputs standard normal."""
    model = onnx.load(path)
    rng = np.random.default_rng(0)
    feeds = {}
    for value in model.graph.input:
        tt = value.type.tensor_type
        shape = [
            d.dim_value if d.HasField("dim_value") else (1 if i == 0 else 128)
            for i, d in enumerate(tt.shape.dim)
        ]
        if tt.elem_type == onnx.TensorProto.INT64:
            high = 2 if "mask" in value.name or "type" in value.name else 1000
            feeds[value.name] = rng.integers(0, high, shape).astype(np.int64)
            if "mask" in value.name:
                feeds[value.name][:] = 1
        else:
            feeds[value.name] = rng.standard_normal(shape).astype(np.float32)
    return f"{path.stem[4:]} (torchscript export)", model, feeds
