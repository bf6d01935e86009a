"""build_model: the nn.Module of a study's model section, after its shapes are inferred."""

from __future__ import annotations

import logging

import torch
from torch import nn

from interplay.config import ModelConfig
from interplay.models.factory import factory_model
from interplay.models.layers import make_layer
from interplay.models.shapes import PlannedLayer, plan_model
from interplay.models.summary import ModelSummary, format_macs

logger = logging.getLogger(__name__)


class BlockNet(nn.Module):
    """Blocks of layers followed by an output head.

    Each block repetition is its own nn.Sequential in `blocks`, so the number of blocks is an
    ordinary param of a study and `len(model.blocks)` is the depth that was built. The head
    flattens a feature map if one reaches it and maps the features to one score per class.
    """

    def __init__(self, blocks: list[nn.Sequential], head: nn.Sequential, summary: ModelSummary):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.head = head
        self.summary = summary

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, C, H, W)
        for block in self.blocks:
            x = block(x)  # (B, C', H', W') on feature maps, (B, F) once flattened
        return self.head(x)  # (B, num_classes)


def summary_of(module: nn.Module) -> ModelSummary:
    """The ModelSummary that `build_model` attached to a module, typed for callers."""
    summary = getattr(module, "summary", None)
    if not isinstance(summary, ModelSummary):
        raise ValueError(f"{type(module).__name__} was not built by build_model: no summary")
    return summary


def _sequential(layers: list[PlannedLayer]) -> nn.Sequential:
    return nn.Sequential(*(make_layer(p.config, p.row.in_shape) for p in layers))


def build_model(
    model: ModelConfig, input_shape: tuple[int, int, int], num_classes: int
) -> nn.Module:
    """Build the model of a study file, checking every shape before any layer is made.

    Block models become a `BlockNet`; with `model.factory` set, the user's factory builds the
    module (see `interplay.models.factory` for its calling convention). Either way the module
    carries its `summary` (a ModelSummary). Weights keep PyTorch's default initialization;
    seed torch before calling for reproducible weights.

    Args:
        model: the model section of a study file.
        input_shape: one image as (channels, height, width).
        num_classes: outputs of the appended output layer.

    Returns:
        The module, mapping (B, C, H, W) images to (B, num_classes) scores.

    Raises:
        ArchitectureError: the model cannot work; the message names the setting to change.
    """
    if model.factory is not None:
        if model.blocks:
            logger.warning("model.factory is set, so model.blocks only reach it as settings")
        module, _ = factory_model(model, input_shape, num_classes)
        return module

    plan = plan_model(model, input_shape, num_classes)
    net = BlockNet(
        [_sequential(b.layers) for b in plan.blocks], _sequential(plan.head), plan.summary
    )
    logger.debug(
        "built %d block repetitions: %s params, %s MACs",
        len(plan.blocks),
        f"{plan.summary.total_params:,}",
        format_macs(plan.summary.total_macs),
    )
    return net
