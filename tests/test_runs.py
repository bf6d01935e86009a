"""One tracked run on real Fashion-MNIST: accuracy reached and what the MLflow store holds."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from mlflow.tracking import MlflowClient

import interplay.tracking
from interplay.data import load_data
from interplay.errors import ArchitectureError
from interplay.runs import study_params, tracked_run
from interplay.studyfile import from_dict, load_study
from interplay.tracking import MLflowSink, flatten, storage_problem

from .conftest import STUDIES, small_cnn


def test_flatten_nested_to_dotted_keys() -> None:
    nested = {"a": {"b": [{"c": 1}, {"d": [2, 3]}]}, "e": None, "f": []}
    assert flatten(nested) == {"a.b.0.c": 1, "a.b.1.d.0": 2, "a.b.1.d.1": 3, "e": None, "f": []}


def test_tracked_run_baseline_subset_logs_params_and_every_epoch(
    mlflow_uri: str, tmp_path: Path
) -> None:
    sets = ["data.subset=300", "training.epochs=2", "training.batch_size=64"]
    study = load_study(STUDIES / "baseline.yaml", sets).base()
    data = load_data(study.data)
    sink = MLflowSink(mlflow_uri, experiment=study.name, run_name="baseline-test")
    result = tracked_run(study, data, sink)

    assert result.state == "complete"
    assert result.final["val_acc"] >= 0.72  # two epochs on 2,700 images; chance is 0.10
    run = MlflowClient(mlflow_uri).get_run(sink.run_id)
    assert run.info.status == "FINISHED"
    params = run.data.params
    assert params["training.optimizer.lr"] == "0.002"
    assert params["model.blocks.0.layers.0.channels"] == "32"
    assert params["model.blocks.2.layers.2.p"] == "0.3"
    assert params["data.subset"] == "300"
    assert params["engine.precision"] in ("fp32", "bf16")
    assert set(study_params(study)) <= set(params)
    assert {"dataset", "device", "torch"} <= set(run.data.tags)

    client = MlflowClient(mlflow_uri)
    for metric in ("train_loss", "train_acc", "val_loss", "val_acc", "train_val_gap"):
        history = client.get_metric_history(sink.run_id, metric)
        assert sorted(m.step for m in history) == [1, 2]
    artifacts = {a.path for a in client.list_artifacts(sink.run_id)}
    assert {"study.yaml", "model_summary.txt"} <= artifacts
    assert run.data.tags["state"] == "complete"
    # The final metrics are the last epoch's, which MLflow already shows as the latest.
    assert run.data.metrics["val_acc"] == pytest.approx(result.final["val_acc"])
    assert not any(k.startswith("final_") for k in run.data.metrics)
    summary = Path(client.download_artifacts(sink.run_id, "model_summary.txt", str(tmp_path)))
    lines = summary.read_text().splitlines()
    assert lines[1].split() == ["block", "layer", "output", "shape", "params", "MACs"]
    assert lines[-1].split() == ["total", "13", "layers", "10", "421,738", "4.24M"]


def test_tracked_run_failure_ends_failed_with_reason(mlflow_uri: str) -> None:
    sets = ["data.subset=30", "training.optimizer.name=sgd", "training.optimizer.lr=1e6"]
    study = load_study(STUDIES / "baseline.yaml", sets).base()
    sink = MLflowSink(mlflow_uri, experiment=study.name)
    result = tracked_run(study, load_data(study.data), sink)
    assert result.state == "failed"
    run = MlflowClient(mlflow_uri).get_run(sink.run_id)
    assert run.info.status == "FAILED"
    assert "not finite" in run.data.tags["interplay.reason"]


def test_tracked_run_long_param_shortened_and_kept(mlflow_uri: str, tmp_path: Path) -> None:
    sink = MLflowSink(mlflow_uri, experiment="long")
    sink.log_params({"model.options.note": "x" * 7000, "short": 1})
    sink.close()
    client = MlflowClient(mlflow_uri)
    run = client.get_run(sink.run_id)
    assert len(run.data.params["model.options.note"]) <= 6000
    assert run.data.params["short"] == "1"
    local = client.download_artifacts(sink.run_id, "params_full.json", str(tmp_path))
    assert len(Path(local).read_text()) > 7000


def test_sink_epoch_metrics_wait_until_close_when_epochs_are_quick(mlflow_uri: str) -> None:
    sink = MLflowSink(mlflow_uri, experiment="quick")
    client = MlflowClient(mlflow_uri)
    sink.log_metrics({"val_acc": 0.5}, step=1)
    sink.log_metrics({"val_acc": 0.6}, step=2)
    sink.queue_tags({"state": "complete"})
    assert client.get_metric_history(sink.run_id, "val_acc") == []
    sink.close()
    history = client.get_metric_history(sink.run_id, "val_acc")
    assert [(m.step, m.value) for m in history] == [(1, 0.5), (2, 0.6)]
    assert client.get_run(sink.run_id).data.tags["state"] == "complete"


def test_sink_epoch_metrics_sent_at_once_after_live_interval(
    mlflow_uri: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(interplay.tracking, "LIVE_FLUSH_SECONDS", 0.0)
    sink = MLflowSink(mlflow_uri, experiment="slow")
    sink.log_metrics({"val_acc": 0.5}, step=1)
    history = MlflowClient(mlflow_uri).get_metric_history(sink.run_id, "val_acc")
    assert [m.value for m in history] == [0.5]
    sink.close()


def test_sink_queued_params_go_with_the_metrics_in_one_call(mlflow_uri: str) -> None:
    sink = MLflowSink(mlflow_uri, experiment="one-call")
    client = MlflowClient(mlflow_uri)
    sent: list[int] = []
    real = sink.client.log_batch

    def counted(*args: Any, **kwargs: Any) -> Any:
        sent.append(len(kwargs.get("params") or []))
        return real(*args, **kwargs)

    sink.client.log_batch = counted  # type: ignore[method-assign]
    sink.queue_params({"optimizer": {"lr": 0.01}, "seed": 3}, {"device": "cpu"})
    sink.log_metrics({"val_acc": 0.5}, step=1)
    sink.tick()
    assert client.get_run(sink.run_id).data.params == {}  # a quick run: all waits for the close
    sink.close()

    run = client.get_run(sink.run_id)
    assert sent == [2]
    assert run.data.params == {"optimizer.lr": "0.01", "seed": "3"}
    assert run.data.tags["device"] == "cpu" and run.data.metrics["val_acc"] == 0.5


def test_tracked_run_params_stored_during_first_epoch_of_a_long_run(
    mlflow_uri: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A run whose epochs outlast LIVE_FLUSH_SECONDS (0 here) shows its params while it trains.
    monkeypatch.setattr(interplay.tracking, "LIVE_FLUSH_SECONDS", 0.0)
    sets = ["data.subset=100", "training.epochs=1", "training.batch_size=16"]
    study = load_study(STUDIES / "baseline.yaml", sets).base()
    sink = MLflowSink(mlflow_uri, experiment=study.name)
    client = MlflowClient(mlflow_uri)
    stored_at_ticks: list[int] = []
    real_tick = sink.tick

    def tick() -> None:
        real_tick()
        stored_at_ticks.append(len(client.get_run(sink.run_id).data.params))

    sink.tick = tick  # type: ignore[method-assign]
    result = tracked_run(study, load_data(study.data), sink)

    assert result.state == "complete"
    # 900 training images in batches of 16: 57 steps, a tick after each.
    assert len(stored_at_ticks) == 57 + 1  # and one from the epoch's metrics
    assert stored_at_ticks[0] >= len(study_params(study))


def test_sink_params_and_tags_over_one_batch_all_stored(mlflow_uri: str) -> None:
    sink = MLflowSink(mlflow_uri, experiment="many")
    tags = {f"t{i}": str(i) for i in range(120)}
    sink.log_params({f"p{i}": i for i in range(150)}, tags=tags)
    sink.close()
    run = MlflowClient(mlflow_uri).get_run(sink.run_id)
    assert len(run.data.params) == 150 and run.data.params["p149"] == "149"
    assert tags.items() <= run.data.tags.items()


def test_sink_deleted_experiment_id_restored_by_name(mlflow_uri: str) -> None:
    client = MlflowClient(mlflow_uri)
    old = client.create_experiment("gone")
    client.delete_experiment(old)
    sink = MLflowSink(mlflow_uri, experiment="gone", experiment_id=old)
    sink.close()
    assert client.get_run(sink.run_id).info.experiment_id == old
    assert client.get_experiment(old).lifecycle_stage == "active"


def test_sink_deleted_experiment_close_is_a_store_problem(mlflow_uri: str) -> None:
    sink = MLflowSink(mlflow_uri, experiment="deleted-meanwhile")
    sink.log_metrics({"val_acc": 0.5}, step=1)
    MlflowClient(mlflow_uri).delete_experiment(sink.experiment_id)
    with pytest.raises(Exception) as caught:
        sink.close()
    problem = storage_problem(caught.value)
    assert problem is not None and "deleted meanwhile" in problem


def test_tracked_run_error_ends_failed_with_state_and_reason(mlflow_uri: str) -> None:
    raw = small_cnn()
    raw["model"]["blocks"][0]["repeat"] = 6  # the pools cannot fit: the trainer refuses it
    study = from_dict(raw).base()
    sink = MLflowSink(mlflow_uri, experiment="refused")

    with pytest.raises(ArchitectureError):
        tracked_run(study, load_data(study.data), sink)

    run = MlflowClient(mlflow_uri).get_run(sink.run_id)
    assert run.info.status == "FAILED" and run.data.tags["state"] == "failed"
    assert run.data.tags["interplay.reason"].startswith("ArchitectureError: model.blocks[0]")


def test_tracked_run_failed_close_after_an_error_warns_in_one_line(
    mlflow_uri: str, caplog: pytest.LogCaptureFixture
) -> None:
    raw = small_cnn()
    raw["model"]["blocks"][0]["repeat"] = 6  # the pools cannot fit: the trainer refuses it
    study = from_dict(raw).base()
    sink = MLflowSink(mlflow_uri, experiment="both-fail")
    MlflowClient(mlflow_uri).delete_experiment(sink.experiment_id)

    with pytest.raises(ArchitectureError):  # the run's own error, not the close's
        tracked_run(study, load_data(study.data), sink)

    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "\n" not in warnings[0]
    assert "could not close" in warnings[0] and "deleted meanwhile" in warnings[0]
    assert "SELECT" not in warnings[0]


@pytest.mark.parametrize("first", ["mlflow", "interplay"])
def test_mlflow_telemetry_off_with_interplay(first: str) -> None:
    # MLflow turns its telemetry off by itself under pytest and CI, so the check runs in a
    # process with a bare environment; importing mlflow alone shows that it would be on
    # there (it only builds its client on import; nothing is sent without a record).
    env = {"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/tmp")}
    code = (
        f"import {first}\n"
        "from mlflow.telemetry import get_telemetry_client\n"
        "print(get_telemetry_client() is None)\n"
    )
    alone = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert alone.stdout.strip() == ("False" if first == "mlflow" else "True")
