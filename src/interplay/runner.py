"""`interplay run`: a whole study, resumable, in one or several worker processes."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from interplay.errors import ConfigError
from interplay.study import (
    StudyPaths,
    prepare,
    progress_counts,
    results_dir,
    storage_url,
    study_lock,
    total_trials,
)
from interplay.studyfile import StudyFile, load_study

logger = logging.getLogger(__name__)


def ensure_parent_run(study_file: StudyFile, paths: StudyPaths, uri: str) -> str:
    """The study's MLflow parent run: created once, reopened on resume.

    Child runs that a killed process left RUNNING are ended as FAILED here.
    """
    from interplay.tracking import MLflowSink, get_client, get_experiment_id, with_retries

    if paths.mlflow.exists():
        info = json.loads(paths.mlflow.read_text())
        if info.get("tracking_uri") == uri:
            client = get_client(uri)
            run_id = str(info["parent_run_id"])
            with_retries(lambda: client.update_run(run_id, status="RUNNING"), "reopen parent")
            experiment = get_experiment_id(client, study_file.name)
            query = f"tags.mlflow.parentRunId = '{run_id}' and attributes.status = 'RUNNING'"
            for run in with_retries(lambda: client.search_runs([experiment], query), "search"):
                reason = "interrupted: the process running it was stopped"
                client.set_tag(run.info.run_id, "interplay.reason", reason)
                client.set_tag(run.info.run_id, "state", "failed")
                end_failed(client, run.info.run_id)
                logger.info(
                    "MLflow run %s was interrupted earlier: marked FAILED", run.info.run_id
                )
            return run_id
        logger.warning(
            "the study was logged to %s before; a new parent run goes to %s",
            info.get("tracking_uri"),
            uri,
        )
    sink = MLflowSink(
        uri,
        study_file.name,
        run_name=f"{study_file.name} (study)",
        tags={"interplay.role": "study", "design": study_file.search.method},
    )
    sink.log_params(
        {
            "design": study_file.search.method,
            "seeds": study_file.search.seeds,
            "search_params": ",".join(study_file.search.params),
            "budget": study_file.budget or "",
        }
    )
    if study_file.path is not None:
        sink.log_artifact(study_file.path)
    paths.mlflow.write_text(
        json.dumps(
            {"tracking_uri": uri, "experiment": study_file.name, "parent_run_id": sink.run_id},
            indent=2,
        )
    )
    return sink.run_id


def end_failed(client: Any, run_id: str) -> None:
    from interplay.tracking import with_retries

    with_retries(lambda: client.set_terminated(run_id, status="FAILED"), "end run")


def close_parent_run(paths: StudyPaths, uri: str, status: str) -> None:
    from interplay.results import status_text
    from interplay.tracking import MLflowSink

    info = json.loads(paths.mlflow.read_text())
    sink = MLflowSink(uri, info["experiment"], run_id=info["parent_run_id"])
    try:
        sink.log_text(status_text(paths), "summary.txt")
    finally:
        sink.close(status)  # type: ignore[arg-type]


def study_progress(console: Console, quiet: bool) -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        disable=quiet,
    )


def run_study(
    path: Path,
    sets: list[str],
    *,
    budget: str | None = None,
    out: Path | None = None,
    storage: str | None = None,
    tracking: str | None = None,
    workers: int = 1,
    new: bool = False,
    quiet: bool = False,
    console: Console | None = None,
) -> StudyPaths:
    """Run (or resume) every trial of a study.

    Args:
        path: the study file.
        sets: `dotted.key=value` overrides.
        budget: a preset from the study's `budgets`.
        out: results folder (default `results/<study>`).
        storage: an Optuna storage URL (default: a journal file in the results folder).
        tracking: MLflow tracking URI (default $MLFLOW_TRACKING_URI or sqlite:///mlflow.db).
        workers: local worker processes sharing the storage.
        new: move an existing results folder aside and start a fresh study.
        quiet: no progress bars.
        console: where progress goes.

    Returns:
        The study's results paths.
    """
    from interplay.sweep import RunContext, Worker, best_line, run_workers
    from interplay.tracking import tracking_uri

    if workers < 1:
        raise ConfigError("--workers must be 1 or more")
    study_file = load_study(path, sets, budget)
    search = study_file.search
    if search.method != "grid" and search.trials is None and search.timeout is None:
        raise ConfigError(
            f"search.method {search.method}: set search.trials or search.timeout "
            "(how many configurations to try)"
        )
    paths = results_dir(study_file, out)
    uri = tracking_uri(tracking)
    console = console or Console(stderr=True)
    with study_lock(paths):
        study = prepare(study_file, paths, storage, new)
        parent = ensure_parent_run(study_file, paths, uri)
        deadline = time.time() + search.timeout if search.timeout else None
        ctx = RunContext(
            study_file=study_file,
            paths=paths,
            storage=storage_url(paths, storage),
            tracking_uri=uri,
            parent_run_id=parent,
            deadline=deadline,
        )
        total = total_trials(study_file)
        done, _ = progress_counts(study, total)
        runs = (total or 0) * search.seeds
        logger.info(
            "study %s: %s design, %s trials x %d seeds = %s runs (%d trials done); results in %s",
            study_file.name,
            search.method,
            total if total is not None else "?",
            search.seeds,
            runs or "?",
            done,
            paths.root,
        )
        status = "FAILED"
        try:
            with study_progress(console, quiet) as progress:
                task = progress.add_task(best_line(study), total=total, completed=done)
                if workers == 1:
                    worker = Worker(ctx, progress=progress)
                    _follow(worker, progress, task, total)
                else:
                    run_workers(ctx, workers, progress, task)
            status = "FINISHED"
        except KeyboardInterrupt:
            status = "KILLED"
            raise
        finally:
            close_parent_run(paths, uri, status)
    return paths


def _follow(worker: Any, progress: Progress, task: Any, total: int | None) -> None:
    from interplay.sweep import best_line

    while (trial := worker.claim()) is not None:
        worker.run_trial(trial)
        done, shown_total = progress_counts(worker.study, total)
        progress.update(
            task, completed=done, total=shown_total, description=best_line(worker.study)
        )
