"""Bad input, handled by construction or refused with a message that says what to fix.

Covered elsewhere and not repeated here: truncated or corrupt IDX files and folder datasets
(test_data_idx.py, test_data.py), impossible architectures and the property test over
generated model specs (test_models.py, test_models_properties.py), a long param value
(test_runs.py), failures inside a sweep and one kill-and-resume (test_study.py).
"""

from __future__ import annotations

import ast
import contextlib
import dataclasses
import json
import math
import os
import pickle
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
import pytest
import torch
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from interplay.data import DataSplits, load_data
from interplay.errors import ConfigError
from interplay.models import build_model
from interplay.results import load_optuna_study
from interplay.runner import run_study
from interplay.runs import load_checkpoint
from interplay.study import StudyPaths
from interplay.studyfile import from_dict, load_study
from interplay.tracking import MAX_KEY_LENGTH, MLflowSink, param_key
from interplay.training import batch_slices, train

from .conftest import empty_store
from .test_study import children

optuna.logging.set_verbosity(optuna.logging.WARNING)
SRC = Path(__file__).resolve().parents[1] / "src" / "interplay"
# The conftest fixture that writes a study dict to a YAML file and returns its path.
WriteStudy = Callable[..., Path]


@pytest.fixture
def store_uri(tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> str:
    return empty_store(tmp_path_factory, tmp_path)


# ---------------------------------------------------------------- a last batch of one


def test_batch_slices_never_one_sample_any_size() -> None:
    for n in range(2, 400):
        for batch_size in range(2, n + 3):
            parts = batch_slices(n, batch_size)
            sizes = [p.stop - p.start for p in parts]
            assert parts[0].start == 0 and parts[-1].stop == n, (n, batch_size)
            assert all(a.stop == b.start for a, b in zip(parts, parts[1:], strict=False))
            assert min(sizes) >= 2, (n, batch_size)
            assert max(sizes) <= batch_size + 1, (n, batch_size)


@pytest.fixture(scope="module")
def fashion_160() -> DataSplits:
    """160 training and 40 validation images of real Fashion-MNIST."""
    study = from_dict({"name": "d", "data": {"subset": 20, "val_fraction": 0.2}, **_bn_model()})
    return load_data(study.base().data)


def _bn_model() -> dict[str, Any]:
    # Batch norm on feature maps and on vectors: on vectors a single sample cannot train.
    conv = [{"type": "conv", "channels": 4}, {"type": "norm"}, {"type": "act"}, {"type": "pool"}]
    linear = [{"type": "linear", "units": 8}, {"type": "norm"}, {"type": "act"}]
    return {"model": {"blocks": [{"layers": conv}, {"layers": linear}]}}


@pytest.mark.parametrize(("n", "batch_size"), [(3, 2), (17, 8), (65, 64), (129, 32)])
def test_train_last_batch_of_one_with_batch_norm(
    fashion_160: DataSplits, n: int, batch_size: int
) -> None:
    assert n % batch_size == 1  # the last batch would hold one sample
    data = dataclasses.replace(
        fashion_160, train_x=fashion_160.train_x[:n], train_y=fashion_160.train_y[:n]
    )
    training = {"epochs": 1, "batch_size": batch_size, "threads": 1}
    study = from_dict({"name": "bn", **_bn_model(), "training": training}).base()
    result = train(study, data)
    assert result.state == "complete", result.reason
    assert result.epochs_done == 1
    assert math.isfinite(result.final["train_loss"])


# ---------------------------------------------------------------- failing trials in a sweep


def _linear_net(lr: Any, in_features: Any, options: dict[str, Any]) -> dict[str, Any]:
    # Three linear maps with nothing between them: SGD at lr 1 makes their product blow up.
    return {
        "name": "bad",
        "data": {"subset": 20, "val_fraction": 0.2},
        "model": {
            "blocks": [
                {"layers": [{"type": "conv", "channels": 8}]},
                {"layers": [{"type": "linear", "units": 32, "in_features": in_features}]},
            ],
            "options": options,
        },
        "training": {
            "epochs": 1,
            "batch_size": 16,
            "threads": 1,
            "optimizer": {"name": "sgd", "lr": lr, "momentum": 0.9},
        },
    }


UNSTORABLE_OPTIONS = {
    "lr@warmup": 0.1,
    "notes/../x": "y",
    "émoji 😀": 1,
    "k" * 300: "long key",
    "layers": [{"units": 3, "why": "nested"}],
}


def test_sweep_bad_trials_fail_alone_study_completes(
    write_study: WriteStudy, tmp_path: Path, store_uri: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    raw = _linear_net("${lr}", "${in_features}", UNSTORABLE_OPTIONS)
    raw["search"] = {
        "params": {"lr": {"values": [0.01, 1.0]}, "in_features": {"values": [6272, 100]}}
    }
    out = tmp_path / "results"
    run_study(write_study(raw), [], out=out, tracking=store_uri, quiet=True)

    trials = load_optuna_study(StudyPaths(out)).get_trials()
    by = {(t.params["lr"], t.params["in_features"]): t for t in trials}
    assert len(trials) == 4
    assert by[(0.01, 6272)].state == TrialState.COMPLETE

    diverged = by[(1.0, 6272)]
    assert diverged.state == TrialState.FAIL
    assert "not finite" in diverged.user_attrs["reason"]
    assert "epoch 1, step" in diverged.user_attrs["reason"]  # stopped in its first epoch
    assert diverged.user_attrs["rep0"]["epochs_done"] == 0

    for lr in (0.01, 1.0):
        impossible = by[(lr, 100)]
        assert impossible.state == TrialState.FAIL
        reason = impossible.user_attrs["reason"]
        assert "block2" in reason and "in_features is 100" in reason and "6272" in reason
        assert impossible.user_attrs["rep0"]["duration_s"] == 0.0  # refused before training

    runs = {
        f"{r.data.params['param.lr']}/{r.data.params['param.in_features']}": r
        for r in children(store_uri, "bad")
    }
    assert runs["0.01/6272"].info.status == "FINISHED"
    failed = runs["1.0/6272"]
    assert failed.info.status == "FAILED"
    assert "not finite" in failed.data.tags["interplay.reason"]
    assert failed.data.params["training.optimizer.lr"] == "1.0"

    # Keys MLflow refuses were renamed; the run kept them, and the original names.
    kept = runs["0.01/6272"]
    assert kept.data.params["model.options.lr_warmup"] == "0.1"
    assert kept.data.params["model.options.notes_.._x"] == "y"
    assert kept.data.params["model.options.layers.0.why"] == "nested"
    client = MlflowClient(store_uri)
    local = client.download_artifacts(kept.info.run_id, "param_keys.json", str(tmp_path))
    originals = json.loads(Path(local).read_text())
    assert set(originals.values()) >= {
        "model.options.lr@warmup",
        "model.options.émoji 😀",
        "model.options." + "k" * 300,
    }
    assert all(kept.data.params[k] is not None for k in originals)


UNSTORABLE_KEYS = [
    "a@b", "a/../b", "/abs", "..x", "", "x" * 400, "tab\there", "émoji😀", "a,b;c"
]  # fmt: skip


def test_param_keys_mlflow_refuses_are_renamed(store_uri: str) -> None:
    sink = MLflowSink(store_uri, "keys")
    sink.log_params({**{key: f"v{i}" for i, key in enumerate(UNSTORABLE_KEYS)}, "plain.key": 1})
    sink.close()
    run = MlflowClient(store_uri).get_run(sink.run_id)
    assert run.info.status == "FINISHED"
    expected = {param_key(key): f"v{i}" for i, key in enumerate(UNSTORABLE_KEYS)}
    assert run.data.params == {**expected, "plain.key": "1"}
    assert all(len(key) <= MAX_KEY_LENGTH for key in run.data.params)


def test_param_key_collisions_stay_distinct(store_uri: str) -> None:
    sink = MLflowSink(store_uri, "keys")
    sink.log_params({"a@b": 1, "a#b": 2, "a_b": 3})
    sink.close()
    params = MlflowClient(store_uri).get_run(sink.run_id).data.params
    assert sorted(params.values()) == ["1", "2", "3"]
    assert params["a_b"] == "3"


# ---------------------------------------------------------------- a trial whose training raises


OOM_FACTORY = '''
import torch
from torch import nn


class Net(nn.Module):
    """Raises what PyTorch raises when memory runs out, for batches over `max_batch`."""

    def __init__(self, max_batch, num_classes):
        super().__init__()
        self.max_batch = max_batch
        self.head = nn.Linear(28 * 28, num_classes)

    def forward(self, x):
        if self.training and x.shape[0] > self.max_batch:
            raise torch.OutOfMemoryError(f"cannot allocate for a batch of {x.shape[0]}")
        return self.head(x.flatten(1))


def build(settings, *, input_shape, num_classes):
    return Net(settings["options"]["max_batch"], num_classes)
'''


def test_sweep_trial_out_of_memory_fails_trial_only(
    write_study: WriteStudy, tmp_path: Path, store_uri: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "oom_net_reliability.py").write_text(OOM_FACTORY)
    raw = {
        "name": "oom",
        "data": {"subset": 10, "val_fraction": 0.2},
        "model": {"factory": "oom_net_reliability:build", "options": {"max_batch": 32}},
        "training": {"epochs": 1, "batch_size": "${batch_size}", "threads": 1},
        "search": {"params": {"batch_size": {"values": [64, 16]}}, "seeds": 2},
    }
    out = tmp_path / "results"
    run_study(write_study(raw), [], out=out, tracking=store_uri, quiet=True)

    trials = load_optuna_study(StudyPaths(out)).get_trials()
    by = {t.params["batch_size"]: t for t in trials}
    assert by[16].state == TrialState.COMPLETE
    assert by[64].state == TrialState.FAIL
    assert by[64].user_attrs["reason"] == "OutOfMemoryError: cannot allocate for a batch of 64"
    runs = children(store_uri, "oom")
    assert len(runs) == 4
    states = {(r.data.params["param.batch_size"], r.info.status) for r in runs}
    assert states == {("64", "FAILED"), ("16", "FINISHED")}


# ---------------------------------------------------------------- metrics of every step


def test_sink_every_step_of_an_epoch_stored_in_batches(store_uri: str) -> None:
    # ~940 steps: one epoch of Fashion-MNIST's 60,000 images at batch size 64.
    steps = 938
    sink = MLflowSink(store_uri, "steps")
    for step in range(1, steps + 1):
        sink.queue_metrics({"step_loss": 1.0 / step, "step_lr": 0.1}, step=step)
    sink.flush()
    sink.close()
    client = MlflowClient(store_uri)
    history = client.get_metric_history(sink.run_id, "step_loss")
    assert sorted(m.step for m in history) == list(range(1, steps + 1))
    assert {m.step: m.value for m in history}[400] == pytest.approx(1 / 400)
    assert len(client.get_metric_history(sink.run_id, "step_lr")) == steps


# ---------------------------------------------------------------- a study file is data


def test_study_file_python_tag_refused_not_run(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    path = tmp_path / "evil.yaml"
    path.write_text(
        f"name: evil\nmodel: {{blocks: [{{layers: [{{type: flatten}}]}}]}}\n"
        f'description: !!python/object/apply:os.system ["touch {marker}"]\n'
    )
    with pytest.raises(ConfigError, match=r"evil.yaml line 3.*python/object/apply:os.system"):
        load_study(path)
    assert not marker.exists()


def test_set_override_python_tag_stays_text(write_study: WriteStudy, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    raw = {"name": "s", "model": {"blocks": [{"layers": [{"type": "flatten"}]}]}}
    value = f'!!python/object/apply:os.system ["touch {marker}"]'
    study_file = load_study(write_study(raw), [f"description={value}"])
    assert study_file.base().description == value
    assert not marker.exists()


def test_placeholder_never_evaluated(write_study: WriteStudy, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    code = f"${{__import__('os').system('touch {marker}')}}"
    raw = {
        "name": "p",
        "description": code,
        "model": {"blocks": [{"layers": [{"type": "dropout", "p": "${p}"}]}]},
        "search": {"params": {"p": {"values": [0.1, code]}}},
    }
    study_file = load_study(write_study(raw))
    assert study_file.base().description == code
    with pytest.raises(ConfigError, match="p"):
        study_file.resolve({"p": code})  # a string where a number belongs: refused, not run
    assert not marker.exists()


def test_only_the_named_factory_is_imported(
    write_study: WriteStudy, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(tmp_path))  # importable, were anything to import it
    marker = tmp_path / "imported"
    module = "planted_module_reliability"
    (tmp_path / f"{module}.py").write_text(
        f"from pathlib import Path\nPath({str(marker)!r}).touch()\n"
        "from torch import nn\n"
        "def build(settings, *, input_shape, num_classes):\n"
        "    return nn.Sequential(nn.Flatten(), nn.Linear(784, num_classes))\n"
    )
    raw = {
        "name": "f",
        "description": f"{module}:build",
        "data": {"root": f"{module}:build"},
        "model": {
            "blocks": [{"layers": [{"type": "flatten"}]}],
            "options": {"fn": f"{module}:build"},
        },
    }
    study = load_study(write_study(raw)).base()
    build_model(study.model, (1, 28, 28), 10)
    assert not marker.exists()

    raw["model"] = {"factory": f"{module}:build"}
    study = load_study(write_study(raw, "factory.yaml")).base()
    build_model(study.model, (1, 28, 28), 10)
    assert marker.exists()  # the user asked for their code to run, by name


class _Planted:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {self.marker}",))


def test_checkpoint_with_code_refused(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    path = tmp_path / "planted.pt"
    torch.save({"head.weight": torch.zeros(2, 2), "extra": _Planted(marker)}, path)
    with pytest.raises(pickle.UnpicklingError):
        load_checkpoint(torch.nn.Linear(2, 2), path)
    assert not marker.exists()


def _calls(tree: ast.AST) -> list[tuple[str, ast.Call]]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name):
                found.append((f"{func.value.id}.{func.attr}", node))
            elif isinstance(func, ast.Name):
                found.append((func.id, node))
    return found


def test_source_loads_nothing_as_code() -> None:
    forbidden = {"eval", "exec", "yaml.load", "yaml.unsafe_load", "pickle.load", "pickle.loads"}
    torch_loads = 0
    for path in SRC.rglob("*.py"):
        for name, call in _calls(ast.parse(path.read_text(), filename=str(path))):
            assert name not in forbidden, f"{path}:{call.lineno} calls {name}"
            if name == "torch.load":
                torch_loads += 1
                kwargs = {k.arg: k.value for k in call.keywords}
                flag = kwargs.get("weights_only")
                assert isinstance(flag, ast.Constant) and flag.value is True, (
                    f"{path}:{call.lineno}: torch.load without weights_only=True"
                )
    assert torch_loads >= 1  # the checkpoint loader is among them


def _child_argvs(pid: int) -> list[list[str]]:
    """The argv of the process itself (`interplay ui` replaces itself) and of its children."""
    argvs = []
    with contextlib.suppress(OSError):
        argvs.append(Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0"))
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            if parent == pid:
                argvs.append((stat.parent / "cmdline").read_bytes().decode().split("\0"))
        except (OSError, IndexError, ValueError):
            continue  # the process ended while we looked
    return argvs


def _mlflow_started_by_ui(tmp_path: Path, *args: str) -> tuple[list[str], str]:
    """The argv of the MLflow server `interplay ui` starts, and what interplay printed."""
    uri = f"sqlite:///{tmp_path / 'ui.db'}"
    cmd = [sys.executable, "-m", "interplay.cli", "ui", "--tracking-uri", uri, *args]
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    argv: list[str] = []
    try:
        deadline = time.time() + 60
        while not argv and time.time() < deadline and proc.poll() is None:
            time.sleep(0.1)
            found = (a for a in _child_argvs(proc.pid) if "mlflow" in a and "ui" in a)
            argv = next(found, [])
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the server is never needed: only its argv
        output = proc.communicate()[0]
    assert argv, f"interplay ui started no MLflow server: {output}"
    return argv, " ".join(output.split())


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads the Linux process table")
def test_ui_binds_loopback_unless_asked(tmp_path: Path) -> None:
    argv, _ = _mlflow_started_by_ui(tmp_path, "--port", "5999")
    assert argv[argv.index("--host") + 1] == "127.0.0.1"
    argv, output = _mlflow_started_by_ui(tmp_path, "--port", "5999", "--host", "0.0.0.0")
    assert argv[argv.index("--host") + 1] == "0.0.0.0"
    assert "reachable from other machines" in output
