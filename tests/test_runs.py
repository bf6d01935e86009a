"""One tracked run on real Fashion-MNIST: accuracy reached and what the MLflow store holds."""

from __future__ import annotations

from pathlib import Path

from mlflow.tracking import MlflowClient

from interplay.data import load_data
from interplay.runs import study_params, tracked_run
from interplay.studyfile import load_study
from interplay.tracking import MLflowSink, flatten

from .conftest import STUDIES


def test_flatten_nested_to_dotted_keys() -> None:
    nested = {"a": {"b": [{"c": 1}, {"d": [2, 3]}]}, "e": None, "f": []}
    assert flatten(nested) == {"a.b.0.c": 1, "a.b.1.d.0": 2, "a.b.1.d.1": 3, "e": None, "f": []}


def test_tracked_run_baseline_subset_logs_params_and_every_epoch(mlflow_uri: str) -> None:
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
