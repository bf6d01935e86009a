"""The analysis on simulated tables with a known answer (the acceptance criteria)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from interplay.analysis import ParamInfo, analyze, prepare, simulate_table
from interplay.analysis.anova import grid_anova

DROPOUT = ParamInfo("dropout", "numeric", levels=[0.0, 0.25, 0.5])
# Study order on purpose not alphabetical: figures and contrasts must keep it.
NORM = ParamInfo("norm", "categorical", levels=["none", "batch", "layer", "group"])
NORM_EFFECT = {"none": 0.0, "batch": 2.0, "layer": 1.0, "group": 1.5}


def planted(interaction: float) -> Any:
    """85 + main effects + `interaction` points at (dropout 0.5, norm group), growing with
    both the dropout level and the norm's position in the study order."""

    def mean(c: Mapping[str, Any]) -> float:
        d = c["dropout"] / 0.5
        b = NORM.levels.index(c["norm"]) / 3  # type: ignore[union-attr]
        return 85.0 + 4.0 * d + NORM_EFFECT[c["norm"]] + interaction * d * b

    return mean


def test_grid_planted_interaction_found_with_sign_and_interval(tmp_path: Path) -> None:
    table = simulate_table([DROPOUT, NORM], planted(4.0), seeds=3, noise_sd=0.5, seed=7)
    result = analyze(table, [DROPOUT, NORM], method="grid", out_dir=tmp_path, n_boot=1000)

    top = result.interactions[0]
    assert top["params"] == ["dropout", "norm"]
    assert top["p"] < 0.01
    assert top["df"] == 6
    assert top["partial_eta2_ci"][0] > 0.1
    # The largest 2 x 2 contrast sits at the planted corner and has the planted sign.
    assert top["contrast_levels"] == {"dropout": [0.0, 0.5], "norm": ["none", "group"]}
    assert 3.0 < top["contrast"] < 5.0
    low, high = top["contrast_ci"]
    assert 0 < low < top["contrast"] < high
    assert top["residual_to_noise"] > 1.0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["interactions"][0]["contrast"] == pytest.approx(top["contrast"])


def test_grid_main_effects_found_in_direction() -> None:
    table = simulate_table([DROPOUT, NORM], planted(0.0), seeds=3, noise_sd=0.5, seed=8)
    result = analyze(table, [DROPOUT, NORM], method="grid", n_boot=200)

    assert result.anova is not None
    for name in ("dropout", "norm"):
        term = result.anova.term(name)
        assert term is not None and term.p is not None and term.p < 1e-6
    mains = {m.param: m for m in result.mains}
    assert mains["dropout"].trend == pytest.approx(1.0)
    assert mains["dropout"].range == pytest.approx(4.0, abs=0.6)
    # Level means come back in the study's order: none is lowest, batch highest.
    assert mains["norm"].labels == ["none", "batch", "layer", "group"]
    assert np.argmin(mains["norm"].means) == 0 and np.argmax(mains["norm"].means) == 1
    low, high = mains["norm"].range_ci or (0.0, 0.0)
    assert low < 2.0 < high


def test_grid_interaction_test_false_positive_rate_near_alpha() -> None:
    table = simulate_table([DROPOUT, NORM], planted(0.0), seeds=3, noise_sd=0.5, seed=9)
    prepared = prepare(table, [DROPOUT, NORM])
    expected = np.array(
        [
            planted(0.0)(dict(dropout=d, norm=n))
            for d, n in zip(
                prepared.runs["param.dropout"], prepared.runs["param.norm"], strict=True
            )
        ]
    )
    rng = np.random.default_rng(2024)
    hits = 0
    for _ in range(300):
        prepared.runs["value"] = expected + rng.normal(0.0, 0.5, len(expected))
        anova, _, _ = grid_anova(prepared)
        term = anova.term("dropout", "norm")
        assert term is not None and term.p is not None
        hits += term.p < 0.05
    assert 0.02 <= hits / 300 <= 0.09


def test_grid_one_seed_reports_interaction_not_estimable(tmp_path: Path) -> None:
    table = simulate_table([DROPOUT, NORM], planted(3.0), seeds=1, noise_sd=0.5, seed=10)
    result = analyze(table, [DROPOUT, NORM], method="grid", out_dir=tmp_path)

    assert result.anova is not None
    assert result.anova.term("dropout", "norm") is None
    assert "no replicates" in (result.anova.why_not("dropout", "norm") or "")
    # Main effects are still tested, against the interaction as residual (df 6).
    assert result.anova.residual_df == 6
    term = result.anova.term("norm")
    assert term is not None and term.p is not None
    top = result.interactions[0]
    assert top["testable"] is False and top["strength_measure"].startswith("max |residual")
    assert result.summary["noise"]["pooled_seed_sd"] is None
    assert json.loads((tmp_path / "summary.json").read_text())["interactions"][0]["p"] is None


def test_grid_failed_and_pruned_runs_excluded_with_counts() -> None:
    table = simulate_table([DROPOUT, NORM], planted(0.0), seeds=3, noise_sd=0.5, seed=11)
    table.loc[[0, 7], "state"] = "failed"
    table.loc[[0, 7], "reason"] = "loss is nan"
    table.loc[[3, 4, 20], "state"] = "pruned"
    table.loc[[3, 4, 20], "epochs_done"] = 1
    table.loc[[3, 4, 20], ["val_acc@2", "val_acc@3"]] = np.nan
    result = analyze(table, [DROPOUT, NORM], method="grid", n_boot=100)

    exclusions = result.summary["exclusions"]
    assert exclusions["counts"] == {"failed": 2, "pruned": 3}
    assert result.summary["design"]["runs_compared"] == len(table) - 5
    assert {e["run_id"] for e in exclusions["runs"]} == set(table.loc[[0, 7, 3, 4, 20], "run_id"])
    assert result.summary["design"]["balanced"] is False
    # Unbalanced cells still give a full table with the interaction tested.
    assert result.anova is not None and result.anova.term("dropout", "norm") is not None


def test_random_design_surrogate_finds_planted_pair() -> None:
    params = [
        ParamInfo("lr", "numeric", log=True),
        ParamInfo("wd", "numeric"),
        ParamInfo("width", "numeric"),
        ParamInfo("norm", "categorical", levels=["none", "batch"]),
    ]

    def mean(c: Mapping[str, Any]) -> float:
        x = np.log10(c["lr"]) + 3.0  # -1..1
        batch = 1.0 if c["norm"] == "batch" else -1.0
        return 85.0 + 1.5 * x + 3.0 * c["width"] + 3.0 * x * batch

    table = simulate_table(
        params,
        mean,
        design="random",
        trials=80,
        seeds=2,
        noise_sd=0.5,
        ranges={"lr": (1e-4, 1e-2), "wd": (0.0, 1.0), "width": (0.0, 1.0)},
        seed=12,
    )
    result = analyze(table, params, method="random", n_boot_surrogate=8)

    top = result.interactions[0]
    assert set(top["params"]) == {"lr", "norm"}
    assert top["strength_measure"] == "Friedman's H size"
    assert top["size_ci"][0] > max(e["size"] for e in result.interactions[1:])
    assert top["p"] < 1e-6  # the regression's linear-by-linear interaction test agrees
    importance = {i.param: i.importance for i in result.importance}
    assert importance["wd"] == min(importance.values())
    assert result.summary["importance"]["method"].startswith("optuna fANOVA")


@pytest.mark.parametrize("method", ["grid", "random"])
def test_eta2_interval_holds_zero_exactly_when_its_test_is_not_significant(method: str) -> None:
    # Partial eta squared cannot be negative: a bootstrap interval of it sits above 0 even at
    # p = 0.8. The interval from the F test must agree with the test instead.
    if method == "grid":
        params = [DROPOUT, NORM]
        table = simulate_table(params, planted(0.0), seeds=2, noise_sd=1.0, seed=14)
    else:
        params = [ParamInfo("lr", "numeric", log=True), ParamInfo("wd", "numeric")]
        table = simulate_table(
            params,
            lambda c: 85.0 + 2.0 * np.log10(c["lr"]),
            design="random",
            trials=30,
            seeds=2,
            ranges={"lr": (1e-4, 1e-1), "wd": (0.0, 1.0)},
            seed=13,
        )
    result = analyze(table, params, method=method, n_boot=50, n_boot_surrogate=2)

    assert result.summary["anova"]["partial_eta2_interval"]["level"] == pytest.approx(0.9)
    assert result.anova is not None
    verdicts = set()
    for term in result.anova.terms:
        assert term.p is not None and term.partial_eta2_ci is not None, term
        low, high = term.partial_eta2_ci
        assert 0.0 <= low <= high <= 1.0
        assert (low > 0) == (term.p < 0.05), term
        verdicts.add(term.p < 0.05)
    assert verdicts == {True, False}  # both sides of the test are exercised


def test_grid_configurations_without_a_compared_run_are_counted_by_reason() -> None:
    table = simulate_table([DROPOUT, NORM], planted(0.0), seeds=2, noise_sd=0.5, seed=14)
    failed, pruned, lost, short = table["config_id"].unique()[:4]
    table.loc[table["config_id"] == failed, ["state", "reason"]] = ["failed", "loss is nan"]
    table.loc[table["config_id"] == pruned, ["state", "epochs_done"]] = ["pruned", 1]
    table = table[table["config_id"] != lost]  # a grid point that never ran
    table = table.drop(index=table.index[table["config_id"] == short][:1])
    result = analyze(table.reset_index(drop=True), [DROPOUT, NORM], method="grid", n_boot=0)

    design = result.summary["design"]
    assert design["configs_planned"] == 12 and design["configs_seen"] == 11
    assert design["configs"] == 9 and design["complete_grid"] is False
    assert design["configs_not_compared"] == {"failed": 1, "pruned": 1, "not run": 1}
    assert design["runs_excluded"] == {"failed": 2, "pruned": 2}
    assert (design["seeds_min"], design["seeds_max"]) == (1, 2)


def test_best_lead_has_the_standard_error_of_a_difference_of_means() -> None:
    table = simulate_table([DROPOUT, NORM], planted(2.0), seeds=3, noise_sd=0.5, seed=15)
    table = table.drop(index=[0])
    result = analyze(table, [DROPOUT, NORM], method="grid", n_boot=0)

    best, noise = result.summary["best"], result.summary["noise"]["pooled_seed_sd"]
    n1, n2 = best["n"], best["runner_up"]["n"]
    assert best["difference_se"] == pytest.approx(noise * np.sqrt(1 / n1 + 1 / n2))
