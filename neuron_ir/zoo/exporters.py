"""Three graphs in the shapes real exporters emit, which the compiler must take whole:

- ``yolov5_detect``: a YOLOv5 (v7.0 export) backbone of Conv + BN + SiLU (spelled
  Sigmoid * x, as torch.onnx does) and the Detect head, whose sigmoid output is
  ``split((2, 2, nc + 1), 4)`` into xy, wh and confidences: one ``Split`` with
  three used results, decoded with the grid and anchor constants.
- ``ssd_vgg``: SSD300's VGG-16 backbone pattern, scaled down: 3x3 Conv + ReLU blocks,
  ``MaxPool`` with ``ceil_mode=1`` (SSD's pool3, odd feature maps), the 3x3/1 pool5
  with pads, a dilated fc6, L2Norm-style scaling, and location/confidence heads
  flattened and concatenated, with a Softmax over the classes.
- ``dlrm_bag``: a DLRM whose sparse features go through ``nn.EmbeddingBag(mode="sum")``
  with offsets; the TorchScript exporter turns each bag lookup into an ONNX ``Loop``
  over the bags whose body Slices the indices between two offsets (a size read
  from the data), Gathers the table rows and ReduceSums them.
"""

from __future__ import annotations

import math

import numpy as np
import onnx

from . import _nn
from ._graph import BOOL, FLOAT, INT64, GraphBuilder

# ----------------------------------------------------------------- YOLOv5 Detect
V5_CLASSES = 3
V5_ANCHORS = {8: [(10, 13), (16, 30), (33, 23)], 4: [(30, 61), (62, 45), (59, 119)]}
V5_IMAGE = 64


def _conv_bn_silu(
    b: GraphBuilder, x: str, name: str, cin: int, cout: int, k: int, stride: int = 1
) -> str:
    with b.scope(name):
        y = _nn.batch_norm(
            b, _nn.conv(b, x, f"{name}.conv", cin, cout, k, stride=stride), f"{name}.bn", cout
        )
        return b.op("Mul", y, b.op("Sigmoid", y))


def _v5_detect(b: GraphBuilder, feature: str, cin: int, size: int, index: int) -> str:
    outs = 5 + V5_CLASSES
    stride = V5_IMAGE // size
    with b.scope(f"model.24.m.{index}"):
        raw = _nn.conv(b, feature, f"model.24.m.{index}", cin, 3 * outs, 1, bias=True, std=0.01)
    x = b.op("Reshape", raw, b.ints(1, 3, outs, size, size))
    x = b.op("Transpose", x, perm=[0, 1, 3, 4, 2])
    y = b.op("Sigmoid", x)
    xy, wh, conf = b.op("Split", y, b.ints(2, 2, V5_CLASSES + 1), axis=4, outputs=3)
    ys, xs = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
    grid = (np.stack([xs, ys], -1).astype(np.float32) - 0.5)[None, None]
    anchors = np.array(V5_ANCHORS[size], np.float32).reshape(1, 3, 1, 1, 2)
    xy = b.op(
        "Mul",
        b.op("Add", b.op("Mul", xy, b.const(2.0)), b.param(f"grid.{index}", grid)),
        b.const(float(stride)),
    )
    wh = b.op(
        "Mul",
        b.op("Pow", b.op("Mul", wh, b.const(2.0)), b.const(2.0)),
        b.param(f"anchor_grid.{index}", anchors),
    )
    out = b.op("Concat", xy, wh, conf, axis=4)
    return b.op("Reshape", out, b.ints(1, -1, outs))


def build_yolov5_detect(seed: int = 6001) -> onnx.ModelProto:
    """Input [1,3,64,64]; Detect heads at 8x8 and 4x4; output [1, 240, 8]."""
    b = GraphBuilder(13, seed)
    images = b.input("images", FLOAT, [1, 3, V5_IMAGE, V5_IMAGE])
    x = _conv_bn_silu(b, images, "model.0", 3, 8, 3, stride=2)  # 32
    x = _conv_bn_silu(b, x, "model.1", 8, 16, 3, stride=2)  # 16
    p4 = _conv_bn_silu(b, x, "model.2", 16, 32, 3, stride=2)  # 8
    p5 = _conv_bn_silu(b, p4, "model.3", 32, 32, 3, stride=2)  # 4
    heads = [_v5_detect(b, p4, 32, 8, 0), _v5_detect(b, p5, 32, 4, 1)]
    out = b.op("Concat", *heads, axis=1)
    b.output(out, "output0", FLOAT, [1, 3 * (8 * 8 + 4 * 4), 5 + V5_CLASSES])
    return b.model("main_graph", doc="YOLOv5-style Detect head (Split into xy, wh, conf)")


# ------------------------------------------------------------------- SSD / VGG
SSD_IMAGE = 75  # odd sizes make ceil_mode matter: 75 -> 38 -> 19 -> 10
SSD_CLASSES = 3


def build_ssd_vgg(seed: int = 6002) -> onnx.ModelProto:
    """Input [1,3,75,75]; VGG blocks with ceil-mode pools; output boxes and scores."""
    b = GraphBuilder(13, seed)
    images = b.input("images", FLOAT, [1, 3, SSD_IMAGE, SSD_IMAGE])
    x, cin = images, 3
    for i, cout in enumerate([8, 16, 24]):
        with b.scope(f"vgg.{i}"):
            x = b.op("Relu", _nn.conv(b, x, f"vgg.{i}.0", cin, cout, 3, bias=True))
            x = b.op("Relu", _nn.conv(b, x, f"vgg.{i}.1", cout, cout, 3, bias=True))
            # SSD's pool3 uses ceil_mode=True; the other 2x2 pools agree on even sizes.
            x = b.op("MaxPool", x, kernel_shape=[2, 2], strides=[2, 2], ceil_mode=1)
        cin = cout
    conv4 = x  # [1, 24, 10, 10]
    with b.scope("l2norm"):
        norm = b.op(
            "Sqrt", b.op("Add", b.reduce_sum(b.op("Mul", conv4, conv4), [1]), b.const(1e-10))
        )
        scale = b.param("l2norm.weight", np.full((1, cin, 1, 1), 20.0, np.float32))
        source0 = b.op("Mul", b.op("Div", conv4, norm), scale)
    with b.scope("pool5"):
        x = b.op("MaxPool", conv4, kernel_shape=[3, 3], strides=[1, 1], pads=[1, 1, 1, 1])
    with b.scope("fc6"):
        w = b.param("fc6.weight", b.normal((32, cin, 3, 3), math.sqrt(2.0 / (cin * 9))))
        x = b.op(
            "Relu", b.op("Conv", x, w, dilations=[2, 2], pads=[2, 2, 2, 2], kernel_shape=[3, 3])
        )
    with b.scope("extras"):
        source1 = b.op("Relu", _nn.conv(b, x, "extras.0", 32, 32, 3, stride=2, bias=True))
    locs, confs = [], []
    for k, (src, ch) in enumerate(((source0, cin), (source1, 32))):
        for kind, per, out in (("loc", 4, locs), ("conf", SSD_CLASSES, confs)):
            with b.scope(f"{kind}.{k}"):
                y = _nn.conv(b, src, f"{kind}.{k}", ch, 4 * per, 3, bias=True)
                y = b.op("Transpose", y, perm=[0, 2, 3, 1])
                out.append(b.op("Reshape", y, b.ints(1, -1, per)))
    boxes = b.op("Concat", *locs, axis=1)
    scores = b.op("Softmax", b.op("Concat", *confs, axis=1), axis=-1)
    priors = 4 * (10 * 10 + 5 * 5)
    b.output(boxes, "boxes", FLOAT, [1, priors, 4])
    b.output(scores, "scores", FLOAT, [1, priors, SSD_CLASSES])
    return b.model("main_graph", doc="SSD-style VGG backbone with ceil_mode pooling")


# ------------------------------------------------------------ DLRM, EmbeddingBag
BAG_DENSE = 4
BAG_TABLES = 2
BAG_ROWS = 50
BAG_DIM = 8


def _embedding_bag(b: GraphBuilder, table: str, indices: str, offsets: str, t: int) -> str:
    """``nn.EmbeddingBag(mode="sum")(indices, offsets)`` as the TorchScript exporter
    writes it: a Loop over the bags, each Slicing indices[offsets[i]:offsets[i+1]]."""
    total = b.op("Shape", indices)
    ends = b.op("Concat", b.slice(offsets, [1], [2**62], [0]), total, axis=0)
    bags = b.dim(b.op("Shape", offsets), 0)
    body = b.subgraph()
    i = body.input(f"bag_{t}.i", INT64, [])
    cond = body.input(f"bag_{t}.cond", BOOL, [])
    start = body.unsqueeze(body.op("Gather", offsets, i, axis=0), [0])
    end = body.unsqueeze(body.op("Gather", ends, i, axis=0), [0])
    rows = body.op("Slice", indices, start, end, body.ints(0))
    picked = body.op("Gather", table, rows, axis=0)
    summed = body.reduce_sum(picked, [0], keepdims=1)
    body.output(body.op("Identity", cond), f"bag_{t}.cond_out", BOOL, [])
    body.output(summed, f"bag_{t}.sum", FLOAT, [1, BAG_DIM])
    (stacked,) = [b.op("Loop", bags, None, outputs=1, body=body.graph("embedding_bag"))]
    return b.op("Reshape", stacked, b.ints(-1, BAG_DIM))


def build_dlrm_bag(seed: int = 6003) -> onnx.ModelProto:
    """Inputs dense [B,4], per table indices [L] and offsets [B]; output [B,1]."""
    b = GraphBuilder(13, seed)
    dense = b.input("dense", FLOAT, ["batch", BAG_DENSE])
    with b.scope("bot_l"):
        x = b.op("Relu", _nn.gemm(b, dense, "bot_l.0", BAG_DENSE, 16, std=0.5))
        x = b.op("Relu", _nn.gemm(b, x, "bot_l.2", 16, BAG_DIM, std=0.35))
    features = [x]
    for t in range(BAG_TABLES):
        indices = b.input(f"indices_{t}", INT64, ["n_indices_" + str(t)])
        offsets = b.input(f"offsets_{t}", INT64, ["batch"])
        with b.scope(f"emb_l.{t}"):
            table = b.param(f"emb_l.{t}.weight", b.uniform((BAG_ROWS, BAG_DIM), -0.5, 0.5))
            features.append(_embedding_bag(b, table, indices, offsets, t))
    with b.scope("top_l"):
        z = b.op("Concat", *features, axis=1)
        z = b.op("Relu", _nn.gemm(b, z, "top_l.0", BAG_DIM * (1 + BAG_TABLES), 16, std=0.3))
        z = b.op("Sigmoid", _nn.gemm(b, z, "top_l.2", 16, 1, std=0.3))
    b.output(z, "click", FLOAT, ["batch", 1])
    return b.model("main_graph", doc="DLRM with EmbeddingBag exported as Loop over bags")


def example_bag_inputs(rng: np.random.Generator, batch: int) -> dict[str, np.ndarray]:
    """Bags of 0 to 4 indices (an empty bag sums to zeros)."""
    feeds = {"dense": rng.standard_normal((batch, BAG_DENSE)).astype(np.float32)}
    for t in range(BAG_TABLES):
        sizes = rng.integers(0, 5, batch)
        feeds[f"indices_{t}"] = rng.integers(0, BAG_ROWS, int(sizes.sum())).astype(np.int64)
        feeds[f"offsets_{t}"] = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
    return feeds
