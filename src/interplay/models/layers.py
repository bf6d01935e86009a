"""String-to-layer factories: one small registry per family of layers.

Each registry maps the word used in a study file to a function that makes the torch layer, so a
new norm or activation is one entry here and every test parametrized over the registry covers it.
The settings a study file leaves open ('same' padding, 'auto' dropout) are resolved by the
helpers in interplay.models.settings, shared with shape inference so the two agree.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any

from torch import nn

from interplay.config import (
    ActLayer,
    AdaptivePoolLayer,
    ConvLayer,
    DropoutLayer,
    FlattenLayer,
    LinearLayer,
    NormLayer,
    PoolLayer,
)
from interplay.models.settings import (
    Shape,
    conv_bias,
    conv_padding,
    dropout_kind,
    is_map,
    pool_stride,
)

logger = logging.getLogger(__name__)

# ---------------------------------------------------------------- registries


def _batch_norm(shape: Shape, cfg: NormLayer) -> nn.Module:
    return nn.BatchNorm2d(shape[0]) if is_map(shape) else nn.BatchNorm1d(shape[0])


def _layer_norm(shape: Shape, cfg: NormLayer) -> nn.Module:
    return nn.LayerNorm(list(shape))


def _group_norm(shape: Shape, cfg: NormLayer) -> nn.Module:
    return nn.GroupNorm(cfg.groups, shape[0])


def _instance_norm(shape: Shape, cfg: NormLayer) -> nn.Module:
    # affine=True so instance norm learns a scale and shift like the other norms.
    return nn.InstanceNorm2d(shape[0], affine=True)


# 'none' makes no layer, so it has no entry: the builder skips it.
NORM_LAYERS: dict[str, Callable[[Shape, NormLayer], nn.Module]] = {
    "batch": _batch_norm,
    "layer": _layer_norm,
    "group": _group_norm,
    "instance": _instance_norm,
}

ACT_LAYERS: dict[str, Callable[[ActLayer], nn.Module]] = {
    "relu": lambda cfg: nn.ReLU(),
    "gelu": lambda cfg: nn.GELU(),
    "silu": lambda cfg: nn.SiLU(),
    "leaky_relu": lambda cfg: nn.LeakyReLU(cfg.negative_slope),
    "tanh": lambda cfg: nn.Tanh(),
}

POOL_LAYERS: dict[str, Callable[..., nn.Module]] = {
    "max": nn.MaxPool2d,
    "avg": nn.AvgPool2d,
}

ADAPTIVE_POOL_LAYERS: dict[str, Callable[..., nn.Module]] = {
    "max": nn.AdaptiveMaxPool2d,
    "avg": nn.AdaptiveAvgPool2d,
}

DROPOUT_LAYERS: dict[str, Callable[[float], nn.Module]] = {
    "element": nn.Dropout,
    "channel": nn.Dropout2d,
}


def _conv(cfg: ConvLayer, shape: Shape) -> nn.Module:
    return nn.Conv2d(
        shape[0],
        cfg.channels,
        kernel_size=cfg.kernel,
        stride=cfg.stride,
        padding=conv_padding(cfg),
        bias=conv_bias(cfg),
    )


def _linear(cfg: LinearLayer, shape: Shape) -> nn.Module:
    return nn.Linear(math.prod(shape), cfg.units)


def _norm(cfg: NormLayer, shape: Shape) -> nn.Module:
    return NORM_LAYERS[cfg.kind](shape, cfg)


def _act(cfg: ActLayer, shape: Shape) -> nn.Module:
    return ACT_LAYERS[cfg.fn](cfg)


def _pool(cfg: PoolLayer, shape: Shape) -> nn.Module:
    return POOL_LAYERS[cfg.kind](cfg.size, stride=pool_stride(cfg))


def _adaptive_pool(cfg: AdaptivePoolLayer, shape: Shape) -> nn.Module:
    return ADAPTIVE_POOL_LAYERS[cfg.kind](cfg.output)


def _flatten(cfg: FlattenLayer, shape: Shape) -> nn.Module:
    return nn.Flatten()


def _dropout(cfg: DropoutLayer, shape: Shape) -> nn.Module:
    return DROPOUT_LAYERS[dropout_kind(cfg, shape)](cfg.p)


# Keyed by the `type` of a layer in the study file (config.LAYER_KINDS).
LAYERS: dict[str, Callable[[Any, Shape], nn.Module]] = {
    "conv": _conv,
    "linear": _linear,
    "norm": _norm,
    "act": _act,
    "pool": _pool,
    "adaptive_pool": _adaptive_pool,
    "flatten": _flatten,
    "dropout": _dropout,
}


def make_layer(cfg: Any, in_shape: Shape) -> nn.Module:
    """Make the torch layer for one layer setting of a study file.

    Args:
        cfg: a layer of `config.Layer` (ConvLayer, NormLayer, ...), its 'auto' bias resolved.
        in_shape: the shape of one incoming image, without the batch dimension.

    Returns:
        The layer, with PyTorch's default initialization.
    """
    return LAYERS[cfg.type](cfg, in_shape)
