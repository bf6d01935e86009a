"""The tidy results table: its contract, the params it varies, and which runs are compared.

One row per run. Columns: `run_id`, `trial`, `config_id`, `seed`, `state` (complete, pruned,
failed), `reason`, `epochs_done`, `duration_s`; one `param.<name>` per search param; the final
metrics (`train_loss`, `train_acc`, `val_loss`, `val_acc`, `train_val_gap`, optional
`test_acc`); per-epoch metrics as `<metric>@<epoch>` with epochs from 1.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd

from interplay.errors import DataError
from interplay.words import format_level

if TYPE_CHECKING:
    from interplay.config import SearchConfig

logger = logging.getLogger(__name__)

RUN_COLUMNS = (
    "run_id",
    "trial",
    "config_id",
    "seed",
    "state",
    "reason",
    "epochs_done",
    "duration_s",
)
FINAL_METRICS = ("train_loss", "train_acc", "val_loss", "val_acc", "train_val_gap")
STATES = ("complete", "pruned", "failed")
PARAM_PREFIX = "param."

_LABELS = {
    "val_acc": "validation accuracy",
    "train_acc": "training accuracy",
    "test_acc": "test accuracy",
    "val_loss": "validation loss",
    "train_loss": "training loss",
    "train_val_gap": "train - validation gap",
}


class TableError(DataError):
    """The results table breaks its contract (a missing column, an unknown state, ...)."""


@dataclass(frozen=True)
class ParamInfo:
    """One search param as the analysis sees it.

    `levels` keeps the study's order (categorical levels are shown in that order); None for a
    numeric range searched continuously. `log` marks a param searched on a log scale.
    """

    name: str
    kind: Literal["categorical", "numeric"]
    log: bool = False
    levels: list[Any] | None = None

    def __post_init__(self) -> None:
        if self.kind not in ("categorical", "numeric"):
            raise ValueError(f"param {self.name}: kind must be categorical or numeric")
        if self.log and self.kind != "numeric":
            raise ValueError(f"param {self.name}: only a numeric param can be log-scaled")

    @property
    def column(self) -> str:
        return PARAM_PREFIX + self.name


@dataclass(frozen=True)
class MetricInfo:
    """The compared metric: its direction and the unit figures and effect sizes use."""

    name: str
    direction: Literal["maximize", "minimize"]
    scale: float
    unit: str
    label: str

    @property
    def axis_label(self) -> str:
        return f"{self.label} ({self.unit})" if self.unit else self.label


def metric_info(name: str) -> MetricInfo:
    """Accuracies (fractions in the table) are shown and compared in percent points."""
    percent = name.endswith("acc") or name == "train_val_gap"
    minimize = "loss" in name or name == "train_val_gap"
    return MetricInfo(
        name=name,
        direction="minimize" if minimize else "maximize",
        scale=100.0 if percent else 1.0,
        unit="%" if percent else "",
        label=_LABELS.get(name, name),
    )


def params_from_search(search: SearchConfig) -> list[ParamInfo]:
    """The ParamInfo of each param of a study's search section, levels in the study's order."""
    from interplay.studyfile import grid_levels

    grid = grid_levels(search) if search.method == "grid" else {}
    out = []
    for name, spec in search.params.items():
        if spec.levels is not None:
            numeric = all(_is_number(v) for v in spec.levels)
            kind: Literal["categorical", "numeric"] = "numeric" if numeric else "categorical"
            out.append(ParamInfo(name, kind, log=False, levels=spec.levels))
        else:
            out.append(ParamInfo(name, "numeric", log=spec.log, levels=grid.get(name)))
    return out


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float | np.number) and not isinstance(value, bool)


def validate_table(table: pd.DataFrame, params: list[ParamInfo], metric: str) -> None:
    """Check the table against the contract; raise TableError saying what is wrong."""
    if not isinstance(table, pd.DataFrame):
        raise TableError(f"the results table must be a pandas DataFrame, not {type(table)}")
    if table.empty:
        raise TableError("the results table has no runs: run the study first")
    missing = [c for c in (*RUN_COLUMNS, metric) if c not in table.columns]
    missing += [p.column for p in params if p.column not in table.columns]
    if missing:
        raise TableError(f"the results table lacks columns: {', '.join(missing)}")
    unknown = sorted(set(table["state"].astype(str)) - set(STATES))
    if unknown:
        raise TableError(f"unknown run states {unknown}: use {', '.join(STATES)}")
    if table["run_id"].duplicated().any():
        dup = table.loc[table["run_id"].duplicated(), "run_id"].iloc[0]
        raise TableError(f"run_id {dup!r} appears more than once: each row is one run")
    names = [p.name for p in params]
    if len(set(names)) != len(names):
        raise TableError(f"params are listed twice: {names}")
    declared = {p.column for p in params}
    for column in table.columns:
        if column.startswith(PARAM_PREFIX) and column not in declared:
            logger.warning("column %s is not a declared param; it is left out", column)
    for p in params:
        if p.kind != "numeric":
            continue
        values = table.loc[table["state"] != "failed", p.column]
        if not pd.api.types.is_numeric_dtype(values.infer_objects()):
            raise TableError(f"param {p.name} is numeric but its column holds {values.iloc[0]!r}")
        if p.log and (values.dropna() <= 0).any():
            raise TableError(f"param {p.name} is log-scaled but has values <= 0")


@dataclass
class Exclusion:
    run_id: str
    config_id: str
    state: str
    why: str


@dataclass
class Prepared:
    """The runs that are compared, like with like, and the ones left out with the reason.

    `runs` keeps the table's columns plus `value`: the metric at the compared epoch, in the
    metric's display unit (percent for accuracies).
    """

    runs: pd.DataFrame
    params: list[ParamInfo]
    metric: MetricInfo
    mode: Literal["final", "fixed epoch", "last common epoch"]
    epoch: int | None
    rule: str
    exclusions: list[Exclusion]
    early_stopped: int
    n_total: int
    notes: list[str] = field(default_factory=list)

    def param(self, name: str) -> ParamInfo:
        for p in self.params:
            if p.name == name:
                return p
        raise KeyError(name)

    def exclusion_counts(self) -> dict[str, int]:
        """Excluded runs by reason (failed, pruned, missing metric, ...)."""
        return _counts(self.exclusions)


def prepare(
    table: pd.DataFrame,
    params: list[ParamInfo],
    metric: str = "val_acc",
    epoch: int | Literal["common"] | None = None,
) -> Prepared:
    """Choose the runs that can be compared and the metric value of each.

    Args:
        table: the tidy results table.
        params: the search params, levels in the study's order.
        metric: the compared metric (a final-metric column).
        epoch: None compares the final metric of complete runs; an int compares
            `<metric>@<epoch>` among the runs that reached it; "common" compares at the last
            epoch every complete run reached.

    Returns:
        The compared runs, with every exclusion and its reason.
    """
    validate_table(table, params, metric)
    info = metric_info(metric)
    table = table.reset_index(drop=True)
    state = table["state"].astype(str)
    done = pd.to_numeric(table["epochs_done"], errors="coerce").fillna(0).astype(int)
    exclusions: list[Exclusion] = []
    keep = np.ones(len(table), dtype=bool)

    def exclude(mask: np.ndarray, why: pd.Series | str) -> None:
        reasons = why if isinstance(why, pd.Series) else pd.Series(why, index=table.index)
        for i in np.flatnonzero(mask & keep):
            row = table.iloc[i]
            exclusions.append(
                Exclusion(str(row["run_id"]), str(row["config_id"]), str(row["state"]), reasons[i])
            )
        keep[mask] = False

    reason = table["reason"].fillna("").astype(str)
    exclude((state == "failed").to_numpy(), "failed: " + reason.where(reason != "", "no reason"))

    mode: Literal["final", "fixed epoch", "last common epoch"]
    complete = (state == "complete").to_numpy()
    if epoch is None:
        mode, column = "final", metric
        exclude((state == "pruned").to_numpy(), "pruned: at epoch " + done.astype(str))
        # Early stopping is part of the training protocol every run shares, so a run that
        # stopped early still gives a final metric comparable with the others.
        finished = done[keep & complete]
        early = int((finished < finished.max()).sum()) if len(finished) else 0
        rule = (
            "final metric of complete runs; failed and pruned runs are excluded (a pruned run "
            "has no final metric); runs stopped early are kept, early stopping being part of "
            "the training protocol"
        )
    else:
        if epoch == "common":
            reference = done[keep & complete] if (keep & complete).any() else done[keep]
            if reference.empty:
                raise TableError("every run failed: there is nothing to compare")
            epoch_n, mode = int(reference.min()), "last common epoch"
            rule_head = f"{metric} at epoch {epoch_n}, the last epoch every complete run reached"
        else:
            epoch_n, mode = int(epoch), "fixed epoch"
            rule_head = f"{metric} at epoch {epoch_n}"
        column = f"{metric}@{epoch_n}"
        if epoch_n < 1 or column not in table.columns:
            logged = sorted(
                int(c.split("@")[1]) for c in table.columns if c.startswith(f"{metric}@")
            )
            top = f"1..{logged[-1]}" if logged else "none logged"
            raise TableError(f"no column {column}: choose an epoch among {top}")
        short = done < epoch_n
        exclude(
            (short & (state == "pruned")).to_numpy(),
            "pruned before the epoch: at epoch " + done.astype(str),
        )
        exclude(
            (short & (state != "pruned")).to_numpy(),
            "stopped early before the epoch: at epoch " + done.astype(str),
        )
        early = 0
        rule = (
            f"{rule_head}; failed runs and runs that did not reach that epoch (pruned or "
            "stopped early) are excluded"
        )
        epoch = epoch_n

    values = pd.to_numeric(table[column], errors="coerce") * info.scale
    exclude(~np.isfinite(values.to_numpy(dtype=float)), "missing metric: not finite or empty")
    if not keep.any():
        counts = ", ".join(f"{k} {v}" for k, v in _counts(exclusions).items())
        raise TableError(f"no run is left to compare: all {len(table)} were excluded ({counts})")
    runs = table.loc[keep].copy()
    runs["value"] = values[keep].astype(float)
    _check_configs(runs, params)
    resolved = [resolve_levels(p, runs[p.column]) for p in params]
    logger.info(
        "comparing %d of %d runs (%s); excluded: %s",
        len(runs),
        len(table),
        mode,
        ", ".join(f"{k} {v}" for k, v in _counts(exclusions).items()) or "none",
    )
    return Prepared(
        runs=runs.reset_index(drop=True),
        params=resolved,
        metric=info,
        mode=mode,
        epoch=epoch if isinstance(epoch, int) else None,
        rule=rule,
        exclusions=exclusions,
        early_stopped=early,
        n_total=len(table),
    )


def _counts(exclusions: list[Exclusion]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for item in exclusions:
        key = item.why.split(":")[0]
        counts[key] = counts.get(key, 0) + 1
    return counts


def _check_configs(runs: pd.DataFrame, params: list[ParamInfo]) -> None:
    for p in params:
        per_config = runs.groupby("config_id")[p.column].nunique(dropna=False)
        if (per_config > 1).any():
            bad = per_config.index[per_config > 1][0]
            raise TableError(
                f"config_id {bad!r} has several values of param {p.name}: the replicates of a "
                "configuration must share every param"
            )


def resolve_levels(param: ParamInfo, values: pd.Series) -> ParamInfo:
    """Fill in levels from the data when the study gave none and the values are few."""
    if param.levels is not None:
        observed = values.dropna().unique()
        unknown = [v for v in observed if level_index(param, v) < 0]
        if unknown:
            raise TableError(
                f"param {param.name} has values {unknown[:3]} that are not among its levels "
                f"{param.levels}"
            )
        return param
    if param.kind == "categorical":
        # No study order given: first appearance is the closest thing to it.
        return ParamInfo(param.name, param.kind, param.log, list(pd.unique(values.dropna())))
    return param


def level_index(param: ParamInfo, value: Any) -> int:
    """The position of a value among the param's levels, or -1."""
    for i, level in enumerate(param.levels or []):
        if param.kind == "numeric" and _is_number(value) and _is_number(level):
            if math.isclose(float(value), float(level), rel_tol=1e-6, abs_tol=1e-12):
                return i
        elif value == level or str(value) == str(level):
            return i
    return -1


def level_codes(param: ParamInfo, values: pd.Series) -> np.ndarray:
    return np.array([level_index(param, v) for v in values], dtype=int)


def config_stats(prepared: Prepared) -> pd.DataFrame:
    """Mean, sd (ddof 1) and n of the metric over the seeds of each configuration."""
    runs = prepared.runs
    columns = [p.column for p in prepared.params]
    grouped = runs.groupby("config_id", sort=False)
    stats = grouped["value"].agg(mean="mean", sd="std", n="count").reset_index()
    first = grouped[columns].first().reset_index() if columns else stats[["config_id"]]
    out = first.merge(stats, on="config_id")
    return out.reset_index(drop=True)


def pooled_seed_sd(stats: pd.DataFrame) -> tuple[float | None, int]:
    """The seed-to-seed sd pooled over configurations with replicates, and its df."""
    reps = stats[stats["n"] >= 2]
    df = int((reps["n"] - 1).sum())
    if df == 0:
        return None, 0
    return float(np.sqrt(((reps["n"] - 1) * reps["sd"] ** 2).sum() / df)), df


@dataclass
class Levels:
    """A param's values grouped into levels: the study's levels, or bins of a range.

    `codes` gives each run's level (0..K-1); `positions` places the levels on an axis (the
    value itself for numeric params, the bin's center for bins, 0..K-1 for categorical).
    `labels` name the levels (a bin by its range); `ticks` label the positions.
    """

    param: ParamInfo
    codes: np.ndarray
    labels: list[str]
    positions: list[float]
    values: list[Any]
    binned: bool

    @property
    def ticks(self) -> list[str]:
        return [format_level(x) for x in self.positions] if self.binned else self.labels


def discretize(param: ParamInfo, values: pd.Series, bins: int = 4) -> Levels:
    """Group a param's values into the observed levels in study order, or into bins.

    A numeric param searched over a range (no levels) with more than `bins + 2` distinct
    values is cut at its quantiles (on the log scale when log-scaled).
    """
    if param.levels is not None:
        raw = level_codes(param, values)
        observed = sorted(set(raw.tolist()) - {-1})
        chosen = [param.levels[i] for i in observed]
        codes = np.searchsorted(np.array(observed), raw)
        return Levels(
            param,
            codes,
            [format_level(v) for v in chosen],
            _positions(param, chosen),
            chosen,
            False,
        )
    x = values.to_numpy(dtype=float)
    unique = np.unique(x)
    if len(unique) <= bins + 2:
        codes = np.searchsorted(unique, x)
        chosen = unique.tolist()
        return Levels(param, codes, [format_level(v) for v in chosen], chosen, chosen, False)
    scaled = np.log10(x) if param.log else x
    edges = np.quantile(scaled, np.linspace(0, 1, bins + 1))
    codes = np.clip(np.searchsorted(edges, scaled, side="right") - 1, 0, bins - 1)
    real = 10**edges if param.log else edges
    centers = [
        float(10 ** ((a + b) / 2)) if param.log else float((a + b) / 2)
        for a, b in zip(edges[:-1], edges[1:], strict=True)
    ]
    labels = [
        f"{format_level(a)}-{format_level(b)}" for a, b in zip(real[:-1], real[1:], strict=True)
    ]
    used = sorted(set(codes.tolist()))
    remap = np.searchsorted(np.array(used), codes)
    return Levels(
        param,
        remap,
        [labels[i] for i in used],
        [centers[i] for i in used],
        [(float(real[i]), float(real[i + 1])) for i in used],
        True,
    )


def _positions(param: ParamInfo, chosen: list[Any]) -> list[float]:
    if param.kind == "numeric":
        return [float(v) for v in chosen]
    return [float(i) for i in range(len(chosen))]
