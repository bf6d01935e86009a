"""Simulated results tables with a known answer, in the tidy contract's columns.

The analysis is tested on these (a planted interaction must be found, none planted must stay
at alpha), and they let the report and the figures be tried without training anything.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Mapping
from typing import Any, Literal

import numpy as np
import pandas as pd

from interplay.analysis.table import ParamInfo

logger = logging.getLogger(__name__)

MeanFn = Callable[[Mapping[str, Any]], float]


def simulate_table(
    params: list[ParamInfo],
    mean: MeanFn,
    *,
    design: Literal["grid", "random"] = "grid",
    seeds: int = 3,
    noise_sd: float = 0.5,
    trials: int = 40,
    ranges: Mapping[str, tuple[float, float]] | None = None,
    epochs: int = 3,
    seed: int = 0,
) -> pd.DataFrame:
    """A results table whose validation accuracy is `mean(params)` points plus seed noise.

    Args:
        params: the search params; a grid uses their levels, a random design samples numeric
            params from `ranges` (log-uniform when log) and categorical ones from their levels.
        mean: the expected validation accuracy in percent points of a configuration.
        design: grid (full factorial) or random (`trials` configurations).
        seeds: replicates per configuration.
        noise_sd: seed-to-seed sd of the final validation accuracy, in points.
        trials: configurations of a random design.
        ranges: (low, high) of each numeric param without levels.
        epochs: per-epoch columns `<metric>@1..epochs`; the last equals the final metric.
        seed: seeds the simulation.

    Returns:
        One complete run per configuration and seed.
    """
    rng = np.random.default_rng(seed)
    configs = _configs(params, design, trials, ranges or {}, rng)
    rows = []
    for trial, config in enumerate(configs):
        expected = float(mean(config))
        for s in range(seeds):
            val = (expected + rng.normal(0.0, noise_sd)) / 100.0
            gap = abs(rng.normal(0.03, 0.005))
            row: dict[str, Any] = {
                "run_id": f"t{trial}-s{s}",
                "trial": trial,
                "config_id": f"c{trial}",
                "seed": s,
                "state": "complete",
                "reason": "",
                "epochs_done": epochs,
                "duration_s": float(rng.uniform(5, 10)),
            }
            row.update({f"param.{k}": v for k, v in config.items()})
            row.update(_metrics(val, gap, epochs, rng))
            rows.append(row)
    return pd.DataFrame(rows)


def _configs(
    params: list[ParamInfo],
    design: str,
    trials: int,
    ranges: Mapping[str, tuple[float, float]],
    rng: np.random.Generator,
) -> list[dict[str, Any]]:
    if design == "grid":
        levels = [p.levels or [] for p in params]
        names = [p.name for p in params]
        return [dict(zip(names, combo, strict=True)) for combo in itertools.product(*levels)]
    out = []
    for _ in range(trials):
        config: dict[str, Any] = {}
        for p in params:
            if p.levels is not None:
                config[p.name] = p.levels[int(rng.integers(len(p.levels)))]
                continue
            low, high = ranges[p.name]
            if p.log:
                config[p.name] = float(10 ** rng.uniform(np.log10(low), np.log10(high)))
            else:
                config[p.name] = float(rng.uniform(low, high))
        out.append(config)
    return out


def _metrics(val: float, gap: float, epochs: int, rng: np.random.Generator) -> dict[str, float]:
    train = min(val + gap, 1.0)
    out = {
        "train_loss": float(-np.log(max(train, 1e-3))),
        "train_acc": train,
        "val_loss": float(-np.log(max(val, 1e-3))),
        "val_acc": val,
        "train_val_gap": train - val,
    }
    for e in range(1, epochs + 1):
        # Curves rise towards the final value; the last epoch is the final metric.
        lag = 0.08 * (epochs - e) / max(epochs, 1)
        v = val if e == epochs else val - lag + rng.normal(0.0, 0.002)
        t = train if e == epochs else train - lag * 0.5
        out[f"val_acc@{e}"] = v
        out[f"train_acc@{e}"] = t
        out[f"val_loss@{e}"] = float(-np.log(max(v, 1e-3)))
        out[f"train_loss@{e}"] = float(-np.log(max(t, 1e-3)))
        out[f"train_val_gap@{e}"] = t - v
    return out
