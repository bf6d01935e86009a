"""The training loop on real Fashion-MNIST subsets: metrics, schedules, stopping, failures."""

from __future__ import annotations

import logging
import math
from typing import Any

import pytest
import torch
from torch import nn

from interplay.config import Study
from interplay.data import DataSplits, load_data
from interplay.devices import pick_engine
from interplay.studyfile import from_dict
from interplay.training import EVAL_BATCH, RunResult, Trainer, batch_slices, evaluate, train

from .conftest import small_cnn

EPOCH_METRICS = {
    "train_loss",
    "train_acc",
    "val_loss",
    "val_acc",
    "train_val_gap",
    "lr",
    "epoch_seconds",
    "images_per_s",
}


def study_of(raw: dict[str, Any]) -> Study:
    return from_dict(raw).base()


def small_mlp(**training: Any) -> dict[str, Any]:
    """A conv-free, norm-free model: its validation loss moves only when its weights move."""
    raw = small_cnn(**training)
    raw["model"] = {"blocks": [{"layers": [{"type": "linear", "units": 16}, {"type": "act"}]}]}
    return raw


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def data() -> DataSplits:
    return load_data(study_of(small_cnn()).data, with_test=True)


@pytest.mark.parametrize(
    ("n", "batch_size"), [(1, 4), (7, 7), (9, 4), (10, 3), (64, 64), (65, 64), (129, 64)]
)
def test_batch_slices_cover_each_sample_once_without_lone_batch(n: int, batch_size: int) -> None:
    parts = batch_slices(n, batch_size)

    covered = [i for part in parts for i in range(n)[part]]
    assert covered == list(range(n))
    sizes = [part.stop - part.start for part in parts]
    assert all(size <= batch_size + 1 for size in sizes)
    if n > 1:
        assert min(sizes) >= 2


def test_trainer_run_logs_every_epoch_metric(data: DataSplits) -> None:
    result = Trainer(study_of(small_cnn(epochs=2)), data).run()

    assert result.state == "complete"
    assert result.epochs_done == 2
    for metrics in result.history:
        assert set(metrics) == EPOCH_METRICS
        assert math.isclose(metrics["train_val_gap"], metrics["train_acc"] - metrics["val_acc"])
        assert metrics["images_per_s"] > 0
    # 10 balanced classes: a working loop is far above the 10% of guessing after 2 epochs.
    assert result.final["val_acc"] > 0.5
    assert result.history[1]["train_loss"] < result.history[0]["train_loss"]
    assert result.engine["engine.device"] == "cpu"


@pytest.mark.parametrize(
    ("schedule", "factors"),
    [
        ({"name": "none"}, [1.0, 1.0, 1.0]),
        ({"name": "step", "step_size": 1, "gamma": 0.5}, [1.0, 0.5, 0.25]),
        ({"name": "cosine"}, [1.0, 0.75, 0.25]),
        # A lr of 1e-7 leaves val_loss flat, so each epoch after the first is a plateau epoch.
        ({"name": "plateau", "patience": 0, "gamma": 0.1}, [1.0, 1.0, 0.1]),
    ],
)
def test_trainer_lr_schedule_per_epoch(
    data: DataSplits, schedule: dict[str, Any], factors: list[float]
) -> None:
    lr = 1e-7  # above the 1e-8 that ReduceLROnPlateau ignores as a change of lr
    raw = small_mlp(epochs=3, schedule=schedule, optimizer={"name": "sgd", "lr": lr})

    result = Trainer(study_of(raw), data).run()

    lrs = [metrics["lr"] for metrics in result.history]
    assert lrs == pytest.approx([lr * f for f in factors], rel=1e-6)


def test_trainer_early_stopping_after_patience(data: DataSplits) -> None:
    raw = small_mlp(epochs=10, optimizer={"lr": 1e-9})
    raw["training"]["early_stopping"] = {"patience": 2, "min_delta": 0.5}

    result = Trainer(study_of(raw), data).run()

    assert result.stopped_early
    assert result.state == "complete"
    assert result.epochs_done == 3
    assert result.best_epoch == 1


def test_trainer_early_stopping_restores_best_weights(data: DataSplits) -> None:
    raw = small_mlp(epochs=3, optimizer={"name": "sgd", "lr": 0.05})
    raw["training"]["early_stopping"] = {"patience": 5, "min_delta": 10.0}
    trainer = Trainer(study_of(raw), data)

    result = trainer.run()

    # min_delta makes epoch 1 the best; its weights come back, not those of epoch 3.
    assert result.best_epoch == 1
    val_loss, _ = evaluate(trainer.model, trainer.val_x, trainer.val_y, trainer.engine)
    assert val_loss == pytest.approx(result.history[0]["val_loss"], rel=1e-5)
    assert val_loss != pytest.approx(result.history[2]["val_loss"], rel=1e-5)


def test_trainer_pruned_by_on_epoch(data: DataSplits) -> None:
    seen: list[tuple[int, float]] = []

    def on_epoch(epoch: int, metrics: dict[str, float]) -> bool:
        seen.append((epoch, metrics["val_acc"]))
        return epoch >= 2

    result = Trainer(study_of(small_cnn(epochs=5)), data, on_epoch=on_epoch).run()

    assert result.state == "pruned"
    assert result.epochs_done == 2
    assert [epoch for epoch, _ in seen] == [1, 2]
    assert seen[1][1] == result.final["val_acc"]
    assert "epoch 2" in result.reason


def test_trainer_nonfinite_loss_fails_run(data: DataSplits) -> None:
    raw = small_cnn(epochs=3, batch_size=16, optimizer={"name": "sgd", "lr": 1e12})

    result = Trainer(study_of(raw), data).run()

    assert result.state == "failed"
    assert "not finite" in result.reason
    assert "epoch 1" in result.reason
    assert result.epochs_done == 0


@pytest.mark.parametrize("level", [logging.INFO, logging.DEBUG])
def test_trainer_epoch_log_level(
    data: DataSplits, caplog: pytest.LogCaptureFixture, level: int
) -> None:
    caplog.set_level(logging.DEBUG, logger="interplay.training")

    Trainer(study_of(small_mlp(epochs=2)), data, epoch_log_level=level).run()

    lines = [r for r in caplog.records if r.getMessage().startswith("epoch ")]
    assert [r.getMessage().split(":")[0] for r in lines] == ["epoch 1/2", "epoch 2/2"]
    assert {r.levelno for r in lines} == {level}


def test_evaluate_matches_direct_computation(data: DataSplits) -> None:
    trainer = Trainer(study_of(small_cnn(precision="fp32")), data)
    trainer.run()
    # More images than one evaluation batch, so the sums run over several batches.
    x = torch.cat([trainer.val_x] * 5)
    y = torch.cat([trainer.val_y] * 5)
    assert len(x) > EVAL_BATCH
    model = trainer.model.train()

    loss, acc = evaluate(model, x, y, trainer.engine)

    assert model.training
    model.eval()
    with torch.no_grad():
        logits = model(x)
    assert loss == pytest.approx(nn.functional.cross_entropy(logits, y).item(), rel=1e-4)
    assert acc == pytest.approx((logits.argmax(1) == y).double().mean().item(), abs=1e-12)
    assert acc > 0.5


def test_train_evaluates_test_once(data: DataSplits) -> None:
    result = train(study_of(small_cnn(epochs=1)), data, evaluate_test=True)

    assert isinstance(result, RunResult)
    assert result.test_acc is not None and result.test_loss is not None
    assert 0.5 < result.test_acc <= 1.0
    assert result.model is not None


def test_trainer_same_seed_same_history(data: DataSplits) -> None:
    study = study_of(small_cnn(epochs=2))

    first = Trainer(study, data).run()
    second = Trainer(study, data).run()

    drop = ("epoch_seconds", "images_per_s")
    assert [{k: v for k, v in h.items() if k not in drop} for h in first.history] == [
        {k: v for k, v in h.items() if k not in drop} for h in second.history
    ]


def test_trainer_given_model_keeps_its_weights_on_device(data: DataSplits) -> None:
    model = nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, 10))
    trainer = Trainer(study_of(small_cnn(epochs=1)), data, model=model)

    result = trainer.run()

    assert result.model is model
    assert trainer.engine == pick_engine(model, torch.device("cpu"), "auto")
    assert not trainer.engine.channels_last
