"""Every figure of an analysis, written as PNG and SVG, listed with what each one shows."""

from __future__ import annotations

import itertools
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from interplay.analysis.table import Prepared

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from interplay.analysis.summary import AnalysisResult

logger = logging.getLogger(__name__)


def write_figures(
    prepared: Prepared, result: AnalysisResult, directory: Path
) -> list[dict[str, Any]]:
    """Draw and save the figures; returns [{kind, params, png, svg, caption}].

    Paths are relative to the analysis folder (the parent of `directory`).
    """
    # Imported here: interplay.plots imports this package, so a top-level import would cycle.
    from interplay import plots

    out: list[dict[str, Any]] = []

    def add(kind: str, params: list[str], fig: Figure, stem: str, caption: str) -> None:
        files = plots.save_figure(fig, directory, stem)
        out.append(
            {
                "kind": kind,
                "params": params,
                "png": f"{directory.name}/{files['png']}",
                "svg": f"{directory.name}/{files['svg']}",
                "caption": caption,
            }
        )

    names = [p.name for p in prepared.params]
    metric = prepared.metric.label
    for a, b in itertools.combinations(names, 2):
        x, y = plots.orient(prepared, a, b)
        heat = plots.get_heatmap_info(prepared, x, y)
        add(
            "heatmap",
            [a, b],
            plots.plot_heatmap(heat),
            f"heatmap_{a}__{b}",
            f"{metric.capitalize()} per {y} x {x} cell: {heat.spread}; best cell outlined.",
        )
        inter = plots.get_interaction_info(prepared, x, y)
        add(
            "interaction",
            [a, b],
            plots.plot_interaction(inter),
            f"interaction_{a}__{b}",
            f"{metric.capitalize()} against {x}, one line per {y}; bars: {inter.error}.",
        )
    grid = result.summary.get("design", {}).get("method", "grid") == "grid"
    # In a search the level means of one param average over whatever the sampler paired
    # with them, so they mix its effect with the others'.
    marginal = "" if grid else " (marginal means: confounded with the other params)"
    if names:
        mains = plots.get_main_effects_info(prepared)
        add(
            "main_effects",
            names,
            plots.plot_main_effects(mains),
            "main_effects",
            f"Mean {metric} per level of each param{marginal}; bars: {mains.error}.",
        )
        if _has(prepared, "train_val_gap"):
            gap = plots.get_gap_info(prepared)
            add(
                "gap",
                names,
                plots.plot_gap(gap),
                "gap",
                f"Train - validation accuracy gap per level of each param; bars: {gap.error}.",
            )
        if any(c.startswith(f"{prepared.metric.name}@") for c in prepared.runs.columns):
            for name in names:
                curves = plots.get_curves_info(prepared, name)
                add(
                    "curves",
                    [name],
                    plots.plot_curves(curves),
                    f"curves_{name}",
                    f"{metric} per epoch by {name}; band: {curves.band}.",
                )
    bars = plots.get_importance_info(
        result.anova if prepared.params and not result.strengths else None,
        result.importance,
        result.strengths,
        unit=prepared.metric.unit,
        eta2_level=float(
            ((result.summary.get("anova") or {}).get("partial_eta2_interval") or {}).get(
                "level", 0.9
            )
        ),
    )
    if bars.params or bars.pairs:
        add(
            "importance",
            names,
            plots.plot_importance(bars),
            "importance",
            f"{bars.param_measure.capitalize()} per param and {bars.pair_measure} per pair; "
            f"bars: {bars.interval}.",
        )
    return out


def _has(prepared: Prepared, column: str) -> bool:
    if column not in prepared.runs.columns:
        return False
    values = prepared.runs[column].to_numpy(dtype=float)
    return bool(np.isfinite(values).any())
