"""BERT encoders laid out the way ``torch.onnx.export`` emits Hugging Face BertModel.

One parameterised generator makes both ``tiny_bert`` (decomposed LayerNorm,
opset 14, ~0.5 MB) and ``bert_base`` (fused LayerNormalization, opset 17,
~110M parameters).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import onnx

from . import _nn
from ._graph import FLOAT, INT64, GraphBuilder


@dataclass(frozen=True)
class BertConfig:
    vocab_size: int = 1000
    hidden: int = 64
    layers: int = 2
    heads: int = 4
    intermediate: int = 128
    max_positions: int = 512
    type_vocab_size: int = 2
    fused_layer_norm: bool = False
    opset: int = 14
    seed: int = 1001


TINY_BERT = BertConfig()
BERT_BASE = BertConfig(
    vocab_size=30522,
    hidden=768,
    layers=12,
    heads=12,
    intermediate=3072,
    fused_layer_norm=True,
    opset=17,
    seed=1002,
)

# Hugging Face's BertModel of the exporter era filled masked positions with this.
MASK_FILL = -10000.0


def build_bert(config: BertConfig = TINY_BERT, **overrides) -> onnx.ModelProto:
    """A BertModel graph; keyword overrides replace fields of ``config``."""
    cfg = replace(config, **overrides)
    if cfg.hidden % cfg.heads:
        raise ValueError("hidden must be a multiple of heads")
    b = GraphBuilder(cfg.opset, cfg.seed)
    dims = ["batch", "sequence"]
    input_ids = b.input("input_ids", INT64, dims)
    attention_mask = b.input("attention_mask", INT64, dims)
    token_type_ids = b.input("token_type_ids", INT64, dims)

    def layer_norm(x: str, prefix: str) -> str:
        with b.scope("LayerNorm"):
            return _nn.layer_norm(b, x, prefix, cfg.hidden, eps=1e-12, fused=cfg.fused_layer_norm)

    # get_extended_attention_mask: [B, S] -> [B, 1, 1, S], 0 keep / -10000 drop.
    extended = b.unsqueeze(b.unsqueeze(attention_mask, [1]), [2])
    extended = b.op("Cast", extended, to=FLOAT)
    extended = b.op("Sub", b.const(1.0), extended)
    mask_bias = b.op("Mul", extended, b.const(MASK_FILL))

    with b.scope("embeddings"):
        hidden = _embeddings(b, cfg, input_ids, token_type_ids, layer_norm)
    with b.scope("encoder"):
        for i in range(cfg.layers):
            with b.scope(f"layer.{i}"):
                hidden = _encoder_layer(b, cfg, hidden, mask_bias, f"encoder.layer.{i}", layer_norm)
    last_hidden = hidden

    with b.scope("pooler"):
        first_token = b.op("Gather", last_hidden, b.const(0, np.int64), axis=1)
        with b.scope("dense"):
            pooled = _nn.gemm(b, first_token, "pooler.dense", cfg.hidden, cfg.hidden, std=0.02)
        with b.scope("activation"):
            pooled = b.op("Tanh", pooled)

    b.output(last_hidden, "last_hidden_state", FLOAT, ["batch", "sequence", cfg.hidden])
    b.output(pooled, "pooler_output", FLOAT, ["batch", cfg.hidden])
    return b.model(
        "main_graph",
        doc=f"BERT encoder, hidden {cfg.hidden}, {cfg.layers} layers, {cfg.heads} heads, "
        "random weights",
    )


def _embeddings(
    b: GraphBuilder, cfg: BertConfig, input_ids: str, token_type_ids: str, layer_norm
) -> str:
    word = b.param(
        "embeddings.word_embeddings.weight", b.normal((cfg.vocab_size, cfg.hidden), 0.02)
    )
    position = b.param(
        "embeddings.position_embeddings.weight", b.normal((cfg.max_positions, cfg.hidden), 0.02)
    )
    token_type = b.param(
        "embeddings.token_type_embeddings.weight", b.normal((cfg.type_vocab_size, cfg.hidden), 0.02)
    )
    # The registered buffer position_ids[1, max_positions], sliced to the
    # current length: position_ids[:, 0:seq_len] with seq_len = input_ids.size(1).
    position_buffer = b.param(
        "embeddings.position_ids", np.arange(cfg.max_positions, dtype=np.int64)[None, :]
    )
    seq_len = b.dim(b.op("Shape", input_ids), 1)
    position_ids = b.op(
        "Slice", position_buffer, b.ints(0), b.unsqueeze(seq_len, [0]), b.ints(1), b.ints(1)
    )

    with b.scope("word_embeddings"):
        embeddings = b.op("Gather", word, input_ids)
    with b.scope("token_type_embeddings"):
        type_embeddings = b.op("Gather", token_type, token_type_ids)
    embeddings = b.op("Add", embeddings, type_embeddings)
    with b.scope("position_embeddings"):
        position_embeddings = b.op("Gather", position, position_ids)
    embeddings = b.op("Add", embeddings, position_embeddings)
    return layer_norm(embeddings, "embeddings.LayerNorm")


def _encoder_layer(
    b: GraphBuilder, cfg: BertConfig, x: str, mask_bias: str, prefix: str, layer_norm
) -> str:
    h = cfg.hidden
    with b.scope("attention"):
        with b.scope("self"):
            context = _self_attention(b, cfg, x, mask_bias, f"{prefix}.attention.self")
        with b.scope("output"):
            with b.scope("dense"):
                attn_out = _nn.linear(b, context, f"{prefix}.attention.output.dense", h, h)
            attn_out = layer_norm(b.op("Add", attn_out, x), f"{prefix}.attention.output.LayerNorm")
    with b.scope("intermediate"):
        with b.scope("dense"):
            inter = _nn.linear(b, attn_out, f"{prefix}.intermediate.dense", h, cfg.intermediate)
        with b.scope("intermediate_act_fn"):
            inter = _nn.gelu_erf(b, inter)
    with b.scope("output"):
        with b.scope("dense"):
            out = _nn.linear(b, inter, f"{prefix}.output.dense", cfg.intermediate, h)
        return layer_norm(b.op("Add", out, attn_out), f"{prefix}.output.LayerNorm")


def _split_heads(b: GraphBuilder, cfg: BertConfig, x: str, perm: list[int]) -> str:
    """transpose_for_scores: view(B, S, heads, head_dim) then permute."""
    shape = b.op("Shape", x)
    new_shape = b.dynamic_shape(
        b.dim(shape, 0), b.dim(shape, 1), cfg.heads, cfg.hidden // cfg.heads
    )
    return b.op("Transpose", b.op("Reshape", x, new_shape), perm=perm)


def _self_attention(b: GraphBuilder, cfg: BertConfig, x: str, mask_bias: str, prefix: str) -> str:
    h = cfg.hidden
    head_dim = h // cfg.heads
    with b.scope("query"):
        q = _nn.linear(b, x, f"{prefix}.query", h, h)
    with b.scope("key"):
        k = _nn.linear(b, x, f"{prefix}.key", h, h)
    with b.scope("value"):
        v = _nn.linear(b, x, f"{prefix}.value", h, h)
    q = _split_heads(b, cfg, q, [0, 2, 1, 3])
    # key.transpose(-1, -2) after the head permute folds into one Transpose.
    k_t = _split_heads(b, cfg, k, [0, 2, 3, 1])
    v = _split_heads(b, cfg, v, [0, 2, 1, 3])

    scores = b.op("Div", b.op("MatMul", q, k_t), b.const(math.sqrt(head_dim)))
    probs = b.op("Softmax", b.op("Add", scores, mask_bias), axis=-1)
    context = b.op("Transpose", b.op("MatMul", probs, v), perm=[0, 2, 1, 3])
    shape = b.op("Shape", context)
    merged = b.dynamic_shape(b.dim(shape, 0), b.dim(shape, 1), h)
    return b.op("Reshape", context, merged)


def build_tiny_bert(**overrides) -> onnx.ModelProto:
    return build_bert(TINY_BERT, **overrides)


def build_bert_base(**overrides) -> onnx.ModelProto:
    return build_bert(BERT_BASE, **overrides)


def example_inputs(
    cfg: BertConfig, rng: np.random.Generator, batch: int, seq: int
) -> dict[str, np.ndarray]:
    """Token ids in range, right-padded masks, segment A/B token types."""
    input_ids = rng.integers(0, cfg.vocab_size, (batch, seq), dtype=np.int64)
    mask = padding_mask(rng, batch, seq)
    split = rng.integers(1, seq + 1, (batch, 1))
    token_type_ids = ((np.arange(seq)[None, :] >= split) & (mask == 1)).astype(np.int64)
    return {"input_ids": input_ids, "attention_mask": mask, "token_type_ids": token_type_ids}


def padding_mask(rng: np.random.Generator, batch: int, seq: int) -> np.ndarray:
    """Right-padded 0/1 int64 mask; row 0 is full length, every row keeps >= 1."""
    lengths = rng.integers(1, seq + 1, batch)
    lengths[0] = seq
    return (np.arange(seq)[None, :] < lengths[:, None]).astype(np.int64)
