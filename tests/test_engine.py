"""The engine's automatic choices on this machine, and what training does with them."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from interplay.data import DataSplits, load_data
from interplay.devices import (
    cpu_has_native_bf16,
    denormals_flushed,
    flush_denormals,
    malloc_tunable,
    native_bf16,
    pick_device,
    pick_engine,
)
from interplay.errors import ConfigError
from interplay.studyfile import from_dict
from interplay.training import NONFINITE_CHECK_EVERY, Trainer, batch_slices

from .conftest import small_cnn

CPU = torch.device("cpu")
# Tensor methods that make the host wait for the device (a probe counts them below).
SYNC_METHODS = ("item", "tolist", "numpy", "__bool__", "__float__", "__int__")


def cpuinfo_flags() -> set[str]:
    """Read /proc/cpuinfo here on its own, to check the engine against it."""
    path = Path("/proc/cpuinfo")
    if not path.is_file():
        return set()
    flags = [line for line in path.read_text().splitlines() if line.startswith("flags")]
    return set(flags[0].split(":", 1)[1].split()) if flags else set()


def conv_net() -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.LazyLinear(10))


def mlp() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 32), nn.ReLU(), nn.Linear(32, 10))


def group_norm_net() -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.GroupNorm(2, 4), nn.Flatten(), nn.LazyLinear(10))


# Each model and whether the engine trains it channels-last on the CPU.
MODELS = {"conv": (conv_net, True), "mlp": (mlp, False), "group-norm": (group_norm_net, False)}


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def no_env_precision(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("INTERPLAY_PRECISION", raising=False)
    monkeypatch.delenv("INTERPLAY_DENORMALS", raising=False)


@pytest.fixture(scope="module")
def data() -> DataSplits:
    return load_data(from_dict(small_cnn()).base().data)


def test_cpu_native_bf16_follows_cpu_flags() -> None:
    expected = bool({"amx_bf16", "avx512_bf16"} & cpuinfo_flags())

    assert cpu_has_native_bf16() is expected
    assert native_bf16(CPU) is expected


@pytest.mark.usefixtures("no_env_precision")
@pytest.mark.parametrize("name", sorted(MODELS))
def test_pick_engine_auto_on_this_cpu(name: str) -> None:
    make, conv = MODELS[name]

    engine = pick_engine(make(), CPU, "auto")

    # The documented choices (docs/performance.md): bf16 only with bf16 units,
    # channels-last only for conv nets, fused optimizer steps on the CPU.
    assert engine.precision == ("bf16" if cpu_has_native_bf16() else "fp32")
    assert engine.channels_last is conv
    assert engine.fused_optimizer
    assert engine.threads == torch.get_num_threads()
    assert engine.tuned_malloc is malloc_tunable()
    assert engine.flush_denormals
    assert engine.autocast_dtype == (torch.bfloat16 if engine.precision == "bf16" else None)


@pytest.mark.usefixtures("no_env_precision")
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_pick_engine_forced_precision(precision: str) -> None:
    assert pick_engine(conv_net(), CPU, precision).precision == precision


@pytest.mark.parametrize("env", ["fp32", "bf16"])
def test_pick_engine_env_overrides_auto_only(monkeypatch: pytest.MonkeyPatch, env: str) -> None:
    monkeypatch.setenv("INTERPLAY_PRECISION", env)
    other = "bf16" if env == "fp32" else "fp32"

    assert pick_engine(conv_net(), CPU, "auto").precision == env
    assert pick_engine(conv_net(), CPU, other).precision == other


def test_pick_engine_unknown_precision_refused() -> None:
    with pytest.raises(ValueError, match="fp16"):
        pick_engine(conv_net(), CPU, "fp16")


@pytest.mark.usefixtures("no_env_precision")
def test_pick_engine_mps_stays_fp32_contiguous() -> None:
    # Constructing the device needs no MPS hardware; the choice is made from its type alone.
    engine = pick_engine(conv_net(), torch.device("mps"), "auto")

    assert (engine.precision, engine.channels_last, engine.fused_optimizer) == (
        "fp32",
        False,
        False,
    )
    assert engine.threads is None
    assert not engine.tuned_malloc
    assert not engine.flush_denormals


@pytest.mark.usefixtures("no_env_precision")
def test_pick_engine_keeps_denormals_when_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    assert pick_engine(conv_net(), CPU, "fp32").flush_denormals
    monkeypatch.setenv("INTERPLAY_DENORMALS", "keep")
    assert not pick_engine(conv_net(), CPU, "fp32").flush_denormals


def test_malloc_tunable_on_linux_glibc(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("INTERPLAY_MALLOC", raising=False)
    expected = sys.platform == "linux" and platform.libc_ver()[0] == "glibc"

    assert malloc_tunable() is expected
    monkeypatch.setenv("INTERPLAY_MALLOC", "default")
    assert not malloc_tunable()


@pytest.mark.usefixtures("no_env_precision")
def test_engine_params_name_every_choice() -> None:
    params = pick_engine(conv_net(), CPU, "fp32").as_params()

    assert params == {
        "engine.device": "cpu",
        "engine.precision": "fp32",
        "engine.channels_last": "true",
        "engine.fused_optimizer": "true",
        "engine.pool_before_relu": "0",
        "engine.threads": str(torch.get_num_threads()),
        "engine.tuned_malloc": str(malloc_tunable()).lower(),
        "engine.flush_denormals": "true",
    }


@pytest.mark.parametrize("device", ["cuda", "mps"])
def test_pick_device_absent_device_is_config_error(device: str) -> None:
    present = torch.cuda.is_available() if device == "cuda" else torch.backends.mps.is_available()
    if present:
        pytest.skip(f"{device} is present here")
    with pytest.raises(ConfigError, match=f"training.device: {device} is not available"):
        pick_device(device)


def test_trainer_puts_model_and_data_in_engine_layout(data: DataSplits) -> None:
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Conv2d(4, 8, 3), nn.Flatten(), nn.LazyLinear(10)
    )
    model(data.train_x[:2])  # the lazy layer takes its shape before the layout changes

    trainer = Trainer(from_dict(small_cnn()).base(), data, model=model)

    assert trainer.engine.channels_last
    cl = torch.channels_last
    assert trainer.train_x.is_contiguous(memory_format=cl)
    assert trainer.val_x.is_contiguous(memory_format=cl)
    # With 4 input channels the two layouts differ, so this weight really was converted.
    weight = model[2].weight
    assert weight.is_contiguous(memory_format=cl)
    assert not weight.is_contiguous()
    assert trainer.optimizer.defaults["fused"] is True


class SyncProbe:
    """Counts calls of the Tensor methods that wait for the device, still running each one."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: Counter[str] = Counter()
        for name in SYNC_METHODS:
            monkeypatch.setattr(
                torch.Tensor, name, self._counting(name, getattr(torch.Tensor, name))
            )

    def _counting(self, name: str, method: Any) -> Any:
        def counted(tensor: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
            self.calls[name] += 1
            return method(tensor, *args, **kwargs)

        return counted

    @property
    def total(self) -> int:
        return sum(self.calls.values())


@pytest.fixture
def sync_probe(monkeypatch: pytest.MonkeyPatch) -> Iterator[SyncProbe]:
    yield SyncProbe(monkeypatch)


def test_trainer_no_host_sync_per_step(data: DataSplits, sync_probe: SyncProbe) -> None:
    epochs, batch_size = 2, 8
    steps = len(batch_slices(len(data.train_y), batch_size))
    study = from_dict(small_cnn(epochs=epochs, batch_size=batch_size)).base()

    result = Trainer(study, data).run()

    assert result.state == "complete"
    # Per epoch: one non-finite check per NONFINITE_CHECK_EVERY steps, two reads of the
    # training sums and two of the validation sums; nothing that grows with every step.
    checks = -(-steps // NONFINITE_CHECK_EVERY)
    assert steps > 4 * NONFINITE_CHECK_EVERY
    assert 0 < sync_probe.total <= epochs * (checks + 4)
    assert sync_probe.calls["item"] == sync_probe.total


def test_sync_probe_sees_a_sync_per_step(sync_probe: SyncProbe) -> None:
    # The probe itself must notice what the test above guards against.
    losses = [torch.ones(()) * i for i in range(20)]

    total = sum(loss.item() for loss in losses) + sum(float(loss) for loss in losses)

    assert total == 2 * sum(range(20))
    assert sync_probe.calls["item"] == 20
    assert sync_probe.calls["__float__"] == 20


@pytest.mark.slow
def test_bf16_and_fp32_reach_similar_accuracy() -> None:
    # 200 images per class, 2 epochs: enough for ~80% validation accuracy in a few seconds.
    raw = small_cnn(epochs=2, batch_size=32, seed=3)
    raw["data"]["subset"] = 200
    data = load_data(from_dict(raw).base().data)
    accs = {}
    for precision in ("fp32", "bf16"):
        raw["training"]["precision"] = precision
        result = Trainer(from_dict(raw).base(), data).run()
        assert result.engine["engine.precision"] == precision
        accs[precision] = result.final["val_acc"]

    assert min(accs.values()) > 0.7
    # 400 validation images: one image is 0.25 points; rounding in bf16 moves a few of them.
    assert abs(accs["bf16"] - accs["fp32"]) <= 0.03, accs


# Trains the small conv net in a fresh process, so the malloc state of this test process plays
# no part, and prints the page faults per step after the first epoch (which grows the heap).
FAULTS_SCRIPT = """
import resource, sys, torch
torch.set_num_threads(1)
sys.path.insert(0, sys.argv[1])
from tests.conftest import small_cnn
from interplay.data import load_data
from interplay.studyfile import from_dict
from interplay.training import Trainer, batch_slices
study = from_dict(small_cnn(epochs=3, batch_size=64)).base()
data = load_data(study.data)
faults = []
def on_epoch(epoch, metrics):
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt)
    return False
trainer = Trainer(study, data, on_epoch=on_epoch)
trainer.run()
steps = 2 * len(batch_slices(len(data.train_y), 64))
print(trainer.engine.tuned_malloc, (faults[-1] - faults[0]) / steps)
"""


def faults_per_step(malloc: str) -> tuple[bool, float]:
    env = {**os.environ, "INTERPLAY_MALLOC": malloc}
    done = subprocess.run(
        [sys.executable, "-c", FAULTS_SCRIPT, str(Path(__file__).resolve().parents[1])],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    tuned, faults = done.stdout.split()
    return tuned == "True", float(faults)


@pytest.mark.skipif(not malloc_tunable(), reason="glibc on Linux only")
def test_tuned_malloc_removes_page_faults_per_step() -> None:
    tuned, tuned_faults = faults_per_step("tuned")
    plain, plain_faults = faults_per_step("default")

    assert tuned and not plain
    # Default glibc faults the activations back in every step (120-140 pages here, against
    # about 0.1 tuned). The kernel's own reclaim can add faults to both under memory pressure
    # (23 per step tuned was seen in a busy CI run), hence the loose bounds.
    assert plain_faults > 50, plain_faults
    assert tuned_faults * 3 < plain_faults, (tuned_faults, plain_faults)


def flushed_share() -> float:
    """Share of a parallel op's results that came out zero from subnormal inputs."""
    # Made from raw bits (a subnormal fp32 number; the op is big enough to be split among all
    # threads) and read as bits: with flushing on in this thread, converting a Python float
    # or comparing floats would flush here and hide what the worker threads did.
    x = torch.full((1 << 22,), 0x000116C2, dtype=torch.int32).view(torch.float32)
    return float(((x * 1.0).view(torch.int32) == 0).float().mean())


needs_two_threads = pytest.mark.skipif(
    (os.cpu_count() or 1) < 2 or platform.machine().lower() not in ("x86_64", "amd64"),
    reason="needs an x86 CPU (flush-to-zero via MXCSR) and two cores for a worker thread",
)


@needs_two_threads
def test_flush_denormals_reaches_started_worker_threads() -> None:
    torch.set_num_threads(2)  # the fixture puts the count back afterwards
    assert flushed_share() == 0.0  # the OpenMP workers are running now, without the setting

    flushed, undo = flush_denormals()
    try:
        assert flushed and denormals_flushed()
        # All of it: without restarting the workers their part stayed subnormal (half here).
        assert flushed_share() == 1.0
    finally:
        undo()

    assert not denormals_flushed()
    assert flushed_share() == 0.0


@needs_two_threads
def test_trainer_flushes_denormals_while_it_trains(data: DataSplits) -> None:
    torch.set_num_threads(2)
    seen: list[float] = []

    def during(epoch: int, metrics: dict[str, float]) -> bool:
        seen.append(flushed_share())
        return False

    study = from_dict(small_cnn(epochs=2)).base()
    result = Trainer(study, data, on_epoch=during).run()

    assert result.state == "complete"
    assert result.engine["engine.flush_denormals"] == "true"
    assert seen == [1.0, 1.0]
    assert flushed_share() == 0.0 and not denormals_flushed()


def test_trainer_returns_the_model_as_written(data: DataSplits) -> None:
    trainer = Trainer(from_dict(small_cnn()).base(), data)
    first = trainer.model.blocks[0]
    flatten = [m for m in trainer.model.modules() if isinstance(m, nn.Flatten)]
    assert flatten and all(m._forward_pre_hooks for m in flatten)
    assert [type(m) for m in first][2:] == [nn.MaxPool2d, nn.ReLU]
    assert trainer.engine.as_params()["engine.pool_before_relu"] == "1"

    result = trainer.run()

    assert not any(m._forward_pre_hooks for m in flatten)
    assert [type(m) for m in first][2:] == [nn.ReLU, nn.MaxPool2d]
    assert result.engine["engine.pool_before_relu"] == "1"
    with pytest.raises(RuntimeError, match="trains once"):
        trainer.run()  # a second run would undo the engine's changes twice
    assert [type(m) for m in first][2:] == [nn.ReLU, nn.MaxPool2d]


def test_trainer_gives_the_thread_count_back(data: DataSplits) -> None:
    torch.set_num_threads(2)  # the module's fixture restores its own count afterwards
    trainer = Trainer(from_dict(small_cnn(threads=1)).base(), data)
    assert torch.get_num_threads() == 1

    result = trainer.run()

    assert result.engine["engine.threads"] == "1"
    assert torch.get_num_threads() == 2
