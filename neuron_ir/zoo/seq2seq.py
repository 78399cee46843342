"""A BART-style encoder-decoder, exported as an encoder and a decoder-step model.

Both models draw their weights from one seeded parameter set, so the decoder's
token embedding matches the encoder's and the two can be chained for
end-to-end generation tests.  The layout follows what ``torch.onnx.export``
produces for Hugging Face BartForConditionalGeneration: post-LN layers, learned
positions offset by 2, attention computed on [batch*heads, len, head_dim] with
shapes derived through Shape/Gather/Unsqueeze/Concat, masks via masked_fill
(Where) with float32's most negative value.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
import onnx

from . import _nn
from ._graph import FLOAT, INT64, GraphBuilder
from .bert import padding_mask


@dataclass(frozen=True)
class Seq2SeqConfig:
    vocab_size: int = 500
    d_model: int = 64
    heads: int = 2
    ffn: int = 128
    encoder_layers: int = 2
    decoder_layers: int = 2
    max_positions: int = 128
    scale_embedding: bool = True
    decoder_start_token_id: int = 2
    opset: int = 14
    seed: int = 6001


CONFIG = Seq2SeqConfig()
POSITION_OFFSET = 2  # BartLearnedPositionalEmbedding reserves two rows
FLOAT32_MIN = float(np.finfo(np.float32).min)
LN_EPS = 1e-5


@functools.lru_cache(maxsize=2)
def _parameters(cfg: Seq2SeqConfig) -> dict[str, np.ndarray]:
    """Every weight of the full model, drawn in a fixed order from ``cfg.seed``."""
    rng = np.random.default_rng(cfg.seed)
    d = cfg.d_model
    params: dict[str, np.ndarray] = {}

    def normal(name: str, shape, std: float = 0.02) -> None:
        arr = rng.standard_normal(shape, dtype=np.float32)
        arr *= np.float32(std)
        params[name] = arr

    def linear(name: str, fan_in: int, fan_out: int) -> None:
        normal(f"{name}.weight", (fan_out, fan_in))
        normal(f"{name}.bias", (fan_out,))

    def layer_norm(name: str) -> None:
        normal(f"{name}.weight", (d,))
        params[f"{name}.weight"] += np.float32(1.0)
        normal(f"{name}.bias", (d,))

    normal("model.shared.weight", (cfg.vocab_size, d))
    for side, layers in (("encoder", cfg.encoder_layers), ("decoder", cfg.decoder_layers)):
        normal(f"model.{side}.embed_positions.weight", (cfg.max_positions + POSITION_OFFSET, d))
        layer_norm(f"model.{side}.layernorm_embedding")
        for i in range(layers):
            p = f"model.{side}.layers.{i}"
            attentions = ["self_attn"] + (["encoder_attn"] if side == "decoder" else [])
            for attn in attentions:
                for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
                    linear(f"{p}.{attn}.{proj}", d, d)
                layer_norm(f"{p}.{attn}_layer_norm")
            linear(f"{p}.fc1", d, cfg.ffn)
            linear(f"{p}.fc2", cfg.ffn, d)
            layer_norm(f"{p}.final_layer_norm")
    normal("final_logits_bias", (1, cfg.vocab_size))
    for arr in params.values():
        arr.flags.writeable = False  # shared through the cache
    return params


class _Seq2SeqGraph:
    """Helpers that build one side (encoder or decoder step) of the model."""

    def __init__(self, cfg: Seq2SeqConfig) -> None:
        self.cfg = cfg
        self.params = _parameters(cfg)
        self.b = GraphBuilder(cfg.opset, cfg.seed)

    def linear(self, x: str, prefix: str, fan_in: int, fan_out: int) -> str:
        return _nn.linear(
            self.b,
            x,
            prefix,
            fan_in,
            fan_out,
            weight=self.params[f"{prefix}.weight"],
            bias=self.params[f"{prefix}.bias"],
        )

    def layer_norm(self, x: str, prefix: str) -> str:
        params = (self.params[f"{prefix}.weight"], self.params[f"{prefix}.bias"])
        return _nn.layer_norm(self.b, x, prefix, self.cfg.d_model, eps=LN_EPS, params=params)

    def padding_bias(self, mask: str) -> str:
        """_expand_mask: [B, S] 0/1 -> [B, 1, 1, S] additive bias (0 or float32 min)."""
        b = self.b
        inverted = b.op("Sub", b.const(1.0), b.op("Cast", b.unsqueeze(mask, [1, 2]), to=FLOAT))
        return b.op(
            "Where",
            b.op("Cast", inverted, to=onnx.TensorProto.BOOL),
            b.const(FLOAT32_MIN),
            inverted,
        )

    def embed(self, ids: str, side: str) -> str:
        b, cfg = self.b, self.cfg
        shared = b.param("model.shared.weight", self.params["model.shared.weight"])
        with b.scope("embed_tokens"):
            x = b.op("Gather", shared, ids)
        if cfg.scale_embedding:
            x = b.op("Mul", x, b.const(math.sqrt(cfg.d_model)))
        with b.scope("embed_positions"):
            seq_len = b.dim(b.op("Shape", ids), 1)
            positions = b.op("Range", b.const(0, np.int64), seq_len, b.const(1, np.int64))
            positions = b.op("Add", positions, b.const(POSITION_OFFSET, np.int64))
            table_name = f"model.{side}.embed_positions.weight"
            table = b.param(table_name, self.params[table_name])
            pos = b.op("Gather", table, positions)
        x = b.op("Add", x, pos)
        with b.scope("layernorm_embedding"):
            return self.layer_norm(x, f"model.{side}.layernorm_embedding")

    def attention(self, hidden: str, kv: str, bias: str, prefix: str) -> str:
        """BartAttention: heads folded into the batch for 3-D MatMuls."""
        b, cfg = self.b, self.cfg
        d, heads = cfg.d_model, cfg.heads
        head_dim = d // heads
        shape = b.op("Shape", hidden)
        bsz, tgt_len = b.dim(shape, 0), b.dim(shape, 1)
        bsz_heads = b.op("Mul", bsz, b.const(heads, np.int64))

        with b.scope("q_proj"):
            q = self.linear(hidden, f"{prefix}.q_proj", d, d)
        q = b.op("Mul", q, b.const(head_dim**-0.5))
        with b.scope("k_proj"):
            k = self.linear(kv, f"{prefix}.k_proj", d, d)
        with b.scope("v_proj"):
            v = self.linear(kv, f"{prefix}.v_proj", d, d)

        def fold_heads(t: str) -> str:  # [B, L, D] -> [B*H, L, d]
            t = b.op("Reshape", t, b.dynamic_shape(bsz, -1, heads, head_dim))
            t = b.op("Transpose", t, perm=[0, 2, 1, 3])
            return b.op("Reshape", t, b.dynamic_shape(bsz_heads, -1, head_dim))

        q, k, v = fold_heads(q), fold_heads(k), fold_heads(v)
        scores = b.op("MatMul", q, b.op("Transpose", k, perm=[0, 2, 1]))  # [B*H, T, S]
        scores = b.op("Reshape", scores, b.dynamic_shape(bsz, heads, tgt_len, -1))
        scores = b.op("Add", scores, bias)
        scores = b.op("Reshape", scores, b.dynamic_shape(bsz_heads, tgt_len, -1))
        probs = b.op("Softmax", scores, axis=-1)
        context = b.op("MatMul", probs, v)  # [B*H, T, d]
        context = b.op("Reshape", context, b.dynamic_shape(bsz, heads, tgt_len, head_dim))
        context = b.op("Transpose", context, perm=[0, 2, 1, 3])
        context = b.op("Reshape", context, b.dynamic_shape(bsz, tgt_len, d))
        with b.scope("out_proj"):
            return self.linear(context, f"{prefix}.out_proj", d, d)

    def residual_block(self, x: str, sublayer_out: str, ln_scope: str, ln_prefix: str) -> str:
        """Post-LN: LayerNorm(residual + sublayer(x))."""
        b = self.b
        added = b.op("Add", x, sublayer_out)
        with b.scope(ln_scope):
            return self.layer_norm(added, ln_prefix)

    def feed_forward(self, x: str, prefix: str) -> str:
        b, cfg = self.b, self.cfg
        with b.scope("fc1"):
            h = self.linear(x, f"{prefix}.fc1", cfg.d_model, cfg.ffn)
        with b.scope("activation_fn"):
            h = _nn.gelu_erf(b, h)
        with b.scope("fc2"):
            return self.linear(h, f"{prefix}.fc2", cfg.ffn, cfg.d_model)


def build_encoder(cfg: Seq2SeqConfig = CONFIG) -> onnx.ModelProto:
    g = _Seq2SeqGraph(cfg)
    b = g.b
    input_ids = b.input("input_ids", INT64, ["batch", "src_len"])
    attention_mask = b.input("attention_mask", INT64, ["batch", "src_len"])
    with b.scope("model", "encoder"):
        bias = g.padding_bias(attention_mask)
        h = g.embed(input_ids, "encoder")
        for i in range(cfg.encoder_layers):
            p = f"model.encoder.layers.{i}"
            with b.scope(f"layers.{i}"):
                with b.scope("self_attn"):
                    attn = g.attention(h, h, bias, f"{p}.self_attn")
                h = g.residual_block(h, attn, "self_attn_layer_norm", f"{p}.self_attn_layer_norm")
                h = g.residual_block(
                    h, g.feed_forward(h, p), "final_layer_norm", f"{p}.final_layer_norm"
                )
    b.output(h, "last_hidden_state", FLOAT, ["batch", "src_len", cfg.d_model])
    return b.model("main_graph", doc="BART-style encoder, d_model 64, 2 layers, random weights")


def build_decoder_step(cfg: Seq2SeqConfig = CONFIG) -> onnx.ModelProto:
    """Full-prefix decoder step (no KV cache): logits for every target position."""
    g = _Seq2SeqGraph(cfg)
    b = g.b
    ids = b.input("decoder_input_ids", INT64, ["batch", "tgt_len"])
    enc = b.input("encoder_hidden_states", FLOAT, ["batch", "src_len", cfg.d_model])
    enc_mask = b.input("encoder_attention_mask", INT64, ["batch", "src_len"])

    with b.scope("model", "decoder"):
        causal = _causal_bias(b, ids)
        cross_bias = g.padding_bias(enc_mask)
        h = g.embed(ids, "decoder")
        for i in range(cfg.decoder_layers):
            p = f"model.decoder.layers.{i}"
            with b.scope(f"layers.{i}"):
                with b.scope("self_attn"):
                    attn = g.attention(h, h, causal, f"{p}.self_attn")
                h = g.residual_block(h, attn, "self_attn_layer_norm", f"{p}.self_attn_layer_norm")
                with b.scope("encoder_attn"):
                    attn = g.attention(h, enc, cross_bias, f"{p}.encoder_attn")
                h = g.residual_block(
                    h, attn, "encoder_attn_layer_norm", f"{p}.encoder_attn_layer_norm"
                )
                h = g.residual_block(
                    h, g.feed_forward(h, p), "final_layer_norm", f"{p}.final_layer_norm"
                )

    with b.scope("lm_head"):
        # The LM head is tied to the shared embedding; the exporter folds its
        # transpose into a separate [d_model, vocab] initializer.
        lm_weight = b.param("lm_head.weight_t", g.params["model.shared.weight"].T)
        logits = b.op("MatMul", h, lm_weight)
    logits = b.op("Add", logits, b.param("final_logits_bias", g.params["final_logits_bias"]))
    b.output(logits, "logits", FLOAT, ["batch", "tgt_len", cfg.vocab_size])
    return b.model(
        "main_graph", doc="BART-style decoder step (full prefix), LM head, random weights"
    )


def _causal_bias(b: GraphBuilder, ids: str) -> str:
    """_make_causal_mask: [1, 1, T, T], 0 on and below the diagonal, float32 min above.

    mask = full((T, T), min); mask.masked_fill_(arange(T) < (arange(T) + 1).view(T, 1), 0)
    """
    with b.scope("causal_mask"):
        tgt_len = b.dim(b.op("Shape", ids), 1)
        full = b.op(
            "ConstantOfShape",
            b.dynamic_shape(tgt_len, tgt_len),
            value=onnx.numpy_helper.from_array(np.array([FLOAT32_MIN], np.float32)),
        )
        steps = b.op("Range", b.const(0, np.int64), tgt_len, b.const(1, np.int64))
        rows = b.unsqueeze(b.op("Add", steps, b.const(1, np.int64)), [1])  # [T, 1]
        visible = b.op("Less", steps, rows)  # [T, T]: column <= row
        mask = b.op("Where", visible, b.const(0.0), full)
        return b.unsqueeze(mask, [0, 1])


def build_tiny_seq2seq_encoder() -> onnx.ModelProto:
    return build_encoder(CONFIG)


def build_tiny_seq2seq_decoder_step() -> onnx.ModelProto:
    return build_decoder_step(CONFIG)


def example_encoder_inputs(
    rng: np.random.Generator, batch: int, seq: int, cfg: Seq2SeqConfig = CONFIG
):
    return {
        "input_ids": rng.integers(0, cfg.vocab_size, (batch, seq), dtype=np.int64),
        "attention_mask": padding_mask(rng, batch, seq),
    }


def example_decoder_inputs(
    rng: np.random.Generator, batch: int, seq: int, cfg: Seq2SeqConfig = CONFIG
):
    ids = rng.integers(0, cfg.vocab_size, (batch, seq), dtype=np.int64)
    ids[:, 0] = cfg.decoder_start_token_id
    return {
        "decoder_input_ids": ids,
        "encoder_hidden_states": rng.standard_normal((batch, seq, cfg.d_model), dtype=np.float32),
        "encoder_attention_mask": padding_mask(rng, batch, seq),
    }
