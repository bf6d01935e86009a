"""Faults: SIGKILL at random points, a full disk, an unwritable folder. Nothing finished is lost.

Every process here is real: the `interplay` command killed with SIGKILL, a kernel file size
limit (RLIMIT_FSIZE) standing in for a full disk, real Optuna journals and sqlite MLflow
stores. One kill-and-resume at a fixed point is in test_study.py; this file kills at many.
"""

from __future__ import annotations

import json
import os
import random
import resource
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.trial import TrialState

from interplay.results import load_optuna_study, results_table
from interplay.runner import run_study
from interplay.study import INTERRUPTED, JournalLock, StudyPaths, open_storage
from interplay.tracking import MLflowSink, get_client, with_retries

from .test_reliability import WriteStudy, empty_store
from .test_study import children, grid_study, parents

optuna.logging.set_verbosity(optuna.logging.WARNING)


@pytest.fixture
def store_uri(tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> str:
    return empty_store(tmp_path_factory, tmp_path)


def interplay(*args: str, cwd: Path, limit_bytes: int | None = None, **popen: Any) -> Any:
    cmd = [sys.executable, "-m", "interplay.cli", *args]
    # Wide enough that no path in a message is wrapped.
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "300"}

    def limit() -> None:
        # Writes past this size fail with EFBIG, as they fail with ENOSPC on a full disk.
        if limit_bytes is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))

    return subprocess.Popen(cmd, cwd=cwd, env=env, preexec_fn=limit, text=True, **popen)


def child_pids(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


class Store:
    """Reads the MLflow store while a study writes it."""

    def __init__(self, uri: str, experiment: str) -> None:
        self.client = get_client(uri)
        self.experiment = experiment

    def runs(self) -> list[Any]:
        found = with_retries(lambda: self.client.get_experiment_by_name(self.experiment), "read")
        if found is None:
            return []
        eid = found.experiment_id
        runs = with_retries(lambda: self.client.search_runs([eid], max_results=1000), "read")
        return [r for r in runs if "mlflow.parentRunId" in r.data.tags]

    def new_running(self, known: set[str]) -> bool:
        return any(r.info.status == "RUNNING" and r.info.run_id not in known for r in self.runs())

    def finished(self) -> int:
        return sum(r.info.status == "FINISHED" for r in self.runs())

    def more_finished(self, than: int) -> bool:
        return self.finished() > than


def wait_for(condition: Callable[[], bool], proc: Any, timeout: float = 120.0) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if condition():
            return True
        time.sleep(0.05)
    return False


def test_sigkill_at_random_points_resume_loses_nothing(
    write_study: WriteStudy, tmp_path: Path, store_uri: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    # 16 runs: more than ten kills can let finish, so the last kill still finds work to cut.
    dropout = [0.0, 0.25, 0.5, 0.75]
    path = write_study(grid_study(dropout, ["none", "batch"], 2, subset=20, epochs=2))
    out = tmp_path / "results"
    store = Store(store_uri, "grid")
    rng = random.Random(20261204)
    points = ["startup"] * 2 + ["during a run"] * 4 + ["between runs"] * 4
    rng.shuffle(points)
    finished: dict[str, tuple[str, str]] = {}  # every run seen FINISHED: id -> (config, seed)
    cut: set[str] = set()  # runs a kill left RUNNING
    landed: Counter[str] = Counter()

    def log_of(i: int) -> str:
        return (tmp_path / f"kill{i}.log").read_text()

    for i, point in enumerate(points):
        workers = 2 if i in (3, 7) else 1
        args = ["run", str(path), "--out", str(out), "--tracking-uri", store_uri]
        log = open(tmp_path / f"kill{i}.log", "w")  # noqa: SIM115 (closed below)
        proc = interplay(*args, "--workers", str(workers), cwd=tmp_path, stderr=log, stdout=log)
        before = {r.info.run_id for r in store.runs()}
        if point == "startup":
            time.sleep(rng.uniform(0.3, 4.0))  # imports, stores, resume, parent run, ...
        elif point == "during a run":
            assert wait_for(partial(store.new_running, before | cut), proc), log_of(i)
            time.sleep(rng.uniform(0.0, 0.5))  # somewhere in training or logging
        else:
            target = store.finished() + rng.choice([0, 1])
            assert wait_for(partial(store.more_finished, target), proc), log_of(i)
        assert proc.poll() is None, "the study ended before it could be killed"
        workers_then = child_pids(proc.pid) if workers > 1 else []
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        log.close()

        # Workers die with the process that started them, at once: none trains on unseen
        # while the next run resumes (which a worker ending its trial first would show).
        deadline = time.time() + 1.0
        while any(alive(p) for p in workers_then) and time.time() < deadline:
            time.sleep(0.05)
        assert not any(alive(p) for p in workers_then)

        runs = store.runs()
        running = {r.info.run_id for r in runs if r.info.status == "RUNNING"}
        cut |= running
        landed[f"{point}, {'a run cut' if running else 'no run open'}"] += 1
        for run in runs:
            if run.info.status == "FINISHED":
                finished[run.info.run_id] = (run.data.tags["config_id"], run.data.tags["seed"])
        # No configuration and seed has two finished runs, even between kills.
        assert len(set(finished.values())) == len(finished)

    run_study(path, [], out=out, tracking=store_uri, quiet=True)

    trials = load_optuna_study(StudyPaths(out)).get_trials()
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(complete) == 8
    assert len({t.user_attrs["config_id"] for t in complete}) == 8
    assert all(t.user_attrs.get("reason") == INTERRUPTED for t in trials if t not in complete)

    runs = children(store_uri, "grid")
    done = {r.info.run_id: r for r in runs if r.info.status == "FINISHED"}
    assert len(done) == 16
    assert len({(r.data.tags["config_id"], r.data.tags["seed"]) for r in done.values()}) == 16
    assert set(finished) <= set(done)  # every run finished before a kill was kept
    for run in runs:
        assert run.info.status in ("FINISHED", "FAILED")
        if run.info.status == "FAILED":
            assert run.data.tags["interplay.reason"].startswith("interrupted")
    assert cut <= {r.info.run_id for r in runs if r.info.status == "FAILED"}

    table = results_table(StudyPaths(out))
    assert len(table) == 16
    assert not table.duplicated(["config_id", "seed"]).any()
    assert set(table["run_id"]) == set(done)

    study_runs = parents(store_uri, "grid")
    parent_id = json.loads((out / "mlflow.json").read_text())["parent_run_id"]
    assert {r.info.run_id for r in study_runs if r.info.status == "FINISHED"} == {parent_id}
    assert all(r.data.tags["mlflow.parentRunId"] == parent_id for r in runs)
    print(f"\n{len(points)} kills, resumed each time; where they landed: {dict(landed)}")
    print(f"runs finished before a kill: {len(finished)}, kept: {len(set(finished) & set(done))}")


# ---------------------------------------------------------------- states a kill can leave


def _killed_state(journal: Path, state: str) -> None:
    """What a process killed at a precise point of a grid study's start left in its journal."""
    from interplay.study import config_id

    study = optuna.create_study(
        study_name="grid", storage=open_storage(f"journal:{journal}"), direction="maximize"
    )
    points = [{"dropout": 0.0, "norm": norm} for norm in ("none", "batch", "group", "layer")]
    for key, value in {"design": "grid", "seeds": 1, "params": ["dropout", "norm"]}.items():
        study.set_user_attr(key, value)
    enqueued = points[:2] if state == "killed while enqueueing" else points
    for params in enqueued:
        study.enqueue_trial(params, user_attrs={"config_id": config_id(params)})
    if state == "killed between failing a trial and enqueueing it again":
        trial = study.ask()
        study._storage.set_trial_user_attr(trial._trial_id, "reason", INTERRUPTED)
        study._storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL)
    if state == "killed while a trial's params were drawn":
        study.ask()  # claimed (RUNNING), no param drawn yet


@pytest.mark.parametrize(
    "state",
    [
        "killed while enqueueing",
        "killed between failing a trial and enqueueing it again",
        "killed while a trial's params were drawn",
    ],
)
def test_resume_from_a_kill_at_a_precise_point(
    write_study: WriteStudy,
    tmp_path: Path,
    store_uri: str,
    monkeypatch: pytest.MonkeyPatch,
    state: str,
) -> None:
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "results"
    out.mkdir()
    _killed_state(out / "optuna.journal", state)
    path = write_study(grid_study([0.0], ["none", "batch", "group", "layer"], 1, subset=10))
    run_study(path, [], out=out, tracking=store_uri, quiet=True)

    trials = load_optuna_study(StudyPaths(out)).get_trials()
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert sorted(t.params["norm"] for t in complete) == ["batch", "group", "layer", "none"]
    assert all(t.user_attrs.get("reason") == INTERRUPTED for t in trials if t not in complete)
    runs = children(store_uri, "grid")
    assert sorted(r.data.params["param.norm"] for r in runs) == ["batch", "group", "layer", "none"]


def test_sigkill_before_the_parent_run_is_recorded(
    write_study: WriteStudy, tmp_path: Path, store_uri: str
) -> None:
    path = write_study(grid_study([0.0], ["none", "batch"], 1, subset=10))
    out = tmp_path / "results"
    args = ["-q", "run", str(path), "--out", str(out), "--tracking-uri", store_uri]
    client = get_client(store_uri)

    def study_runs() -> list[Any]:
        found = client.get_experiment_by_name("grid")
        if found is None:
            return []
        runs = client.search_runs([found.experiment_id], "tags.`interplay.role` = 'study'")
        return list(runs)

    for _ in range(5):  # the window is a fraction of a second: try until a kill lands in it
        proc = interplay(*args, cwd=tmp_path, stderr=subprocess.DEVNULL)
        wait_for(lambda: bool(study_runs()), proc, timeout=120)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        if not (out / "mlflow.json").exists():
            break
        (out / "mlflow.json").unlink()  # not in the window; start over as a new study
    assert study_runs() and not (out / "mlflow.json").exists()

    run_study(path, [], out=out, tracking=store_uri, quiet=True)
    states = Counter(r.info.status for r in study_runs())
    assert states["FINISHED"] == 1 and set(states) <= {"FINISHED", "FAILED"}
    assert len(children(store_uri, "grid")) == 2


def test_sigterm_stops_a_study_as_ctrl_c_does_and_it_resumes(
    write_study: WriteStudy, tmp_path: Path, store_uri: str
) -> None:
    # kill, timeout and job schedulers send SIGTERM; the run in training ends KILLED, whole.
    path = write_study(grid_study([0.0, 0.5], ["none", "batch"], 1, subset=60, epochs=3))
    out = tmp_path / "results"
    args = ["run", str(path), "--out", str(out), "--tracking-uri", store_uri]
    client = get_client(store_uri)

    def statuses() -> Counter[str]:
        found = client.get_experiment_by_name("grid")
        if found is None:
            return Counter()
        return Counter(r.info.status for r in children(store_uri, "grid"))

    proc = interplay(*args, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert wait_for(lambda: statuses()["FINISHED"] >= 1 and statuses()["RUNNING"] == 1, proc)
    proc.send_signal(signal.SIGTERM)
    output = " ".join(proc.communicate(timeout=120)[0].split())

    assert proc.returncode == 143, output
    assert "Traceback" not in output
    assert "SIGTERM" in output and "run the same command to resume" in output
    runs = children(store_uri, "grid")
    killed = [r for r in runs if r.info.status == "KILLED"]
    assert len(killed) == 1 and not any(r.info.status == "RUNNING" for r in runs)
    assert killed[0].data.tags["interplay.reason"] == "stopped by SIGTERM"
    assert killed[0].data.tags["state"] == "interrupted"
    assert "param.dropout" in killed[0].data.params  # queued params went out with the close

    run_study(path, [], out=out, tracking=store_uri, quiet=True)
    assert statuses()["FINISHED"] == 4
    assert len(results_table(StudyPaths(out))) == 4


# ---------------------------------------------------------------- the journal and its lock


def _cut_short_by_the_kernel(journal: Path, backend: str) -> subprocess.CompletedProcess[str]:
    """Write a record past a file size limit, as a full disk cuts it, in another process."""
    code = textwrap.dedent(
        f"""
        import os, resource, optuna
        from optuna.storages import JournalStorage
        from optuna.storages.journal import JournalFileBackend
        from interplay.study import open_storage
        path = {str(journal)!r}
        if {backend!r} == "optuna":
            storage = JournalStorage(JournalFileBackend(path))
        else:
            storage = open_storage("journal:" + path)
        study = optuna.load_study(study_name="j", storage=storage)
        size = os.path.getsize(path)
        resource.setrlimit(resource.RLIMIT_FSIZE, (size + 100, size + 100))
        try:
            study.set_user_attr("big", "x" * 5000)
        except OSError as err:
            print("errno", err.errno)
        """
    )
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )


@pytest.mark.parametrize("writer", ["optuna", "interplay"])
def test_journal_record_cut_short_leaves_study_readable(tmp_path: Path, writer: str) -> None:
    journal = tmp_path / "optuna.journal"
    study = optuna.create_study(study_name="j", storage=open_storage(f"journal:{journal}"))
    study.set_user_attr("before", 1)
    whole = journal.stat().st_size

    done = _cut_short_by_the_kernel(journal, writer)
    assert "errno 27" in done.stdout, done.stderr  # EFBIG: the write was cut
    if writer == "interplay":
        assert journal.stat().st_size == whole  # the failed writer cut its own record away
    else:
        assert journal.stat().st_size == whole + 100  # Optuna's writer left half a record

    again = optuna.load_study(study_name="j", storage=open_storage(f"journal:{journal}"))
    again.set_user_attr("after", 2)
    fresh = optuna.load_study(study_name="j", storage=open_storage(f"journal:{journal}"))
    assert fresh.user_attrs == {"before": 1, "after": 2}


def test_journal_lock_free_once_its_holder_is_killed(tmp_path: Path) -> None:
    journal = tmp_path / "optuna.journal"
    journal.touch()
    code = (
        "import sys, time\nfrom interplay.study import JournalLock\n"
        f"JournalLock({str(journal)!r}).acquire()\nprint('held', flush=True)\ntime.sleep(600)\n"
    )
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
    holder.send_signal(signal.SIGKILL)
    holder.wait()

    # Optuna's own journal locks would make this wait 30 s for the dead holder's lock file.
    lock = JournalLock(str(journal))
    taken = threading.Thread(target=lock.acquire, daemon=True)
    taken.start()
    taken.join(timeout=10)
    assert not taken.is_alive()
    lock.release()


# ---------------------------------------------------------------- the MLflow store


def _whole_store(path: Path) -> bool:
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        tables = {name for (name,) in db.execute("select name from sqlite_master")}
        versions = db.execute("select count(*) from alembic_version").fetchone()[0]
    return "runs" in tables and versions == 1 and not any("_alembic_tmp" in t for t in tables)


def test_mlflow_store_appears_only_whole(tmp_path: Path) -> None:
    code = "import sys\nfrom interplay.tracking import get_client\nget_client(sys.argv[1])\n"
    target = tmp_path / "mlflow.db"
    maker = subprocess.Popen([sys.executable, "-c", code, f"sqlite:///{target}"], cwd=tmp_path)
    while maker.poll() is None:
        if target.exists():
            assert _whole_store(target)  # never half-built, so a kill now would cost nothing
        time.sleep(0.01)
    assert maker.returncode == 0 and _whole_store(target)

    killed = tmp_path / "killed.db"
    maker = subprocess.Popen([sys.executable, "-c", code, f"sqlite:///{killed}"], cwd=tmp_path)
    assert wait_for(lambda: any(tmp_path.glob(".killed.db.*")), maker, timeout=60)
    time.sleep(random.uniform(0.0, 0.5))  # while MLflow builds the tables
    maker.send_signal(signal.SIGKILL)
    maker.wait()
    assert not killed.exists() or _whole_store(killed)
    client = get_client(f"sqlite:///{killed}")
    experiment = client.create_experiment("after-kill")
    assert client.create_run(experiment).info.status == "RUNNING"


# ---------------------------------------------------------------- full disk, unwritable folder


def _small_grid(name: str) -> dict[str, Any]:
    raw = grid_study([0.0], ["none", "batch", "group", "layer"], 1, subset=10)
    raw["name"] = name
    return raw


def stopped_for_room(args: list[str], cwd: Path, db: Path, room: int) -> str:
    """The output of a CLI command given `room` more bytes than `db` holds: one message, exit 2."""
    done = interplay(
        *args,
        cwd=cwd,
        limit_bytes=db.stat().st_size + room,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    output = done.communicate(timeout=300)[0]
    assert done.returncode == 2, output
    assert "Traceback" not in output
    return " ".join(output.split())


def test_train_full_disk_message_exit_2(
    write_study: WriteStudy, tmp_path: Path, store_uri: str
) -> None:
    db = Path(store_uri.removeprefix("sqlite:///"))
    MLflowSink(store_uri, "warm").close()
    raw = _small_grid("one")
    raw["training"]["epochs"] = 30  # 240 metric rows: more than the room left
    path = write_study(raw, "one.yaml")
    text = stopped_for_room(
        ["train", str(path), "--tracking-uri", store_uri], tmp_path, db, room=16 * 1024
    )
    assert "cannot write" in text and "record in" in text and "is incomplete" in text


def test_full_disk_stops_with_message_results_intact(
    write_study: WriteStudy, tmp_path: Path, store_uri: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    first, second = tmp_path / "first", tmp_path / "second"
    run_study(write_study(_small_grid("first"), "first.yaml"), [], out=first, tracking=store_uri)
    table_before = results_table(StudyPaths(first))
    runs_before = {r.info.run_id: r.info.status for r in children(store_uri, "first")}

    db = Path(store_uri.removeprefix("sqlite:///"))
    path = write_study(_small_grid("second"), "second.yaml")
    args = ["run", str(path), "--out", str(second), "--tracking-uri", store_uri]
    text = stopped_for_room(args, tmp_path, db, room=96 * 1024)
    assert "cannot write" in text and "Free space" in text and "to resume" in text
    finished_then = {
        r.info.run_id for r in children(store_uri, "second") if r.info.status == "FINISHED"
    }

    # What the first study wrote is as it was, and the store is sound.
    with sqlite3.connect(db) as conn:
        assert conn.execute("pragma integrity_check").fetchone()[0] == "ok"
    assert results_table(StudyPaths(first)).equals(table_before)
    assert {r.info.run_id: r.info.status for r in children(store_uri, "first")} == runs_before

    # With room again, the same command resumes the second study and loses nothing.
    run_study(path, [], out=second, tracking=store_uri, quiet=True)
    runs = children(store_uri, "second")
    done = {r.info.run_id for r in runs if r.info.status == "FINISHED"}
    assert len(done) == 4 and finished_then <= done
    assert not any(r.info.status == "RUNNING" for r in runs)
    assert len(results_table(StudyPaths(second))) == 4


@pytest.mark.parametrize("where", ["--out", "--tracking-uri"])
def test_unwritable_folder_exit_2_with_message(
    write_study: WriteStudy, tmp_path: Path, where: str
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    out, uri = tmp_path / "results", f"sqlite:///{tmp_path / 'mlflow.db'}"
    if where == "--out":
        out = blocker / "results"
    else:
        uri = f"sqlite:///{blocker / 'mlflow.db'}"
    path = write_study(_small_grid("blocked"))
    args = ["run", str(path), "--out", str(out), "--tracking-uri", uri]
    proc = interplay(*args, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    output = proc.communicate(timeout=300)[0]
    assert proc.returncode == 2, output
    assert "Traceback" not in output
    text = " ".join(output.split())
    assert "cannot write" in text and str(blocker) in text and "a file is in the way" in text
