"""Running a study: claim trials, train their replicates, record everything twice.

Every replicate is an MLflow child run and a record in its Optuna trial's user attrs; a
replicate found finished in either place is never trained again.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import signal
import statistics
import sys
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from interplay.errors import ConfigError, UserError
from interplay.study import (
    StudyPaths,
    claim_lock,
    config_id,
    counted,
    distributions,
    interrupted,
    make_pruner,
    make_sampler,
    open_storage,
    progress_counts,
    total_trials,
    trial_config_id,
    worker_alive,
)
from interplay.studyfile import StudyFile, format_params
from interplay.words import plural

if TYPE_CHECKING:
    import optuna
    from rich.progress import Progress

    from interplay.data import DataSplits

logger = logging.getLogger(__name__)

HISTORY_METRICS = ("train_loss", "train_acc", "val_loss", "val_acc", "train_val_gap")
# States of a replicate that is done for good: kept, never trained again.
KEPT_STATES = ("complete", "pruned")
# Exit code of a worker stopped by a store it could not write (its message is logged).
STORE_EXIT = 3


@dataclass
class RunContext:
    """What every worker needs to run trials of one study."""

    study_file: StudyFile
    paths: StudyPaths
    storage: str
    tracking_uri: str
    parent_run_id: str
    experiment_id: str
    deadline: float | None
    worker: int = 0


def replicate_record(result: Any, seed: int, run_id: str) -> dict[str, Any]:
    history = {m: [h[m] for h in result.history] for m in HISTORY_METRICS}
    return {
        "seed": seed,
        "run_id": run_id,
        "state": result.state,
        "reason": result.reason,
        "history": history,
        "final": {k: v for k, v in result.final.items() if k in HISTORY_METRICS},
        "epochs_done": result.epochs_done,
        "duration_s": result.duration_s,
        "stopped_early": result.stopped_early,
    }


def failed_record(seed: int, run_id: str, reason: str) -> dict[str, Any]:
    return {
        "seed": seed,
        "run_id": run_id,
        "state": "failed",
        "reason": reason,
        "history": {},
        "final": {},
        "epochs_done": 0,
        "duration_s": 0.0,
        "stopped_early": False,
    }


def finished_in_mlflow(ctx: RunContext, cid: str, seed: int) -> dict[str, Any] | None:
    """A replicate that MLflow holds as finished although its Optuna record was lost."""
    from interplay.tracking import get_client, with_retries

    client = get_client(ctx.tracking_uri)
    query = (
        f"tags.mlflow.parentRunId = '{ctx.parent_run_id}' and tags.config_id = '{cid}' "
        f"and tags.seed = '{seed}' and attributes.status = 'FINISHED'"
    )
    runs = with_retries(lambda: client.search_runs([ctx.experiment_id], query), "search runs")
    for run in runs:
        state = run.data.tags.get("state")
        if state not in KEPT_STATES:
            continue
        run_id = run.info.run_id
        history = {m: metric_history(client, run_id, m) for m in HISTORY_METRICS}
        epochs = len(history["val_acc"])
        return {
            "seed": seed,
            "run_id": run_id,
            "state": state,
            "reason": run.data.tags.get("interplay.reason", ""),
            "history": history,
            "final": {m: v[-1] for m, v in history.items() if v},
            "epochs_done": epochs,
            "duration_s": ((run.info.end_time or 0) - run.info.start_time) / 1000,
            "stopped_early": run.data.tags.get("stopped_early") == "true",
        }
    return None


def metric_history(client: Any, run_id: str, metric: str) -> list[float]:
    from interplay.tracking import with_retries

    points = with_retries(lambda: client.get_metric_history(run_id, metric), "metric history")
    return [p.value for p in sorted(points, key=lambda p: int(p.step))]


class Worker:
    """Claims trials until the study's total is reached, the time is up, or nothing is left."""

    def __init__(
        self, ctx: RunContext, progress: Progress | None = None, parent_pid: int | None = None
    ) -> None:
        import optuna

        self.ctx = ctx
        self.progress = progress
        # A worker process whose parent is gone claims nothing more (see die_with_parent).
        self.parent_pid = parent_pid
        base = ctx.study_file.base()
        self.study = optuna.load_study(
            study_name=ctx.study_file.name,
            storage=open_storage(ctx.storage),
            sampler=make_sampler(ctx.study_file, base.training.seed + 1000 * ctx.worker),
            pruner=make_pruner(ctx.study_file),
        )
        self.total = total_trials(ctx.study_file)
        self.dists = distributions(ctx.study_file)
        self._data: dict[str, DataSplits] = {}

    def claim(self) -> optuna.Trial | None:
        from optuna.trial import TrialState

        with claim_lock(self.ctx.paths):
            if self.ctx.deadline is not None and time.time() > self.ctx.deadline:
                return None
            if self.parent_pid is not None and os.getppid() != self.parent_pid:
                return None
            trials = self.study.get_trials(deepcopy=False)
            waiting = any(t.state == TrialState.WAITING for t in trials)
            if self.ctx.study_file.search.method == "grid" and not waiting:
                return None
            running = sum(1 for t in trials if t.state == TrialState.RUNNING)
            done = sum(1 for t in trials if counted(t))
            if self.total is not None and done + running >= self.total and not waiting:
                return None
            return self.study.ask(self.dists)

    def run(self) -> int:
        ran = 0
        while (trial := self.claim()) is not None:
            self.run_trial(trial)
            ran += 1
        return ran

    def data_for(self, study: Any) -> DataSplits:
        from interplay.data import load_data

        key = json.dumps(study.data.model_dump(mode="json"), sort_keys=True)
        if key not in self._data:
            self._data = {key: load_data(study.data)}
        return self._data[key]

    def run_trial(self, trial: optuna.Trial) -> None:
        from optuna.trial import TrialState

        from interplay.errors import ArchitectureError, DataError

        params = dict(trial.params)
        cid = trial.user_attrs.get("config_id") or config_id(params)
        trial.set_user_attr("config_id", cid)
        earlier = self.earlier_replicates(trial, cid)
        seeds = self.ctx.study_file.search.seeds
        records: list[dict[str, Any]] = []
        try:
            study = self.ctx.study_file.resolve(params)
            if study.model.factory is None:
                from interplay.models import infer_model
                from interplay.summary import data_shape

                infer_model(study.model, *data_shape(study.data))
            data = self.data_for(study)
        except (ConfigError, ArchitectureError, DataError) as err:
            reason = str(err)
            for r in range(seeds):
                seed = self.ctx.study_file.base().training.seed + r
                records.append(self.record_failure(trial, cid, params, seed, r, reason))
            trial.set_user_attr("reason", reason)
            self.study.tell(trial, state=TrialState.FAIL)
            logger.warning("trial %d (%s) failed: %s", trial.number, format_params(params), reason)
            return

        for r in range(seeds):
            seed = study.training.seed + r
            record = earlier.get(seed) or finished_in_mlflow(self.ctx, cid, seed)
            if record is None:
                record = self.train_replicate(trial, study, data, cid, params, seed, r)
            else:
                logger.info(
                    "trial %d seed %d: kept the finished run %s",
                    trial.number,
                    seed,
                    record["run_id"],
                )
            trial.set_user_attr(f"rep{r}", record)
            records.append(record)
            if record["state"] == "pruned":
                break
        self.finish(trial, params, records)

    def earlier_replicates(self, trial: optuna.Trial, cid: str) -> dict[int, dict[str, Any]]:
        """Replicates done for good by interrupted trials of this configuration."""
        if "retry_of" not in trial.user_attrs:
            return {}
        done: dict[int, dict[str, Any]] = {}
        for old in self.study.get_trials(deepcopy=False):
            if old.number == trial.number or not interrupted(old):
                continue
            if trial_config_id(old) != cid:
                continue
            for key, rep in old.user_attrs.items():
                if key.startswith("rep") and rep["state"] in KEPT_STATES:
                    done[int(rep["seed"])] = rep
        return done

    def sink(self, trial: optuna.Trial, cid: str, params: dict[str, Any], seed: int) -> Any:
        from interplay.tracking import MLflowSink

        tags = {
            "trial": str(trial.number),
            "config_id": cid,
            "seed": str(seed),
            "interplay.study": self.ctx.study_file.name,
        }
        name = f"t{trial.number:03d}-s{seed}"
        return MLflowSink(
            self.ctx.tracking_uri,
            self.ctx.study_file.name,
            run_name=name,
            tags=tags,
            parent_run_id=self.ctx.parent_run_id,
            experiment_id=self.ctx.experiment_id,
        )

    def record_failure(
        self, trial: optuna.Trial, cid: str, params: dict[str, Any], seed: int, r: int, reason: str
    ) -> dict[str, Any]:
        sink = self.sink(trial, cid, params, seed)
        sink.queue_params({**{f"param.{k}": v for k, v in params.items()}, "seed": seed})
        sink.queue_tags({"state": "failed"})
        sink.close("FAILED", reason)  # sends both with the reason
        record = failed_record(seed, sink.run_id, reason)
        trial.set_user_attr(f"rep{r}", record)
        return record

    def train_replicate(
        self,
        trial: optuna.Trial,
        study: Any,
        data: DataSplits,
        cid: str,
        params: dict[str, Any],
        seed: int,
        r: int,
    ) -> dict[str, Any]:
        from interplay.runs import tracked_run

        seeded = study.model_copy(
            update={"training": study.training.model_copy(update={"seed": seed})}
        )
        if self.ctx.study_file.search.method != "grid" and r == 0:
            metric = self.ctx.study_file.search.metric

            def on_epoch(epoch: int, metrics: dict[str, float]) -> bool:
                trial.report(metrics[metric], epoch)
                return trial.should_prune()
        else:
            on_epoch = None  # type: ignore[assignment]
        sink = self.sink(trial, cid, params, seed)
        extra = {
            **{f"param.{k}": v for k, v in params.items()},
            "seed": seed,
            "replicate": r,
            "trial": trial.number,
            "config_id": cid,
        }
        try:
            result = tracked_run(
                seeded,
                data,
                sink,
                extra_params=extra,
                on_epoch=on_epoch,
                progress=self.progress,
                epoch_log_level=logging.DEBUG,
                checkpoint=self.ctx.paths.checkpoint(cid, seed),
            )
        except Exception as err:
            if not trial_error(err):
                raise
            # tracked_run has ended the MLflow run FAILED with this same reason.
            reason = f"{type(err).__name__}: {err}"
            logger.warning(
                "trial %d seed %d (%s) failed: %s",
                trial.number,
                seed,
                format_params(params),
                reason,
            )
            return failed_record(seed, sink.run_id, reason)
        record = replicate_record(result, seed, sink.run_id)
        value = record["final"].get("val_acc")
        shown = f"val_acc {100 * value:.2f}%" if value is not None else result.reason
        logger.info(
            "trial %d seed %d (%s): %s, %s in %.0fs",
            trial.number,
            seed,
            format_params(params),
            result.state,
            shown,
            result.duration_s,
        )
        return record

    def finish(
        self, trial: optuna.Trial, params: dict[str, Any], records: list[dict[str, Any]]
    ) -> None:
        from optuna.trial import TrialState

        metric = self.ctx.study_file.search.metric
        complete = [r["final"][metric] for r in records if r["state"] == "complete"]
        if any(r["state"] == "pruned" for r in records):
            self.study.tell(trial, state=TrialState.PRUNED)
        elif complete and len(complete) == len(records):
            trial.set_user_attr("sd", statistics.stdev(complete) if len(complete) > 1 else 0.0)
            self.study.tell(trial, statistics.fmean(complete))
        else:
            reasons = sorted({r["reason"] for r in records if r["state"] == "failed"})
            trial.set_user_attr("reason", "; ".join(reasons) or "no replicate finished")
            self.study.tell(trial, state=TrialState.FAIL)


def trial_error(err: Exception) -> bool:
    """An error of the trial's own model or settings (out of memory, say): the trial fails.

    A store that cannot be written or is locked past every retry is not the trial's fault:
    it stops the study, which resumes later without having recorded a false failure.
    """
    from interplay.tracking import storage_problem

    if storage_problem(err) is not None or isinstance(err, OSError):
        return False
    module = type(err).__module__
    return not module.startswith(("mlflow", "sqlalchemy", "sqlite3", "optuna"))


def die_with_parent(parent_pid: int) -> None:
    """Have the kernel kill this process when its parent dies, however the parent ends.

    Without it, workers of an `interplay run` killed with SIGKILL (by the OOM killer, say)
    would go on training trials that the next run marks interrupted and trains again.
    """
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent_pid:
        os._exit(1)  # the parent died before the request above took effect


def worker_main(ctx: RunContext, threads: int, level: int, parent_pid: int) -> None:
    """Entry point of a worker process (spawned, so it imports everything afresh)."""
    from interplay.errors import stop_on_sigterm

    die_with_parent(parent_pid)
    stop_on_sigterm()  # the parent stops its workers with SIGTERM: their runs end KILLED
    try:
        with worker_alive(ctx.paths):
            import torch

            from interplay.tracking import storage_problem

            fmt = f"[worker {ctx.worker}] %(message)s"
            logging.basicConfig(level=logging.WARNING, format=fmt)
            logging.getLogger("interplay").setLevel(level)
            for noisy in ("optuna", "mlflow", "alembic"):
                logging.getLogger(noisy).setLevel(logging.WARNING)
            torch.set_num_threads(threads)
            try:
                Worker(ctx, parent_pid=parent_pid).run()
            except Exception as err:
                problem = storage_problem(err)
                if problem is None:
                    raise
                logger.error("%s", problem)
                sys.exit(STORE_EXIT)
    except KeyboardInterrupt:
        # Stopped at any point, start-up included: the parent says what stopped the study
        # and how to resume.
        sys.exit(130)


def run_workers(ctx: RunContext, workers: int, progress: Progress | None, task: Any) -> None:
    """Start `workers` processes on the shared storage and follow their progress."""
    cores = os.cpu_count() or 1
    threads = max(1, cores // workers)
    spawn = multiprocessing.get_context("spawn")
    level = logging.getLogger("interplay").getEffectiveLevel()
    procs = []
    for i in range(workers):
        worker_ctx = RunContext(**{**ctx.__dict__, "worker": i})
        args = (worker_ctx, threads, level, os.getpid())
        proc = spawn.Process(target=worker_main, args=args, daemon=False)
        proc.start()
        procs.append(proc)
    import optuna

    study = optuna.load_study(study_name=ctx.study_file.name, storage=open_storage(ctx.storage))
    try:
        while any(p.is_alive() for p in procs):
            time.sleep(1.0)
            if progress is not None and task is not None:
                done, total = progress_counts(study, total_trials(ctx.study_file))
                progress.update(task, completed=done, total=total, description=best_line(study))
    except KeyboardInterrupt:
        for proc in procs:
            proc.terminate()
        raise
    finally:
        for proc in procs:
            proc.join()
    codes = [p.exitcode for p in procs if p.exitcode not in (0, None)]
    if STORE_EXIT in codes:
        raise UserError(
            "a worker could not write the study's stores (its message is above): free space "
            "or choose writable places with --out and --tracking-uri, then run the same "
            "command to resume; the finished runs are kept"
        )
    if codes:
        raise UserError(
            f"{plural(len(codes), 'worker')} stopped with an error (exit codes {codes}); run the "
            "same command again to resume, the finished runs are kept"
        )


def best_line(study: optuna.Study) -> str:
    from optuna.trial import TrialState

    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        return "study"
    maximize = study.direction.name == "MAXIMIZE"
    sign = 1.0 if maximize else -1.0
    # A COMPLETE trial always has a value.
    best = max(complete, key=lambda t: sign * float(t.value or 0.0))
    value = best.value or 0.0
    shown = f"{100 * value:.2f}%" if maximize else f"{value:.4f}"
    return f"best {shown} ({format_params(best.params)})"
