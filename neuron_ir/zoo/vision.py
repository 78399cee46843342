"""Image classifiers: ResNet (basic blocks), ResNeXt (grouped bottlenecks), VGG.

BatchNormalization is kept as its own node (a training-mode-preserving export)
rather than folded into the convolutions, so importers see Conv + BN pairs.
"""

from __future__ import annotations

import math

import numpy as np
import onnx

from . import _nn
from ._graph import FLOAT, GraphBuilder

NUM_CLASSES = 10


def _image_input(b: GraphBuilder, size: int) -> str:
    return b.input("input", FLOAT, ["N", 3, size, size])


def _conv_bn(
    b: GraphBuilder,
    x: str,
    prefix: str,
    conv_name: str,
    bn_name: str,
    cin: int,
    cout: int,
    k: int,
    **kw,
) -> str:
    with b.scope(conv_name):
        x = _nn.conv(b, x, f"{prefix}{conv_name}", cin, cout, k, **kw)
    with b.scope(bn_name):
        return _nn.batch_norm(b, x, f"{prefix}{bn_name}", cout)


def _stem(b: GraphBuilder, x: str, channels: int) -> str:
    """conv1 7x7/2 + bn1 + relu + maxpool 3x3/2, as in torchvision's ResNet."""
    x = _conv_bn(b, x, "", "conv1", "bn1", 3, channels, 7, stride=2, pad=3)
    with b.scope("relu"):
        x = b.op("Relu", x)
    with b.scope("maxpool"):
        return b.op(
            "MaxPool", x, kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[2, 2], ceil_mode=0
        )


def _classifier(b: GraphBuilder, x: str, channels: int, classes: int = NUM_CLASSES) -> str:
    with b.scope("avgpool"):
        x = b.op("GlobalAveragePool", x)
    x = b.op("Flatten", x, axis=1)
    with b.scope("fc"):
        return _nn.gemm(b, x, "fc", channels, classes, std=1.0 / math.sqrt(channels))


def _shortcut(b: GraphBuilder, x: str, prefix: str, cin: int, cout: int, stride: int) -> str:
    """Identity, or the 1x1 (strided) projection + BN when the shape changes."""
    if stride == 1 and cin == cout:
        return x
    with b.scope("downsample"):
        return _conv_bn(b, x, f"{prefix}.downsample.", "0", "1", cin, cout, 1, stride=stride, pad=0)


def _basic_block(b: GraphBuilder, x: str, prefix: str, cin: int, cout: int, stride: int) -> str:
    out = _conv_bn(b, x, f"{prefix}.", "conv1", "bn1", cin, cout, 3, stride=stride)
    with b.scope("relu"):
        out = b.op("Relu", out)
    out = _conv_bn(b, out, f"{prefix}.", "conv2", "bn2", cout, cout, 3)
    out = b.op("Add", out, _shortcut(b, x, prefix, cin, cout, stride))
    with b.scope("relu"):
        return b.op("Relu", out)


def _bottleneck(
    b: GraphBuilder, x: str, prefix: str, cin: int, width: int, cout: int, stride: int, groups: int
) -> str:
    """ResNeXt bottleneck: 1x1 reduce, grouped 3x3 (strided), 1x1 expand."""
    out = _conv_bn(b, x, f"{prefix}.", "conv1", "bn1", cin, width, 1, pad=0)
    with b.scope("relu"):
        out = b.op("Relu", out)
    out = _conv_bn(
        b, out, f"{prefix}.", "conv2", "bn2", width, width, 3, stride=stride, group=groups
    )
    with b.scope("relu"):
        out = b.op("Relu", out)
    out = _conv_bn(b, out, f"{prefix}.", "conv3", "bn3", width, cout, 1, pad=0)
    out = b.op("Add", out, _shortcut(b, x, prefix, cin, cout, stride))
    with b.scope("relu"):
        return b.op("Relu", out)


def build_tiny_resnet(seed: int = 2001) -> onnx.ModelProto:
    """Input [N,3,64,64]; 2 stages of 2 basic blocks (16, 32 channels)."""
    b = GraphBuilder(13, seed)
    x = _stem(b, _image_input(b, 64), 16)
    cin = 16
    for stage, cout in enumerate([16, 32], start=1):
        for block in range(2):
            stride = 2 if stage > 1 and block == 0 else 1
            with b.scope(f"layer{stage}", str(block)):
                x = _basic_block(b, x, f"layer{stage}.{block}", cin, cout, stride)
            cin = cout
    logits = _classifier(b, x, cin)
    b.output(logits, "logits", FLOAT, ["N", NUM_CLASSES])
    return b.model("main_graph", doc="ResNet-style classifier, basic blocks 16/32, random weights")


def build_tiny_resnext(seed: int = 2002) -> onnx.ModelProto:
    """Input [N,3,64,64]; 2 stages of grouped bottlenecks (32x8 -> 64, 64x8 -> 128)."""
    b = GraphBuilder(13, seed)
    x = _stem(b, _image_input(b, 64), 16)
    cin = 16
    stages = [(32, 64, 1), (64, 128, 2)]  # (width, out channels, first stride)
    for stage, (width, cout, first_stride) in enumerate(stages, start=1):
        for block in range(2):
            stride = first_stride if block == 0 else 1
            with b.scope(f"layer{stage}", str(block)):
                x = _bottleneck(b, x, f"layer{stage}.{block}", cin, width, cout, stride, groups=8)
            cin = cout
    logits = _classifier(b, x, cin)
    b.output(logits, "logits", FLOAT, ["N", NUM_CLASSES])
    return b.model("main_graph", doc="ResNeXt-style classifier, cardinality 8, random weights")


def build_resnet50(seed: int = 2004) -> onnx.ModelProto:
    """Full-size ResNet-50 (~25.6M parameters): input [N,3,224,224], 1000 classes.

    torchvision's layout: bottlenecks [3, 4, 6, 3], widths 64..512, expansion 4,
    stride on the 3x3 conv. For benchmarks; too big for the default test set.
    """
    b = GraphBuilder(13, seed)
    x = _stem(b, _image_input(b, 224), 64)
    cin = 64
    for stage, (blocks, width) in enumerate([(3, 64), (4, 128), (6, 256), (3, 512)], start=1):
        for block in range(blocks):
            stride = 2 if stage > 1 and block == 0 else 1
            with b.scope(f"layer{stage}", str(block)):
                x = _bottleneck(
                    b, x, f"layer{stage}.{block}", cin, width, width * 4, stride, groups=1
                )
            cin = width * 4
    logits = _classifier(b, x, cin, classes=1000)
    b.output(logits, "logits", FLOAT, ["N", 1000])
    return b.model("main_graph", doc="ResNet-50, random weights")


def build_tiny_vgg(seed: int = 2003) -> onnx.ModelProto:
    """Input [N,3,32,32]; three 3x3 conv stacks with 2x2 max pooling, then 2 FCs."""
    b = GraphBuilder(11, seed)
    x = _image_input(b, 32)
    cfg = [8, 8, "M", 16, 16, "M", 32, 32, "M"]
    cin = 3
    with b.scope("features"):
        for i, item in enumerate(cfg):
            with b.scope(str(i)):
                if item == "M":
                    x = b.op("MaxPool", x, kernel_shape=[2, 2], pads=[0, 0, 0, 0], strides=[2, 2])
                    continue
                x = _nn.conv(b, x, f"features.{i}", cin, item, 3, bias=True)
                x = b.op("Relu", x)
                cin = item
    x = b.op("Flatten", x, axis=1)
    flat = cin * 4 * 4
    with b.scope("classifier"):
        with b.scope("0"):
            x = _nn.gemm(b, x, "classifier.0", flat, 64, std=math.sqrt(2.0 / flat))
        with b.scope("1"):
            x = b.op("Relu", x)
        with b.scope("3"):
            logits = _nn.gemm(b, x, "classifier.3", 64, NUM_CLASSES, std=1.0 / 8.0)
    b.output(logits, "logits", FLOAT, ["N", NUM_CLASSES])
    return b.model("main_graph", doc="VGG-style classifier, 3 conv stages, random weights")


def example_images(rng: np.random.Generator, batch: int, size: int) -> dict[str, np.ndarray]:
    return {"input": rng.standard_normal((batch, 3, size, size), dtype=np.float32)}
