"""A study's results as a tidy table (one row per run), and the `status` and `export` views."""

from __future__ import annotations

import io
import json
import logging
import math
import statistics
from pathlib import Path
from typing import TYPE_CHECKING, Any

from interplay.errors import UserError
from interplay.study import INTERRUPTED, StudyPaths, open_storage, storage_url

if TYPE_CHECKING:
    import optuna
    import pandas as pd
    from rich.table import Table

logger = logging.getLogger(__name__)

FINAL_METRICS = ("train_loss", "train_acc", "val_loss", "val_acc", "train_val_gap")


def load_optuna_study(paths: StudyPaths, storage: str | None = None) -> optuna.Study:
    import optuna

    if storage is None and not paths.journal.exists():
        raise UserError(
            f"no study results in {paths.root}: run `interplay run STUDY` first, or point "
            "--out at the study's results folder"
        )
    names = optuna.get_all_study_names(open_storage(storage_url(paths, storage)))
    if not names:
        raise UserError(f"the storage of {paths.root} holds no study yet")
    return optuna.load_study(
        study_name=names[0], storage=open_storage(storage_url(paths, storage))
    )


def replicate_rows(study: optuna.Study) -> list[dict[str, Any]]:
    """One row per replicate run, in trial order, from the trials' user attrs."""
    rows: list[dict[str, Any]] = []
    seen: set[str] = set()
    for trial in study.get_trials(deepcopy=False):
        if trial.user_attrs.get("reason") == INTERRUPTED or not trial.state.is_finished():
            continue  # redone by a later trial, which carries its finished replicates over
        reps = sorted(
            (v for k, v in trial.user_attrs.items() if k.startswith("rep")),
            key=lambda r: r["seed"],
        )
        for rep in reps:
            # A search that draws a configuration again reuses its finished runs (same config
            # and seed); each run is one row, or the analysis would count it twice.
            run_id = rep.get("run_id")
            if run_id in seen:
                continue
            if run_id:
                seen.add(run_id)
            row: dict[str, Any] = {
                "run_id": rep["run_id"],
                "trial": trial.number,
                "config_id": trial.user_attrs.get("config_id", ""),
                "seed": rep["seed"],
                "state": rep["state"],
                "reason": rep.get("reason", ""),
                "epochs_done": rep.get("epochs_done", 0),
                "duration_s": rep.get("duration_s", 0.0),
            }
            row.update({f"param.{k}": v for k, v in trial.params.items()})
            for metric in FINAL_METRICS:
                row[metric] = rep.get("final", {}).get(metric, math.nan)
            for metric, values in rep.get("history", {}).items():
                for epoch, value in enumerate(values, start=1):
                    row[f"{metric}@{epoch}"] = value
            rows.append(row)
    return rows


def results_table(paths: StudyPaths, storage: str | None = None) -> pd.DataFrame:
    """The tidy table the analysis reads: see interplay.analysis for its columns."""
    import pandas as pd

    study = load_optuna_study(paths, storage)
    table = pd.DataFrame(replicate_rows(study))
    if table.empty:
        raise UserError(f"the study in {paths.root} has no finished runs yet")
    per_epoch = sorted(
        (c for c in table.columns if "@" in c),
        key=lambda c: (c.split("@")[0], int(c.split("@")[1])),
    )
    fixed = [c for c in table.columns if "@" not in c]
    return table[fixed + per_epoch]


def trial_summaries(study: optuna.Study) -> list[dict[str, Any]]:
    seeds = int(study.user_attrs.get("seeds", 1))
    out = []
    for trial in study.get_trials(deepcopy=False):
        if trial.user_attrs.get("reason") == INTERRUPTED:
            continue
        reps = [v for k, v in trial.user_attrs.items() if k.startswith("rep")]
        values = [r["final"]["val_acc"] for r in reps if r["state"] == "complete"]
        out.append(
            {
                "trial": trial.number,
                # A trial waiting in the queue has no params yet, only the ones enqueued for it.
                "params": dict(trial.params or trial.system_attrs.get("fixed_params", {})),
                "seeds_done": f"{len(values)}/{seeds}",
                "mean": statistics.fmean(values) if values else math.nan,
                "sd": statistics.stdev(values) if len(values) > 1 else math.nan,
                "state": trial.state.name.lower(),
                "reason": trial.user_attrs.get("reason", ""),
            }
        )
    out.sort(key=lambda s: (math.isnan(s["mean"]), -s["mean"] if not math.isnan(s["mean"]) else 0))
    return out


def status_table(paths: StudyPaths, storage: str | None = None) -> Table:
    from rich.table import Table

    from interplay.analysis.table import format_level
    from interplay.study import run_active

    study = load_optuna_study(paths, storage)
    # A trial left running by a stopped run still reads RUNNING in the storage until a run
    # resumes it; with a local storage, the run's lock tells whether one is still going.
    stopped = storage is None and not run_active(paths)
    table = Table(title=f"{study.study_name}: trials, best first")
    for column in ("trial", "params", "seeds", "val_acc mean", "sd", "state"):
        table.add_column(column, justify="right" if column != "params" else "left")
    for s in trial_summaries(study):
        params = ", ".join(f"{k}={format_level(v)}" for k, v in s["params"].items())
        mean = "-" if math.isnan(s["mean"]) else f"{100 * s['mean']:.2f}%"
        sd = "-" if math.isnan(s["sd"]) else f"{100 * s['sd']:.2f}"
        state = s["state"] + (f": {s['reason'][:60]}" if s["reason"] else "")
        if stopped and s["state"] == "running":
            state = "interrupted: redone when the run resumes"
        table.add_row(str(s["trial"]), params, s["seeds_done"], mean, sd, state)
    return table


def status_text(paths: StudyPaths) -> str:
    from rich.console import Console

    console = Console(file=io.StringIO(), width=140, record=True)
    try:
        console.print(status_table(paths))
    except UserError as err:
        return str(err)
    return console.export_text()


def export_csv(paths: StudyPaths, target: Path, storage: str | None = None) -> int:
    table = results_table(paths, storage)
    target.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(target, index=False)
    return len(table)


def mlflow_info(paths: StudyPaths) -> dict[str, str]:
    if not paths.mlflow.exists():
        return {}
    return dict(json.loads(paths.mlflow.read_text()))
