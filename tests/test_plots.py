"""Figures: the numbers behind each one, and that each draws and saves (not pixels)."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from matplotlib.figure import Figure
from matplotlib.text import Text

from interplay import plots
from interplay.analysis import ParamInfo, Prepared, prepare, simulate_table
from interplay.analysis.anova import grid_anova
from interplay.analysis.effects import bootstrap_responses, eta2_intervals
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
    assert layer.high[0] - layer.mean[0] == pytest.approx(epoch1.std(ddof=1))  # type: ignore[operator]


def test_get_importance_info_from_grid_anova(prepared: Prepared) -> None:
    anova, codes, terms = grid_anova(prepared)
    eta2_intervals(anova, codes, terms, bootstrap_responses(prepared, 200, seed=0))
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
