"""Shape inference: the shape, params and MACs of every layer, worked out before any training.

Each layer kind has a rule that maps an incoming shape to an outgoing one analytically, so a study
file that cannot work fails here, with a message naming the block, the layer, the incoming shape
and the setting to change, instead of as a size mismatch deep inside a trial.

MACs are the multiply-adds of conv and linear layers per image; norms, activations, pools and
dropout are elementwise and not counted (the usual convention of MAC counters).
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple, NoReturn

from interplay.config import (
    STANDARD_ORDER,
    ActLayer,
    AdaptivePoolLayer,
    Block,
    ConvLayer,
    DropoutLayer,
    FlattenLayer,
    LinearLayer,
    ModelConfig,
    NormLayer,
    PoolLayer,
)
from interplay.errors import ArchitectureError
from interplay.models.settings import conv_bias, conv_padding, dropout_kind, is_map, pool_stride
from interplay.models.summary import LayerRow, ModelSummary, Shape, format_shape

logger = logging.getLogger(__name__)

HEAD = "head"
# The flatten the builder inserts before a linear layer that meets a feature map.
_FLATTEN = FlattenLayer(type="flatten")


@dataclass(frozen=True)
class Site:
    """Where a layer sits in the study file, for error messages."""

    block_index: int
    block_name: str
    repetition: int | None
    layer_index: int | None = None
    label: str = ""

    def __str__(self) -> str:
        rep = f", repetition {self.repetition}" if self.repetition is not None else ""
        where = f"model.blocks[{self.block_index}] ({self.block_name}{rep})"
        if self.block_index < 0:
            where = "the output head"
        if self.layer_index is not None:
            where += f", layer {self.layer_index} ({self.label})"
        elif self.label:
            where += f", the inserted {self.label}"
        return where

    def fail(self, problem: str) -> NoReturn:
        raise ArchitectureError(f"{self}: {problem}")


class Step(NamedTuple):
    out_shape: Shape
    params: int
    macs: int


@dataclass(frozen=True)
class PlannedLayer:
    """One layer to build: its settings ('auto' bias resolved) and its summary row."""

    config: Any
    row: LayerRow


@dataclass(frozen=True)
class BlockPlan:
    name: str
    layers: list[PlannedLayer]


@dataclass(frozen=True)
class ModelPlan:
    """What `build_model` builds: one BlockPlan per block repetition, then the head."""

    blocks: list[BlockPlan]
    head: list[PlannedLayer]
    summary: ModelSummary


def describe(shape: Shape) -> str:
    if is_map(shape):
        return f"the incoming feature map is {format_shape(shape)}"
    return f"the incoming shape is a vector of {shape[0]} features"


def layer_label(cfg: Any, shape: Shape) -> str:
    """A short name for a layer, e.g. `conv 3x3 32`, `max pool 2x2`, `dropout2d 0.25`."""
    if isinstance(cfg, ConvLayer):
        strided = f" /{cfg.stride}" if cfg.stride > 1 else ""
        return f"conv {cfg.kernel}x{cfg.kernel} {cfg.channels}{strided}"
    if isinstance(cfg, LinearLayer):
        return f"linear {cfg.units}"
    if isinstance(cfg, NormLayer):
        return f"group norm {cfg.groups}" if cfg.kind == "group" else f"{cfg.kind} norm"
    if isinstance(cfg, ActLayer):
        return f"leaky_relu {cfg.negative_slope:g}" if cfg.fn == "leaky_relu" else cfg.fn
    if isinstance(cfg, PoolLayer):
        stride = pool_stride(cfg)
        step = f" /{stride}" if stride != cfg.size else ""
        return f"{cfg.kind} pool {cfg.size}x{cfg.size}{step}"
    if isinstance(cfg, AdaptivePoolLayer):
        return f"adaptive {cfg.kind} pool {cfg.output}x{cfg.output}"
    if isinstance(cfg, DropoutLayer):
        name = (
            "dropout2d" if is_map(shape) and dropout_kind(cfg, shape) == "channel" else "dropout"
        )
        return f"{name} {cfg.p:g}"
    return str(cfg.type)


# ---------------------------------------------------------------- one rule per layer kind


def _needs_map(shape: Shape, site: Site, what: str, instead: str) -> tuple[int, int, int]:
    if not is_map(shape):
        site.fail(
            f"{describe(shape)}; {what} needs a feature map (channels x height x width): {instead}"
        )
    c, h, w = shape
    return c, h, w


def _conv(cfg: ConvLayer, shape: Shape, site: Site) -> Step:
    c, h, w = _needs_map(shape, site, "a conv", "move it before the first flatten or linear layer")
    k = cfg.kernel
    if cfg.padding == "same" and cfg.stride == 1 and k % 2 == 0:
        site.fail(
            f"padding 'same' needs an odd kernel at stride 1, but kernel is {k}; "
            f"set kernel to {k - 1} or {k + 1}, or give padding as a number"
        )
    pad = conv_padding(cfg)
    if min(h, w) + 2 * pad < k:
        site.fail(
            f"{describe(shape)}, smaller than the kernel {k} (with padding {pad}); "
            "lower repeat, remove a pool or a strided conv, or use padding 'same'"
        )
    out_h = (h + 2 * pad - k) // cfg.stride + 1
    out_w = (w + 2 * pad - k) // cfg.stride + 1
    weights = cfg.channels * c * k * k
    bias = cfg.channels if conv_bias(cfg) else 0
    return Step((cfg.channels, out_h, out_w), weights + bias, weights * out_h * out_w)


def _linear(cfg: LinearLayer, shape: Shape, site: Site) -> Step:
    # A flatten is inserted before any linear layer that meets a feature map.
    features = math.prod(shape)
    if cfg.in_features is not None and cfg.in_features != features:
        site.fail(
            f"in_features is {cfg.in_features}, but {describe(shape)}; remove in_features "
            f"(it is inferred) or set it to {features}"
        )
    return Step((cfg.units,), features * cfg.units + cfg.units, features * cfg.units)


def _norm(cfg: NormLayer, shape: Shape, site: Site) -> Step:
    channels = shape[0]
    if cfg.kind == "instance":
        _, h, w = _needs_map(shape, site, "instance norm", "use kind batch or layer on vectors")
        if h * w == 1:
            # InstanceNorm2d refuses a single pixel per channel in training mode.
            site.fail(
                f"{describe(shape)}; instance norm needs more than one pixel per channel: "
                "use kind batch or layer, or move it before the pool that shrinks the map"
            )
    if cfg.kind == "group" and channels % cfg.groups != 0:
        divisors = [d for d in range(1, channels + 1) if channels % d == 0]
        shown = ", ".join(map(str, divisors[:12]))
        site.fail(
            f"groups {cfg.groups} does not divide the {channels} channels "
            f"({describe(shape)}); set groups to a divisor of {channels} ({shown})"
        )
    affine = math.prod(shape) if cfg.kind == "layer" else channels
    return Step(shape, 2 * affine, 0)


def _act(cfg: ActLayer, shape: Shape, site: Site) -> Step:
    return Step(shape, 0, 0)


def _pool(cfg: PoolLayer, shape: Shape, site: Site) -> Step:
    c, h, w = _needs_map(
        shape, site, "a pool", "remove it, or move it before the first flatten or linear layer"
    )
    if min(h, w) < cfg.size:
        site.fail(
            f"{describe(shape)}, smaller than the pool window {cfg.size}; "
            "lower repeat, remove a pool or lower its size, or give the convs before it "
            "padding 'same'"
        )
    stride = pool_stride(cfg)
    return Step((c, (h - cfg.size) // stride + 1, (w - cfg.size) // stride + 1), 0, 0)


def _adaptive_pool(cfg: AdaptivePoolLayer, shape: Shape, site: Site) -> Step:
    c, _, _ = _needs_map(
        shape, site, "an adaptive pool", "move it before the first flatten or linear layer"
    )
    return Step((c, cfg.output, cfg.output), 0, 0)


def _flatten(cfg: FlattenLayer, shape: Shape, site: Site) -> Step:
    return Step((math.prod(shape),), 0, 0)


def _dropout(cfg: DropoutLayer, shape: Shape, site: Site) -> Step:
    if cfg.kind == "channel" and not is_map(shape):
        site.fail(
            f"{describe(shape)}; dropout kind channel drops whole feature maps: "
            "use kind element or auto on vectors"
        )
    return Step(shape, 0, 0)


RULES: dict[str, Callable[[Any, Shape, Site], Step]] = {
    "conv": _conv,
    "linear": _linear,
    "norm": _norm,
    "act": _act,
    "pool": _pool,
    "adaptive_pool": _adaptive_pool,
    "flatten": _flatten,
    "dropout": _dropout,
}


# ---------------------------------------------------------------- blocks and the model


# Blocks whose reordering was already logged: inference runs for every trial of a study.
_REORDER_NOTED: set[tuple[int, tuple[str, ...]]] = set()


def ordered_layers(block: Block, site: Site) -> list[tuple[int, Any]]:
    """The layers of one block in the order they run, each with its written index.

    'standard' sorts them by STANDARD_ORDER (stable); norms of kind 'none' are dropped; a conv
    with bias 'auto' gets a bias only when no batch norm directly follows it.
    """
    indexed: list[tuple[int, Any]] = list(enumerate(block.layers))
    if block.order == "standard":
        counts: Counter[str] = Counter(layer.type for layer in block.layers)
        for kind in STANDARD_ORDER:
            if counts[kind] > 1:
                where = [str(i) for i, layer in indexed if layer.type == kind]
                site.fail(
                    f"order 'standard' places each kind of layer once, but {kind} appears "
                    f"{counts[kind]} times (layers {', '.join(where)}); set order: as_written "
                    "to keep the written order, or split the block (repeat stacks a block)"
                )
        written = [layer.type for _, layer in indexed]
        indexed.sort(key=lambda item: STANDARD_ORDER.index(item[1].type))
        placed = [layer.type for _, layer in indexed]
        if placed != written and (site.block_index, tuple(written)) not in _REORDER_NOTED:
            _REORDER_NOTED.add((site.block_index, tuple(written)))
            logger.info(
                "model.blocks[%d]: layers run as %s (order: standard); set order: as_written "
                "to keep the written order %s",
                site.block_index,
                ", ".join(placed),
                ", ".join(written),
            )

    indexed = [(i, layer) for i, layer in indexed if not _is_no_norm(layer)]
    out: list[tuple[int, Any]] = []
    for pos, (i, layer) in enumerate(indexed):
        if isinstance(layer, ConvLayer) and layer.bias == "auto":
            after = indexed[pos + 1][1] if pos + 1 < len(indexed) else None
            # A batch norm subtracts the mean per channel, which cancels a conv bias.
            followed = isinstance(after, NormLayer) and after.kind == "batch"
            layer = layer.model_copy(update={"bias": not followed})
        out.append((i, layer))
    return out


def _is_no_norm(layer: Any) -> bool:
    return isinstance(layer, NormLayer) and layer.kind == "none"


def _plan_layer(cfg: Any, shape: Shape, site: Site, block: str, index: int | None) -> PlannedLayer:
    label = layer_label(cfg, shape)
    where = Site(site.block_index, site.block_name, site.repetition, index, label)
    step = RULES[cfg.type](cfg, shape, where)
    row = LayerRow(block, index, cfg.type, label, shape, step.out_shape, step.params, step.macs)
    return PlannedLayer(cfg, row)


def plan_model(model: ModelConfig, input_shape: tuple[int, ...], num_classes: int) -> ModelPlan:
    """Infer every layer of a block model and keep the resolved settings for the builder.

    Args:
        model: the model section of a study file (its blocks; `factory` is not looked at).
        input_shape: one image as (channels, height, width).
        num_classes: outputs of the appended output layer.

    Returns:
        One BlockPlan per block repetition (dropped blocks have none), the head, the summary.
    """
    shape = tuple(int(d) for d in input_shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"input_shape must be (channels, height, width), got {input_shape}")
    if num_classes < 1:
        raise ValueError(f"num_classes must be at least 1, got {num_classes}")

    blocks: list[BlockPlan] = []
    for b, block in enumerate(model.blocks):
        base = block.name or f"block{b + 1}"
        if base == HEAD:
            Site(b, base, None).fail(f"the name {HEAD!r} is kept for the output layer; rename it")
        layers = ordered_layers(block, Site(b, base, None))
        for r in range(block.repeat):
            stacked = block.repeat > 1
            name = f"{base}.{r + 1}" if stacked else base
            site = Site(b, base, r + 1 if stacked else None)
            planned: list[PlannedLayer] = []
            for i, cfg in layers:
                if isinstance(cfg, LinearLayer) and is_map(shape):
                    planned.append(_plan_layer(_FLATTEN, shape, site, name, None))
                    shape = planned[-1].row.out_shape
                planned.append(_plan_layer(cfg, shape, site, name, i))
                shape = planned[-1].row.out_shape
            blocks.append(BlockPlan(name, planned))

    head: list[PlannedLayer] = []
    site = Site(-1, HEAD, None)
    if is_map(shape):
        head.append(_plan_layer(_FLATTEN, shape, site, HEAD, None))
        shape = head[-1].row.out_shape
    output = LinearLayer(type="linear", units=num_classes, in_features=None)
    head.append(_plan_layer(output, shape, site, HEAD, None))

    rows = [p.row for plan in blocks for p in plan.layers] + [p.row for p in head]
    summary = ModelSummary(
        input_shape=tuple(int(d) for d in input_shape),
        rows=rows,
        total_params=sum(r.params for r in rows),
        total_macs=sum(r.macs for r in rows),
        output_shape=rows[-1].out_shape,
    )
    return ModelPlan(blocks, head, summary)


def infer_model(
    model: ModelConfig, input_shape: tuple[int, int, int], num_classes: int
) -> ModelSummary:
    """Work out the shape, params and MACs of every layer of a model, before any training.

    A block model is inferred analytically, layer by layer; a model with `factory` set is built
    by the user's factory and measured by a dry forward pass (see `models.factory`).

    Args:
        model: the model section of a study file.
        input_shape: one image as (channels, height, width).
        num_classes: outputs of the appended output layer.

    Returns:
        The summary: one row per layer, totals and the output shape (num_classes,).

    Raises:
        ArchitectureError: the model cannot work; the message names the block, the layer,
            the incoming shape and the setting to change.
    """
    if model.factory is not None:
        # A factory's model can only be known by building it, which needs torch.
        from interplay.models.factory import factory_model

        return factory_model(model, input_shape, num_classes)[1]
    return plan_model(model, input_shape, num_classes).summary
