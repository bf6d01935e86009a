"""Figures of a study: each is an info function (plain data) and a drawing function.

`get_heatmap_info(prepared, x, y) -> HeatmapInfo` then `plot_heatmap(info) -> Figure`, and
likewise for interaction, main effects, learning curves, the train-validation gap and
importance. `save_figure(fig, folder, stem)` writes PNG and SVG.
"""

from interplay.plots.draw import (
    HEIGHT_IN,
    STYLE,
    WIDTH_IN,
    plot_curves,
    plot_gap,
    plot_heatmap,
    plot_importance,
    plot_interaction,
    plot_main_effects,
    save_figure,
)
from interplay.plots.info import (
    Bar,
    CurvesInfo,
    HeatmapInfo,
    ImportanceInfo,
    InteractionInfo,
    MainEffectsInfo,
    Panel,
    Series,
    get_curves_info,
    get_gap_info,
    get_heatmap_info,
    get_importance_info,
    get_interaction_info,
    get_main_effects_info,
    orient,
    readable_ticks,
    value_bounds,
)

__all__ = [
    "HEIGHT_IN",
    "STYLE",
    "WIDTH_IN",
    "Bar",
    "CurvesInfo",
    "HeatmapInfo",
    "ImportanceInfo",
    "InteractionInfo",
    "MainEffectsInfo",
    "Panel",
    "Series",
    "get_curves_info",
    "get_gap_info",
    "get_heatmap_info",
    "get_importance_info",
    "get_interaction_info",
    "get_main_effects_info",
    "orient",
    "plot_curves",
    "plot_gap",
    "plot_heatmap",
    "plot_importance",
    "plot_interaction",
    "plot_main_effects",
    "readable_ticks",
    "save_figure",
    "value_bounds",
]
