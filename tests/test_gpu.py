"""The CUDA and MPS paths of the engine; every test is skipped where no such device is present."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from interplay.data import DataSplits, load_data
from interplay.devices import pick_device, pick_engine
from interplay.studyfile import from_dict
from interplay.training import NONFINITE_CHECK_EVERY, Trainer, batch_slices, evaluate

from .conftest import small_cnn
from .test_engine import SyncProbe

CUDA = torch.cuda.is_available()
MPS = torch.backends.mps.is_available()

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not (CUDA or MPS), reason="needs a CUDA or MPS device"),
]


def gpu_study(**training: object) -> dict[str, object]:
    raw = small_cnn(epochs=2, batch_size=32, **training)
    raw["data"]["subset"] = 200  # type: ignore[index]
    return raw


@pytest.fixture(scope="module")
def data() -> DataSplits:
    return load_data(from_dict(gpu_study()).base().data, with_test=True)


def test_pick_device_auto_prefers_the_gpu() -> None:
    assert pick_device("auto").type == ("cuda" if CUDA else "mps")


def test_gpu_engine_choices_are_the_documented_ones() -> None:
    device = pick_device("auto")
    model = nn.Sequential(nn.Conv2d(1, 8, 3), nn.Flatten(), nn.LazyLinear(10))

    engine = pick_engine(model, device, "auto")

    if device.type == "cuda":
        native = torch.cuda.is_bf16_supported(including_emulation=False)
        assert engine.precision == ("bf16" if native else "fp32")
        assert engine.channels_last
        assert engine.fused_optimizer
    else:
        assert (engine.precision, engine.channels_last, engine.fused_optimizer) == (
            "fp32",
            False,
            False,
        )
    assert engine.threads is None


def test_gpu_run_keeps_data_on_device_and_learns(data: DataSplits) -> None:
    trainer = Trainer(from_dict(gpu_study()).base(), data, evaluate_test=True)
    kind = trainer.engine.device.type

    result = trainer.run()

    assert kind in ("cuda", "mps")
    assert trainer.train_x.device.type == kind
    assert trainer.val_y.device.type == kind
    assert all(p.device.type == kind for p in trainer.model.parameters())
    if trainer.engine.channels_last:
        assert trainer.train_x.is_contiguous(memory_format=torch.channels_last)
    assert result.state == "complete"
    assert result.engine["engine.device"] == kind
    assert result.final["val_acc"] > 0.7
    assert result.test_acc is not None and result.test_acc > 0.7


def test_gpu_no_host_sync_per_step(data: DataSplits, monkeypatch: pytest.MonkeyPatch) -> None:
    probe = SyncProbe(monkeypatch)
    epochs, batch_size = 2, 16
    steps = len(batch_slices(len(data.train_y), batch_size))

    result = Trainer(from_dict(gpu_study(batch_size=batch_size)).base(), data).run()

    assert result.state == "complete"
    checks = -(-steps // NONFINITE_CHECK_EVERY)
    assert 0 < probe.total <= epochs * (checks + 4)


def test_gpu_evaluate_agrees_with_cpu(data: DataSplits) -> None:
    trainer = Trainer(from_dict(gpu_study()).base(), data)
    trainer.run()

    gpu_loss, gpu_acc = evaluate(trainer.model, trainer.val_x, trainer.val_y, trainer.engine)
    cpu_model = trainer.model.to("cpu")
    cpu_engine = pick_engine(cpu_model, torch.device("cpu"), "fp32")
    cpu_loss, cpu_acc = evaluate(cpu_model, data.val_x, data.val_y, cpu_engine)

    # bf16 rounding on the GPU moves a few of the 400 validation images at most.
    assert abs(gpu_acc - cpu_acc) <= 0.02
    assert gpu_loss == pytest.approx(cpu_loss, rel=0.05)


@pytest.mark.skipif(not CUDA, reason="bf16 autocast is used on CUDA only")
def test_gpu_bf16_and_fp32_reach_similar_accuracy(data: DataSplits) -> None:
    accs = {}
    for precision in ("fp32", "bf16"):
        result = Trainer(from_dict(gpu_study(precision=precision)).base(), data).run()
        accs[precision] = result.final["val_acc"]

    assert min(accs.values()) > 0.7
    assert abs(accs["bf16"] - accs["fp32"]) <= 0.03, accs
