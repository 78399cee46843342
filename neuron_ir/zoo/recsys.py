"""A DLRM-style click-through-rate model (dot-product feature interaction)."""

from __future__ import annotations

import math

import numpy as np
import onnx

from . import _nn
from ._graph import FLOAT, INT64, GraphBuilder

DENSE_FEATURES = 13
SPARSE_FEATURES = 8
EMBEDDING_ROWS = 100
EMBEDDING_DIM = 16
BOTTOM_MLP = [DENSE_FEATURES, 32, EMBEDDING_DIM]
TOP_MLP_HIDDEN = [32, 16, 1]


def _mlp(b: GraphBuilder, x: str, name: str, sizes: list[int], last_activation: str) -> str:
    with b.scope(name):
        for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
            with b.scope(str(2 * i)):
                x = _nn.gemm(b, x, f"{name}.{2 * i}", fan_in, fan_out, std=math.sqrt(2.0 / fan_in))
            with b.scope(str(2 * i + 1)):
                is_last = i == len(sizes) - 2
                x = b.op(last_activation if is_last else "Relu", x)
    return x


def build_tiny_dlrm(seed: int = 5001) -> onnx.ModelProto:
    b = GraphBuilder(13, seed)
    dense = b.input("dense", FLOAT, ["batch", DENSE_FEATURES])
    sparse = b.input("sparse", INT64, ["batch", SPARSE_FEATURES])

    bottom = _mlp(b, dense, "bot_l", BOTTOM_MLP, "Relu")  # [B, 16]

    embedded = []
    with b.scope("emb_l"):
        for t in range(SPARSE_FEATURES):
            with b.scope(str(t)):
                table = b.param(
                    f"emb_l.{t}.weight", b.uniform((EMBEDDING_ROWS, EMBEDDING_DIM), -0.1, 0.1)
                )
                # Both ways exporters spell sparse[:, t]: Gather with a scalar index,
                # or a one-column Slice + Squeeze; alternate to cover both.
                if t % 2 == 0:
                    column = b.op("Gather", sparse, b.const(t, np.int64), axis=1)
                else:
                    column = b.squeeze(b.slice(sparse, [t], [t + 1], [1]), [1])
                embedded.append(b.op("Gather", table, column, axis=0))

    with b.scope("interact_features"):
        features = 1 + SPARSE_FEATURES
        batch = b.dim(b.op("Shape", bottom), 0)
        stacked = b.op("Concat", bottom, *embedded, axis=1)
        stacked = b.op("Reshape", stacked, b.dynamic_shape(batch, features, EMBEDDING_DIM))
        gram = b.op("MatMul", stacked, b.op("Transpose", stacked, perm=[0, 2, 1]))  # [B, 9, 9]
        flat = b.op("Reshape", gram, b.dynamic_shape(batch, features * features))
        # Strict upper triangle of the 9x9 Gram matrix, as flat row-major indices.
        rows, cols = np.triu_indices(features, k=1)
        pair_index = b.param("interaction.pair_index", (rows * features + cols).astype(np.int64))
        pairs = b.op("Gather", flat, pair_index, axis=1)  # [B, 36]
        interaction = b.op("Concat", bottom, pairs, axis=1)

    top_in = EMBEDDING_DIM + features * (features - 1) // 2
    ctr = _mlp(b, interaction, "top_l", [top_in, *TOP_MLP_HIDDEN], "Sigmoid")
    b.output(ctr, "ctr", FLOAT, ["batch", 1])
    return b.model(
        "main_graph", doc="DLRM-style CTR model, 8 embedding tables of 100x16, random weights"
    )


def example_inputs(rng: np.random.Generator, batch: int) -> dict[str, np.ndarray]:
    # Dense features are log-transformed counts in DLRM's preprocessing: >= 0.
    dense = np.log1p(rng.exponential(3.0, (batch, DENSE_FEATURES))).astype(np.float32)
    sparse = rng.integers(0, EMBEDDING_ROWS, (batch, SPARSE_FEATURES), dtype=np.int64)
    return {"dense": dense, "sparse": sparse}
