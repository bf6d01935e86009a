"""Effect sizes with intervals: level means, interaction contrasts, partial eta squared.

All means weigh each configuration equally (the mean over configurations of the mean over
seeds), so a configuration that lost a seed does not count less. Intervals of level-mean
sizes come from a percentile bootstrap that resamples the seeds within each configuration
(the replicates are the only random part of a grid); with two or three seeds per
configuration such intervals are rough, and a configuration with one seed adds no spread.

Sizes that cannot be negative (the range of level means, the largest |residual from
additivity|) are pushed above zero by noise alone, so the lower end of their bootstrap
interval says nothing about whether an effect exists: judge that by the F test's p. Their
upper end is still a fair bound on how large the effect may be (the claims use it to rule
out effects that matter). Partial eta squared gets an interval from its F test instead (see
`eta2_intervals`).

Interaction contrast: of all 2 x 2 sub-tables of a pair's cell means, the one with the
largest |difference of differences|, so it names the levels where the interaction is;
its interval holds those four cells fixed and does not account for picking the largest.
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats
from statsmodels.stats.oneway import confint_noncentrality

from interplay.analysis.anova import AnovaResult
from interplay.analysis.table import Prepared, discretize

logger = logging.getLogger(__name__)


@dataclass
class MainEffect:
    """The metric's mean per level of one param (the whole range when binned)."""

    param: str
    labels: list[str]
    values: list[Any]
    means: list[float]
    sds: list[float | None]
    n: list[int]
    range: float
    range_ci: tuple[float, float] | None
    trend: float | None


@dataclass
class PairEffect:
    """The cell means of a pair of params and how far they are from additive.

    `contrast` = (m[a2, b2] - m[a1, b2]) - (m[a2, b1] - m[a1, b1]) at the levels in
    `contrast_levels` (a1 before a2 and b1 before b2 in study order): how much the effect of
    going from a1 to a2 changes from b1 to b2. The residuals from additivity are
    m[i, j] - row mean - column mean + grand mean.
    """

    params: tuple[str, str]
    levels_a: list[Any]
    levels_b: list[Any]
    means: list[list[float | None]]
    contrast: float | None
    contrast_ci: tuple[float, float] | None
    contrast_levels: dict[str, list[Any]] | None
    max_abs_residual: float | None
    max_abs_residual_ci: tuple[float, float] | None
    max_residual_cell: tuple[Any, Any] | None


def bootstrap_responses(prepared: Prepared, n_boot: int, seed: int) -> np.ndarray:
    """Runs x (1 + n_boot): column 0 is the observed metric, the rest resample seeds.

    Each resampled run is its configuration's mean plus a seed's deviation drawn from the
    same configuration, inflated by sqrt(n / (n - 1)): plain resampling of n seeds shrinks
    the spread by (n - 1) / n on average, which with three seeds would make every interval
    a third too sure of the noise (Davison and Hinkley's modified residuals).
    """
    y = prepared.runs["value"].to_numpy(dtype=float)
    groups = prepared.runs["config_id"].astype(str).to_numpy()
    sizes = prepared.runs.groupby("config_id")["value"].transform("count").to_numpy()
    if n_boot <= 0 or not (sizes >= 2).any():
        return y[:, None]
    rng = np.random.default_rng(seed)
    out = np.empty((len(y), n_boot))
    for g in np.unique(groups):
        members = np.flatnonzero(groups == g)
        m = len(members)
        center = y[members].mean()
        if m < 2:
            out[members] = y[members, None]
            continue
        draws = y[members][rng.integers(0, m, size=(m, n_boot))]
        out[members] = center + np.sqrt(m / (m - 1)) * (draws - center)
    return np.column_stack([y, out])


def _interval(samples: np.ndarray) -> tuple[float, float] | None:
    samples = samples[np.isfinite(samples)]
    if len(samples) < 10:
        return None
    low, high = np.percentile(samples, [2.5, 97.5])
    return float(low), float(high)


def eta2_intervals(anova: AnovaResult, alpha: float = 0.05) -> float:
    """Fill each tested term's partial eta squared interval; returns its confidence level.

    Partial eta squared is never negative, so a percentile bootstrap of it (or of any such
    size) sits above zero even when the term has no effect at all: next to p = 0.8 it would
    read "[0.03, 0.90]" and look like an effect. The interval here inverts the noncentral F
    distribution of the term's own F test instead (Steiger 2004, via statsmodels): a
    1 - 2 alpha interval of the noncentrality, converted with eta2 = lambda / (lambda + df1 +
    df2 + 1). Its lower end is above zero exactly when the F test's p < alpha, so interval and
    test always agree (the usual 90% interval for a test at 0.05).
    """
    level = 1.0 - 2.0 * alpha
    for term in anova.terms:
        term.partial_eta2_ci = None
        df_resid = term.df_resid if term.df_resid is not None else anova.residual_df
        if term.f is None or term.p is None or term.df <= 0 or df_resid <= 0:
            continue
        low, high = confint_noncentrality(term.f, (term.df, df_resid), alpha=2.0 * alpha)
        n = term.df + df_resid + 1
        ends = [max(float(x), 0.0) for x in (low, high)]
        # An F so small that even no effect puts it in the lower tail inverts to [0, 0], a
        # certainty the data do not give: no interval then.
        if all(np.isfinite(ends)) and ends[1] > 0:
            term.partial_eta2_ci = (ends[0] / (ends[0] + n), ends[1] / (ends[1] + n))
    return level


def _config_means(prepared: Prepared, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Config x columns means, and the row of the first run of each config."""
    ids = prepared.runs["config_id"].astype(str).to_numpy()
    unique, first, inverse = np.unique(ids, return_index=True, return_inverse=True)
    onehot = np.zeros((len(unique), len(ids)))
    onehot[inverse, np.arange(len(ids))] = 1.0
    return onehot @ y / onehot.sum(axis=1, keepdims=True), first


def _group_means(codes: np.ndarray, k: int, cm: np.ndarray) -> np.ndarray:
    """k x columns: mean of the config means in each group; NaN for an empty group."""
    out = np.full((k, cm.shape[1]), np.nan)
    for g in range(k):
        rows = codes == g
        if rows.any():
            out[g] = cm[rows].mean(axis=0)
    return out


def main_effects(prepared: Prepared, y: np.ndarray) -> list[MainEffect]:
    """Level means of each param, with the range's interval when y holds resamples."""
    cm, first = _config_means(prepared, y)
    out = []
    for p in prepared.params:
        levels = discretize(p, prepared.runs[p.column])
        k = len(levels.labels)
        if k < 1:
            continue
        means = _group_means(levels.codes[first], k, cm)
        observed = means[:, 0]
        runs = prepared.runs["value"].to_numpy(dtype=float)
        sds = [_sd(runs[levels.codes == g]) for g in range(k)]
        counts = [int((levels.codes == g).sum()) for g in range(k)]
        span = np.nanmax(means, axis=0) - np.nanmin(means, axis=0)
        trend = None
        if k >= 2 and np.ptp(observed) > 0:
            trend = float(stats.spearmanr(np.arange(k), observed).statistic)
        out.append(
            MainEffect(
                param=p.name,
                labels=levels.labels,
                values=levels.values,
                means=[float(v) for v in observed],
                sds=sds,
                n=counts,
                range=float(span[0]),
                range_ci=_interval(span[1:]) if y.shape[1] > 1 else None,
                trend=trend,
            )
        )
    return out


def _sd(values: np.ndarray) -> float | None:
    return float(np.std(values, ddof=1)) if len(values) >= 2 else None


def pair_effects(prepared: Prepared, y: np.ndarray, a: str, b: str) -> PairEffect:
    """Cell means of a x b, the largest 2 x 2 contrast and the residuals from additivity."""
    cm, first = _config_means(prepared, y)
    la = discretize(prepared.param(a), prepared.runs[prepared.param(a).column])
    lb = discretize(prepared.param(b), prepared.runs[prepared.param(b).column])
    ka, kb = len(la.labels), len(lb.labels)
    cells = _group_means(la.codes[first] * kb + lb.codes[first], ka * kb, cm)
    grid = cells.reshape(ka, kb, -1)
    observed = grid[:, :, 0]
    boot = y.shape[1] > 1

    # TODO: the interval of the largest contrast ignores that it was picked as the largest;
    # a max-|contrast| bootstrap (re-picking in every resample) would cover that.
    contrast, contrast_ci, contrast_levels = None, None, None
    best = 0.0
    for a1, a2 in itertools.combinations(range(ka), 2):
        for b1, b2 in itertools.combinations(range(kb), 2):
            value = grid[a2, b2] - grid[a1, b2] - grid[a2, b1] + grid[a1, b1]
            if np.isfinite(value[0]) and (contrast is None or abs(value[0]) > best):
                best = abs(value[0])
                contrast = float(value[0])
                contrast_ci = _interval(value[1:]) if boot else None
                contrast_levels = {
                    a: [la.values[a1], la.values[a2]],
                    b: [lb.values[b1], lb.values[b2]],
                }

    max_res, res_ci, cell = None, None, None
    if np.isfinite(cells).all() and ka >= 2 and kb >= 2:
        resid = (
            grid
            - grid.mean(axis=1, keepdims=True)
            - grid.mean(axis=0, keepdims=True)
            + grid.mean(axis=(0, 1), keepdims=True)
        )
        size = np.abs(resid).max(axis=(0, 1))
        max_res = float(size[0])
        res_ci = _interval(size[1:]) if boot else None
        i, j = np.unravel_index(np.abs(resid[:, :, 0]).argmax(), (ka, kb))
        cell = (la.values[i], lb.values[j])
    return PairEffect(
        params=(a, b),
        levels_a=la.values,
        levels_b=lb.values,
        means=[[_clean(v) for v in row] for row in observed],
        contrast=contrast,
        contrast_ci=contrast_ci,
        contrast_levels=contrast_levels,
        max_abs_residual=max_res,
        max_abs_residual_ci=res_ci,
        max_residual_cell=cell,
    )


def _clean(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None
