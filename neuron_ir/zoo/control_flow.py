"""Models built around ONNX control flow: greedy decoding Loops and nested Ifs.

The loop bodies read the decoder weights from the outer graph's initializers
(outer-scope capture), as exported TorchScript loops do.
"""

from __future__ import annotations

import numpy as np
import onnx

from ._graph import BOOL, FLOAT, INT64, GraphBuilder

VOCAB = 50
HIDDEN = 16
GREEDY_STEPS = 8
EOS_ID = 0


def _greedy_loop(early_exit: bool, seed: int) -> onnx.ModelProto:
    b = GraphBuilder(13, seed)
    start = b.input("start_token", INT64, [1])
    if early_exit:
        trip_count = b.input("max_len", INT64, [])
    else:
        trip_count = b.param("max_steps", np.array(GREEDY_STEPS, np.int64))
    keep_going = b.param("loop_cond", np.array(True))

    # A one-layer tanh RNN: h' = tanh(E[tok] W_ih + h W_hh + b), logits = h' W_out + b_out.
    embedding = b.param("decoder.embedding.weight", b.normal((VOCAB, HIDDEN), 1.0))
    w_ih = b.param("decoder.rnn.weight_ih_t", b.normal((HIDDEN, HIDDEN), 1.0 / np.sqrt(HIDDEN)))
    w_hh = b.param("decoder.rnn.weight_hh_t", b.normal((HIDDEN, HIDDEN), 1.0 / np.sqrt(HIDDEN)))
    b_h = b.param("decoder.rnn.bias", b.normal((HIDDEN,), 0.1))
    w_out = b.param("decoder.lm_head.weight_t", b.normal((HIDDEN, VOCAB), 1.0 / np.sqrt(HIDDEN)))
    b_out = b.param("decoder.lm_head.bias", b.normal((VOCAB,), 0.1))
    h0 = b.param("decoder.initial_state", np.zeros((1, HIDDEN), np.float32))

    with b.scope("decoder", "Loop"):
        body = b.subgraph()
        body.input("iteration_num", INT64, [])
        cond_in = body.input("cond_in", BOOL, [])
        token_in = body.input("token_in", INT64, [1])
        state_in = body.input("state_in", FLOAT, [1, HIDDEN])

        emb = body.op("Gather", embedding, token_in, axis=0)
        pre = body.op("Add", body.op("MatMul", emb, w_ih), body.op("MatMul", state_in, w_hh))
        state_out = body.op("Tanh", body.op("Add", pre, b_h))
        logits = body.op("Add", body.op("MatMul", state_out, w_out), b_out)
        next_token = body.op("ArgMax", logits, axis=-1, keepdims=0)
        if early_exit:
            is_eos = body.op("Equal", body.squeeze(next_token, [0]), body.const(EOS_ID, np.int64))
            cond_out = body.op("Not", is_eos)
        else:
            cond_out = body.op("Identity", cond_in)
        # A value may not be listed twice among graph outputs, so the scanned copy
        # of the token gets its own Identity.
        token_scan = body.op("Identity", next_token)

        body.output(cond_out, "cond_out", BOOL, [])
        body.output(next_token, "token_out", INT64, [1])
        body.output(state_out, "state_out", FLOAT, [1, HIDDEN])
        body.output(token_scan, "token_scan", INT64, [1])
        body.output(logits, "logits_scan", FLOAT, [1, VOCAB])

        _, _, tokens, step_logits = b.op(
            "Loop", trip_count, keep_going, start, h0, outputs=4, body=body.graph("loop_body")
        )

    steps = "num_steps" if early_exit else GREEDY_STEPS
    b.output(tokens, "tokens", INT64, [steps, 1])
    b.output(step_logits, "step_logits", FLOAT, [steps, 1, VOCAB])
    kind = (
        f"stops at EOS id {EOS_ID} or after max_len steps"
        if early_exit
        else f"runs {GREEDY_STEPS} steps"
    )
    return b.model("main_graph", doc=f"Greedy tanh-RNN decoding in an ONNX Loop; {kind}")


def build_loop_greedy(seed: int = 3001) -> onnx.ModelProto:
    return _greedy_loop(early_exit=False, seed=seed)


def build_loop_early_exit(seed: int = 3002) -> onnx.ModelProto:
    return _greedy_loop(early_exit=True, seed=seed)


def build_if_model(seed: int = 3003) -> onnx.ModelProto:
    """y, z = branch(x) chosen by sum(x) > 0; z of the then-branch comes from a nested If.

    then: y = x * scale + offset;  z = relu(x - scale) if max(x) > 1 else sigmoid(x) * scale
    else: y = tanh(x @ mix);       z = -x * scale
    """
    b = GraphBuilder(13, seed)
    x = b.input("x", FLOAT, [2, 3])
    scale = b.param("scale", b.normal((2, 3), 1.0))
    offset = b.param("offset", b.normal((2, 3), 1.0))
    mix = b.param("mix", b.normal((3, 3), 0.5))

    cond = b.op("Greater", b.reduce_sum(x, None, keepdims=0), b.const(0.0))

    with b.scope("then_branch"):
        then_g = b.subgraph()
        y_then = then_g.op("Add", then_g.op("Mul", x, scale), offset)
        inner_cond = then_g.op(
            "Greater", then_g.reduce("ReduceMax", x, None, keepdims=0), then_g.const(1.0)
        )
        with then_g.scope("inner_then"):
            inner_then = then_g.subgraph()
            inner_then.output(
                inner_then.op("Relu", inner_then.op("Sub", x, scale)), "z_inner_then", FLOAT, [2, 3]
            )
        with then_g.scope("inner_else"):
            inner_else = then_g.subgraph()
            z = inner_else.op("Mul", inner_else.op("Sigmoid", x), scale)
            inner_else.output(z, "z_inner_else", FLOAT, [2, 3])
        z_then = then_g.op(
            "If",
            inner_cond,
            then_branch=inner_then.graph("inner_then_graph"),
            else_branch=inner_else.graph("inner_else_graph"),
        )
        then_g.output(y_then, "y_then", FLOAT, [2, 3])
        then_g.output(z_then, "z_then", FLOAT, [2, 3])

    with b.scope("else_branch"):
        else_g = b.subgraph()
        y_else = else_g.op("Tanh", else_g.op("MatMul", x, mix))
        z_else = else_g.op("Mul", else_g.op("Neg", x), scale)
        else_g.output(y_else, "y_else", FLOAT, [2, 3])
        else_g.output(z_else, "z_else", FLOAT, [2, 3])

    y, z = b.op(
        "If",
        cond,
        outputs=2,
        then_branch=then_g.graph("then_graph"),
        else_branch=else_g.graph("else_graph"),
    )
    b.output(y, "y", FLOAT, [2, 3])
    b.output(z, "z", FLOAT, [2, 3])
    return b.model("main_graph", doc="If on sum(x) > 0 with a nested If in the then-branch")


def if_model_reference(model: onnx.ModelProto, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The if_model computation in numpy, reading the weights from ``model``."""
    w = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    scale, offset, mix = w["scale"], w["offset"], w["mix"]
    if x.sum() > 0:
        y = x * scale + offset
        z = np.maximum(x - scale, 0) if x.max() > 1 else scale / (1 + np.exp(-x))
    else:
        y = np.tanh(x @ mix)
        z = -x * scale
    return y.astype(np.float32), z.astype(np.float32)


def greedy_reference(
    model: onnx.ModelProto, start: int, max_len: int, early_exit: bool
) -> np.ndarray:
    """The tokens the Loop models generate, computed step by step in numpy."""
    w = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    h = w["decoder.initial_state"]
    token = start
    tokens = []
    for _ in range(max_len):
        emb = w["decoder.embedding.weight"][[token]]
        h = np.tanh(
            emb @ w["decoder.rnn.weight_ih_t"]
            + h @ w["decoder.rnn.weight_hh_t"]
            + w["decoder.rnn.bias"]
        )
        logits = h @ w["decoder.lm_head.weight_t"] + w["decoder.lm_head.bias"]
        token = int(np.argmax(logits[0]))
        tokens.append(token)
        if early_exit and token == EOS_ID:
            break
    return np.array(tokens, np.int64).reshape(-1, 1)


def example_loop_inputs(rng: np.random.Generator, early_exit: bool) -> dict[str, np.ndarray]:
    inputs = {"start_token": rng.integers(0, VOCAB, (1,), dtype=np.int64)}
    if early_exit:
        inputs["max_len"] = np.array(12, np.int64)
    return inputs
