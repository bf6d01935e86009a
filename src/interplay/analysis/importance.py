"""Param importance and interaction strength for designs that are not a grid.

Importance: Optuna's fANOVA evaluator on an in-memory study holding one trial per
configuration (its mean over seeds), so seed noise averages out before the forest is fit.
Interaction strength: Friedman's H statistic on a random-forest surrogate fit to the runs.
Intervals: percentile bootstrap over configurations (fANOVA) or runs (H), refitting each time.
"""

from __future__ import annotations

import itertools
import logging
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution
from optuna.importance import FanovaImportanceEvaluator
from sklearn.ensemble import RandomForestRegressor

from interplay.analysis.table import ParamInfo, Prepared, config_stats, level_index

logger = logging.getLogger(__name__)

FANOVA_METHOD = (
    "optuna fANOVA (FanovaImportanceEvaluator) on one trial per configuration (mean over "
    "seeds); interval: bootstrap over configurations"
)
H_METHOD = (
    "Friedman's H on a random-forest surrogate (scikit-learn) fit to the runs; size = root "
    "mean square of the pure interaction part of the partial dependence, in metric units; "
    "interval: bootstrap over runs, refitting the surrogate"
)


@dataclass
class ParamImportance:
    param: str
    importance: float
    ci: tuple[float, float] | None
    method: str = FANOVA_METHOD


@dataclass
class PairStrength:
    """Friedman's H (share of the pair's joint effect that is interaction, 0..1) and its size
    (the interaction part's root mean square, in metric units: points for accuracies)."""

    params: tuple[str, str]
    h: float
    h_ci: tuple[float, float] | None
    size: float
    size_ci: tuple[float, float] | None
    method: str = H_METHOD


def _interval(samples: list[float]) -> tuple[float, float] | None:
    values = np.asarray(samples, dtype=float)
    values = values[np.isfinite(values)]
    if len(values) < 5:
        return None
    low, high = np.percentile(values, [2.5, 97.5])
    return float(low), float(high)


def _varying(prepared: Prepared) -> list[ParamInfo]:
    return [p for p in prepared.params if prepared.runs[p.column].nunique() >= 2]


def _distribution(p: ParamInfo, values: np.ndarray) -> BaseDistribution:
    if p.kind == "categorical":
        return CategoricalDistribution([str(v) for v in (p.levels or _unique(values))])
    x = values.astype(float)
    return FloatDistribution(float(x.min()), float(x.max()), log=p.log)


def _unique(values: np.ndarray) -> list[Any]:
    return list(dict.fromkeys(values.tolist()))


def fanova_importance(
    prepared: Prepared, *, n_boot: int = 30, n_trees: int = 32, seed: int = 0
) -> list[ParamImportance]:
    """fANOVA importance of each varying param, with a bootstrap interval.

    Args:
        prepared: the compared runs.
        n_boot: bootstrap resamples of the configurations (0: no interval).
        n_trees: trees of each fANOVA forest.
        seed: seeds the forests and the resampling.

    Returns:
        One entry per varying param, largest importance first; empty with fewer than four
        configurations (a forest on so few points says nothing).
    """
    params = _varying(prepared)
    stats = config_stats(prepared)
    if not params or len(stats) < 4:
        return []
    dists = {p.name: _distribution(p, stats[p.column].to_numpy()) for p in params}
    rows = [
        {p.name: _trial_value(p, row[p.column]) for p in params} for _, row in stats.iterrows()
    ]
    values = stats["mean"].to_numpy(dtype=float)
    rng = np.random.default_rng(seed)
    point = _fanova(rows, values, dists, n_trees, seed)
    boot: dict[str, list[float]] = {p.name: [] for p in params}
    for b in range(n_boot):
        pick = rng.integers(0, len(rows), len(rows))
        result = _fanova([rows[i] for i in pick], values[pick], dists, n_trees, seed + b + 1)
        for name in boot:
            boot[name].append(result.get(name, 0.0))
    out = [ParamImportance(name, point.get(name, 0.0), _interval(boot[name])) for name in boot]
    return sorted(out, key=lambda item: -item.importance)


def _trial_value(p: ParamInfo, value: Any) -> Any:
    return str(value) if p.kind == "categorical" else float(value)


def _fanova(
    rows: list[dict[str, Any]],
    values: np.ndarray,
    dists: dict[str, BaseDistribution],
    n_trees: int,
    seed: int,
) -> dict[str, float]:
    if np.ptp(values) == 0:
        return dict.fromkeys(dists, 0.0)
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        study = optuna.create_study(direction="maximize")
        for params, value in zip(rows, values, strict=True):
            trial = optuna.trial.create_trial(params=params, distributions=dists, value=value)
            study.add_trial(trial)
        evaluator = FanovaImportanceEvaluator(n_trees=n_trees, seed=seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = evaluator.evaluate(study)
    finally:
        optuna.logging.set_verbosity(verbosity)
    return {k: float(v) for k, v in result.items()}


def encode(prepared: Prepared, params: list[ParamInfo]) -> np.ndarray:
    """Runs x params: numeric values (log10 when log-scaled), categorical level positions.

    Level positions impose an order on a categorical param, which a forest tolerates: any
    single level is still isolated by two splits.
    """
    columns = []
    for p in params:
        values = prepared.runs[p.column]
        if p.kind == "categorical":
            columns.append(np.array([level_index(p, v) for v in values], dtype=float))
        else:
            x = values.to_numpy(dtype=float)
            columns.append(np.log10(x) if p.log else x)
    return np.column_stack(columns) if columns else np.empty((len(prepared.runs), 0))


def surrogate_interactions(
    prepared: Prepared,
    *,
    n_boot: int = 50,
    n_trees: int = 50,
    max_points: int = 40,
    seed: int = 0,
) -> tuple[list[PairStrength], float | None]:
    """Friedman's H of every pair of varying params, with a bootstrap interval.

    Args:
        prepared: the compared runs.
        n_boot: bootstrap resamples of the runs (0: no interval).
        n_trees: trees of each surrogate forest.
        max_points: runs the partial dependence is evaluated at (and averaged over).
        seed: seeds the forests and the resampling.

    Returns:
        The pairs, largest size first, and the surrogate's out-of-bag R^2 (how much of the
        metric it explains; None when too few runs).
    """
    params = _varying(prepared)
    if len(params) < 2 or len(prepared.runs) < 8:
        return [], None
    x = encode(prepared, params)
    y = prepared.runs["value"].to_numpy(dtype=float)
    pairs = list(itertools.combinations(range(len(params)), 2))
    rng = np.random.default_rng(seed)
    model = _forest(x, y, n_trees, seed, oob=True)
    r2 = float(model.oob_score_) if hasattr(model, "oob_score_") else None
    point = friedman_h(model, x, pairs, rng, max_points)
    boot: list[dict[tuple[int, int], tuple[float, float]]] = []
    for b in range(n_boot):
        pick = rng.integers(0, len(y), len(y))
        refit = _forest(x[pick], y[pick], n_trees, seed + b + 1, oob=False)
        boot.append(friedman_h(refit, x[pick], pairs, rng, max_points))
    out = [
        PairStrength(
            params=(params[j].name, params[k].name),
            h=point[(j, k)][0],
            h_ci=_interval([sample[(j, k)][0] for sample in boot]),
            size=point[(j, k)][1],
            size_ci=_interval([sample[(j, k)][1] for sample in boot]),
        )
        for j, k in pairs
    ]
    return sorted(out, key=lambda item: -item.size), r2


def _forest(x: np.ndarray, y: np.ndarray, n_trees: int, seed: int, oob: bool) -> Any:
    model = RandomForestRegressor(
        n_estimators=n_trees, min_samples_leaf=2, oob_score=oob, random_state=seed, n_jobs=1
    )
    with warnings.catch_warnings():
        # Few runs leave some runs in no out-of-bag sample; the score is still usable.
        warnings.simplefilter("ignore")
        return model.fit(x, y)


def friedman_h(
    model: Any,
    x: np.ndarray,
    pairs: list[tuple[int, int]],
    rng: np.random.Generator,
    max_points: int = 40,
) -> dict[tuple[int, int], tuple[float, float]]:
    """Friedman's H and the interaction's size for each pair of columns of x.

    Written here because no well-kept library computes H: scikit-learn gives partial
    dependence on a grid, while H needs it at the data points, centered, for each param
    alone and for each pair. H^2 = sum(pd_jk - pd_j - pd_k)^2 / sum(pd_jk^2) over the points.
    """
    n, width = x.shape
    points = x[rng.choice(n, max_points, replace=False)] if n > max_points else x
    background = x[rng.choice(n, max_points, replace=False)] if n > max_points else x

    def dependence(columns: list[int]) -> np.ndarray:
        grid = np.repeat(background[None, :, :], len(points), axis=0)  # points x bg x width
        grid[:, :, columns] = points[:, None, columns]
        pred = model.predict(grid.reshape(-1, width)).reshape(len(points), len(background))
        curve = pred.mean(axis=1)
        return curve - curve.mean()

    single = {j: dependence([j]) for j in {c for pair in pairs for c in pair}}
    out = {}
    for j, k in pairs:
        joint = dependence([j, k])
        pure = joint - single[j] - single[k]
        total = float((joint**2).sum())
        h = float(np.sqrt((pure**2).sum() / total)) if total > 0 else 0.0
        out[(j, k)] = (h, float(np.sqrt((pure**2).mean())))
    return out
