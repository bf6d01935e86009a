"""`interplay train`: one tracked run of a study."""

from __future__ import annotations

import logging
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from interplay.errors import UserError
from interplay.training import RunResult
from interplay.words import plural

logger = logging.getLogger(__name__)


def epoch_progress(console: Console, quiet: bool) -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
        disable=quiet,
    )


def train_single(
    path: Path,
    sets: list[str],
    budget: str | None,
    uri: str | None,
    *,
    test: bool,
    quiet: bool,
    console: Console,
) -> RunResult:
    from interplay.data import load_data
    from interplay.studyfile import load_study
    from interplay.tracking import MLflowSink, storage_problem, tracking_uri

    study_file = load_study(path, sets, budget)
    study = study_file.base()
    store = tracking_uri(uri)
    data = load_data(study.data, with_test=test)
    try:
        sink = MLflowSink(
            store, experiment=study.name, run_name=f"{study.name}-seed{study.training.seed}"
        )
        from interplay.runs import tracked_run

        with epoch_progress(console, quiet) as progress:
            result = tracked_run(study, data, sink, progress=progress, evaluate_test=test)
    except Exception as err:
        problem = storage_problem(err)
        if problem is None:
            raise
        raise UserError(
            f"{problem}. The run stopped and its record in {store} is incomplete. Free space "
            "or make the folder writable where that is the cause, then run the same command "
            "again, or log elsewhere with --tracking-uri"
        ) from err
    final = result.final
    if result.state == "failed":
        # A diverging run is the settings' doing (the reason says which to change).
        raise UserError(f"run {sink.run_id} failed: {result.reason}; it is recorded in {store}")
    line = f"val_acc {100 * final['val_acc']:.2f}% after {plural(result.epochs_done, 'epoch')}"
    if result.test_acc is not None:
        line += f", test_acc {100 * result.test_acc:.2f}%"
    console.print(f"run {sink.run_id} ({study.name}): {line}; MLflow store {store}", markup=False)
    return result
