"""Models from study files: layer factories, shape inference, the block builder, summaries.

Shape inference and summaries need no torch, so `interplay summary` starts without importing
it; the names that build torch modules are imported on first use (PEP 562).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from interplay.models.shapes import infer_model, plan_model
from interplay.models.summary import (
    LayerRow,
    ModelSummary,
    render_summary,
    summary_plain_text,
)

if TYPE_CHECKING:
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

# Each torch-backed name and the module that defines it.
_LAZY = {
    "BlockNet": "builder",
    "build_model": "builder",
    "summary_of": "builder",
    "factory_model": "factory",
    "load_factory": "factory",
    "ACT_LAYERS": "layers",
    "ADAPTIVE_POOL_LAYERS": "layers",
    "DROPOUT_LAYERS": "layers",
    "LAYERS": "layers",
    "NORM_LAYERS": "layers",
    "POOL_LAYERS": "layers",
    "make_layer": "layers",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"interplay.models.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
    "summary_plain_text",
    "summary_of",
]
