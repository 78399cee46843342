#!/usr/bin/env python3
"""Export real Hugging Face architectures (random weights, no downloads) to ONNX.

The models are built from tiny configs (hidden 64, 2 layers) so the files stay
small, but the graphs are exactly what torch.onnx produces for these
architectures, complementing the hand-built neuron_ir.zoo models.

Needs torch + transformers, which the project's own environment does not carry;
use a separate venv:

    python3 -m venv /tmp/venv-export && . /tmp/venv-export/bin/activate
    pip install torch==2.13.0 transformers onnx onnxruntime onnxscript
    python tools/export_models.py --out exported/            # all models
    python tools/export_models.py --out exported/ --only bert bart_decoder_step
    python tools/export_models.py --out exported/ --exporter torchscript --opset 14

``--static-zoo`` needs no torch: it writes static batch-1 versions of zoo models
(``neuron_ir.zoo``), the way an exporter traced at batch 1 leaves them: every input
pinned, every Shape-derived shape folded into a constant by onnxruntime's basic graph
optimizations (constant folding; MatMul+Add become Reshape/Gemm/Reshape over rows that
hard-code the batch of 1). They test ``rebatch``:

    python tools/export_models.py --static-zoo --out tests/models/static

``--big`` instead exports the two benchmark models at full size with the TorchScript
exporter (opset 17), for tools/bench_interpreter.py and tools/bench_compile.py: a
BERT-base (transformers' default BertConfig: hidden 768, 12 layers, 30522 tokens,
~440 MB) and a ResNet-50 (torchvision's layout, written out here; eval mode, so the
exporter folds BatchNorm into Conv, ~100 MB), as DIR/big_bert_base.onnx and
DIR/big_resnet50.onnx. They are far too big for git: write them under /tmp:

    python tools/export_models.py --big --out /tmp/neuron-ir-exported

Writes DIR/hf_<name>.onnx and checks each file with onnx.checker and with
onnxruntime against the PyTorch outputs on an input of a different size from
the one traced with (batch 3, sequence 7), which proves the axes are dynamic.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

VOCAB = 1000
SEQ2SEQ_VOCAB = 500
HIDDEN = 64
LAYERS = 2
HEADS = 4
SEQ2SEQ_HEADS = 2
FFN = 128
MAX_POSITIONS = 128  # the smallest position table among the configs bounds every axis


@dataclass
class Export:
    """A module to export plus how to feed it."""

    module: object  # torch.nn.Module, imported lazily
    input_names: list[str]
    output_names: list[str]
    # name -> {axis: dim name} for every input and output
    dynamic_axes: dict[str, dict[int, str]]
    make_inputs: Callable[[int, int, np.random.Generator], dict[str, np.ndarray]]


def _mask(batch: int, seq: int, rng: np.random.Generator) -> np.ndarray:
    """Right-padded 0/1 mask; row 0 full length, every row has at least one 1."""
    lengths = rng.integers(1, seq + 1, batch)
    lengths[0] = seq
    return (np.arange(seq)[None, :] < lengths[:, None]).astype(np.int64)


def _encoder_export(model, vocab: int, with_token_types: bool, with_pooler: bool) -> Export:
    import torch

    class Encoder(torch.nn.Module):
        """Positional-argument wrapper returning plain tensors (not a ModelOutput)."""

        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask, token_type_ids=None):
            kwargs = {"token_type_ids": token_type_ids} if with_token_types else {}
            out = self.model(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
            if with_pooler:
                return out.last_hidden_state, out.pooler_output
            return out.last_hidden_state

    names = ["input_ids", "attention_mask"] + (["token_type_ids"] if with_token_types else [])
    outputs = ["last_hidden_state"] + (["pooler_output"] if with_pooler else [])
    axes = {n: {0: "batch", 1: "sequence"} for n in names + ["last_hidden_state"]}
    if with_pooler:
        axes["pooler_output"] = {0: "batch"}

    def make_inputs(batch, seq, rng):
        # Ids from 3 up avoid the special tokens (RoBERTa counts positions from pad+1).
        feeds = {
            "input_ids": rng.integers(3, vocab, (batch, seq), dtype=np.int64),
            "attention_mask": _mask(batch, seq, rng),
        }
        if with_token_types:
            feeds["token_type_ids"] = (
                (np.arange(seq)[None, :] >= seq // 2).astype(np.int64).repeat(batch, 0)
            )
        return feeds

    return Export(Encoder().eval(), names, outputs, axes, make_inputs)


def _seq2seq_exports(model, vocab: int, start_id: int) -> tuple[Export, Export]:
    import torch

    class Encoder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.encoder = model.get_encoder()

        def forward(self, input_ids, attention_mask):
            return self.encoder(
                input_ids=input_ids, attention_mask=attention_mask
            ).last_hidden_state

    class DecoderStep(torch.nn.Module):
        """One full-prefix decoder pass + LM head (no KV cache)."""

        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, decoder_input_ids, encoder_hidden_states, encoder_attention_mask):
            hidden = self.model.get_decoder()(
                input_ids=decoder_input_ids,
                encoder_hidden_states=encoder_hidden_states,
                encoder_attention_mask=encoder_attention_mask,
                use_cache=False,
            ).last_hidden_state
            return self.model.lm_head(hidden) + self.model.final_logits_bias

    def encoder_inputs(batch, seq, rng):
        return {
            "input_ids": rng.integers(3, vocab, (batch, seq), dtype=np.int64),
            "attention_mask": _mask(batch, seq, rng),
        }

    def decoder_inputs(batch, seq, rng):
        ids = rng.integers(3, vocab, (batch, seq), dtype=np.int64)
        ids[:, 0] = start_id
        return {
            "decoder_input_ids": ids,
            "encoder_hidden_states": rng.standard_normal(
                (batch, seq + 2, HIDDEN), dtype=np.float32
            ),
            "encoder_attention_mask": _mask(batch, seq + 2, rng),
        }

    encoder = Export(
        Encoder().eval(),
        ["input_ids", "attention_mask"],
        ["last_hidden_state"],
        {
            n: {0: "batch", 1: "src_len"}
            for n in ["input_ids", "attention_mask", "last_hidden_state"]
        },
        encoder_inputs,
    )
    decoder = Export(
        DecoderStep().eval(),
        ["decoder_input_ids", "encoder_hidden_states", "encoder_attention_mask"],
        ["logits"],
        {
            "decoder_input_ids": {0: "batch", 1: "tgt_len"},
            "encoder_hidden_states": {0: "batch", 1: "src_len"},
            "encoder_attention_mask": {0: "batch", 1: "src_len"},
            "logits": {0: "batch", 1: "tgt_len"},
        },
        decoder_inputs,
    )
    return encoder, decoder


def _build_all() -> dict[str, Callable[[], Export]]:
    """name -> factory; each factory seeds torch so weights are reproducible."""
    import torch
    import transformers as tf

    def seeded(factory):
        def make():
            torch.manual_seed(0)
            return factory()

        return make

    common = dict(attn_implementation="eager")

    def bert():
        cfg = tf.BertConfig(
            vocab_size=VOCAB,
            hidden_size=HIDDEN,
            num_hidden_layers=LAYERS,
            num_attention_heads=HEADS,
            intermediate_size=FFN,
            **common,
        )
        return _encoder_export(tf.BertModel(cfg).eval(), VOCAB, True, True)

    def distilbert():
        cfg = tf.DistilBertConfig(
            vocab_size=VOCAB, dim=HIDDEN, n_layers=LAYERS, n_heads=HEADS, hidden_dim=FFN, **common
        )
        return _encoder_export(tf.DistilBertModel(cfg).eval(), VOCAB, False, False)

    def roberta():
        cfg = tf.RobertaConfig(
            vocab_size=VOCAB,
            hidden_size=HIDDEN,
            num_hidden_layers=LAYERS,
            num_attention_heads=HEADS,
            intermediate_size=FFN,
            max_position_embeddings=514,
            **common,
        )
        return _encoder_export(tf.RobertaModel(cfg).eval(), VOCAB, False, True)

    def bart():
        cfg = tf.BartConfig(
            vocab_size=SEQ2SEQ_VOCAB,
            d_model=HIDDEN,
            encoder_layers=LAYERS,
            decoder_layers=LAYERS,
            encoder_attention_heads=SEQ2SEQ_HEADS,
            decoder_attention_heads=SEQ2SEQ_HEADS,
            encoder_ffn_dim=FFN,
            decoder_ffn_dim=FFN,
            max_position_embeddings=MAX_POSITIONS,
            **common,
        )
        model = tf.BartForConditionalGeneration(cfg).eval()
        return _seq2seq_exports(model, SEQ2SEQ_VOCAB, cfg.decoder_start_token_id)

    def marian():
        cfg = tf.MarianConfig(
            vocab_size=SEQ2SEQ_VOCAB,
            d_model=HIDDEN,
            encoder_layers=LAYERS,
            decoder_layers=LAYERS,
            encoder_attention_heads=SEQ2SEQ_HEADS,
            decoder_attention_heads=SEQ2SEQ_HEADS,
            encoder_ffn_dim=FFN,
            decoder_ffn_dim=FFN,
            max_position_embeddings=MAX_POSITIONS,
            pad_token_id=SEQ2SEQ_VOCAB - 1,
            decoder_start_token_id=SEQ2SEQ_VOCAB - 1,
            **common,
        )
        model = tf.MarianMTModel(cfg).eval()
        return _seq2seq_exports(model, SEQ2SEQ_VOCAB - 1, cfg.decoder_start_token_id)

    cached: dict[str, tuple[Export, Export]] = {}

    def half(factory, key, index):
        def make():
            if key not in cached:  # encoder and decoder share one model instance
                cached[key] = seeded(factory)()
            return cached[key][index]

        return make

    return {
        "bert": seeded(bert),
        "distilbert": seeded(distilbert),
        "roberta": seeded(roberta),
        "bart_encoder": half(bart, "bart", 0),
        "bart_decoder_step": half(bart, "bart", 1),
        "marian_encoder": half(marian, "marian", 0),
        "marian_decoder_step": half(marian, "marian", 1),
    }


MODEL_NAMES = [
    "bert",
    "distilbert",
    "roberta",
    "bart_encoder",
    "bart_decoder_step",
    "marian_encoder",
    "marian_decoder_step",
]


def _resnet50():
    """ResNet-50 v1.5 (stride on the 3x3 conv), random weights, eval mode."""
    import torch
    from torch import nn

    class Bottleneck(nn.Module):
        def __init__(self, c_in: int, width: int, stride: int) -> None:
            super().__init__()
            c_out = width * 4
            self.body = nn.Sequential(
                nn.Conv2d(c_in, width, 1, bias=False),
                nn.BatchNorm2d(width),
                nn.ReLU(),
                nn.Conv2d(width, width, 3, stride, 1, bias=False),
                nn.BatchNorm2d(width),
                nn.ReLU(),
                nn.Conv2d(width, c_out, 1, bias=False),
                nn.BatchNorm2d(c_out),
            )
            self.down = None
            if stride != 1 or c_in != c_out:
                self.down = nn.Sequential(
                    nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out)
                )

        def forward(self, x):
            identity = x if self.down is None else self.down(x)
            return torch.relu(self.body(x) + identity)

    layers = [
        nn.Conv2d(3, 64, 7, 2, 3, bias=False),
        nn.BatchNorm2d(64),
        nn.ReLU(),
        nn.MaxPool2d(3, 2, 1),
    ]
    c_in = 64
    for width, blocks, stride in ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)):
        for i in range(blocks):
            layers.append(Bottleneck(c_in, width, stride if i == 0 else 1))
            c_in = width * 4
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2048, 1000)]
    model = nn.Sequential(*layers).eval()
    with torch.no_grad():  # non-trivial running statistics, so folding matters
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.2, 0.6)
    return model


def export_big(out: Path) -> None:
    """BERT-base and ResNet-50 at full size, TorchScript exporter, opset 17."""
    import torch
    import transformers as tf

    torch.manual_seed(0)
    bert = tf.BertModel(tf.BertConfig(attn_implementation="eager")).eval()
    spec = _encoder_export(bert, 30522, True, True)
    start = time.perf_counter()
    path = out / "big_bert_base.onnx"
    export_one(spec, path, "torchscript", 17)
    print(f"{path}  {path.stat().st_size / 1e6:6.1f} MB  {time.perf_counter() - start:.1f} s")
    torch.manual_seed(0)
    model = _resnet50()
    start = time.perf_counter()
    path = out / "big_resnet50.onnx"
    torch.onnx.export(
        model,
        (torch.randn(1, 3, 224, 224),),
        str(path),
        dynamo=False,
        input_names=["input"],
        output_names=["logits"],
        opset_version=17,
        dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
    )
    print(f"{path}  {path.stat().st_size / 1e6:6.1f} MB  {time.perf_counter() - start:.1f} s")


def export_one(spec: Export, path: Path, exporter: str, opset: int | None) -> None:
    import torch

    rng = np.random.default_rng(0)
    feeds = spec.make_inputs(2, 16, rng)
    args = tuple(torch.from_numpy(feeds[n]) for n in spec.input_names)
    names = dict(input_names=spec.input_names, output_names=spec.output_names, opset_version=opset)
    if exporter == "dynamo":
        # One Dim object per axis name, so inputs sharing "batch" are tied together
        # and the ONNX dim_params get these names.
        dims: dict[str, object] = {}
        dynamic_shapes = {
            n: {
                axis: dims.setdefault(d, torch.export.Dim(d, max=MAX_POSITIONS))
                for axis, d in spec.dynamic_axes[n].items()
            }
            for n in spec.input_names
        }
        program = torch.onnx.export(
            spec.module, args, dynamo=True, dynamic_shapes=dynamic_shapes, **names
        )
        program.save(str(path), external_data=False)
    else:
        torch.onnx.export(
            spec.module, args, str(path), dynamo=False, dynamic_axes=spec.dynamic_axes, **names
        )


def verify(spec: Export, path: Path) -> float:
    """checker + onnxruntime vs PyTorch on a new batch/sequence size; max abs error."""
    import onnx
    import onnxruntime as ort
    import torch

    onnx.checker.check_model(str(path), full_check=True)
    feeds = spec.make_inputs(3, 7, np.random.default_rng(1))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(spec.output_names, feeds)
    with torch.no_grad():
        want = spec.module(*(torch.from_numpy(feeds[n]) for n in spec.input_names))
    want = want if isinstance(want, tuple) else (want,)
    worst = 0.0
    for g, w in zip(got, want, strict=True):
        w = w.numpy()
        if g.shape != w.shape or not np.isfinite(g).all():
            raise AssertionError(f"{path.name}: shape {g.shape} vs {w.shape} or non-finite output")
        worst = max(worst, float(np.abs(g - w).max()))
    if worst > 1e-3:
        raise AssertionError(f"{path.name}: onnxruntime differs from PyTorch by {worst}")
    return worst


# zoo model -> the symbolic dims pinned in its static batch-1 version
STATIC_ZOO = {"tiny_resnet": {"N": 1}, "tiny_bert": {"batch": 1, "sequence": 16}}


def export_static_zoo(out: Path) -> None:
    """Static batch-1 versions of zoo models, shape arithmetic folded (see the top)."""
    import onnx
    import onnxruntime as ort

    from neuron_ir import zoo

    out.mkdir(parents=True, exist_ok=True)
    for name, dims in STATIC_ZOO.items():
        model = zoo.build(name)
        for value in list(model.graph.input) + list(model.graph.output):
            for dim in value.type.tensor_type.shape.dim:
                if dim.HasField("dim_param") and dim.dim_param in dims:
                    dim.dim_value = dims[dim.dim_param]
        path = out / f"{name}_b1.onnx"
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        options.optimized_model_filepath = str(path)
        ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        onnx.checker.check_model(onnx.load(str(path)))
        print(f"{path}  {path.stat().st_size / 1e6:6.2f} MB  (onnxruntime {ort.__version__})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", required=True, type=Path, help="output directory")
    parser.add_argument("--only", nargs="+", choices=MODEL_NAMES, metavar="NAME")
    parser.add_argument(
        "--exporter",
        choices=["dynamo", "torchscript"],
        default="dynamo",
        help="torch.onnx exporter: dynamo (torch.export based) or the legacy TorchScript one",
    )
    parser.add_argument("--opset", type=int, default=None, help="opset (exporter default if unset)")
    parser.add_argument(
        "--no-verify", action="store_true", help="skip the checker/onnxruntime check"
    )
    parser.add_argument(
        "--static-zoo",
        action="store_true",
        help="write static batch-1 zoo models instead (no torch needed)",
    )
    parser.add_argument(
        "--big",
        action="store_true",
        help="export full-size BERT-base and ResNet-50 (TorchScript) instead",
    )
    args = parser.parse_args(argv)
    if args.static_zoo:
        export_static_zoo(args.out)
        return 0
    if args.big:
        args.out.mkdir(parents=True, exist_ok=True)
        export_big(args.out)
        return 0

    factories = _build_all()
    args.out.mkdir(parents=True, exist_ok=True)
    failed = []
    for name in args.only or MODEL_NAMES:
        path = args.out / f"hf_{name}.onnx"
        start = time.perf_counter()
        try:
            spec = factories[name]()
            export_one(spec, path, args.exporter, args.opset)
            note = "" if args.no_verify else f"max |ort - torch| {verify(spec, path):.2e}"
        except Exception as exc:  # report every model, then fail at the end
            failed.append(name)
            print(f"{name}: FAILED: {type(exc).__name__}: {exc}", file=sys.stderr)
            continue
        size = path.stat().st_size / 1e6
        print(f"{path}  {size:6.2f} MB  {time.perf_counter() - start:6.1f} s  {note}")
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
