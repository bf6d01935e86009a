"""Figures: the numbers behind each one, and that each draws and saves (not pixels)."""

from __future__ import annotations

import math
import struct
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.text import Text

from interplay import plots
from interplay.analysis import ParamInfo, Prepared, prepare, simulate_table
from interplay.analysis.anova import grid_anova
from interplay.analysis.effects import eta2_intervals
from interplay.analysis.importance import PairStrength, ParamImportance

LR = ParamInfo("lr", "numeric", log=True, levels=[1e-3, 1e-2, 1e-1])
# Not alphabetical: figures must keep the study's order.
NORM = ParamInfo("norm", "categorical", levels=["none", "layer", "batch"])
BOOST = {"none": 0.0, "layer": 1.0, "batch": 3.0}


def mean(c: Mapping[str, Any]) -> float:
    return 80.0 + 2.0 * math.log10(c["lr"]) + BOOST[c["norm"]]


@pytest.fixture
def prepared() -> Prepared:
    table = simulate_table([LR, NORM], mean, seeds=3, noise_sd=0.5, epochs=4, seed=3)
    table = table.drop(index=[4])  # one configuration loses a seed
    return prepare(table, [LR, NORM])


def test_orient_puts_numeric_param_on_x(prepared: Prepared) -> None:
    assert plots.orient(prepared, "norm", "lr") == ("lr", "norm")
    assert plots.orient(prepared, "lr", "norm") == ("lr", "norm")


def test_get_heatmap_info_cells_match_runs(prepared: Prepared) -> None:
    info = plots.get_heatmap_info(prepared, "lr", "norm")
    runs = prepared.runs
    assert info.x_labels == ["1e-3", "0.01", "0.1"]
    assert info.y_labels == ["none", "layer", "batch"]
    assert info.y_categorical and not info.binned and info.over == "seeds"
    for j, norm in enumerate(NORM.levels or []):
        for i, lr in enumerate(LR.levels or []):
            cell = runs.loc[(runs["param.norm"] == norm) & (runs["param.lr"] == lr), "value"]
            assert info.mean[j][i] == pytest.approx(cell.mean())
            assert info.sd[j][i] == pytest.approx(cell.std(ddof=1))
            assert info.n[j][i] == len(cell)
    assert sorted(n for row in info.n for n in row) == [2] + [3] * 8
    assert info.best == (2, 2)  # batch norm at lr 0.1
    assert info.metric_label == "validation accuracy (%)"


def test_get_interaction_info_lines_with_sd_bars(prepared: Prepared) -> None:
    info = plots.get_interaction_info(prepared, "lr", "norm")
    assert info.x_log and not info.x_categorical
    assert info.x_positions == pytest.approx([1e-3, 1e-2, 1e-1])
    assert [line.label for line in info.lines] == ["none", "layer", "batch"]
    runs = prepared.runs
    cell = runs.loc[(runs["param.norm"] == "batch") & (runs["param.lr"] == 1e-2), "value"]
    sd = cell.std(ddof=1)
    batch = info.lines[2]
    assert batch.mean[1] == pytest.approx(cell.mean())
    assert (batch.low[1], batch.high[1]) == pytest.approx((cell.mean() - sd, cell.mean() + sd))
    assert info.error == "mean \u00b1 sd over seeds"


def test_get_main_effects_info_one_panel_per_param(prepared: Prepared) -> None:
    info = plots.get_main_effects_info(prepared)
    assert [p.param for p in info.panels] == ["lr", "norm"]
    lr, norm = info.panels
    assert lr.log and not lr.categorical and lr.positions == pytest.approx([1e-3, 1e-2, 1e-1])
    assert norm.categorical and norm.labels == ["none", "layer", "batch"]
    assert norm.positions == [0.0, 1.0, 2.0]
    assert sum(norm.series.n) == len(prepared.runs)
    assert norm.series.mean[2] == pytest.approx(
        prepared.runs.loc[prepared.runs["param.norm"] == "batch", "value"].mean()
    )


def test_get_gap_info_in_percent_points(prepared: Prepared) -> None:
    info = plots.get_gap_info(prepared)
    runs = prepared.runs
    expected = runs.loc[runs["param.norm"] == "none", "train_val_gap"].mean() * 100
    assert info.panels[1].series.mean[0] == pytest.approx(expected)
    assert info.metric_label == "train - validation gap (%)"


def test_get_curves_info_early_stopped_run_drops_out(prepared: Prepared) -> None:
    runs = prepared.runs
    first = runs.index[runs["param.norm"] == "layer"][0]
    runs.loc[first, ["val_acc@3", "val_acc@4"]] = np.nan
    info = plots.get_curves_info(prepared, "norm")

    assert info.epochs == [1, 2, 3, 4]
    layer = info.series[1]
    assert layer.label == "layer"
    assert layer.n == [8, 8, 7, 7]  # one layer run was dropped by the fixture
    epoch1 = runs.loc[runs["param.norm"] == "layer", "val_acc@1"] * 100
    assert layer.mean[0] == pytest.approx(epoch1.mean())
    high, mean = layer.high[0], layer.mean[0]
    assert high is not None and mean is not None
    assert high - mean == pytest.approx(epoch1.std(ddof=1))


def test_get_importance_info_from_grid_anova(prepared: Prepared) -> None:
    anova, codes, terms = grid_anova(prepared)
    eta2_intervals(anova)
    info = plots.get_importance_info(anova)

    assert info.param_measure == info.pair_measure == "partial eta squared"
    assert [b.label for b in info.pairs] == ["lr x norm"]
    assert [b.value for b in info.params] == sorted((b.value for b in info.params), reverse=True)
    for bar in info.params:
        assert bar.low is not None and bar.high is not None and bar.low <= bar.high


def test_get_importance_info_from_search_methods() -> None:
    importance = [ParamImportance("lr", 0.7, (0.5, 0.9)), ParamImportance("norm", 0.3, None)]
    strengths = [PairStrength(("lr", "norm"), 0.4, (0.2, 0.6), 1.2, (0.8, 1.6))]
    info = plots.get_importance_info(None, importance, strengths, unit="%")

    assert [(b.label, b.value, b.low) for b in info.params] == [
        ("lr", 0.7, 0.5),
        ("norm", 0.3, None),
    ]
    assert (info.pairs[0].label, info.pairs[0].high) == ("lr x norm", 1.6)
    assert info.pair_measure.endswith("(%)") and len(info.methods) == 2


def test_get_heatmap_info_random_design_bins_ranges() -> None:
    params = [ParamInfo("lr", "numeric", log=True), ParamInfo("wd", "numeric")]
    table = simulate_table(
        params,
        lambda c: 85.0 + math.log10(c["lr"]),
        design="random",
        trials=48,
        seeds=1,
        ranges={"lr": (1e-4, 1e-1), "wd": (0.0, 1.0)},
        seed=4,
    )
    prepared = prepare(table, params)
    info = plots.get_heatmap_info(prepared, "lr", "wd")
    assert info.binned and len(info.x_labels) == 4 and info.over == "runs"
    assert sum(n for row in info.n for n in row) == 48
    inter = plots.get_interaction_info(prepared, "lr", "wd")
    assert inter.x_binned and inter.x_labels[0] != info.x_labels[0]  # centers, not ranges


DRAWINGS: dict[str, tuple[Callable[[Prepared], Any], Callable[[Any], Figure]]] = {
    "heatmap": (lambda p: plots.get_heatmap_info(p, "lr", "norm"), plots.plot_heatmap),
    "interaction": (lambda p: plots.get_interaction_info(p, "lr", "norm"), plots.plot_interaction),
    "main_effects": (plots.get_main_effects_info, plots.plot_main_effects),
    "gap": (plots.get_gap_info, plots.plot_gap),
    "curves": (lambda p: plots.get_curves_info(p, "norm"), plots.plot_curves),
    "importance": (lambda p: plots.get_importance_info(grid_anova(p)[0]), plots.plot_importance),
}


@pytest.mark.parametrize("kind", list(DRAWINGS))
def test_plot_draws_legible_figure_and_saves_png_svg(
    kind: str, prepared: Prepared, tmp_path: Path
) -> None:
    get_info, draw = DRAWINGS[kind]
    fig = draw(get_info(prepared))

    assert isinstance(fig, Figure)
    width, _ = fig.get_size_inches()
    assert width <= 7.0  # fits an A4 text width at its own size
    sizes = [float(t.get_fontsize()) for t in fig.findobj(Text) if t.get_text()]
    assert sizes and min(sizes) >= 5.5
    files = plots.save_figure(fig, tmp_path, f"{kind}_lr__norm")
    assert files == {"png": f"{kind}_lr__norm.png", "svg": f"{kind}_lr__norm.svg"}
    assert (tmp_path / files["png"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "<svg" in (tmp_path / files["svg"]).read_text()


def test_get_infos_bound_accuracy_axes_to_0_100(prepared: Prepared) -> None:
    assert plots.get_interaction_info(prepared, "lr", "norm").y_bounds == (0.0, 100.0)
    assert plots.get_main_effects_info(prepared).y_bounds == (0.0, 100.0)
    assert plots.get_curves_info(prepared, "norm").y_bounds == (0.0, 100.0)
    assert plots.get_gap_info(prepared).y_bounds is None  # a gap can be negative


@pytest.mark.parametrize("kind", ["interaction", "main_effects", "curves"])
def test_plot_accuracy_axis_stays_within_0_100(kind: str) -> None:
    # Accuracies near 0 and 100 % with a wide seed spread: the bars reach past both ends.
    table = simulate_table(
        [LR, NORM], lambda c: 2.0 if c["norm"] == "none" else 98.0, seeds=3, noise_sd=6.0
    )
    prepared = prepare(table, [LR, NORM])
    get_info, draw = DRAWINGS[kind]
    info = get_info(prepared)
    series = info.lines if kind == "interaction" else None
    if series is not None:
        highs = [h for s in series for h in s.high if h is not None]
        lows = [v for s in series for v in s.low if v is not None]
        assert max(highs) > 100.0 and min(lows) < 0.0  # the numbers stay as computed
    fig = draw(info)
    for ax in fig.axes:
        if ax.get_visible() and ax.has_data():
            low, high = ax.get_ylim()
            assert low >= 0.0 and high <= 100.0


def test_readable_ticks_drop_labels_that_would_touch() -> None:
    positions = [5.8e-3, 7.5e-3, 0.0123, 0.0125]
    labels = ["5.8e-3", "7.5e-3", "0.0123", "0.0125"]
    kept = plots.readable_ticks(positions, labels, log=True)
    assert kept == ([5.8e-3, 7.5e-3, 0.0123], ["5.8e-3", "7.5e-3", "0.0123"])
    even = ([1e-3, 1e-2, 1e-1], ["1e-3", "0.01", "0.1"])
    assert plots.readable_ticks(*even, log=True) == even


def test_plot_interaction_tick_labels_do_not_overlap() -> None:
    params = [ParamInfo("lr", "numeric", log=True), NORM]
    table = simulate_table(
        params,
        mean,
        design="random",
        trials=4,
        seeds=1,
        ranges={"lr": (5e-3, 2e-2)},
        seed=1,
    )
    table.loc[:, "param.lr"] = np.repeat([5.8e-3, 7.5e-3, 0.0123, 0.0125], len(table) // 4)
    prepared = prepare(table, params)
    fig = plots.plot_interaction(plots.get_interaction_info(prepared, "lr", "norm"))
    renderer = FigureCanvasAgg(fig).get_renderer()
    fig.draw(renderer)
    boxes = [t.get_window_extent(renderer) for t in fig.axes[0].get_xticklabels() if t.get_text()]
    assert len(boxes) >= 2
    assert not any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1 :])


@pytest.mark.parametrize("kind", ["interaction", "curves"])
def test_plot_legend_clear_of_every_title(kind: str) -> None:
    long = ParamInfo(
        "normalization_kind", "categorical", levels=["none", "batch", "layer", "instance"]
    )
    rate = ParamInfo("learning_rate", "numeric", log=True, levels=[1e-3, 1e-2, 1e-1])
    table = simulate_table(
        [rate, long], lambda c: 60.0 + 5.0 * math.log10(c["learning_rate"]), seeds=2
    )
    prepared = prepare(table, [rate, long])
    if kind == "interaction":
        fig = plots.plot_interaction(
            plots.get_interaction_info(prepared, "learning_rate", "normalization_kind")
        )
    else:
        fig = plots.plot_curves(plots.get_curves_info(prepared, "normalization_kind"))
    renderer = FigureCanvasAgg(fig).get_renderer()
    fig.draw(renderer)
    legend = fig.legends[0].get_window_extent(renderer)
    titles = [t for t in fig.findobj(Text) if t.get_text() and "(" in t.get_text()]
    assert titles  # the title names what the bars or bands are
    assert not any(legend.overlaps(t.get_window_extent(renderer)) for t in titles)


def test_heatmap_and_interaction_say_when_there_is_no_sd() -> None:
    table = simulate_table([LR, NORM], mean, seeds=1, noise_sd=0.5)
    prepared = prepare(table, [LR, NORM])
    heat = plots.get_heatmap_info(prepared, "lr", "norm")
    assert heat.spread == "one run per cell, no sd"
    assert "sd over" not in plots.get_interaction_info(prepared, "lr", "norm").error


def test_heatmap_spread_notes_cells_with_one_run(prepared: Prepared) -> None:
    assert plots.get_heatmap_info(prepared, "lr", "norm").spread == "mean ± sd over seeds"
    runs = prepared.runs
    first = runs.index[runs["config_id"] == runs["config_id"].iloc[0]]
    prepared.runs = runs.drop(index=first[1:]).reset_index(drop=True)
    heat = plots.get_heatmap_info(prepared, "lr", "norm")
    assert heat.spread == "mean ± sd over seeds (none for one run)"


def test_save_figure_png_at_print_resolution(prepared: Prepared, tmp_path: Path) -> None:
    fig = plots.plot_heatmap(plots.get_heatmap_info(prepared, "lr", "norm"))
    files = plots.save_figure(fig, tmp_path, "heat")
    width, _ = struct.unpack(">II", (tmp_path / files["png"]).read_bytes()[16:24])
    assert width == round(fig.get_size_inches()[0] * plots.STYLE["savefig.dpi"])
