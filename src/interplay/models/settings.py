"""The settings a study file leaves open, resolved: 'same' padding, 'auto' bias and dropout.

Shared by the layer registries (interplay.models.layers) and the shape inference
(interplay.models.shapes) so that the two always agree; free of torch, so that `interplay
summary` can check a model without importing it.
"""

from __future__ import annotations

from interplay.config import ConvLayer, DropoutLayer, PoolLayer

Shape = tuple[int, ...]


def is_map(shape: Shape) -> bool:
    """A feature map is (channels, height, width); anything else here is a vector (features,)."""
    return len(shape) == 3


def conv_padding(cfg: ConvLayer) -> int:
    return cfg.kernel // 2 if cfg.padding == "same" else cfg.padding


def conv_bias(cfg: ConvLayer) -> bool:
    # Shape inference replaces 'auto' by a bool once the block's order is known; a conv built
    # on its own keeps PyTorch's default.
    return cfg.bias if isinstance(cfg.bias, bool) else True


def pool_stride(cfg: PoolLayer) -> int:
    return cfg.stride if cfg.stride is not None else cfg.size


def dropout_kind(cfg: DropoutLayer, shape: Shape) -> str:
    if cfg.kind != "auto":
        return cfg.kind
    return "channel" if is_map(shape) else "element"
