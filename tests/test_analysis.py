"""The results-table contract, run selection, the ANOVA machinery and summary.json."""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import statsmodels.formula.api as smf
from statsmodels.stats.anova import anova_lm

from interplay.analysis import (
    ParamInfo,
    TableError,
    analyze,
    metric_info,
    params_from_search,
    prepare,
    simulate_table,
    to_json,
)
from interplay.analysis.anova import TypeIISums, estimable_terms, factor_codes, grid_anova
from interplay.analysis.effects import bootstrap_responses
from interplay.analysis.table import discretize, format_level
from interplay.config import SearchConfig

LR = ParamInfo("lr", "numeric", log=True, levels=[1e-3, 1e-2, 1e-1])
NORM = ParamInfo("norm", "categorical", levels=["none", "batch"])
WIDTH = ParamInfo("width", "numeric", levels=[16, 32])


def additive(c: Mapping[str, Any]) -> float:
    return 80.0 + 2.0 * math.log10(c["lr"]) + (3.0 if c["norm"] == "batch" else 0.0)


def grid_table(seeds: int = 3, seed: int = 0, params: list[ParamInfo] | None = None) -> Any:
    chosen = params or [LR, NORM]

    def mean(c: Mapping[str, Any]) -> float:
        return additive(c) + 0.05 * c.get("width", 0)

    return simulate_table(chosen, mean, seeds=seeds, noise_sd=0.5, seed=seed)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda t: t.drop(columns=["config_id"]), "lacks columns: config_id"),
        (lambda t: t.drop(columns=["param.norm"]), "lacks columns: param.norm"),
        (lambda t: t.assign(state="done"), "unknown run states ['done']"),
        (lambda t: t.assign(run_id="same"), "appears more than once"),
        (lambda t: t.iloc[:0], "has no runs"),
        (lambda t: t.assign(**{"param.norm": "weird"}), "not among its levels"),
        (lambda t: t.assign(**{"param.lr": -1.0}), "log-scaled but has values <= 0"),
    ],
)
def test_prepare_broken_table_raises_clear_error(change: Any, message: str) -> None:
    with pytest.raises(TableError, match=message.replace("[", r"\[").replace("]", r"\]")):
        prepare(change(grid_table()), [LR, NORM])


def test_prepare_replicates_with_different_params_raise() -> None:
    table = grid_table()
    table.loc[0, "param.norm"] = "batch" if table.loc[0, "param.norm"] == "none" else "none"
    with pytest.raises(TableError, match="must share every param"):
        prepare(table, [LR, NORM])


def test_prepare_final_keeps_early_stopped_and_excludes_pruned() -> None:
    table = grid_table()
    table.loc[1, ["state", "epochs_done"]] = ["pruned", 1]
    table.loc[2, "epochs_done"] = 2  # stopped early by its own early stopping
    table.loc[5, ["state", "reason"]] = ["failed", "out of memory"]
    table.loc[6, "val_acc"] = np.nan
    prepared = prepare(table, [LR, NORM])

    assert prepared.mode == "final"
    assert len(prepared.runs) == len(table) - 3
    assert prepared.exclusion_counts() == {"failed": 1, "pruned": 1, "missing metric": 1}
    assert prepared.early_stopped == 1
    why = {e.run_id: e.why for e in prepared.exclusions}
    assert why[table.loc[5, "run_id"]] == "failed: out of memory"
    assert prepared.metric.unit == "%"
    assert prepared.runs["value"].iloc[0] == pytest.approx(table.loc[0, "val_acc"] * 100)


def test_prepare_fixed_epoch_excludes_runs_that_did_not_reach_it() -> None:
    table = grid_table()
    table.loc[1, ["state", "epochs_done", "val_acc@3"]] = ["pruned", 2, np.nan]
    table.loc[2, ["epochs_done", "val_acc@3"]] = [1, np.nan]
    table.loc[2, "val_acc@2"] = np.nan
    prepared = prepare(table, [LR, NORM], epoch=2)

    assert prepared.mode == "fixed epoch" and prepared.epoch == 2
    # The pruned run reached epoch 2 and is compared there; the early-stopped one is not.
    assert prepared.exclusion_counts() == {"stopped early before the epoch": 1}
    assert prepared.runs["value"].iloc[0] == pytest.approx(table.loc[0, "val_acc@2"] * 100)


def test_prepare_common_epoch_is_last_epoch_all_complete_runs_reached() -> None:
    table = grid_table()
    table.loc[3, ["epochs_done", "val_acc@3"]] = [2, np.nan]
    table.loc[4, ["state", "epochs_done", "val_acc@2", "val_acc@3"]] = [
        "pruned",
        1,
        np.nan,
        np.nan,
    ]
    prepared = prepare(table, [LR, NORM], epoch="common")

    assert prepared.mode == "last common epoch" and prepared.epoch == 2
    assert prepared.exclusion_counts() == {"pruned before the epoch": 1}
    assert "epoch 2" in prepared.rule


def test_prepare_all_runs_excluded_raises_with_counts() -> None:
    table = grid_table().assign(state="failed")
    with pytest.raises(TableError, match=r"all 18 were excluded \(failed 18\)"):
        prepare(table, [LR, NORM])


def test_prepare_epoch_without_column_raises() -> None:
    with pytest.raises(TableError, match=r"choose an epoch among 1\.\.3"):
        prepare(grid_table(), [LR, NORM], epoch=9)


@pytest.mark.parametrize(
    ("name", "direction", "unit"),
    [
        ("val_acc", "maximize", "%"),
        ("test_acc", "maximize", "%"),
        ("val_loss", "minimize", ""),
        ("train_val_gap", "minimize", "%"),
    ],
)
def test_metric_info_direction_and_unit(name: str, direction: str, unit: str) -> None:
    info = metric_info(name)
    assert (info.direction, info.unit) == (direction, unit)


@pytest.mark.parametrize(
    ("value", "label"),
    [
        (0.001, "1e-3"),
        (0.00025, "2.5e-4"),
        (0.5, "0.5"),
        (32, "32"),
        (1.0, "1"),
        ("batch", "batch"),
    ],
)
def test_format_level_readable(value: Any, label: str) -> None:
    assert format_level(value) == label


def test_discretize_range_bins_on_log_scale() -> None:
    values = pd.Series(np.geomspace(1e-4, 1e-1, 40))
    levels = discretize(ParamInfo("lr", "numeric", log=True), values, bins=4)

    assert levels.binned and len(levels.labels) == 4
    assert np.bincount(levels.codes).tolist() == [10, 10, 10, 10]
    # Bin centers are geometric: each is about 10^0.75 times the previous.
    ratios = np.diff(np.log10(levels.positions))
    assert ratios == pytest.approx([0.75] * 3, abs=1e-6)


def test_params_from_search_kinds_levels_and_log() -> None:
    search = SearchConfig.model_validate(
        {
            "method": "grid",
            "grid_points": 3,
            "params": {
                "norm": {"values": ["batch", "none"]},
                "dropout": {"values": [0.0, 0.5]},
                "lr": {"low": 1e-4, "high": 1e-2, "log": True},
            },
        }
    )
    params = {p.name: p for p in params_from_search(search)}

    assert params["norm"] == ParamInfo("norm", "categorical", False, ["batch", "none"])
    assert params["dropout"].kind == "numeric"
    assert params["lr"].log and params["lr"].levels == pytest.approx([1e-4, 1e-3, 1e-2])


@pytest.mark.parametrize("drop", [[], [0, 1, 9, 20]])
def test_type2_sums_match_statsmodels(drop: list[int]) -> None:
    params = [LR, NORM, WIDTH]
    prepared = prepare(grid_table(seeds=2, params=params).drop(index=drop), params)
    codes, _ = factor_codes(prepared)
    terms, dropped, _ = estimable_terms(codes)
    assert not dropped and len(terms) == 6
    y = prepared.runs["value"].to_numpy()
    ours = TypeIISums(codes, terms).sums(y[:, None])

    frame = pd.DataFrame({name: codes[name].astype(str) for name in codes}).assign(y=y)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = smf.ols("y ~ (C(lr) + C(norm) + C(width))**2", data=frame).fit()
        table = anova_lm(fit, typ=2)
    for term in terms:
        label = ":".join(f"C({n})" for n in term)
        assert ours[term][0] == pytest.approx(table.loc[label, "sum_sq"], rel=1e-8)


def test_grid_anova_empty_cell_drops_that_interaction() -> None:
    table = grid_table()
    keep = ~((table["param.lr"] == 1e-3) & (table["param.norm"] == "batch"))
    anova, _, _ = grid_anova(prepare(table[keep], [LR, NORM]))

    assert anova.term("lr", "norm") is None
    assert "empty cell" in (anova.why_not("lr", "norm") or "")
    lr = anova.term("lr")
    assert lr is not None and lr.p is not None


def test_grid_anova_constant_metric_has_no_tests() -> None:
    table = grid_table().assign(val_acc=0.9)
    anova, _, _ = grid_anova(prepare(table, [LR, NORM]))

    assert all(t.p is None and t.f is None for t in anova.terms)
    assert any("constant" in note for note in anova.notes)


def test_grid_anova_identical_replicates_has_no_f_test() -> None:
    table = simulate_table([LR, NORM], additive, seeds=2, noise_sd=0.0, seed=1)
    anova, _, _ = grid_anova(prepare(table, [LR, NORM]))

    assert all(t.p is None for t in anova.terms)
    assert anova.term("lr") is not None and anova.term("lr").sum_sq > 0  # type: ignore[union-attr]
    assert any("identical replicates" in note for note in anova.notes)


def test_bootstrap_responses_keep_cells_and_are_seeded() -> None:
    prepared = prepare(grid_table(), [LR, NORM])
    first = bootstrap_responses(prepared, 50, seed=3)
    again = bootstrap_responses(prepared, 50, seed=3)

    assert first.shape == (len(prepared.runs), 51)
    np.testing.assert_array_equal(first, again)
    # Resampling within a configuration keeps every configuration's mean on average.
    groups = prepared.runs.groupby("config_id").indices
    for rows in groups.values():
        assert first[rows, 1:].mean() == pytest.approx(first[rows, 0].mean(), abs=0.3)


def test_to_json_replaces_nan_and_numpy() -> None:
    value = {"a": np.float64(np.nan), "b": (np.int64(2), math.inf), "c": np.array([1.5])}
    assert to_json(value) == {"a": None, "b": [2, None], "c": [1.5]}


def test_analyze_writes_results_summary_and_every_figure(tmp_path: Path) -> None:
    table = grid_table()
    result = analyze(table, [LR, NORM], method="grid", out_dir=tmp_path, n_boot=100)

    assert (tmp_path / "results.csv").is_file()
    assert len(pd.read_csv(tmp_path / "results.csv")) == len(table)
    text = (tmp_path / "summary.json").read_text()
    summary = json.loads(text, parse_constant=lambda c: pytest.fail(f"{c} in summary.json"))
    assert summary["schema"] == "interplay.analysis/1"
    assert summary["design"]["complete_grid"] is True
    assert summary["design"]["seeds_min"] == summary["design"]["seeds_max"] == 3
    kinds = sorted(f["kind"] for f in summary["figures"])
    assert kinds == [
        "curves",
        "curves",
        "gap",
        "heatmap",
        "importance",
        "interaction",
        "main_effects",
    ]
    for figure in summary["figures"]:
        assert (tmp_path / figure["png"]).stat().st_size > 1000
        assert (tmp_path / figure["svg"]).read_text().startswith("<?xml")
    top = summary["interactions"][0]
    assert (tmp_path / top["figures"]["heatmap"]["png"]).is_file()
    best = summary["best"]
    assert best["params"] == {"lr": 0.1, "norm": "batch"}
    assert best["n"] == 3 and best["mean"] == pytest.approx(result.configs["mean"].max())
    assert summary["configs"][0]["config_id"] == best["config_id"]
    assert summary["noise"]["pooled_seed_sd"] == pytest.approx(0.5, abs=0.2)


def test_analyze_minimized_metric_picks_lowest_as_best() -> None:
    result = analyze(grid_table(), [LR, NORM], method="grid", metric="val_loss", n_boot=0)
    assert result.summary["metric"]["direction"] == "minimize"
    assert result.summary["best"]["mean"] == pytest.approx(result.configs["mean"].min())
    assert result.summary["metric"]["min_effect"] is None


def test_analyze_no_params_gives_best_and_noise_only() -> None:
    table = simulate_table([], lambda c: 85.0, seeds=4, noise_sd=0.5, seed=2)
    result = analyze(table, [], method="grid", n_boot=50)

    assert result.interactions == [] and result.summary["best"]["n"] == 4
    assert result.summary["anova"]["terms"] == []


def test_regression_anova_few_runs_falls_back_to_main_effects() -> None:
    from interplay.analysis.anova import regression_anova
    from interplay.analysis.table import prepare

    drop = ParamInfo("dropout", "numeric")
    norm = ParamInfo("norm", "categorical", levels=["none", "batch", "group"])
    lr = ParamInfo("lr", "numeric", log=True)

    def mean(c: Mapping[str, Any]) -> float:
        return 80.0 + 4.0 * math.log10(c["lr"] / 1e-3)

    ranges = {"dropout": (0.0, 0.5), "lr": (1e-4, 1e-1)}
    table = simulate_table(
        [drop, norm, lr], mean, design="random", seeds=1, trials=12, ranges=ranges, seed=3
    )
    anova = regression_anova(prepare(table, [drop, norm, lr], "val_acc", None))
    assert anova.residual_df >= 2
    assert any("interaction" in note and "left out" in note for note in anova.notes)
    lr_term = anova.term("lr")
    assert lr_term is not None and lr_term.p is not None and lr_term.p < 0.01
    assert anova.term("lr", "norm") is None
    assert "left out" in (anova.why_not("lr", "norm") or "")
