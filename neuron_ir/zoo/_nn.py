"""Layer building blocks (Linear, LayerNorm, GELU, Conv/BN) as exporters emit them.

Each helper takes the ``GraphBuilder`` and the input value name, creates its weights
as initializers named by ``prefix`` (the PyTorch parameter path) and returns the
output value name.  Node names come from the builder's current scope, so callers
wrap calls in ``with b.scope(...)`` to get module-path names.
"""

from __future__ import annotations

import math

import numpy as np

from ._graph import GraphBuilder


def linear(
    b: GraphBuilder,
    x: str,
    prefix: str,
    in_features: int,
    out_features: int,
    *,
    std: float = 0.02,
    weight: np.ndarray | None = None,
    bias: np.ndarray | None = None,
) -> str:
    """``nn.Linear`` on a rank>2 input: MatMul with the pre-transposed weight + Add.

    The exporter folds ``weight.T`` into a new [in, out] initializer, hence the
    "_t" suffix.  ``weight`` (torch layout [out, in]) and ``bias`` may be given
    when the parameters were generated elsewhere.
    """
    if weight is None:
        weight = b.normal((out_features, in_features), std)
    if bias is None:
        bias = np.zeros(out_features, np.float32)
    w = b.param(f"{prefix}.weight_t", weight.T)
    y = b.op("MatMul", x, w)
    return b.op("Add", b.param(f"{prefix}.bias", bias), y)


def gemm(
    b: GraphBuilder, x: str, prefix: str, in_features: int, out_features: int, *, std: float
) -> str:
    """``nn.Linear`` on a 2-D input: a single Gemm with transB=1 (torch layout)."""
    w = b.param(f"{prefix}.weight", b.normal((out_features, in_features), std))
    bias = b.param(f"{prefix}.bias", b.normal((out_features,), 0.01))
    return b.op("Gemm", x, w, bias, alpha=1.0, beta=1.0, transB=1)


def layer_norm(
    b: GraphBuilder,
    x: str,
    prefix: str,
    dim: int,
    *,
    eps: float = 1e-12,
    fused: bool = False,
    params: tuple[np.ndarray, np.ndarray] | None = None,
) -> str:
    """LayerNorm over the last axis, fused (opset >= 17) or decomposed.

    The decomposed form is what exporters produced before LayerNormalization
    existed: mean, centre, variance via Pow 2 + ReduceMean, then Sqrt/Div.
    """
    if params is None:
        gamma = np.ones(dim, np.float32) + b.normal((dim,), 0.02)
        beta = b.normal((dim,), 0.02)
    else:
        gamma, beta = params
    gamma_name = b.param(f"{prefix}.weight", gamma)
    beta_name = b.param(f"{prefix}.bias", beta)
    if fused:
        if b.opset < 17:
            raise ValueError("LayerNormalization needs opset >= 17")
        return b.op("LayerNormalization", x, gamma_name, beta_name, axis=-1, epsilon=eps)
    mean = b.reduce("ReduceMean", x, [-1])
    centred = b.op("Sub", x, mean)
    var = b.reduce("ReduceMean", b.op("Pow", centred, b.const(2.0)), [-1])
    std = b.op("Sqrt", b.op("Add", var, b.const(eps)))
    normed = b.op("Div", centred, std)
    return b.op("Add", b.op("Mul", normed, gamma_name), beta_name)


def gelu_erf(b: GraphBuilder, x: str) -> str:
    """Exact GELU, x * 0.5 * (1 + erf(x / sqrt 2)), in the exporter's op order."""
    erf = b.op("Erf", b.op("Div", x, b.const(math.sqrt(2.0))))
    return b.op("Mul", b.op("Mul", x, b.op("Add", erf, b.const(1.0))), b.const(0.5))


def conv(
    b: GraphBuilder,
    x: str,
    prefix: str,
    in_ch: int,
    out_ch: int,
    kernel: int,
    *,
    stride: int = 1,
    pad: int | None = None,
    group: int = 1,
    bias: bool = False,
    std: float | None = None,
) -> str:
    """2-D convolution; weights He-initialised unless ``std`` is given."""
    if pad is None:
        pad = kernel // 2
    fan_in = in_ch // group * kernel * kernel
    w = b.param(
        f"{prefix}.weight",
        b.normal(
            (out_ch, in_ch // group, kernel, kernel),
            std if std is not None else math.sqrt(2.0 / fan_in),
        ),
    )
    ins = [x, w]
    if bias:
        ins.append(b.param(f"{prefix}.bias", b.normal((out_ch,), 0.01)))
    return b.op(
        "Conv",
        *ins,
        dilations=[1, 1],
        group=group,
        kernel_shape=[kernel, kernel],
        pads=[pad] * 4,
        strides=[stride, stride],
    )


def batch_norm(b: GraphBuilder, x: str, prefix: str, channels: int) -> str:
    """Inference BatchNormalization with plausible running statistics.

    The variance stays near 1 so He-initialised stacks neither explode nor
    vanish, while gamma/beta/mean are non-trivial so folding bugs would show.
    """
    scale = b.param(f"{prefix}.weight", 1.0 + b.normal((channels,), 0.1))
    shift = b.param(f"{prefix}.bias", b.normal((channels,), 0.1))
    mean = b.param(f"{prefix}.running_mean", b.normal((channels,), 0.1))
    var = b.param(f"{prefix}.running_var", b.uniform((channels,), 0.5, 1.5))
    return b.op("BatchNormalization", x, scale, shift, mean, var, epsilon=1e-5, momentum=0.9)
