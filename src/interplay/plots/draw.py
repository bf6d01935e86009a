"""Drawing the figures from their info dataclasses (matplotlib, no pyplot state).

Figures are sized for half the width of an A4 page (86 mm) with 7-8 pt text, so they stay
legible when the one-page report places them side by side at their own size.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast

import matplotlib
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from matplotlib.ticker import NullLocator

from interplay.plots.info import (
    CurvesInfo,
    HeatmapInfo,
    ImportanceInfo,
    InteractionInfo,
    MainEffectsInfo,
    Panel,
    Series,
    readable_ticks,
)

logger = logging.getLogger(__name__)

WIDTH_IN = 3.4  # 86 mm: half an A4 text width
HEIGHT_IN = 2.6
STYLE: dict[str, Any] = {
    "font.family": "DejaVu Sans",
    "font.size": 8,
    "axes.titlesize": 8,
    "axes.labelsize": 8,
    "xtick.labelsize": 7,
    "ytick.labelsize": 7,
    "legend.fontsize": 7,
    "legend.title_fontsize": 7,
    "lines.linewidth": 1.4,
    "lines.markersize": 4,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "grid.linewidth": 0.5,
    "savefig.dpi": 200,
    "svg.fonttype": "none",  # text stays text in SVG: searchable and sharp
}


@contextmanager
def _style() -> Iterator[None]:
    with matplotlib.rc_context():
        # The stubs type rcParams keys as literals; the keys above are valid rc names.
        matplotlib.rcParams.update(cast(Any, STYLE))
        yield


def _figure(width: float = WIDTH_IN, height: float = HEIGHT_IN) -> Figure:
    return Figure(figsize=(width, height), layout="constrained")


def _x_axis(ax: Axes, positions: list[float], labels: list[str], log: bool, cat: bool) -> None:
    if log:
        ax.set_xscale("log")
        ax.xaxis.set_minor_locator(NullLocator())
    if not cat:
        positions, labels = readable_ticks(positions, labels, log)
    ax.set_xticks(positions, labels)
    if cat or len(labels) > 4:
        for tick in ax.get_xticklabels():
            tick.set_rotation(30 if max((len(t) for t in labels), default=0) > 6 else 0)
            tick.set_horizontalalignment("right" if tick.get_rotation() else "center")
    if cat:
        ax.set_xlim(-0.5, len(positions) - 0.5)


def _clip_y(ax: Axes, bounds: tuple[float, float] | None) -> None:
    """Keep the y axis within what the metric can be (0-100 % for accuracies)."""
    if bounds is None:
        return
    low, high = ax.get_ylim()
    ax.set_ylim(max(low, bounds[0]), min(high, bounds[1]))


def _dodge(series: Series, k: int, count: int, log: bool, cat: bool) -> np.ndarray:
    """Shift each line a little sideways so error bars of different lines do not overlap."""
    x = np.asarray(series.x, dtype=float)
    if count < 2 or len(x) == 0:
        return x
    shift = (k - (count - 1) / 2) / max(count, 1)
    if cat:
        return x + 0.25 * shift
    if log:
        span = math.log10(max(x) / min(x)) if min(x) > 0 and max(x) > min(x) else 1.0
        return x * 10 ** (0.04 * span * shift)
    span = float(np.ptp(x)) or 1.0
    return x + 0.04 * span * shift


def _errorbar(ax: Axes, x: np.ndarray, s: Series, label: str | None = None) -> None:
    mean = np.array([np.nan if v is None else v for v in s.mean], dtype=float)
    low = np.array([np.nan if v is None else v for v in s.low], dtype=float)
    high = np.array([np.nan if v is None else v for v in s.high], dtype=float)
    err = np.vstack([np.nan_to_num(mean - low), np.nan_to_num(high - mean)])
    ax.errorbar(x, mean, yerr=err, marker="o", capsize=2, elinewidth=0.8, label=label)


def plot_heatmap(info: HeatmapInfo) -> Figure:
    """Mean metric per cell, each cell annotated with mean and sd; the best cell outlined."""
    with _style():
        fig = _figure(WIDTH_IN, max(HEIGHT_IN, 0.9 + 0.38 * len(info.y_labels)))
        ax = fig.add_subplot()
        grid = np.array([[np.nan if v is None else v for v in row] for row in info.mean])
        # Categorical rows read top-down in study order; numeric ones grow upwards.
        image = ax.imshow(
            grid, cmap="viridis", aspect="auto", origin="upper" if info.y_categorical else "lower"
        )
        ax.grid(False)
        ax.set_xticks(range(len(info.x_labels)), info.x_labels)
        ax.set_yticks(range(len(info.y_labels)), info.y_labels)
        if max((len(t) for t in info.x_labels), default=0) > 5:
            for tick in ax.get_xticklabels():
                tick.set_rotation(30)
                tick.set_horizontalalignment("right")
        ax.set_xlabel(info.x_param)
        ax.set_ylabel(info.y_param)
        fig.colorbar(image, ax=ax, label=info.metric_label, shrink=0.9)
        finite = grid[np.isfinite(grid)]
        low, high = (finite.min(), finite.max()) if len(finite) else (0.0, 1.0)
        size = 6.5 if len(info.x_labels) <= 5 else 5.5
        for j, row in enumerate(info.mean):
            for i, mean in enumerate(row):
                if mean is None:
                    continue
                sd = info.sd[j][i]
                text = f"{mean:.1f}" + (f"\n±{sd:.1f}" if sd is not None else "")
                shade = (mean - low) / (high - low) if high > low else 0.5
                color = "black" if shade > 0.6 else "white"
                ax.text(i, j, text, ha="center", va="center", fontsize=size, color=color)
        if info.best is not None:
            j, i = info.best
            ax.add_patch(Rectangle((i - 0.5, j - 0.5), 1, 1, fill=False, lw=1.6, ec="red"))
        fig.suptitle(f"{info.y_param} x {info.x_param}: {info.spread}", fontsize=8)
    return fig


def plot_interaction(info: InteractionInfo) -> Figure:
    """The metric against one param, a line per level of the other, bars of ±1 sd."""
    with _style():
        fig = _figure()
        ax = fig.add_subplot()
        for k, series in enumerate(info.lines):
            x = _dodge(series, k, len(info.lines), info.x_log, info.x_categorical)
            _errorbar(ax, x, series, label=series.label)
        _x_axis(ax, info.x_positions, info.x_labels, info.x_log, info.x_categorical)
        _clip_y(ax, info.y_bounds)
        ax.set_xlabel(_x_label(info.x_param, info.x_log, info.x_binned))
        ax.set_ylabel(info.metric_label)
        # The title spans the figure and the legend sits beside the axes at mid height, so
        # the legend's own title never runs into the figure's (as it did at the top right).
        fig.suptitle(f"{info.line_param} x {info.x_param} (bars: {info.error})", fontsize=7)
        fig.legend(loc="outside right center", title=info.line_param, frameon=False)
    return fig


def _panels(info: MainEffectsInfo, title: str) -> Figure:
    count = max(len(info.panels), 1)
    columns = min(count, 3)
    rows = math.ceil(count / columns)
    with _style():
        width = WIDTH_IN if columns == 1 else min(7.0, 2.4 * columns)
        fig = _figure(width, 2.2 * rows + 0.2)
        axes = fig.subplots(rows, columns, sharey=True, squeeze=False).ravel()
        for ax, panel in zip(axes, info.panels, strict=False):
            _panel(ax, panel)
        # The axes share y: clipping one clips them all.
        _clip_y(axes[0], info.y_bounds)
        for ax in axes[len(info.panels) :]:
            ax.set_visible(False)
        for row in range(rows):
            axes[row * columns].set_ylabel(info.metric_label)
        fig.suptitle(f"{title} (bars: {info.error})", fontsize=7)
    return fig


def _panel(ax: Axes, panel: Panel) -> None:
    _errorbar(ax, np.asarray(panel.series.x, dtype=float), panel.series)
    _x_axis(ax, panel.positions, panel.labels, panel.log, panel.categorical)
    ax.set_xlabel(_x_label(panel.param, panel.log, panel.binned))


def _x_label(param: str, log: bool, binned: bool) -> str:
    notes = [n for n, on in (("log scale", log), ("binned, at bin centers", binned)) if on]
    return f"{param} ({', '.join(notes)})" if notes else param


def plot_main_effects(info: MainEffectsInfo) -> Figure:
    """One panel per param: the metric's mean per level."""
    return _panels(info, "Main effects")


def plot_gap(info: MainEffectsInfo) -> Figure:
    """The train - validation gap per level of each param."""
    return _panels(info, "Train - validation gap")


def plot_curves(info: CurvesInfo) -> Figure:
    """Mean learning curve per level of a param with a band of +-1 sd."""
    with _style():
        fig = _figure()
        ax = fig.add_subplot()
        for series in info.series:
            x = np.asarray(series.x, dtype=float)
            mean = np.array([np.nan if v is None else v for v in series.mean], dtype=float)
            low = np.array([np.nan if v is None else v for v in series.low], dtype=float)
            high = np.array([np.nan if v is None else v for v in series.high], dtype=float)
            (line,) = ax.plot(x, mean, marker="o", markersize=2.5, label=series.label)
            ax.fill_between(x, low, high, color=line.get_color(), alpha=0.2, linewidth=0)
        ax.set_xlabel("epoch")
        ax.set_ylabel(info.metric_label)
        if info.epochs:
            step = max(1, len(info.epochs) // 8)
            ax.set_xticks(info.epochs[::step])
        _clip_y(ax, info.y_bounds)
        fig.suptitle(f"Learning curves by {info.param} (band: {info.band})", fontsize=7)
        fig.legend(loc="outside right center", title=info.param, frameon=False)
    return fig


def plot_importance(info: ImportanceInfo) -> Figure:
    """Horizontal bars: importance per param and interaction strength per pair, 95% CIs."""
    groups = [(info.params, info.param_measure), (info.pairs, info.pair_measure)]
    groups = [(bars, measure) for bars, measure in groups if bars]
    with _style():
        heights = [0.5 + 0.22 * len(bars) for bars, _ in groups] or [1.0]
        fig = _figure(WIDTH_IN, max(HEIGHT_IN, sum(heights) + 0.4))
        if not groups:
            fig.text(0.5, 0.5, "nothing to rank", ha="center")
            return fig
        axes = fig.subplots(len(groups), 1, squeeze=False, height_ratios=heights).ravel()
        for ax, (bars, measure) in zip(axes, groups, strict=True):
            y = np.arange(len(bars))[::-1]
            values = np.array([b.value for b in bars])
            # TODO: search designs draw the whole bootstrap interval of fANOVA shares and H
            # sizes, whose lower end noise lifts above 0 (the report prints only the upper
            # end); a one-sided whisker would read more honestly.
            low = np.array([b.value - b.low if b.low is not None else 0.0 for b in bars])
            high = np.array([b.high - b.value if b.high is not None else 0.0 for b in bars])
            ax.barh(y, values, xerr=np.vstack([low, high]).clip(min=0), capsize=2, color="C0")
            ax.set_yticks(y, [b.label for b in bars])
            ax.set_xlabel(measure)
            ax.grid(axis="y", visible=False)
        fig.suptitle(f"Importance and interaction strength (bars: {info.interval})", fontsize=7)
    return fig


def save_figure(fig: Figure, directory: Path, stem: str) -> dict[str, str]:
    """Write the figure as PNG and SVG; returns the file names relative to `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", stem)
    out = {}
    for fmt in ("png", "svg"):
        path = directory / f"{stem}.{fmt}"
        # savefig runs outside the style context, so its dpi is passed on explicitly.
        fig.savefig(path, format=fmt, dpi=STYLE["savefig.dpi"])
        out[fmt] = path.name
    return out
