"""Sweeps: Optuna studies whose trials are configurations and whose replicates are seeds.

One Optuna trial is one configuration of the search params; inside it, `search.seeds`
replicates are trained, each its own MLflow child run under the study's parent run. Each
finished replicate is written to the trial's user attrs at once, so a killed process loses
at most the replicate it was training.

Layout of a study's results folder (`results/<study>/`):
    optuna.journal   the Optuna storage (journal file: safe for several local processes)
    spec.json        the search space and training settings the study was started with
    hypothesis.json  the hypothesis as first recorded, with its timestamp
    mlflow.json      tracking URI, experiment and the parent run's id
    checkpoints/     the final weights of each complete run (<config_id>-s<seed>.pt)
    analysis/        results.csv, summary.json and figures (`interplay analyze`)
    test.json        the best configuration's test accuracy, evaluated once
    lock             held by the process that runs the study
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from interplay.errors import ConfigError, UserError
from interplay.studyfile import StudyFile, grid_points

if TYPE_CHECKING:
    import optuna

logger = logging.getLogger(__name__)

# Settings that describe the study without changing what is trained.
NOT_TRAINING = ("hypothesis", "report", "description", "budgets")
INTERRUPTED = "interrupted"


@dataclass
class StudyPaths:
    root: Path

    @property
    def journal(self) -> Path:
        return self.root / "optuna.journal"

    @property
    def spec(self) -> Path:
        return self.root / "spec.json"

    @property
    def hypothesis(self) -> Path:
        return self.root / "hypothesis.json"

    @property
    def mlflow(self) -> Path:
        return self.root / "mlflow.json"

    @property
    def lock(self) -> Path:
        return self.root / "lock"

    @property
    def analysis(self) -> Path:
        return self.root / "analysis"

    @property
    def test(self) -> Path:
        return self.root / "test.json"

    def checkpoint(self, config_id: str, seed: int) -> Path:
        return self.root / "checkpoints" / f"{config_id}-s{seed}.pt"


def results_dir(study_file: StudyFile, out: Path | None) -> StudyPaths:
    return StudyPaths(out if out is not None else Path("results") / study_file.name)


def storage_url(paths: StudyPaths, storage: str | None = None) -> str:
    return storage or f"journal:{paths.journal}"


def open_storage(url: str) -> optuna.storages.BaseStorage:
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock

    # Optuna logs every trial at INFO on its own handler; interplay logs its own line per run.
    if not logger.isEnabledFor(logging.DEBUG):
        optuna.logging.set_verbosity(optuna.logging.WARNING)

    if url.startswith("journal:"):
        path = url.removeprefix("journal:")
        # The open-lock works on every local file system (the symlink lock does not on some).
        backend = JournalFileBackend(path, lock_obj=JournalFileOpenLock(path))
        return JournalStorage(backend)
    return optuna.storages.RDBStorage(url, engine_kwargs={"pool_pre_ping": True})


def config_id(params: dict[str, Any]) -> str:
    text = json.dumps(params, sort_keys=True, default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:10]


def training_spec(study_file: StudyFile) -> dict[str, Any]:
    """What must not change between a study's first run and a resume."""
    raw = {k: v for k, v in study_file.raw.items() if k not in NOT_TRAINING}
    return json.loads(json.dumps(raw, sort_keys=True, default=str))


def spec_changes(old: Any, new: Any, prefix: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        changes = []
        for key in sorted(set(old) | set(new)):
            where = f"{prefix}.{key}" if prefix else str(key)
            if key not in new:
                changes.append(f"{where} removed (was {old[key]!r})")
            elif key not in old:
                changes.append(f"{where} added ({new[key]!r})")
            else:
                changes.extend(spec_changes(old[key], new[key], where))
        return changes
    if old != new:
        return [f"{prefix}: {old!r} -> {new!r}"]
    return []


def distributions(study_file: StudyFile) -> dict[str, optuna.distributions.BaseDistribution]:
    from optuna.distributions import (
        CategoricalDistribution,
        FloatDistribution,
        IntDistribution,
    )

    out: dict[str, optuna.distributions.BaseDistribution] = {}
    for name, spec in study_file.search.params.items():
        if spec.values is not None:
            out[name] = CategoricalDistribution(spec.values)
        elif spec.int:
            step = int(spec.step or 1)
            out[name] = IntDistribution(
                int(spec.low or 0), int(spec.high or 0), log=spec.log, step=step
            )
        else:
            out[name] = FloatDistribution(
                float(spec.low or 0.0), float(spec.high or 0.0), log=spec.log, step=spec.step
            )
    return out


def make_sampler(study_file: StudyFile, seed: int) -> optuna.samplers.BaseSampler:
    import optuna

    method = study_file.search.method
    if method == "tpe":
        return optuna.samplers.TPESampler(seed=seed)
    if method == "gp":
        return optuna.samplers.GPSampler(seed=seed)
    # grid: every configuration is enqueued up front, so the sampler never draws; random too.
    return optuna.samplers.RandomSampler(seed=seed)


def make_pruner(study_file: StudyFile) -> optuna.pruners.BasePruner:
    import optuna

    search = study_file.search
    if search.method == "grid" or search.pruner == "none":
        return optuna.pruners.NopPruner()
    if search.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1)
    return optuna.pruners.SuccessiveHalvingPruner()


def total_trials(study_file: StudyFile) -> int | None:
    search = study_file.search
    if search.method == "grid":
        return len(grid_points(search)) if search.params else 1
    return search.trials


@contextmanager
def study_lock(paths: StudyPaths) -> Iterator[None]:
    """One `interplay run` per results folder; its workers share the storage under it."""
    paths.root.mkdir(parents=True, exist_ok=True)
    with open(paths.lock, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UserError(
                f"{paths.root} is being run by another interplay process; wait for it, or "
                "use --out for a separate study folder"
            ) from None
        yield
        fcntl.flock(handle, fcntl.LOCK_UN)


@contextmanager
def claim_lock(paths: StudyPaths) -> Iterator[None]:
    """Serializes 'count the trials, then ask for one' across local workers."""
    with open(paths.root / "claim.lock", "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def record_hypothesis(study_file: StudyFile, paths: StudyPaths, has_results: bool) -> None:
    current = study_file.base().hypothesis.model_dump(mode="json")
    now = datetime.now(UTC).isoformat(timespec="seconds")
    if not paths.hypothesis.exists():
        record = {"recorded_at": now, **current, "edits": []}
        paths.hypothesis.write_text(json.dumps(record, indent=2))
        return
    record = json.loads(paths.hypothesis.read_text())
    last = (
        record["edits"][-1]["hypothesis"]
        if record["edits"]
        else {
            "text": record["text"],
            "claims": record["claims"],
        }
    )
    if last != current:
        record["edits"].append({"at": now, "after_results": has_results, "hypothesis": current})
        logger.warning(
            "the hypothesis differs from the one recorded %s; the report will say it was edited%s",
            record["recorded_at"],
            " after results existed" if has_results else "",
        )
        paths.hypothesis.write_text(json.dumps(record, indent=2))


def prepare(
    study_file: StudyFile,
    paths: StudyPaths,
    storage: str | None,
    new: bool,
) -> optuna.Study:
    """Create or reopen the Optuna study, refusing a resume whose settings changed."""
    import optuna

    if new and paths.root.exists():
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        moved = paths.root.with_name(f"{paths.root.name}.{stamp}")
        shutil.move(str(paths.root), moved)
        logger.info("--new: the previous study was moved to %s", moved)
    paths.root.mkdir(parents=True, exist_ok=True)
    spec = training_spec(study_file)
    if paths.spec.exists():
        changes = spec_changes(json.loads(paths.spec.read_text()), spec)
        if changes:
            listed = "\n  ".join(changes)
            raise ConfigError(
                f"the study in {paths.root} was started with other settings:\n  {listed}\n"
                "Restore them to resume, or pass --new to start a fresh study "
                "(the old results folder is kept beside it)"
            )
    else:
        paths.spec.write_text(json.dumps(spec, indent=2))

    direction: Literal["maximize", "minimize"] = (
        "maximize" if study_file.search.metric == "val_acc" else "minimize"
    )
    base = study_file.base()
    study = optuna.create_study(
        study_name=study_file.name,
        storage=open_storage(storage_url(paths, storage)),
        direction=direction,
        sampler=make_sampler(study_file, base.training.seed),
        pruner=make_pruner(study_file),
        load_if_exists=True,
    )
    if "design" not in study.user_attrs:
        study.set_user_attr("design", study_file.search.method)
        study.set_user_attr("seeds", study_file.search.seeds)
        study.set_user_attr("params", list(study_file.search.params))
        if study_file.search.method == "grid":
            # A full-factorial design is an enumeration, not a search: each configuration
            # is enqueued once, so that parallel workers can never draw the same one twice.
            for params in grid_points(study_file.search) or [{}]:
                study.enqueue_trial(params, user_attrs={"config_id": config_id(params)})
    has_results = any(t.state.is_finished() for t in study.get_trials(deepcopy=False))
    record_hypothesis(study_file, paths, has_results)
    requeue_interrupted(study)
    return study


def requeue_interrupted(study: optuna.Study) -> int:
    """Trials left RUNNING by a killed process are failed and their configuration enqueued.

    Only the process holding the study lock calls this, before any of its workers start, so
    every RUNNING trial found here belongs to a process that is gone.
    """
    from optuna.trial import TrialState

    count = 0
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        study._storage.set_trial_user_attr(trial._trial_id, "reason", INTERRUPTED)
        study._storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL)
        attrs = {"config_id": trial.user_attrs.get("config_id", config_id(trial.params))}
        attrs["retry_of"] = trial.number
        study.enqueue_trial(trial.params, user_attrs=attrs)
        count += 1
    if count:
        logger.info("%d trial(s) interrupted earlier are enqueued again", count)
    return count


def counted(trial: optuna.trial.FrozenTrial) -> bool:
    """Finished trials that count toward the total: all but those cut short by a kill."""
    from optuna.trial import TrialState

    if trial.state in (TrialState.COMPLETE, TrialState.PRUNED):
        return True
    return trial.state == TrialState.FAIL and trial.user_attrs.get("reason") != INTERRUPTED


def progress_counts(study: optuna.Study, total: int | None) -> tuple[int, int]:
    trials = study.get_trials(deepcopy=False)
    done = sum(1 for t in trials if counted(t))
    return done, total if total is not None else done
