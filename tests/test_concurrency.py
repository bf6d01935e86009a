"""Concurrency: four worker processes on one journal file and one sqlite MLflow store.

No lock error may fail a trial or lose a run: the counts at the end are exact.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from interplay.results import load_optuna_study, results_table
from interplay.runner import run_study
from interplay.study import StudyPaths, open_storage

from .test_reliability import WriteStudy, empty_store
from .test_study import children, grid_study

optuna.logging.set_verbosity(optuna.logging.WARNING)
WORKERS = 4


@pytest.fixture
def store_uri(tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> str:
    return empty_store(tmp_path_factory, tmp_path)


def test_run_study_four_workers_exact_counts(
    write_study: WriteStudy, tmp_path: Path, store_uri: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    raw = grid_study([0.0, 0.25, 0.5, 0.75], ["none", "batch"], 2, subset=10)
    out = tmp_path / "results"
    run_study(write_study(raw), [], out=out, tracking=store_uri, quiet=True, workers=WORKERS)

    trials = load_optuna_study(StudyPaths(out)).get_trials()
    assert len(trials) == 8
    assert all(t.state == TrialState.COMPLETE for t in trials)
    assert len({t.user_attrs["config_id"] for t in trials}) == 8
    runs = children(store_uri, "grid")
    assert len(runs) == 16
    assert all(r.info.status == "FINISHED" for r in runs)
    assert len({(r.data.tags["config_id"], r.data.tags["seed"]) for r in runs}) == 16
    assert len(results_table(StudyPaths(out))) == 16


HAMMER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    import optuna
    from interplay.study import open_storage
    from interplay.tracking import MLflowSink

    uri, journal, me, go = sys.argv[1], sys.argv[2], int(sys.argv[3]), Path(sys.argv[4])
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name="hammer", storage=open_storage("journal:" + journal))
    print("ready", flush=True)
    while not go.exists():  # every process starts writing at once
        time.sleep(0.01)
    for n in range(RUNS):
        sink = MLflowSink(uri, "hammer", run_name=f"p{me}-r{n}", tags={"process": str(me)})
        sink.log_params({f"p{k}": k for k in range(40)})
        for step in range(1, STEPS + 1):
            sink.log_metrics({"loss": 1.0 / step, "acc": step / STEPS}, step=step)
            sink.flush()  # a write per step, to make the processes collide often
        sink.close()
        trial = study.ask()
        trial.set_user_attr("run_id", sink.run_id)
        study.tell(trial, float(n))
    """
)


def test_four_processes_write_one_journal_and_one_store(store_uri: str, tmp_path: Path) -> None:
    runs, steps = 6, 25
    journal = tmp_path / "optuna.journal"
    optuna.create_study(study_name="hammer", storage=open_storage(f"journal:{journal}"))
    script = tmp_path / "hammer.py"
    script.write_text(HAMMER.replace("RUNS", str(runs)).replace("STEPS", str(steps)))
    go = tmp_path / "go"
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), store_uri, str(journal), str(me), str(go)],
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for me in range(WORKERS)
    ]
    for proc in procs:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    go.touch()
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err

    study = optuna.load_study(study_name="hammer", storage=open_storage(f"journal:{journal}"))
    trials = study.get_trials()
    assert len(trials) == WORKERS * runs
    assert all(t.state == TrialState.COMPLETE for t in trials)
    client = MlflowClient(store_uri)
    experiment = client.get_experiment_by_name("hammer")
    assert experiment is not None
    found = client.search_runs([experiment.experiment_id], max_results=1000)
    assert len(found) == WORKERS * runs
    assert {r.info.run_id for r in found} == {t.user_attrs["run_id"] for t in trials}
    for run in found:
        assert run.info.status == "FINISHED"
        assert len(run.data.params) == 40
        assert len(client.get_metric_history(run.info.run_id, "loss")) == steps
