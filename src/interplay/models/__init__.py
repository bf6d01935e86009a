"""Models from study files: layer factories, shape inference, the block builder, summaries."""

from interplay.models.builder import BlockNet, build_model, summary_of
from interplay.models.factory import factory_model, load_factory
from interplay.models.layers import (
    ACT_LAYERS,
    ADAPTIVE_POOL_LAYERS,
    DROPOUT_LAYERS,
    LAYERS,
    NORM_LAYERS,
    POOL_LAYERS,
    make_layer,
)
from interplay.models.shapes import infer_model, plan_model
from interplay.models.summary import LayerRow, ModelSummary, render_summary

__all__ = [
    "ACT_LAYERS",
    "ADAPTIVE_POOL_LAYERS",
    "DROPOUT_LAYERS",
    "LAYERS",
    "NORM_LAYERS",
    "POOL_LAYERS",
    "BlockNet",
    "LayerRow",
    "ModelSummary",
    "build_model",
    "factory_model",
    "infer_model",
    "load_factory",
    "make_layer",
    "plan_model",
    "render_summary",
    "summary_of",
]
