"""`analyze()`: every number of a study's analysis, its figures, and summary.json.

Layout of summary.json (schema "interplay.analysis/1"). Metric values, means, sds,
contrasts and sizes are in the metric's unit (`metric.unit`: "%" means percent points for
accuracies). Intervals are [low, high] 95% intervals. A number that is undefined is null.

    schema        "interplay.analysis/1"
    metric        name, label, unit, scale (table value x scale = shown value), direction
                  (maximize | minimize), mode (final | fixed epoch | last common epoch),
                  epoch (null for final), alpha, min_effect
    design        method (grid, random, tpe, gp), analysis (what was run), params
                  [{name, kind, log, levels}], runs_total, runs_compared, runs_excluded
                  {reason: runs}, configs (with a compared run), configs_planned (grid
                  only), configs_seen, configs_not_compared {the reason all their runs
                  share, or "mixed", or "not run": configurations}, seeds_min, seeds_max
                  (compared runs per compared configuration), balanced, complete_grid
    exclusions    rule (which runs are compared, in words), counts {reason: runs},
                  excluded, early_stopped_kept, runs [{run_id, config_id, state, why}]
    noise         pooled_seed_sd (sd between seeds of a configuration, pooled), df,
                  residual_sd and residual_df of the ANOVA model, method
    anova         null, or {method, formula, terms [{term, params, df, df_resid, sum_sq, F, p,
                  partial_eta2, partial_eta2_ci}], residual {df, sum_sq, sd},
                  not_estimable [{term, why}], notes, partial_eta2_interval {level,
                  method}, bootstrap {resamples, seed, method}}; partial_eta2_ci comes
                  from the term's F test and holds 0 exactly when p >= alpha
    main_effects  [{param, labels, levels, means, sds, n, range, range_ci, trend_spearman}];
                  in a search the level means are marginal, so confounded
    interactions  ranked, strongest first: [{rank, params [a, b], strength,
                  strength_measure, method, testable, why_not, F, df, df_resid, p, partial_eta2,
                  partial_eta2_ci, test_method, noise_sd, figures {heatmap, interaction}
                  (each {png, svg}), and for grids: cell_means {params, levels_a, levels_b,
                  means[i][j]}, contrast, contrast_ci, contrast_levels {a: [a1, a2],
                  b: [b1, b2]}, max_abs_residual, max_abs_residual_ci, max_residual_cell,
                  residual_to_noise; for other designs: h, h_ci, size, size_ci}];
                  bootstrap intervals of sizes that cannot be negative (range_ci,
                  max_abs_residual_ci, h_ci, size_ci) inform by their upper end only
    importance    null, or {method, params [{param, importance, ci}], surrogate_r2}
    claims        {rule, alpha, min_effect, items [{index, kind, text, verdict (supported |
                  not supported | inconclusive), reason, method, statistic {...}}]}
    best          {config_id, params {name: value}, mean, sd, n, runner_up {...} | null,
                  difference_to_runner_up, difference_se (pooled seed sd x
                  sqrt(1/n_best + 1/n_runner_up))}
    configs       [{config_id, params, mean, sd, n}], best first
    figures       [{kind, params, png, svg, caption}], paths relative to the output folder
    files         {results, summary, figures_dir}

A report takes `interactions[0]` (its `figures.heatmap.png` and `figures.interaction.png`),
`claims.items`, and `best`.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, is_dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from interplay.analysis.anova import AnovaResult, grid_anova, regression_anova
from interplay.analysis.claims import RULE, ClaimResult, Evidence, evaluate_claims
from interplay.analysis.effects import (
    MainEffect,
    PairEffect,
    bootstrap_responses,
    eta2_intervals,
    main_effects,
    pair_effects,
)
from interplay.analysis.figures import write_figures
from interplay.analysis.importance import (
    PairStrength,
    ParamImportance,
    fanova_importance,
    surrogate_interactions,
)
from interplay.analysis.table import (
    ParamInfo,
    Prepared,
    config_stats,
    pooled_seed_sd,
    prepare,
)
from interplay.config import Claim

logger = logging.getLogger(__name__)

SCHEMA = "interplay.analysis/1"
BOOTSTRAP = "percentile bootstrap; seeds resampled within each configuration (modified residuals)"
ETA2_INTERVAL = (
    "noncentral F inverted at the term's F test (Steiger 2004, statsmodels), 1 - 2 alpha "
    "confidence: its lower end is above 0 exactly when p < alpha"
)


@dataclass
class AnalysisResult:
    """Everything `analyze` found; `summary` is the JSON-ready dict written to summary.json."""

    prepared: Prepared
    configs: pd.DataFrame
    anova: AnovaResult | None
    mains: list[MainEffect]
    pairs: list[PairEffect]
    importance: list[ParamImportance]
    strengths: list[PairStrength]
    interactions: list[dict[str, Any]]
    claims: list[ClaimResult]
    summary: dict[str, Any]
    figures: list[dict[str, Any]] = field(default_factory=list)


def analyze(
    table: pd.DataFrame,
    params: list[ParamInfo],
    *,
    method: str,
    metric: str = "val_acc",
    epoch: int | Literal["common"] | None = None,
    claims: Sequence[Claim] = (),
    alpha: float = 0.05,
    out_dir: Path | None = None,
    min_effect: float | None = None,
    n_boot: int = 1000,
    n_boot_surrogate: int = 50,
    seed: int = 0,
) -> AnalysisResult:
    """Analyze a study's results table: effects, interactions, claims, best configuration.

    Args:
        table: the tidy results table, one row per run (see interplay.analysis.table).
        params: the search params, levels in the study's order.
        method: the study's design: grid (factorial ANOVA) or random, tpe, gp (fANOVA
            importance and Friedman's H on a surrogate).
        metric: the compared metric.
        epoch: None compares final metrics; an int that epoch; "common" the last epoch all
            complete runs reached.
        claims: the hypothesis claims to judge.
        alpha: significance level of every test.
        out_dir: where results.csv, summary.json and figures/ are written; None writes
            nothing.
        min_effect: the smallest effect that matters, in the metric's unit; defaults to 1
            point for accuracies and to none (no equivalence verdicts) otherwise.
        n_boot: bootstrap resamples of the grid analysis.
        n_boot_surrogate: bootstrap refits of the fANOVA and surrogate forests.
        seed: seeds every bootstrap and forest.

    Returns:
        The AnalysisResult; its `summary` is what summary.json holds.
    """
    grid = method == "grid"
    if grid:
        params = [_with_levels(p, table) for p in params]
    prepared = prepare(table, params, metric, epoch)
    info = prepared.metric
    if min_effect is None and info.unit == "%":
        min_effect = 1.0
    configs = config_stats(prepared)
    sign = -1.0 if info.direction == "maximize" else 1.0
    configs = configs.sort_values("mean", key=lambda s: sign * s, kind="stable")
    configs = configs.reset_index(drop=True)
    seed_sd, seed_df = pooled_seed_sd(configs)
    names = [p.name for p in prepared.params]

    anova: AnovaResult | None = None
    pairs: list[PairEffect] = []
    importance: list[ParamImportance] = []
    strengths: list[PairStrength] = []
    r2: float | None = None
    if grid:
        anova, _, _ = grid_anova(prepared)
        y = bootstrap_responses(prepared, n_boot, seed)
        mains = main_effects(prepared, y)
        pairs = [pair_effects(prepared, y, a, b) for a, b in itertools.combinations(names, 2)]
        analysis = "factorial ANOVA (statsmodels, type II) with bootstrap intervals"
    else:
        anova = regression_anova(prepared)
        # TODO: level means of a search design get no interval (a bootstrap over
        # configurations would give one), so effect claims there never end "not supported"
        # by size, only by a significant opposite trend.
        mains = main_effects(prepared, prepared.runs["value"].to_numpy(dtype=float)[:, None])
        importance = fanova_importance(prepared, n_boot=n_boot_surrogate, seed=seed)
        strengths, r2 = surrogate_interactions(prepared, n_boot=n_boot_surrogate, seed=seed)
        analysis = "fANOVA importance (optuna), Friedman's H on a random forest, OLS F tests"
    eta2_level = eta2_intervals(anova, alpha)

    evidence = Evidence(
        prepared,
        anova,
        {m.param: m for m in mains},
        {frozenset(p.params): p for p in pairs},
        {frozenset(s.params): s for s in strengths},
    )
    verdicts = evaluate_claims(list(claims), evidence, alpha=alpha, min_effect=min_effect)
    ranked = _rank(prepared, anova, pairs, strengths, seed_sd, grid)

    summary: dict[str, Any] = {
        "schema": SCHEMA,
        "metric": {
            "name": info.name,
            "label": info.label,
            "unit": info.unit,
            "scale": info.scale,
            "direction": info.direction,
            "mode": prepared.mode,
            "epoch": prepared.epoch,
            "alpha": alpha,
            "min_effect": min_effect,
        },
        "design": _design(prepared, configs, method, analysis),
        "exclusions": {
            "rule": prepared.rule,
            "counts": prepared.exclusion_counts(),
            "excluded": len(prepared.exclusions),
            "early_stopped_kept": prepared.early_stopped,
            "runs": [asdict(e) for e in prepared.exclusions],
        },
        "noise": {
            "pooled_seed_sd": seed_sd,
            "df": seed_df,
            "residual_sd": anova.residual_sd if anova else None,
            "residual_df": anova.residual_df if anova else None,
            "method": "sd over seeds within each configuration (ddof 1), pooled",
        },
        "anova": _anova_dict(anova, n_boot, seed, eta2_level) if anova else None,
        "main_effects": [_main_dict(m) for m in mains],
        "interactions": ranked,
        "importance": {
            "method": importance[0].method,
            "params": [
                {"param": i.param, "importance": i.importance, "ci": i.ci} for i in importance
            ],
            "surrogate_r2": r2,
        }
        if importance
        else None,
        "claims": {
            "rule": RULE,
            "alpha": alpha,
            "min_effect": min_effect,
            "items": [asdict(c) for c in verdicts],
        },
        "best": _best(configs, names, seed_sd),
        "configs": [_config_dict(row, names) for _, row in configs.iterrows()],
        "figures": [],
        "files": {"results": "results.csv", "summary": "summary.json", "figures_dir": "figures"},
    }
    result = AnalysisResult(
        prepared, configs, anova, mains, pairs, importance, strengths, ranked, verdicts, summary
    )
    if out_dir is not None:
        write_outputs(result, table, Path(out_dir))
    if ranked and ranked[0]["strength"] is not None:
        top = ranked[0]
        logger.info(
            "strongest interaction: %s (%s %.3g)",
            " x ".join(top["params"]),
            top["strength_measure"],
            top["strength"],
        )
    return result


def _with_levels(p: ParamInfo, table: pd.DataFrame) -> ParamInfo:
    """A grid needs levels: a numeric param given without them takes its distinct values."""
    if p.levels is not None or p.kind != "numeric" or p.column not in table.columns:
        return p
    values = sorted(pd.to_numeric(table[p.column], errors="coerce").dropna().unique().tolist())
    logger.warning("grid param %s has no levels; using its values %s", p.name, values)
    return ParamInfo(p.name, p.kind, p.log, values)


def write_outputs(result: AnalysisResult, table: pd.DataFrame, out_dir: Path) -> None:
    """results.csv, the figures (PNG and SVG) and summary.json into out_dir."""
    out_dir.mkdir(parents=True, exist_ok=True)
    table.to_csv(out_dir / "results.csv", index=False)
    figures = write_figures(result.prepared, result, out_dir / "figures")
    result.figures = figures
    result.summary["figures"] = figures
    for entry in result.interactions:
        key = set(entry["params"])
        entry["figures"] = {
            f["kind"]: {"png": f["png"], "svg": f["svg"]}
            for f in figures
            if f["kind"] in ("heatmap", "interaction") and set(f["params"]) == key
        }
    text = json.dumps(to_json(result.summary), indent=2, allow_nan=False)
    (out_dir / "summary.json").write_text(text + "\n", encoding="utf-8")
    logger.info("analysis written to %s (%d figures)", out_dir, len(figures))


def to_json(value: Any) -> Any:
    """Plain JSON types: numpy scalars to Python, tuples to lists, NaN and inf to None."""
    if isinstance(value, dict):
        return {str(k): to_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [to_json(v) for v in value]
    if is_dataclass(value) and not isinstance(value, type):
        return to_json(asdict(value))
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, np.ndarray):
        return to_json(value.tolist())
    return str(value)


def _design(
    prepared: Prepared, configs: pd.DataFrame, method: str, analysis: str
) -> dict[str, Any]:
    counts = configs["n"] if len(configs) else pd.Series([0])
    expected = math.prod(len(p.levels or []) for p in prepared.params) if prepared.params else 1
    compared = {str(c) for c in configs["config_id"]}
    reasons: dict[str, set[str]] = {}
    for item in prepared.exclusions:
        if item.config_id not in compared:
            reasons.setdefault(item.config_id, set()).add(item.why.split(":")[0])
    not_compared: dict[str, int] = {}
    for why in reasons.values():
        key = next(iter(why)) if len(why) == 1 else "mixed"
        not_compared[key] = not_compared.get(key, 0) + 1
    seen = len(compared) + len(reasons)
    if method == "grid" and expected > seen:
        not_compared["not run"] = expected - seen
    return {
        "method": method,
        "analysis": analysis,
        "params": [asdict(p) for p in prepared.params],
        "runs_total": prepared.n_total,
        "runs_compared": len(prepared.runs),
        "runs_excluded": prepared.exclusion_counts(),
        "configs": len(configs),
        "configs_planned": expected if method == "grid" else None,
        "configs_seen": seen,
        "configs_not_compared": not_compared,
        "seeds_min": int(counts.min()),
        "seeds_max": int(counts.max()),
        "balanced": bool(counts.min() == counts.max()),
        "complete_grid": bool(len(configs) == expected) if method == "grid" else None,
    }


def _anova_dict(anova: AnovaResult, n_boot: int, seed: int, eta2_level: float) -> dict[str, Any]:
    return {
        "method": anova.method,
        "formula": anova.formula,
        "terms": [
            {
                "term": t.term,
                "params": list(t.params),
                "df": t.df,
                "df_resid": t.df_resid,
                "sum_sq": t.sum_sq,
                "F": t.f,
                "p": t.p,
                "partial_eta2": t.partial_eta2,
                "partial_eta2_ci": t.partial_eta2_ci,
            }
            for t in anova.terms
        ],
        "residual": {
            "df": anova.residual_df,
            "sum_sq": anova.residual_ss,
            "sd": anova.residual_sd,
        },
        "not_estimable": anova.not_estimable,
        "notes": anova.notes,
        "partial_eta2_interval": {"level": eta2_level, "method": ETA2_INTERVAL},
        "bootstrap": {"resamples": n_boot, "seed": seed, "method": BOOTSTRAP},
    }


def _main_dict(m: MainEffect) -> dict[str, Any]:
    return {
        "param": m.param,
        "labels": m.labels,
        "levels": m.values,
        "means": m.means,
        "sds": m.sds,
        "n": m.n,
        "range": m.range,
        "range_ci": m.range_ci,
        "trend_spearman": m.trend,
    }


def _rank(
    prepared: Prepared,
    anova: AnovaResult | None,
    pairs: list[PairEffect],
    strengths: list[PairStrength],
    noise: float | None,
    grid: bool,
) -> list[dict[str, Any]]:
    entries = []
    names = [p.name for p in prepared.params]
    for a, b in itertools.combinations(names, 2):
        term = anova.term(a, b) if anova else None
        entry: dict[str, Any] = {
            "params": [a, b],
            "testable": term is not None and term.p is not None,
            "why_not": anova.why_not(a, b) if anova else "no ANOVA",
            "F": term.f if term else None,
            "df": term.df if term else None,
            "df_resid": term.df_resid if term else None,
            "p": term.p if term else None,
            "partial_eta2": term.partial_eta2 if term else None,
            "partial_eta2_ci": term.partial_eta2_ci if term else None,
            "test_method": anova.method if anova else None,
            "noise_sd": noise,
            "figures": {},
        }
        if entry["testable"]:
            entry["why_not"] = None
        pair = next((p for p in pairs if set(p.params) == {a, b}), None)
        strength = next((s for s in strengths if set(s.params) == {a, b}), None)
        if grid and pair is not None:
            entry |= {
                "cell_means": {
                    "params": list(pair.params),
                    "levels_a": pair.levels_a,
                    "levels_b": pair.levels_b,
                    "means": pair.means,
                },
                "contrast": pair.contrast,
                "contrast_ci": pair.contrast_ci,
                "contrast_levels": pair.contrast_levels,
                "max_abs_residual": pair.max_abs_residual,
                "max_abs_residual_ci": pair.max_abs_residual_ci,
                "max_residual_cell": pair.max_residual_cell,
                "residual_to_noise": pair.max_abs_residual / noise
                if pair.max_abs_residual is not None and noise
                else None,
            }
            if entry["testable"]:
                entry |= {
                    "strength": entry["partial_eta2"],
                    "strength_measure": "partial eta squared",
                    "method": anova.method if anova else None,
                }
            else:
                entry |= {
                    "strength": pair.max_abs_residual,
                    "strength_measure": "max |residual from additivity|",
                    "method": "cell means of the pair (not tested)",
                }
        elif strength is not None:
            entry |= {
                "h": strength.h,
                "h_ci": strength.h_ci,
                "size": strength.size,
                "size_ci": strength.size_ci,
                "strength": strength.size,
                "strength_measure": "Friedman's H size",
                "method": strength.method,
            }
        else:
            entry |= {
                "strength": entry["partial_eta2"],
                "strength_measure": "partial eta squared",
                "method": entry["test_method"],
            }
        entries.append(entry)

    def key(entry: dict[str, Any]) -> tuple[int, float]:
        # Tested interactions first (partial eta squared), then the untested by size.
        value = entry["strength"]
        group = 0 if entry["testable"] or not grid else 1
        return group, -(value if value is not None else -math.inf)

    entries.sort(key=key)
    for rank, entry in enumerate(entries, start=1):
        entry["rank"] = rank
    return entries


def _config_dict(row: pd.Series, names: list[str]) -> dict[str, Any]:
    return {
        "config_id": row["config_id"],
        "params": {n: row[f"param.{n}"] for n in names},
        "mean": row["mean"],
        "sd": row["sd"],
        "n": int(row["n"]),
    }


def _best(configs: pd.DataFrame, names: list[str], seed_sd: float | None) -> dict[str, Any] | None:
    if configs.empty:
        return None
    best = _config_dict(configs.iloc[0], names)
    runner = _config_dict(configs.iloc[1], names) if len(configs) > 1 else None
    best["runner_up"] = runner
    best["difference_to_runner_up"] = best["mean"] - runner["mean"] if runner else None
    # The noise of a difference of two means, from the pooled seed sd: comparing the lead
    # with the seed sd alone would ignore how many seeds each mean averages.
    best["difference_se"] = (
        seed_sd * math.sqrt(1 / best["n"] + 1 / runner["n"]) if runner and seed_sd else None
    )
    return best
