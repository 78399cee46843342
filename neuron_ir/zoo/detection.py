"""Object detectors: a YOLOv3-style two-head model and an SSD-style model with NMS."""

from __future__ import annotations

import numpy as np
import onnx

from . import _nn
from ._graph import FLOAT, INT64, GraphBuilder

IMAGE_SIZE = 64

# ------------------------------------------------------------------- YOLO
YOLO_CLASSES = 4
YOLO_ANCHORS = 3
# Anchor (w, h) in pixels per head, coarse head first, like yolov3-tiny's masks.
YOLO_HEAD_ANCHORS = {8: [(20, 24), (30, 36), (44, 50)], 16: [(6, 8), (10, 12), (14, 18)]}


def _conv_bn_leaky(
    b: GraphBuilder, x: str, name: str, cin: int, cout: int, k: int, stride: int = 1
) -> str:
    with b.scope(name):
        with b.scope("conv"):
            x = _nn.conv(b, x, f"{name}.conv", cin, cout, k, stride=stride)
        with b.scope("bn"):
            x = _nn.batch_norm(b, x, f"{name}.bn", cout)
        with b.scope("act"):
            return b.op("LeakyRelu", x, alpha=0.1)


def _yolo_decode(b: GraphBuilder, raw: str, grid_size: int) -> str:
    """[N, A*(5+C), H, W] -> decoded [N, A*H*W, 5+C] (xywh in pixels, obj, classes)."""
    outs = 5 + YOLO_CLASSES
    stride = IMAGE_SIZE // grid_size
    batch = b.dim(b.op("Shape", raw), 0)
    x = b.op("Reshape", raw, b.dynamic_shape(batch, YOLO_ANCHORS, outs, grid_size, grid_size))
    x = b.op("Transpose", x, perm=[0, 1, 3, 4, 2])  # [N, A, H, W, 5+C]

    ys, xs = np.meshgrid(np.arange(grid_size), np.arange(grid_size), indexing="ij")
    grid = np.stack([xs, ys], axis=-1).astype(np.float32)[None, None]  # [1,1,H,W,2] as (x, y)
    anchors = np.array(YOLO_HEAD_ANCHORS[grid_size], np.float32).reshape(1, YOLO_ANCHORS, 1, 1, 2)
    grid_name = b.param(f"heads.{grid_size}.grid", grid)
    anchor_name = b.param(f"heads.{grid_size}.anchor_grid", anchors)

    xy = b.op("Sigmoid", b.slice(x, [0], [2], [4]))
    xy = b.op("Mul", b.op("Add", xy, grid_name), b.const(float(stride)))
    wh = b.op("Mul", b.op("Exp", b.slice(x, [2], [4], [4])), anchor_name)
    scores = b.op("Sigmoid", b.slice(x, [4], [outs], [4]))
    decoded = b.op("Concat", xy, wh, scores, axis=-1)
    return b.op("Reshape", decoded, b.dynamic_shape(batch, -1, outs))


def build_tiny_yolo(seed: int = 4001) -> onnx.ModelProto:
    """Input [N,3,64,64]; heads at 8x8 and 16x16, output [N, 960, 9]."""
    b = GraphBuilder(11, seed)
    images = b.input("images", FLOAT, ["N", 3, IMAGE_SIZE, IMAGE_SIZE])
    head_out = YOLO_ANCHORS * (5 + YOLO_CLASSES)

    with b.scope("backbone"):
        x = _conv_bn_leaky(b, images, "backbone.0", 3, 8, 3)
        x = _conv_bn_leaky(b, x, "backbone.1", 8, 16, 3, stride=2)  # 32x32
        route = _conv_bn_leaky(b, x, "backbone.2", 16, 32, 3, stride=2)  # 16x16
        x = _conv_bn_leaky(b, route, "backbone.3", 32, 64, 3, stride=2)  # 8x8
        x = _conv_bn_leaky(b, x, "backbone.4", 64, 64, 1)

    with b.scope("head_coarse"):
        y = _conv_bn_leaky(b, x, "head_coarse.0", 64, 64, 3)
        with b.scope("pred"):
            # Small init keeps Exp(wh) near 1 for random weights, as YOLO inits do.
            raw = _nn.conv(b, y, "head_coarse.pred", 64, head_out, 1, bias=True, std=0.01)
        coarse = _yolo_decode(b, raw, 8)

    with b.scope("route"):
        r = _conv_bn_leaky(b, x, "route.0", 64, 32, 1)
        with b.scope("upsample"):
            # Opset 11 Resize needs an roi operand even when only scales are used.
            r = b.op(
                "Resize",
                r,
                b.const(np.zeros(0, np.float32)),
                b.const([1.0, 1.0, 2.0, 2.0]),
                coordinate_transformation_mode="asymmetric",
                cubic_coeff_a=-0.75,
                mode="nearest",
                nearest_mode="floor",
            )
        r = b.op("Concat", r, route, axis=1)

    with b.scope("head_fine"):
        y = _conv_bn_leaky(b, r, "head_fine.0", 64, 32, 3)
        with b.scope("pred"):
            raw = _nn.conv(b, y, "head_fine.pred", 32, head_out, 1, bias=True, std=0.01)
        fine = _yolo_decode(b, raw, 16)

    detections = b.op("Concat", coarse, fine, axis=1)
    num_boxes = YOLO_ANCHORS * (8 * 8 + 16 * 16)
    b.output(detections, "detections", FLOAT, ["N", num_boxes, 5 + YOLO_CLASSES])
    return b.model("main_graph", doc="YOLOv3-style detector, 2 heads, 4 classes, random weights")


# -------------------------------------------------------------------- SSD
SSD_CLASSES = 4  # including background (index 0)
SSD_FEATURE_MAPS = [(8, 64), (4, 64)]  # (size, channels)
SSD_ANCHOR_SCALES = {8: [0.2, 0.3], 4: [0.45, 0.6]}
SSD_MAX_PER_CLASS = 10
SSD_IOU_THRESHOLD = 0.45
SSD_SCORE_THRESHOLD = 0.5  # with these weights: 0-10 boxes per class, varying by image


def ssd_priors() -> np.ndarray:
    """[P, 4] prior boxes (cx, cy, w, h), normalised, ordered (map, y, x, anchor).

    The order matches the heads' Transpose to NHWC followed by Reshape [N, -1, k].
    """
    boxes = []
    for size, _ in SSD_FEATURE_MAPS:
        for i in range(size):
            for j in range(size):
                for scale in SSD_ANCHOR_SCALES[size]:
                    boxes.append(((j + 0.5) / size, (i + 0.5) / size, scale, scale))
    return np.array(boxes, np.float32)


def _ssd_head(
    b: GraphBuilder, feature: str, name: str, cin: int, per_box: int, anchors: int
) -> str:
    """3x3 conv predicting ``per_box`` values per anchor, flattened to [N, H*W*A, per_box]."""
    with b.scope(name):
        y = _nn.conv(b, feature, name, cin, anchors * per_box, 3, bias=True)
        y = b.op("Transpose", y, perm=[0, 2, 3, 1])
        batch = b.dim(b.op("Shape", y), 0)
        return b.op("Reshape", y, b.dynamic_shape(batch, -1, per_box))


def build_tiny_ssd(seed: int = 4002) -> onnx.ModelProto:
    """Input [1,3,64,64]; two feature maps (8x8, 4x4), NMS over 3 foreground classes."""
    b = GraphBuilder(13, seed)
    images = b.input("images", FLOAT, [1, 3, IMAGE_SIZE, IMAGE_SIZE])

    features = []
    with b.scope("backbone"):
        x = images
        cin = 3
        for i, cout in enumerate([16, 32, 64, 64]):
            with b.scope(str(i)):
                x = b.op("Relu", _nn.conv(b, x, f"backbone.{i}", cin, cout, 3, stride=2, bias=True))
            cin = cout
            if i >= 2:  # 8x8 and 4x4 maps feed the heads
                features.append(x)

    locs, confs = [], []
    for k, (feature, (size, channels)) in enumerate(zip(features, SSD_FEATURE_MAPS, strict=True)):
        anchors = len(SSD_ANCHOR_SCALES[size])
        locs.append(_ssd_head(b, feature, f"loc_heads.{k}", channels, 4, anchors))
        confs.append(_ssd_head(b, feature, f"conf_heads.{k}", channels, SSD_CLASSES, anchors))
    loc = b.op("Concat", *locs, axis=1)  # [1, P, 4]
    conf = b.op("Softmax", b.op("Concat", *confs, axis=1), axis=-1)  # [1, P, C]

    with b.scope("box_decoder"):
        priors = b.param("priors", ssd_priors())
        prior_centre = b.slice(priors, [0], [2], [1])
        prior_size = b.slice(priors, [2], [4], [1])
        # Standard SSD variances 0.1 (centre) and 0.2 (size).
        centre = b.op(
            "Add",
            b.op("Mul", b.op("Mul", b.slice(loc, [0], [2], [2]), b.const(0.1)), prior_size),
            prior_centre,
        )
        size = b.op(
            "Mul", b.op("Exp", b.op("Mul", b.slice(loc, [2], [4], [2]), b.const(0.2))), prior_size
        )
        half = b.op("Mul", size, b.const(0.5))
        boxes = b.op(
            "Concat", b.op("Sub", centre, half), b.op("Add", centre, half), axis=-1
        )  # [1, P, 4]

    with b.scope("postprocess"):
        foreground = b.slice(conf, [1], [SSD_CLASSES], [2])
        class_scores = b.op("Transpose", foreground, perm=[0, 2, 1])  # [1, C-1, P]
        selected = b.op(
            "NonMaxSuppression",
            boxes,
            class_scores,
            b.ints(SSD_MAX_PER_CLASS),
            b.const([SSD_IOU_THRESHOLD]),
            b.const([SSD_SCORE_THRESHOLD]),
            center_point_box=0,
        )  # [K, 3] = (batch, class, box)
        box_index = b.op("Gather", selected, b.const(2, np.int64), axis=1)
        picked_boxes = b.op("Gather", b.squeeze(boxes, [0]), box_index, axis=0)
        picked_scores = b.op("GatherND", class_scores, selected)

    b.output(picked_boxes, "boxes", FLOAT, ["num_detections", 4])
    b.output(picked_scores, "scores", FLOAT, ["num_detections"])
    b.output(selected, "selected_indices", INT64, ["num_detections", 3])
    return b.model("main_graph", doc="SSD-style detector with NonMaxSuppression, random weights")


def example_images(rng: np.random.Generator, batch: int) -> dict[str, np.ndarray]:
    return {"images": rng.random((batch, 3, IMAGE_SIZE, IMAGE_SIZE), dtype=np.float32)}
