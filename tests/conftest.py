"""Shared fixtures: small real studies, a real sqlite MLflow store in a temporary folder."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
STUDIES = REPO / "studies"

# Two cores here: more threads than cores only adds contention between tests.
torch.set_num_threads(min(2, os.cpu_count() or 1))


def small_cnn(**training: Any) -> dict[str, Any]:
    """A small conv net study (as a dict) on a stratified Fashion-MNIST subset."""
    return {
        "name": "small",
        "data": {"dataset": "fashion-mnist", "subset": 120, "val_fraction": 0.2},
        "model": {
            "blocks": [
                {
                    "layers": [
                        {"type": "conv", "channels": 8, "kernel": 3},
                        {"type": "norm", "kind": "batch"},
                        {"type": "act", "fn": "relu"},
                        {"type": "pool", "size": 2},
                    ]
                },
                {"layers": [{"type": "linear", "units": 32}, {"type": "act"}]},
            ]
        },
        "training": {"epochs": 1, "batch_size": 64, "optimizer": {"lr": 0.003}, **training},
    }


@pytest.fixture
def write_study(tmp_path: Path) -> Callable[..., Path]:
    def write(study: dict[str, Any], name: str = "study.yaml") -> Path:
        path = tmp_path / name
        path.write_text(yaml.safe_dump(study, sort_keys=False))
        return path

    return write


def empty_store(tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> str:
    """A fresh copy of an empty sqlite MLflow store: building one takes seconds of migrations."""
    from interplay.tracking import create_store_whole

    template = tmp_path_factory.getbasetemp() / "empty-mlflow.db"
    if not template.exists():
        create_store_whole(f"sqlite:///{template}")  # it appears whole or not at all
    shutil.copyfile(template, tmp_path / "mlflow.db")
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


@pytest.fixture
def mlflow_uri(tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> str:
    return empty_store(tmp_path_factory, tmp_path)


@pytest.fixture
def one_thread() -> Iterator[None]:
    """One torch thread for the test: other test processes share the cores."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def _work_in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test works in its own folder: relative paths (mlruns/, results/) land there."""
    monkeypatch.chdir(tmp_path)
