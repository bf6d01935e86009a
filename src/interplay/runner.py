"""`interplay run`: a whole study, resumable, in one or several worker processes."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
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

from interplay.errors import ConfigError, UserError
from interplay.study import (
    StudyPaths,
    interrupted,
    prepare,
    progress_counts,
    results_dir,
    storage_url,
    study_lock,
    total_trials,
    write_whole,
)
from interplay.studyfile import StudyFile, format_params, load_study
from interplay.words import plural

logger = logging.getLogger(__name__)


def ensure_parent_run(study_file: StudyFile, paths: StudyPaths, uri: str) -> tuple[str, str]:
    """The study's MLflow parent run (its id and its experiment's): created once, reopened on
    resume.

    Child runs that a killed process left RUNNING are ended as FAILED here, and so is a
    parent run created by a process killed before it could record the run's id.
    """
    from interplay.tracking import MLflowSink, get_client, get_experiment_id, with_retries

    client = get_client(uri)
    experiment = get_experiment_id(client, study_file.name)
    if paths.mlflow.exists():
        info = json.loads(paths.mlflow.read_text())
        if info.get("tracking_uri") == uri:
            run_id = str(info["parent_run_id"])
            with_retries(lambda: client.update_run(run_id, status="RUNNING"), "reopen parent")
            end_interrupted(client, experiment, f"tags.mlflow.parentRunId = '{run_id}'")
            return run_id, experiment
        logger.warning(
            "the study was logged to %s before; a new parent run goes to %s",
            info.get("tracking_uri"),
            uri,
        )
    folder = str(paths.root.resolve())
    # Searched by a digest: a folder's name may hold quotes that a search filter cannot.
    folder_id = hashlib.sha1(folder.encode()).hexdigest()[:16]
    end_interrupted(
        client,
        experiment,
        f"tags.`interplay.role` = 'study' and tags.`interplay.folder_id` = '{folder_id}'",
    )
    sink = MLflowSink(
        uri,
        study_file.name,
        experiment_id=experiment,
        run_name=f"{study_file.name} (study)",
        tags={
            "interplay.role": "study",
            "interplay.results": folder,
            "interplay.folder_id": folder_id,
            "design": study_file.search.method,
        },
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
    info = {"tracking_uri": uri, "experiment": study_file.name, "parent_run_id": sink.run_id}
    write_whole(paths.mlflow, json.dumps(info, indent=2))
    return sink.run_id, experiment


def end_interrupted(client: Any, experiment: str, query: str) -> int:
    """End as FAILED the RUNNING runs matching `query`, and their RUNNING child runs.

    Only the process holding the study lock calls this, before any of its own runs start,
    so every RUNNING run it finds was left so by a process that was stopped.
    """
    from interplay.tracking import with_retries

    reason = "interrupted: the process running it was stopped"
    found = f"{query} and attributes.status = 'RUNNING'"
    runs = with_retries(lambda: client.search_runs([experiment], found), "search runs")
    for run in runs:
        run_id = run.info.run_id
        if run.data.tags.get("interplay.role") == "study":
            end_interrupted(client, experiment, f"tags.mlflow.parentRunId = '{run_id}'")
        end_failed(client, run_id, {"interplay.reason": reason, "state": "failed"})
        logger.info("MLflow run %s was interrupted earlier: marked FAILED", run_id)
    return len(runs)


def end_failed(client: Any, run_id: str, tags: dict[str, str] | None = None) -> None:
    from mlflow.entities import RunTag

    from interplay.tracking import with_retries

    items = [RunTag(k, v) for k, v in (tags or {}).items()]
    if items:
        with_retries(lambda: client.log_batch(run_id, tags=items), "set tags")
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
    if search.method == "grid":
        refuse_impossible_grid(study_file)
    paths = results_dir(study_file, out)
    uri = absolute_uri(tracking_uri(tracking))
    console = console or Console(stderr=True)
    with study_lock(paths), storage_errors(paths, uri):
        study = prepare(study_file, paths, storage, new)
        parent, experiment = ensure_parent_run(study_file, paths, uri)
        deadline = time.time() + search.timeout if search.timeout else None
        ctx = RunContext(
            study_file=study_file,
            paths=paths,
            storage=storage_url(paths, storage),
            tracking_uri=uri,
            parent_run_id=parent,
            experiment_id=experiment,
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
        try:
            with study_progress(console, quiet) as progress:
                task = progress.add_task(best_line(study), total=total, completed=done)
                if workers == 1:
                    worker = Worker(ctx, progress=progress)
                    _follow(worker, progress, task, total)
                else:
                    run_workers(ctx, workers, progress, task)
        except BaseException as err:
            status = "KILLED" if isinstance(err, KeyboardInterrupt) else "FAILED"
            if isinstance(err, KeyboardInterrupt):
                kept, _ = progress_counts(study, total)
                console.print(
                    f"stopped: {plural(kept, 'trial')} kept in {paths.root}; run the same command "
                    "to resume",
                    markup=False,
                )
            try:
                close_parent_run(paths, uri, status)
            except Exception as close_err:  # what stopped the study matters more
                logger.warning("could not end the study's MLflow run: %s", close_err)
            raise
        close_parent_run(paths, uri, "FINISHED")
        report_outcome(study, paths, console)
    return paths


def absolute_uri(uri: str) -> str:
    """A relative sqlite path made absolute, so the study's record works from any folder."""
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri.startswith(prefix + "/"):
        return prefix + str(Path(uri.removeprefix(prefix)).resolve())
    return uri


def refuse_impossible_grid(study_file: StudyFile) -> None:
    """A grid none of whose configurations can be built is a mistake to fix, not to run."""
    from interplay.studyfile import grid_points
    from interplay.summary import check_combinations

    bad = check_combinations(study_file)
    total = len(grid_points(study_file.search)) if study_file.search.params else 1
    if bad and len(bad) == total:
        raise ConfigError(f"no configuration of the grid can be built; the first one: {bad[0][1]}")
    for params, reason in bad:
        logger.warning(
            "%s cannot work and will be recorded failed: %s", format_params(params), reason
        )


def report_outcome(study: Any, paths: StudyPaths, console: Console) -> None:
    from optuna.trial import TrialState

    trials = [t for t in study.get_trials(deepcopy=False) if t.state.is_finished()]
    counts = {s: sum(1 for t in trials if t.state == s) for s in TrialState}
    failed = [t for t in trials if t.state == TrialState.FAIL and not interrupted(t)]
    line = (
        f"study finished: {plural(counts[TrialState.COMPLETE], 'trial')} complete, "
        f"{counts[TrialState.PRUNED]} pruned, {len(failed)} failed; results in {paths.root}"
    )
    console.print(line, markup=False, highlight=False)
    reasons = sorted({str(t.user_attrs.get("reason", ""))[:160] for t in failed})
    for reason in reasons[:5]:
        logger.warning("failed trials: %s", reason)
    if failed:
        console.print("`interplay status STUDY` lists each trial with its state and reason")


@contextmanager
def storage_errors(paths: StudyPaths, uri: str) -> Iterator[None]:
    """Turn a store that cannot be written (a full disk, say) into a message, not a traceback."""
    from interplay.tracking import storage_problem

    try:
        yield
    except UserError:
        raise
    except Exception as err:
        problem = storage_problem(err)
        if problem is None:
            raise
        raise UserError(
            f"{problem}. The study stopped; every run it finished is kept in {paths.root} and "
            f"{uri}. Free space or make the folder writable where that is the cause (a deleted "
            "experiment is restored), then run the same command to resume where it stopped, "
            "or start elsewhere with --out and --tracking-uri"
        ) from err


def _follow(worker: Any, progress: Progress, task: Any, total: int | None) -> None:
    from interplay.sweep import best_line

    while (trial := worker.claim()) is not None:
        worker.run_trial(trial)
        done, shown_total = progress_counts(worker.study, total)
        progress.update(
            task, completed=done, total=shown_total, description=best_line(worker.study)
        )
