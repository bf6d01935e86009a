"""Studies on real Fashion-MNIST subsets: counts and states in the Optuna storage and MLflow."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import optuna
import pytest
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from interplay.errors import ConfigError
from interplay.results import load_optuna_study, results_table
from interplay.runner import run_study
from interplay.study import INTERRUPTED, StudyPaths

from .conftest import small_cnn

optuna.logging.set_verbosity(optuna.logging.WARNING)


def grid_study(
    dropout: list[float], norm: list[str], seeds: int, subset: int = 10, epochs: int = 1
) -> dict[str, Any]:
    raw = small_cnn(epochs=epochs, batch_size=32)
    raw["name"] = "grid"
    raw["data"]["subset"] = subset
    block = raw["model"]["blocks"][0]
    block["layers"][1]["kind"] = "${norm}"
    block["layers"].append({"type": "dropout", "p": "${dropout}"})
    raw["search"] = {
        "params": {"dropout": {"values": dropout}, "norm": {"values": norm}},
        "seeds": seeds,
    }
    return raw


def children(uri: str, experiment: str) -> list[Any]:
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(experiment)
    assert exp is not None
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    return [r for r in runs if "mlflow.parentRunId" in r.data.tags]


def parents(uri: str, experiment: str) -> list[Any]:
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(experiment)
    assert exp is not None
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    return [r for r in runs if "mlflow.parentRunId" not in r.data.tags]


def test_run_study_grid_3x4_two_seeds(write_study, tmp_path: Path, mlflow_uri: str) -> None:
    path = write_study(grid_study([0.0, 0.25, 0.5], ["none", "batch", "layer", "group"], 2))
    out = tmp_path / "results"
    run_study(path, [], out=out, tracking=mlflow_uri, quiet=True)

    study = load_optuna_study(StudyPaths(out))
    trials = study.get_trials()
    assert len(trials) == 12
    assert all(t.state == TrialState.COMPLETE for t in trials)
    assert len({(t.params["dropout"], t.params["norm"]) for t in trials}) == 12

    assert len(parents(mlflow_uri, "grid")) == 1
    runs = children(mlflow_uri, "grid")
    assert len(runs) == 24
    assert all(r.info.status == "FINISHED" for r in runs)
    pairs = Counter((r.data.params["param.dropout"], r.data.params["param.norm"]) for r in runs)
    assert set(pairs.values()) == {2}
    one = runs[0]
    assert one.data.params["model.blocks.0.layers.1.kind"] == one.data.params["param.norm"]
    assert one.data.params["model.blocks.0.layers.4.p"] == one.data.params["param.dropout"]
    assert {r.data.params["seed"] for r in runs} == {"0", "1"}
    assert len(one.data.metrics) >= 5

    table = results_table(StudyPaths(out))
    assert len(table) == 24
    assert table["val_acc"].between(0.2, 1.0).all()  # 10 classes: chance is 0.1
    assert {"param.dropout", "param.norm", "val_acc@1", "config_id"} <= set(table.columns)


def test_run_study_resume_counts_nothing_twice(
    write_study, tmp_path: Path, mlflow_uri: str
) -> None:
    path = write_study(grid_study([0.0, 0.5], ["none", "batch"], 2))
    out = tmp_path / "results"
    run_study(path, [], out=out, tracking=mlflow_uri, quiet=True)
    run_study(path, [], out=out, tracking=mlflow_uri, quiet=True)
    assert len(load_optuna_study(StudyPaths(out)).get_trials()) == 4
    assert len(children(mlflow_uri, "grid")) == 8


def test_run_study_changed_settings_refused(write_study, tmp_path: Path, mlflow_uri: str) -> None:
    raw = grid_study([0.0], ["none", "batch"], 1)
    path = write_study(raw)
    out = tmp_path / "results"
    run_study(path, [], out=out, tracking=mlflow_uri, quiet=True)
    with pytest.raises(ConfigError, match=r"(?s)training.epochs: 1 -> 2.*--new"):
        run_study(path, ["training.epochs=2"], out=out, tracking=mlflow_uri, quiet=True)
    run_study(path, ["training.epochs=2"], out=out, tracking=mlflow_uri, quiet=True, new=True)
    assert len(list(tmp_path.glob("results.*"))) == 1


def test_run_study_failures_recorded_and_study_completes(
    write_study, tmp_path: Path, mlflow_uri: str
) -> None:
    raw = grid_study([0.0], ["batch"], 1)
    # Three repeats of conv+pool shrink 28 -> 3; a 5x5 kernel then cannot fit the map.
    raw["model"]["blocks"][0]["repeat"] = "${depth}"
    raw["model"]["blocks"][0]["layers"][0]["kernel"] = "${kernel}"
    raw["model"]["blocks"][0]["layers"][0]["padding"] = 0
    raw["training"]["optimizer"] = {"name": "sgd", "lr": "${lr}", "momentum": 0.9}
    raw["search"]["params"] |= {
        "depth": {"values": [1, 3]},
        "kernel": {"values": [5]},
        "lr": {"values": [0.01, 1000.0]},
    }
    out = tmp_path / "results"
    run_study(write_study(raw), [], out=out, tracking=mlflow_uri, quiet=True)

    trials = load_optuna_study(StudyPaths(out)).get_trials()
    by = {(t.params["depth"], t.params["lr"]): t for t in trials}
    assert len(trials) == 4
    assert by[(1, 0.01)].state == TrialState.COMPLETE
    for lr in (0.01, 1000.0):
        impossible = by[(3, lr)]
        assert impossible.state == TrialState.FAIL
        assert "smaller than" in impossible.user_attrs["reason"]
        assert impossible.user_attrs["rep0"]["duration_s"] == 0.0
    diverged = by[(1, 1000.0)]
    assert diverged.state == TrialState.FAIL
    assert "not finite" in diverged.user_attrs["reason"]

    runs = children(mlflow_uri, "grid")
    assert Counter(r.info.status for r in runs) == {"FINISHED": 1, "FAILED": 3}
    failed_reasons = [r.data.tags["interplay.reason"] for r in runs if r.info.status == "FAILED"]
    assert sum("not finite" in reason for reason in failed_reasons) == 1


def _trial_counts(out: Path) -> int:
    try:
        study = load_optuna_study(StudyPaths(out))
    except Exception:
        return 0
    return sum(1 for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE)


def test_run_study_sigkill_then_resume_exact(write_study, tmp_path: Path, mlflow_uri: str) -> None:
    path = write_study(grid_study([0.0, 0.5], ["none", "batch", "group"], 2, subset=30, epochs=2))
    out = tmp_path / "results"
    cmd = [sys.executable, "-m", "interplay.cli", "-q", "run", str(path), "--out", str(out)]
    cmd += ["--tracking-uri", mlflow_uri]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(cmd, env=env, cwd=tmp_path)
    deadline = time.time() + 240
    while _trial_counts(out) < 2 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    time.sleep(0.3)  # inside the next trial's training
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = _trial_counts(out)
    assert 2 <= done_before < 6

    run_study(path, [], out=out, tracking=mlflow_uri, quiet=True)

    study = load_optuna_study(StudyPaths(out))
    trials = study.get_trials()
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(complete) == 6
    assert len({t.user_attrs["config_id"] for t in complete}) == 6
    assert all(t.user_attrs.get("reason") == INTERRUPTED for t in trials if t not in complete)
    table = results_table(StudyPaths(out))
    assert len(table) == 12
    assert not table.duplicated(["config_id", "seed"]).any()

    runs = children(mlflow_uri, "grid")
    finished = [r for r in runs if r.info.status == "FINISHED"]
    assert len(finished) == 12
    assert len({(r.data.tags["config_id"], r.data.tags["seed"]) for r in finished}) == 12
    assert all(r.info.status in ("FINISHED", "FAILED") for r in runs)
    assert set(table["run_id"]) == {r.info.run_id for r in finished}


def test_run_study_two_workers_no_lock_failures(
    write_study, tmp_path: Path, mlflow_uri: str
) -> None:
    path = write_study(grid_study([0.0, 0.25, 0.5], ["none", "batch"], 2))
    out = tmp_path / "results"
    run_study(path, [], out=out, tracking=mlflow_uri, quiet=True, workers=2)
    trials = load_optuna_study(StudyPaths(out)).get_trials()
    assert len(trials) == 6
    assert all(t.state == TrialState.COMPLETE for t in trials)
    runs = children(mlflow_uri, "grid")
    assert len(runs) == 12
    assert all(r.info.status == "FINISHED" for r in runs)


def test_run_study_random_search_with_pruner(write_study, tmp_path: Path, mlflow_uri: str) -> None:
    raw = grid_study([0.0], ["batch"], 1, epochs=3)
    raw["training"]["optimizer"]["lr"] = "${lr}"
    raw["search"] = {
        "params": {
            "dropout": {"low": 0.0, "high": 0.5},
            "norm": {"values": ["none", "batch"]},
            "lr": {"low": 1e-4, "high": 1e-1, "log": True},
        },
        "method": "tpe",
        "trials": 6,
        "pruner": "median",
    }
    out = tmp_path / "results"
    run_study(write_study(raw), [], out=out, tracking=mlflow_uri, quiet=True)
    trials = load_optuna_study(StudyPaths(out)).get_trials()
    assert len(trials) == 6
    assert {t.state for t in trials} <= {TrialState.COMPLETE, TrialState.PRUNED}
    assert all(1e-4 <= t.params["lr"] <= 1e-1 for t in trials)


def test_run_study_search_without_budget_refused(write_study, tmp_path: Path) -> None:
    raw = grid_study([0.0, 0.5], ["batch"], 1)
    raw["search"]["method"] = "random"
    with pytest.raises(ConfigError, match="search.trials or search.timeout"):
        run_study(write_study(raw), [], out=tmp_path / "r", quiet=True)


def _image_folder(root: Path, per_class: int = 12) -> Path:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for k, name in enumerate(["dark", "light"]):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 90, (12, 12)) + 150 * k
            Image.fromarray(pixels.astype("uint8")).save(root / name / f"img{i:02d}.png")
    return root


def _folder_study(root: Path) -> dict[str, Any]:
    raw = grid_study([0.0], ["none", "batch"], 1)
    raw["data"] = {"dataset": "folder", "root": str(root), "image_size": 12, "val_fraction": 0.25}
    return raw


def test_run_study_folder_changed_refuses_resume(
    write_study, tmp_path: Path, mlflow_uri: str
) -> None:
    root = _image_folder(tmp_path / "images")
    path = write_study(_folder_study(root))
    out = tmp_path / "results"
    run_study(path, [], out=out, tracking=mlflow_uri, quiet=True)
    (root / "light" / "img03.png").unlink()
    with pytest.raises(ConfigError, match="data files"):
        run_study(path, [], out=out, tracking=mlflow_uri, quiet=True)


def test_run_study_folder_unreadable_image_stops_at_start(
    write_study, tmp_path: Path, mlflow_uri: str
) -> None:
    from interplay.errors import DataError

    root = _image_folder(tmp_path / "images")
    (root / "dark" / "broken.png").write_text("not an image")
    with pytest.raises(DataError, match="broken.png"):
        run_study(write_study(_folder_study(root)), [], out=tmp_path / "r", tracking=mlflow_uri)
    assert not (tmp_path / "r" / "optuna.journal").exists()


def test_run_study_new_without_previous_study_moves_nothing(
    write_study, tmp_path: Path, mlflow_uri: str
) -> None:
    path = write_study(grid_study([0.0], ["none"], 1))
    out = tmp_path / "results"
    run_study(path, [], out=out, tracking=mlflow_uri, quiet=True, new=True)
    assert not list(tmp_path.glob("results.*"))
    run_study(path, ["training.epochs=2"], out=out, tracking=mlflow_uri, quiet=True, new=True)
    aside = list(tmp_path.glob("results.*"))
    assert len(aside) == 1 and (aside[0] / "optuna.journal").exists()
    assert (out / "lock").exists() and (out / "optuna.journal").exists()


def test_trial_summaries_waiting_trial_shows_enqueued_params(tmp_path: Path) -> None:
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    from interplay.results import trial_summaries

    storage = JournalStorage(JournalFileBackend(str(tmp_path / "journal.log")))
    study = optuna.create_study(storage=storage, study_name="waiting")
    study.enqueue_trial({"dropout": 0.25, "norm": "batch"})

    [summary] = trial_summaries(study)

    assert summary["state"] == "waiting"
    assert summary["params"] == {"dropout": 0.25, "norm": "batch"}
    assert summary["seeds_done"] == "0/1"


def test_run_study_named_levels_log_names_and_train_values(
    write_study, tmp_path: Path, mlflow_uri: str
) -> None:
    raw = small_cnn(batch_size=32)
    raw["name"] = "named"
    raw["data"]["subset"] = 10
    raw["model"]["blocks"].insert(
        1, {"repeat": "${placement}", "layers": [{"type": "dropout", "p": 0.5}]}
    )
    raw["search"] = {"params": {"placement": {"values": {"output_only": 0, "every_block": 1}}}}
    out = tmp_path / "results"

    run_study(write_study(raw), [], out=out, tracking=mlflow_uri, quiet=True)

    runs = children(mlflow_uri, "named")
    logged = sorted(
        (r.data.params["param.placement"], r.data.params["model.blocks.1.repeat"]) for r in runs
    )
    assert logged == [("every_block", "1"), ("output_only", "0")]
    table = results_table(StudyPaths(out))
    assert sorted(table["param.placement"]) == ["every_block", "output_only"]


def test_judged_claims_edited_after_first_run_warns_and_keeps_recorded(
    write_study, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import json
    import logging

    from interplay.postprocess import judged_claims
    from interplay.study import record_hypothesis
    from interplay.studyfile import load_study

    raw = grid_study([0.0, 0.5], ["none", "batch"], seeds=1)
    raw["hypothesis"] = {"text": "t", "claims": [{"kind": "effect", "param": "dropout"}]}
    paths = StudyPaths(tmp_path / "results")
    paths.root.mkdir(parents=True)
    record_hypothesis(load_study(write_study(raw)), paths, has_results=False)
    raw["hypothesis"]["claims"] = [{"kind": "effect", "param": "norm"}]

    with caplog.at_level(logging.WARNING):
        claims = judged_claims(load_study(write_study(raw)), paths)

    assert [c.param for c in claims] == ["dropout"]
    assert "differ from those recorded" in caplog.text
    assert "the hypothesis differs" not in caplog.text  # one warning, not two
    edits = json.loads(paths.hypothesis.read_text())["edits"]
    assert [e["hypothesis"]["claims"][0]["param"] for e in edits] == ["norm"]


def test_status_table_running_trial_of_stopped_run_reads_interrupted(tmp_path: Path) -> None:
    import fcntl
    import io

    from rich.console import Console

    from interplay.results import status_table
    from interplay.study import open_storage, storage_url

    paths = StudyPaths(tmp_path / "results")
    paths.root.mkdir(parents=True)
    study = optuna.create_study(storage=open_storage(storage_url(paths)), study_name="stopped")
    study.enqueue_trial({"dropout": 0.5})
    study.ask()  # RUNNING in the storage, as a killed run leaves it

    def shown() -> str:
        console = Console(file=io.StringIO(), width=200)
        console.print(status_table(paths))
        return console.file.getvalue()  # type: ignore[attr-defined, no-any-return]

    assert "interrupted: redone when the run resumes" in shown()
    paths.lock.touch()
    with open(paths.lock, "a+") as handle:  # as `interplay run` holds it while it runs
        fcntl.flock(handle, fcntl.LOCK_EX)
        assert "running" in shown() and "interrupted" not in shown()


def test_open_study_with_other_settings_than_the_runs_refused(
    write_study, tmp_path: Path, mlflow_uri: str
) -> None:
    from interplay.postprocess import open_study

    path = write_study(grid_study([0.0, 0.5], ["none"], seeds=1))
    out = tmp_path / "results"
    run_study(path, [], out=out, tracking=mlflow_uri, quiet=True)

    study_file, paths = open_study(path, ["report.title=Mine"], None, out)  # not training
    assert paths.spec.exists()
    with pytest.raises(ConfigError, match=r"ran with other settings:\n  data.subset: 10 -> 20"):
        open_study(path, ["data.subset=20"], None, out)


@pytest.mark.parametrize(
    ("metric", "expected_epoch"),
    [
        ({"mode": "final", "epoch": None}, None),
        ({"mode": "fixed epoch", "epoch": 3}, 3),
        ({"mode": "last common epoch", "epoch": 2}, "common"),
    ],
)
def test_analysis_choices_repeat_the_earlier_analysis(
    metric: dict[str, Any], expected_epoch: object
) -> None:
    from interplay.postprocess import analysis_choices

    summary = {"metric": {"name": "val_loss", "alpha": 0.01, "min_effect": 0.5, **metric}}

    assert analysis_choices(summary) == {
        "metric": "val_loss",
        "epoch": expected_epoch,
        "alpha": 0.01,
        "min_effect": 0.5,
    }


def test_replicate_rows_count_a_reused_run_once(tmp_path: Path) -> None:
    from interplay.results import replicate_rows
    from interplay.study import open_storage, storage_url

    paths = StudyPaths(tmp_path / "results")
    paths.root.mkdir(parents=True)
    study = optuna.create_study(storage=open_storage(storage_url(paths)), study_name="again")
    record = {"run_id": "r1", "seed": 0, "state": "complete", "final": {"val_acc": 0.9}}
    for run_id in ("r1", "r1", "r2"):  # the second trial drew the first one's configuration
        trial = study.ask({"dropout": optuna.distributions.FloatDistribution(0.0, 0.5)})
        trial.set_user_attr("rep0", {**record, "run_id": run_id})
        study.tell(trial, 0.9)

    rows = replicate_rows(study)

    assert [(r["trial"], r["run_id"]) for r in rows] == [(0, "r1"), (2, "r2")]
