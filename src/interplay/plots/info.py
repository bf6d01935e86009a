"""The numbers behind each figure, as small dataclasses of plain data (tested, then drawn).

Values are in the metric's display unit (percent for accuracies). Error bars are 95%
t-intervals of the mean over the runs in a cell: the seeds, plus the levels of the other
params when a study varies more than two. Bands on learning curves are +-1 sd over runs.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import stats

from interplay.analysis.anova import AnovaResult, AnovaTerm
from interplay.analysis.importance import PairStrength, ParamImportance
from interplay.analysis.table import Levels, MetricInfo, Prepared, discretize, metric_info

logger = logging.getLogger(__name__)

ERROR_BARS = "95% CI of the mean over runs"
BAND = "±1 sd over runs"
NO_BARS = "none, one run per point"
# Width of one tick-label character as a share of a figure's x axis (7 pt DejaVu Sans on the
# ~2.4 in axis of a half-page figure), to keep tick labels from running into each other.
CHAR_SHARE = 0.026


@dataclass
class HeatmapInfo:
    """Mean, sd and count of the metric per cell; rows are y levels, columns x levels."""

    x_param: str
    y_param: str
    x_labels: list[str]
    y_labels: list[str]
    mean: list[list[float | None]]
    sd: list[list[float | None]]
    n: list[list[int]]
    best: tuple[int, int] | None
    metric_label: str
    binned: bool
    y_categorical: bool
    over: str = "seeds"

    @property
    def spread(self) -> str:
        """What the cells show: mean ± sd over seeds, or that a cell has no sd."""
        sds = [v for row in self.sd for v in row if v is not None]
        if not sds:
            return "one run per cell, no sd"
        one_run = any(c == 1 for row in self.n for c in row)
        return f"mean ± sd over {self.over}" + (" (none for one run)" if one_run else "")


@dataclass
class Series:
    label: str
    x: list[float]
    mean: list[float | None]
    low: list[float | None]
    high: list[float | None]
    n: list[int]


@dataclass
class InteractionInfo:
    """The metric against one param, a line per level of another, with error bars."""

    x_param: str
    line_param: str
    x_labels: list[str]
    x_positions: list[float]
    x_log: bool
    x_categorical: bool
    x_binned: bool
    lines: list[Series]
    metric_label: str
    error: str = ERROR_BARS
    y_bounds: tuple[float, float] | None = None


@dataclass
class Panel:
    param: str
    labels: list[str]
    positions: list[float]
    log: bool
    categorical: bool
    binned: bool
    series: Series


@dataclass
class MainEffectsInfo:
    """One panel per param: the metric's mean per level with error bars."""

    panels: list[Panel]
    metric_label: str
    error: str = ERROR_BARS
    y_bounds: tuple[float, float] | None = None


@dataclass
class CurvesInfo:
    """The metric per epoch, a line per level of a param (mean, band of +-1 sd)."""

    param: str
    epochs: list[int]
    series: list[Series]
    metric_label: str
    band: str = BAND
    y_bounds: tuple[float, float] | None = None


@dataclass
class Bar:
    label: str
    value: float
    low: float | None
    high: float | None


@dataclass
class ImportanceInfo:
    """Per-param importance and per-pair interaction strength, with 95% intervals."""

    params: list[Bar]
    pairs: list[Bar]
    param_measure: str
    pair_measure: str
    methods: list[str] = field(default_factory=list)
    interval: str = "95% bootstrap interval"


Spread = Callable[[np.ndarray], tuple[float | None, float | None, float | None]]


def value_bounds(info: MetricInfo) -> tuple[float, float] | None:
    """The values an accuracy can take, in its display unit (0 to 100 %); None otherwise.

    Error bars of a mean near 0 or 100 % reach past what an accuracy can be; the figures
    clip their axis to these bounds (the numbers in the summary stay as computed).
    """
    return (0.0, 1.0 * info.scale) if info.name.endswith("acc") else None


def readable_ticks(
    positions: list[float], labels: list[str], log: bool, char_share: float = CHAR_SHARE
) -> tuple[list[float], list[str]]:
    """The ticks of a numeric axis whose labels do not run into each other.

    A search samples values that can sit almost on top of each other (0.0123 and 0.0125 on a
    log axis): a tick whose label would touch the label kept before it is dropped, though its
    point is still drawn. Written here because matplotlib places ticks at given positions
    without checking that their labels fit.
    """
    if len(positions) < 2:
        return list(positions), list(labels)
    x = np.log10(np.asarray(positions, dtype=float)) if log else np.asarray(positions, float)
    span = float(x.max() - x.min()) or 1.0
    share = (x - x.min()) / span
    order = np.argsort(share, kind="stable")
    kept = [int(order[0])]
    for i in order[1:]:
        last = kept[-1]
        needed = char_share * (len(labels[i]) + len(labels[last])) / 2 + char_share
        if share[i] - share[last] >= needed:
            kept.append(int(i))
    return [positions[i] for i in kept], [labels[i] for i in kept]


def _mean_ci(values: np.ndarray) -> tuple[float | None, float | None, float | None]:
    if len(values) == 0:
        return None, None, None
    mean = float(values.mean())
    if len(values) < 2:
        return mean, None, None
    half = stats.t.ppf(0.975, len(values) - 1) * values.std(ddof=1) / math.sqrt(len(values))
    return mean, mean - float(half), mean + float(half)


def _mean_sd(values: np.ndarray) -> tuple[float | None, float | None, float | None]:
    if len(values) == 0:
        return None, None, None
    mean = float(values.mean())
    if len(values) < 2:
        return mean, None, None
    sd = float(values.std(ddof=1))
    return mean, mean - sd, mean + sd


def _over(prepared: Prepared, cells: np.ndarray) -> str:
    """'seeds' when each cell holds one configuration's replicates, else 'runs'."""
    configs = prepared.runs["config_id"].to_numpy()
    per_cell = pd.Series(configs).groupby(cells).nunique()
    return "seeds" if bool((per_cell <= 1).all()) else "runs"


def _levels(prepared: Prepared, name: str) -> Levels:
    p = prepared.param(name)
    return discretize(p, prepared.runs[p.column])


def orient(prepared: Prepared, a: str, b: str) -> tuple[str, str]:
    """(x param, other param): a numeric param goes on x, else the one with more levels."""
    pa, pb = prepared.param(a), prepared.param(b)
    if (pa.kind == "numeric") != (pb.kind == "numeric"):
        return (a, b) if pa.kind == "numeric" else (b, a)
    if len(_levels(prepared, b).labels) > len(_levels(prepared, a).labels):
        return b, a
    return a, b


def get_heatmap_info(prepared: Prepared, x: str, y: str) -> HeatmapInfo:
    """Mean and sd over the runs in each (x level, y level) cell; the best cell marked."""
    lx, ly = _levels(prepared, x), _levels(prepared, y)
    values = prepared.runs["value"].to_numpy(dtype=float)
    mean: list[list[float | None]] = []
    sd: list[list[float | None]] = []
    count: list[list[int]] = []
    for j in range(len(ly.labels)):
        mean.append([])
        sd.append([])
        count.append([])
        for i in range(len(lx.labels)):
            cell = values[(lx.codes == i) & (ly.codes == j)]
            mean[j].append(float(cell.mean()) if len(cell) else None)
            sd[j].append(float(cell.std(ddof=1)) if len(cell) >= 2 else None)
            count[j].append(len(cell))
    grid = np.array([[np.nan if v is None else v for v in row] for row in mean])
    best = None
    if np.isfinite(grid).any():
        sign = 1.0 if prepared.metric.direction == "maximize" else -1.0
        flat = int(np.nanargmax(sign * grid))
        best = (flat // grid.shape[1], flat % grid.shape[1])
    return HeatmapInfo(
        x_param=x,
        y_param=y,
        x_labels=lx.labels,
        y_labels=ly.labels,
        mean=mean,
        sd=sd,
        n=count,
        best=best,
        metric_label=prepared.metric.axis_label,
        binned=lx.binned or ly.binned,
        y_categorical=prepared.param(y).kind == "categorical",
        over=_over(prepared, lx.codes * len(ly.labels) + ly.codes),
    )


def _series(
    label: str, levels: Levels, values: np.ndarray, mask: np.ndarray, spread: Spread = _mean_ci
) -> Series:
    means, lows, highs, counts = [], [], [], []
    for i in range(len(levels.labels)):
        mean, low, high = spread(values[mask & (levels.codes == i)])
        means.append(mean)
        lows.append(low)
        highs.append(high)
        counts.append(int((mask & (levels.codes == i)).sum()))
    return Series(label, list(levels.positions), means, lows, highs, counts)


def get_interaction_info(prepared: Prepared, x: str, line: str) -> InteractionInfo:
    """The metric against x, one line per level of `line`, bars of +-1 sd over seeds.

    The sd, not a t interval: with the two or three seeds studies usually have, a 95% interval
    of the mean is so wide (t = 12.7 at two seeds) that it hides the lines it should qualify;
    the sd shows the seed-to-seed noise the heatmap annotates too.
    """
    lx, ll = _levels(prepared, x), _levels(prepared, line)
    values = prepared.runs["value"].to_numpy(dtype=float)
    lines = [
        _series(label, lx, values, ll.codes == k, _mean_sd) for k, label in enumerate(ll.labels)
    ]
    px = prepared.param(x)
    bars = any(v is not None for s in lines for v in s.low)
    over = _over(prepared, lx.codes * len(ll.labels) + ll.codes)
    return InteractionInfo(
        x_param=x,
        line_param=line,
        x_labels=lx.ticks,
        x_positions=list(lx.positions),
        x_log=px.log,
        x_categorical=px.kind == "categorical",
        x_binned=lx.binned,
        lines=lines,
        metric_label=prepared.metric.axis_label,
        error=f"mean \u00b1 sd over {over}" if bars else NO_BARS,
        y_bounds=value_bounds(prepared.metric),
    )


def get_main_effects_info(prepared: Prepared, metric: str | None = None) -> MainEffectsInfo:
    """One panel per param; `metric` picks another final metric column (e.g. the gap)."""
    values, label = _values(prepared, metric)
    info = prepared.metric if metric is None else metric_info(metric)
    everything = np.ones(len(values), dtype=bool)
    panels = []
    for p in prepared.params:
        levels = _levels(prepared, p.name)
        panels.append(
            Panel(
                param=p.name,
                labels=levels.ticks,
                positions=list(levels.positions),
                log=p.log,
                categorical=p.kind == "categorical",
                binned=levels.binned,
                series=_series(p.name, levels, values, everything & np.isfinite(values)),
            )
        )
    return MainEffectsInfo(panels, label, y_bounds=value_bounds(info))


def get_gap_info(prepared: Prepared) -> MainEffectsInfo:
    """The train - validation accuracy gap (points) against each param."""
    return get_main_effects_info(prepared, "train_val_gap")


def _values(prepared: Prepared, metric: str | None) -> tuple[np.ndarray, str]:
    if metric is None or metric == prepared.metric.name:
        return prepared.runs["value"].to_numpy(dtype=float), prepared.metric.axis_label
    info = metric_info(metric)
    column = metric if prepared.epoch is None else f"{metric}@{prepared.epoch}"
    if column not in prepared.runs.columns:
        column = metric
    values = pd.to_numeric(prepared.runs[column], errors="coerce").to_numpy(dtype=float)
    return values * info.scale, info.axis_label


def get_curves_info(prepared: Prepared, param: str, metric: str | None = None) -> CurvesInfo:
    """Mean and sd per epoch of `<metric>@<epoch>` for each level of a param.

    A run that stopped early drops out of the epochs it did not reach; `n` says how many runs
    each point averages.
    """
    info = prepared.metric if metric is None else metric_info(metric)
    runs = prepared.runs
    columns = sorted(
        (c for c in runs.columns if c.startswith(f"{info.name}@")),
        key=lambda c: int(c.split("@")[1]),
    )
    epochs = [int(c.split("@")[1]) for c in columns]
    curves = runs[columns].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=float)
    curves = curves * info.scale
    levels = _levels(prepared, param)
    series = []
    for k, label in enumerate(levels.labels):
        block = curves[levels.codes == k]
        means, lows, highs, counts = [], [], [], []
        for e in range(len(epochs)):
            column = block[:, e]
            column = column[np.isfinite(column)]
            mean = float(column.mean()) if len(column) else None
            sd = float(column.std(ddof=1)) if len(column) >= 2 else None
            means.append(mean)
            lows.append(mean - sd if mean is not None and sd is not None else None)
            highs.append(mean + sd if mean is not None and sd is not None else None)
            counts.append(len(column))
        series.append(Series(label, [float(e) for e in epochs], means, lows, highs, counts))
    return CurvesInfo(param, epochs, series, info.axis_label, y_bounds=value_bounds(info))


def get_importance_info(
    anova: AnovaResult | None = None,
    importance: list[ParamImportance] | None = None,
    strengths: list[PairStrength] | None = None,
    unit: str = "",
    eta2_level: float = 0.9,
) -> ImportanceInfo:
    """Bars from the grid ANOVA (partial eta squared) or from fANOVA and Friedman's H.

    `eta2_level` is the confidence of the partial eta squared intervals (from each term's F
    test, see interplay.analysis.effects.eta2_intervals).
    """
    if anova is not None and any(t.partial_eta2 is not None for t in anova.terms):
        mains = [_eta_bar(t) for t in anova.terms if len(t.params) == 1]
        pairs = [_eta_bar(t) for t in anova.terms if len(t.params) == 2]
        measure = "partial eta squared"
        return ImportanceInfo(
            sorted(mains, key=lambda b: -b.value),
            sorted(pairs, key=lambda b: -b.value),
            measure,
            measure,
            [anova.method],
            f"{eta2_level:.0%} interval from each F test",
        )
    params = [Bar(i.param, i.importance, *_ends(i.ci)) for i in importance or []]
    pairs = [Bar(" x ".join(s.params), s.size, *_ends(s.size_ci)) for s in strengths or []]
    methods = [importance[0].method] if importance else []
    methods += [strengths[0].method] if strengths else []
    return ImportanceInfo(
        params,
        pairs,
        "fANOVA importance",
        f"interaction size, Friedman's H{f' ({unit})' if unit else ''}",
        methods,
    )


def _ends(ci: tuple[float, float] | None) -> tuple[float | None, float | None]:
    return (ci[0], ci[1]) if ci else (None, None)


def _eta_bar(term: AnovaTerm) -> Bar:
    return Bar(" x ".join(term.params), term.partial_eta2 or 0.0, *_ends(term.partial_eta2_ci))
