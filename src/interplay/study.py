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
    workers.lock     held (shared) by each worker process while it lives
    optuna.journal.flock  the journal's write lock

spec.json, hypothesis.json and mlflow.json are written whole (to a temporary name, then
renamed); the journal is appended under a lock that repairs a record cut short by a kill or a
full disk (see `JournalLock`).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from interplay.errors import ConfigError, UserError
from interplay.studyfile import StudyFile, grid_points
from interplay.words import plural

if TYPE_CHECKING:
    import optuna

logger = logging.getLogger(__name__)

# Settings that describe the study without changing what is trained.
NOT_TRAINING = ("hypothesis", "report", "description", "budgets")
INTERRUPTED = "interrupted"
# How long a new run waits for the workers of a killed run to end (they die with their parent).
ORPHAN_WAIT_S = 15.0


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
    def workers_lock(self) -> Path:
        return self.root / "workers.lock"

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
    from optuna.storages.journal import JournalFileBackend

    # Optuna logs every trial at INFO on its own handler; interplay logs its own line per run.
    if not logger.isEnabledFor(logging.DEBUG):
        optuna.logging.set_verbosity(optuna.logging.WARNING)

    if url.startswith("journal:"):
        path = url.removeprefix("journal:")
        # Optuna's backend only calls acquire() and release() on its lock object.
        backend = JournalFileBackend(path, lock_obj=JournalLock(path))  # type: ignore[arg-type]
        return JournalStorage(backend)
    return optuna.storages.RDBStorage(url, engine_kwargs={"pool_pre_ping": True})


class JournalLock:
    """The write lock of a journal file: an flock, which the kernel drops when its holder dies.

    Written by hand because Optuna's journal locks are lock files that outlive a killed holder
    (every other process then waits 30 s), and because Optuna reads a journal only while all
    its lines but the last are whole: a record cut short by a kill or a full disk, followed
    by any later record, would make the whole study unreadable. So whoever takes the lock
    first cuts away a partial last record (its writer never saw it succeed), and a writer
    whose write failed cuts its own when it lets go.
    """

    def __init__(self, journal: str) -> None:
        self.journal = Path(journal)
        self.path = Path(journal + ".flock")
        self._fd: int | None = None

    def acquire(self) -> bool:
        fd = os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            cut_partial_record(self.journal)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        return True

    def release(self) -> None:
        fd, self._fd = self._fd, None
        try:
            cut_partial_record(self.journal)
        finally:
            if fd is not None:
                os.close(fd)  # closing drops the flock


def cut_partial_record(journal: Path) -> int:
    """Truncate a journal after its last whole line; returns the bytes removed."""
    if not journal.exists():
        return 0
    with open(journal, "r+b") as handle:
        size = handle.seek(0, os.SEEK_END)
        if size == 0:
            return 0
        handle.seek(size - 1)
        if handle.read(1) == b"\n":
            return 0
        end = size
        while end > 0:
            start = max(0, end - 65536)
            handle.seek(start)
            newline = handle.read(end - start).rfind(b"\n")
            if newline >= 0:
                end = start + newline + 1
                break
            end = start
        handle.truncate(end)
    logger.warning(
        "%s ended in a record cut short (a kill or a full disk while writing): removed its "
        "%d bytes; everything written before it is kept",
        journal,
        size - end,
    )
    return size - end


def write_whole(path: Path, text: str) -> None:
    """Write a file under a temporary name and rename it, so a kill never leaves half of it."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


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


def recorded_spec_changes(paths: StudyPaths, spec: dict[str, Any]) -> list[str]:
    """How `spec` differs from the one the study started with (none before its first run).

    A spec without the data files' fingerprint is compared without it.
    """
    if not paths.spec.exists():
        return []
    recorded = json.loads(paths.spec.read_text())
    if "data files" not in spec:
        recorded.pop("data files", None)
    return spec_changes(recorded, spec)


def distributions(study_file: StudyFile) -> dict[str, optuna.distributions.BaseDistribution]:
    from optuna.distributions import (
        CategoricalDistribution,
        FloatDistribution,
        IntDistribution,
    )

    out: dict[str, optuna.distributions.BaseDistribution] = {}
    for name, spec in study_file.search.params.items():
        if spec.levels is not None:
            out[name] = CategoricalDistribution(spec.levels)
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
    try:
        paths.root.mkdir(parents=True, exist_ok=True)
        paths.lock.touch()
    except OSError as err:
        from interplay.tracking import describe_os_error

        raise UserError(
            f"cannot write the results folder {paths.root}: {describe_os_error(err, name=False)}; "
            "choose a writable folder with --out"
        ) from None
    with open(paths.lock, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UserError(
                f"{paths.root} is being run by another interplay process; wait for it, or "
                "use --out for a separate study folder"
            ) from None
        wait_for_orphan_workers(paths)
        yield
        fcntl.flock(handle, fcntl.LOCK_UN)


def run_active(paths: StudyPaths) -> bool:
    """Whether an `interplay run` on this machine holds the results folder right now."""
    try:
        handle = open(paths.lock)  # noqa: SIM115 - closed below; closing drops the flock
    except OSError:
        return False
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
        return False


def wait_for_orphan_workers(paths: StudyPaths, wait_s: float = ORPHAN_WAIT_S) -> None:
    """Wait until no worker of an earlier run of this study is alive.

    A worker holds a shared lock on `workers.lock` for its whole life. Workers die with the
    process that started them (see `sweep.die_with_parent`), but where the system cannot
    arrange that, a worker left behind would still be training a trial that the new run is
    about to mark interrupted and redo.
    """
    with open(paths.workers_lock, "a") as handle:
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise UserError(
                        f"worker processes of an earlier run of {paths.root} are still "
                        "running; wait for them to end (or stop them), then run again"
                    ) from None
                time.sleep(0.1)


@contextmanager
def worker_alive(paths: StudyPaths) -> Iterator[None]:
    """Held by a worker process for its whole life (see `wait_for_orphan_workers`)."""
    with open(paths.workers_lock, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_SH)
        yield


@contextmanager
def claim_lock(paths: StudyPaths) -> Iterator[None]:
    """Serializes 'count the trials, then ask for one' across local workers."""
    with open(paths.root / "claim.lock", "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def record_hypothesis(
    study_file: StudyFile, paths: StudyPaths, has_results: bool, *, quiet: bool = False
) -> None:
    """Record the hypothesis before the first run, and every later edit with its time.

    `quiet` leaves the warning about an edit to the caller, which has more to say.
    """
    current = study_file.base().hypothesis.model_dump(mode="json")
    now = datetime.now(UTC).isoformat(timespec="seconds")
    if not paths.hypothesis.exists():
        record = {"recorded_at": now, **current, "edits": []}
        write_whole(paths.hypothesis, json.dumps(record, indent=2))
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
        log = logger.debug if quiet else logger.warning
        log(
            "the hypothesis differs from the one recorded %s; the report will say it was edited%s",
            record["recorded_at"],
            " after results existed" if has_results else "",
        )
        write_whole(paths.hypothesis, json.dumps(record, indent=2))


LOCK_FILES = ("lock", "workers.lock", "claim.lock")


def move_aside(paths: StudyPaths) -> Path:
    """--new: the previous study's files go to a dated folder beside it; the locks stay."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    moved = paths.root.with_name(f"{paths.root.name}.{stamp}")
    moved.mkdir(parents=True)
    for entry in paths.root.iterdir():
        if entry.name not in LOCK_FILES:
            shutil.move(str(entry), moved / entry.name)
    logger.info("--new: the previous study was moved to %s", moved)
    return moved


def data_fingerprint(study_file: StudyFile) -> str | None:
    """For a folder dataset: check every image decodes, and digest its file list.

    The digest goes into spec.json: a folder that changes after the study started would move
    images between the training and test parts.
    """
    data = study_file.base().data
    if data.dataset != "folder" or data.root is None:
        return None
    from interplay.data.folder import check_folder_images, folder_fingerprint

    check_folder_images(data.root, image_size=data.image_size, channels=data.channels)
    return folder_fingerprint(data.root)


def prepare(
    study_file: StudyFile,
    paths: StudyPaths,
    storage: str | None,
    new: bool,
) -> optuna.Study:
    """Create or reopen the Optuna study, refusing a resume whose settings changed."""
    import optuna

    if new and (paths.spec.exists() or paths.journal.exists()):
        move_aside(paths)
    paths.root.mkdir(parents=True, exist_ok=True)
    spec = training_spec(study_file)
    fingerprint = data_fingerprint(study_file)
    if fingerprint is not None:
        spec["data files"] = fingerprint
    changes = recorded_spec_changes(paths, spec)
    if changes:
        listed = "\n  ".join(changes)
        raise ConfigError(
            f"the study in {paths.root} was started with other settings:\n  {listed}\n"
            "Restore them to resume, or pass --new to start a fresh study "
            "(the old results folder is kept beside it)"
        )
    if not paths.spec.exists():
        write_whole(paths.spec, json.dumps(spec, indent=2))

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
    has_results = any(t.state.is_finished() for t in study.get_trials(deepcopy=False))
    record_hypothesis(study_file, paths, has_results)
    requeue_interrupted(study, study_file)
    return study


def requeue_interrupted(study: optuna.Study, study_file: StudyFile) -> int:
    """Fail the trials a killed process left RUNNING; enqueue each configuration not covered.

    A configuration is covered by any trial of it that was not interrupted. A grid enqueues
    every configuration of its design this way, so a kill at any point (between two enqueues,
    between failing a trial and enqueueing its retry) neither loses nor doubles one. Only the
    process holding the study lock calls this, before its workers start, once the workers of
    any earlier run are gone: every RUNNING trial found here belongs to a dead process.

    Returns:
        How many configurations were enqueued.
    """
    from optuna.trial import TrialState

    failed = 0
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        study._storage.set_trial_user_attr(trial._trial_id, "reason", INTERRUPTED)
        study._storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL)
        failed += 1

    trials = study.get_trials(deepcopy=False)
    covered = {trial_config_id(t) for t in trials if not interrupted(t)}
    wanted: dict[str, tuple[dict[str, Any], int | None]] = {}
    if study_file.search.method == "grid":
        for params in grid_points(study_file.search) or [{}]:
            wanted[config_id(params)] = (params, None)
    names = set(study_file.search.params)
    for trial in trials:
        cid = trial_config_id(trial)
        if cid is None or not interrupted(trial):
            continue
        if cid in wanted:
            wanted[cid] = (wanted[cid][0], trial.number)
        elif set(trial.params) == names:
            # A search trial killed while its params were drawn is left to the sampler.
            wanted[cid] = (dict(trial.params), trial.number)

    enqueued = 0
    for cid, (params, retry_of) in wanted.items():
        if cid in covered:
            continue
        attrs: dict[str, Any] = {"config_id": cid}
        if retry_of is not None:
            attrs["retry_of"] = retry_of
        study.enqueue_trial(params, user_attrs=attrs)
        enqueued += 1
    if failed:
        logger.info("%s interrupted earlier enqueued again", plural(failed, "trial"))
    return enqueued


def interrupted(trial: optuna.trial.FrozenTrial) -> bool:
    return trial.user_attrs.get("reason") == INTERRUPTED


def trial_config_id(trial: optuna.trial.FrozenTrial) -> str | None:
    cid = trial.user_attrs.get("config_id")
    if cid is not None:
        return str(cid)
    return config_id(trial.params) if trial.params else None


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
