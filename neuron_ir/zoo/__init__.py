"""A deterministic zoo of small ONNX models with real architectures and random weights.

Every model is generated with ``onnx.helper`` from a fixed seed, so the same call
always yields a byte-identical ``ModelProto``.  The graphs imitate what exporters
emit (node names after module paths, Shape-derived reshapes, decomposed
LayerNorm, ...) so that they exercise an importer the way real models do.

``MODELS``             name -> builder for the default (small) set
``LARGE_MODELS``       name -> builder for models too big for the default set
``build(name, **kw)``  build any of them; ``kw`` is passed to the builder
``example_inputs(name, batch=2, seq=16, seed=0)``  valid feeds for a model
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

import numpy as np
import onnx

from . import bert, control_flow, detection, exporters, recsys, seq2seq, vision

Builder = Callable[..., onnx.ModelProto]

MODELS: OrderedDict[str, Builder] = OrderedDict(
    [
        ("tiny_bert", bert.build_tiny_bert),
        ("tiny_resnet", vision.build_tiny_resnet),
        ("tiny_resnext", vision.build_tiny_resnext),
        ("tiny_vgg", vision.build_tiny_vgg),
        ("loop_greedy", control_flow.build_loop_greedy),
        ("loop_early_exit", control_flow.build_loop_early_exit),
        ("if_model", control_flow.build_if_model),
        ("tiny_yolo", detection.build_tiny_yolo),
        ("tiny_ssd", detection.build_tiny_ssd),
        ("tiny_dlrm", recsys.build_tiny_dlrm),
        ("tiny_seq2seq_encoder", seq2seq.build_tiny_seq2seq_encoder),
        ("tiny_seq2seq_decoder_step", seq2seq.build_tiny_seq2seq_decoder_step),
        # The three exporter patterns of issue 9 (see exporters.py).
        ("yolov5_detect", exporters.build_yolov5_detect),
        ("ssd_vgg", exporters.build_ssd_vgg),
        ("dlrm_bag", exporters.build_dlrm_bag),
    ]
)

# BERT-base (~110M parameters, ~440 MB) and ResNet-50 (~25.6M, ~100 MB): built on request.
LARGE_MODELS: OrderedDict[str, Builder] = OrderedDict(
    [("bert_base", bert.build_bert_base), ("resnet50", vision.build_resnet50)]
)

InputMaker = Callable[[np.random.Generator, int, int], dict[str, np.ndarray]]

_INPUTS: dict[str, InputMaker] = {
    "tiny_bert": lambda rng, batch, seq: bert.example_inputs(bert.TINY_BERT, rng, batch, seq),
    "bert_base": lambda rng, batch, seq: bert.example_inputs(bert.BERT_BASE, rng, batch, seq),
    "tiny_resnet": lambda rng, batch, seq: vision.example_images(rng, batch, 64),
    "resnet50": lambda rng, batch, seq: vision.example_images(rng, batch, 224),
    "tiny_resnext": lambda rng, batch, seq: vision.example_images(rng, batch, 64),
    "tiny_vgg": lambda rng, batch, seq: vision.example_images(rng, batch, 32),
    "loop_greedy": lambda rng, batch, seq: control_flow.example_loop_inputs(rng, early_exit=False),
    "loop_early_exit": lambda rng, batch, seq: control_flow.example_loop_inputs(
        rng, early_exit=True
    ),
    "if_model": lambda rng, batch, seq: {"x": rng.standard_normal((2, 3), dtype=np.float32)},
    "tiny_yolo": lambda rng, batch, seq: detection.example_images(rng, batch),
    # NonMaxSuppression's output layout pins the SSD model to batch 1.
    "tiny_ssd": lambda rng, batch, seq: detection.example_images(rng, 1),
    "tiny_dlrm": lambda rng, batch, seq: recsys.example_inputs(rng, batch),
    "tiny_seq2seq_encoder": lambda rng, batch, seq: seq2seq.example_encoder_inputs(rng, batch, seq),
    "tiny_seq2seq_decoder_step": lambda rng, batch, seq: seq2seq.example_decoder_inputs(
        rng, batch, seq
    ),
    "yolov5_detect": lambda rng, batch, seq: {
        "images": rng.standard_normal((1, 3, 64, 64), dtype=np.float32)
    },
    "ssd_vgg": lambda rng, batch, seq: {
        "images": rng.standard_normal((1, 3, 75, 75), dtype=np.float32)
    },
    "dlrm_bag": lambda rng, batch, seq: exporters.example_bag_inputs(rng, batch),
}


def names(include_large: bool = False) -> list[str]:
    return list(MODELS) + (list(LARGE_MODELS) if include_large else [])


def build(name: str, **kw) -> onnx.ModelProto:
    """Build model ``name`` (from MODELS or LARGE_MODELS)."""
    builder = MODELS.get(name) or LARGE_MODELS.get(name)
    if builder is None:
        raise KeyError(f"unknown zoo model {name!r}; known: {', '.join(names(True))}")
    return builder(**kw)


def example_inputs(
    name: str, batch: int = 2, seq: int = 16, seed: int = 0
) -> dict[str, np.ndarray]:
    """Valid, seeded inputs for ``name``: ids in vocabulary range, 0/1 masks with at
    least one 1 per row, images, etc.  ``batch``/``seq`` fill the symbolic dims;
    models with fixed shapes (if_model, tiny_ssd, the loops) ignore them.
    """
    try:
        maker = _INPUTS[name]
    except KeyError:
        raise KeyError(f"unknown zoo model {name!r}") from None
    return maker(np.random.default_rng(seed), batch, seq)


__all__ = ["MODELS", "LARGE_MODELS", "build", "example_inputs", "names"]
