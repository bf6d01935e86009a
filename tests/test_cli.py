"""The command line as a user meets it: exit codes, messages, no tracebacks."""

from __future__ import annotations

import contextlib
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import STUDIES, small_cnn


def interplay(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "interplay.cli", *args]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, timeout=300, check=False)


def assert_user_error(done: subprocess.CompletedProcess[str], *words: str) -> None:
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr + done.stdout
    text = " ".join((done.stderr + done.stdout).split())
    for word in words:
        assert word in text


def test_cli_help_lists_commands() -> None:
    done = interplay("--help")
    assert done.returncode == 0
    for command in ("summary", "train", "run", "status", "export", "data", "ui"):
        assert command in done.stdout


def test_cli_summary_prints_shapes_params_macs() -> None:
    done = interplay("summary", str(STUDIES / "baseline.yaml"))
    assert done.returncode == 0, done.stderr
    text = done.stdout
    assert "32x14x14" in text.replace(" ", "") or "32×14×14" in text
    # conv32 (320 - bias folded into BN: 288) ... total params of the reference CNN
    assert "421" in text  # about 0.42 M parameters


@pytest.mark.parametrize(
    ("edit", "words"),
    [
        ({"trainig": {}}, ["unknown key", "did you mean 'training'"]),
        ({"training": {"epochs": "many"}}, ["training.epochs", "integer"]),
        ({"training": {"optimizer": {"name": "adamax"}}}, ["training.optimizer.name", "'sgd'"]),
    ],
)
def test_cli_config_error_exit_2(write_study, edit: dict[str, object], words: list[str]) -> None:
    raw = small_cnn()
    raw.update(edit)
    assert_user_error(interplay("summary", str(write_study(raw))), *words)


def test_cli_yaml_syntax_error_exit_2(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("name: x\nmodel: {blocks: [\n")
    assert_user_error(interplay("summary", str(path)), "broken.yaml line", "YAML syntax error")


def test_cli_impossible_architecture_exit_2(write_study) -> None:
    raw = small_cnn()
    raw["model"]["blocks"][0]["repeat"] = 6  # 28 -> 14 -> 7 -> 3 -> 1 -> pool 2 cannot fit
    assert_user_error(interplay("summary", str(write_study(raw))), "block1", "pool", "repeat")


def test_cli_bad_set_exit_2(write_study) -> None:
    path = str(write_study(small_cnn()))
    assert_user_error(interplay("summary", path, "--set", "training.lr"), "dotted.key=value")


@pytest.mark.parametrize(
    ("name", "value"),
    [("INTERPLAY_PRECISION", "fp16"), ("INTERPLAY_DENORMALS", "off"), ("INTERPLAY_MALLOC", "x")],
)
def test_cli_bad_engine_env_exit_2(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    monkeypatch.setenv(name, value)
    done = interplay("summary", str(STUDIES / "baseline.yaml"))
    assert_user_error(done, f"{name}='{value}'", "unset it")


def test_cli_unknown_flag_exit_2() -> None:
    done = interplay("summary", str(STUDIES / "baseline.yaml"), "--sett", "x=1")
    assert done.returncode == 2
    assert "Traceback" not in done.stderr


def test_cli_missing_study_file_exit_2(tmp_path: Path) -> None:
    assert_user_error(interplay("summary", str(tmp_path / "none.yaml")), "not found")


def test_cli_status_without_results_exit_2(write_study, tmp_path: Path) -> None:
    path = str(write_study(small_cnn()))
    done = interplay("status", path, "--out", str(tmp_path / "nothing"))
    assert_user_error(done, "run `interplay run STUDY` first")


def test_cli_missing_dataset_exit_2(write_study, tmp_path: Path, monkeypatch) -> None:
    raw = small_cnn()
    raw["data"] = {"dataset": "folder", "root": str(tmp_path / "no-such-folder")}
    assert_user_error(interplay("train", str(write_study(raw))), "data.root")


def test_cli_train_diverging_exit_2_recorded(write_study, tmp_path: Path) -> None:
    raw = small_cnn()
    raw["data"]["subset"] = 20
    raw["training"]["optimizer"] = {"name": "sgd", "lr": 1e6}
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    done = interplay("train", str(write_study(raw)), "--tracking-uri", uri, cwd=tmp_path)
    assert_user_error(done, "not finite", "lower optimizer.lr", "recorded in")


@pytest.mark.parametrize(
    ("store", "words"),
    [
        ("foo://bar", ["--tracking-uri foo://bar", "sqlite:///mlflow.db"]),
        ("file:///{tmp}/runs", ["MLflow database store", "sqlite:///mlflow.db"]),
        ("sqlite:///{tmp}/notes.db", ["notes.db is not an sqlite database"]),
        ("sqlite:///{tmp}", ["is a folder", "name a file"]),
        ("sqlite:///", ["names no file", "would be lost"]),
        ("sqlite:///{tmp}/other.db", ["other.db is an sqlite database of something else"]),
        ("sqlite:///{tmp}/notes.db/mlflow.db", ["notes.db: a file is in the way of a folder"]),
    ],
)
def test_cli_unusable_tracking_store_exit_2(
    write_study, tmp_path: Path, store: str, words: list[str]
) -> None:
    (tmp_path / "notes.db").write_text("my notes, not a database\n")
    with contextlib.closing(sqlite3.connect(tmp_path / "other.db")) as db, db:
        db.execute("create table runs (x)")
    uri = store.format(tmp=tmp_path)
    done = interplay("train", str(write_study(small_cnn())), "--tracking-uri", uri, cwd=tmp_path)
    assert_user_error(done, *words)
    assert "fashion-mnist" not in done.stderr + done.stdout  # refused before the data loads
    assert (tmp_path / "notes.db").read_text() == "my notes, not a database\n"
    with contextlib.closing(sqlite3.connect(tmp_path / "other.db")) as db:
        assert [r[0] for r in db.execute("select name from sqlite_master")] == ["runs"]


def test_cli_tracking_store_from_env_named_in_message(
    write_study, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "ftp://127.0.0.1/runs")
    done = interplay("train", str(write_study(small_cnn())), cwd=tmp_path)
    assert_user_error(done, "MLFLOW_TRACKING_URI=ftp://127.0.0.1/runs")


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux's /proc")
def test_cli_tracking_store_in_unwritable_folder_exit_2_at_once(write_study, tmp_path) -> None:
    # MLflow itself retries an engine it cannot create for minutes before it gives up.
    uri = "sqlite:////proc/interplay-test.db"
    done = interplay("train", str(write_study(small_cnn())), "--tracking-uri", uri, cwd=tmp_path)
    assert_user_error(done, "cannot make the store in /proc", "writable folder")


def test_cli_alpha_out_of_range_exit_2() -> None:
    done = interplay("analyze", str(STUDIES / "baseline.yaml"), "--alpha", "2")
    assert_user_error(done, "--alpha 2.0", "between 0 and 0.5")


def test_cli_export_to_path_under_a_file_exit_2(write_study, tmp_path: Path) -> None:
    from interplay.runner import run_study

    raw = small_cnn(epochs=1)
    raw["data"]["subset"] = 10
    raw["model"]["blocks"][0]["layers"][1]["kind"] = "${norm}"
    raw["search"] = {"params": {"norm": {"values": ["none", "batch"]}}}
    path = write_study(raw)
    out = tmp_path / "results"
    run_study(path, [], out=out, tracking=f"sqlite:///{tmp_path / 'm.db'}", quiet=True)
    blocker = tmp_path / "afile"
    blocker.write_text("not a folder")
    done = interplay("export", str(path), "--out", str(out), "--csv", str(blocker / "x.csv"))
    assert_user_error(done, "cannot use", "afile", "choose another path")
    assert (out / "optuna.journal").exists()


def test_cli_ui_port_in_use_exit_2() -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = interplay("ui", "--port", str(port))
    assert_user_error(done, f"--port {port}", "cannot listen on 127.0.0.1")


def test_cli_error_keeps_square_brackets(write_study) -> None:
    raw = small_cnn()
    raw["model"]["blocks"][0]["layers"][1]["kind"] = "${norm}"
    raw["search"] = {"params": {"norm": {"values": ["none", "batch"]}}}
    raw["hypothesis"] = {"text": "t", "claims": [{"kind": "interaction", "params": ["norm"]}]}

    done = interplay("summary", str(write_study(raw)))

    # Rich would read "[a, b]" as markup and print nothing of it.
    assert_user_error(done, "an interaction claim needs params: [a, b]")


# Runs a command in-process and prints which heavy libraries it imported.
IMPORTS_SCRIPT = """
import sys
from interplay.cli import app
try:
    app(sys.argv[1:])
except SystemExit:
    pass
heavy = ("torch", "mlflow", "optuna", "pandas", "matplotlib", "statsmodels")
print("imported:", sorted(m for m in heavy if m in sys.modules))
"""


@pytest.mark.parametrize(
    "args", [["--help"], ["summary", str(STUDIES / "baseline.yaml")]], ids=["help", "summary"]
)
def test_cli_help_and_summary_import_no_heavy_library(args: list[str]) -> None:
    done = subprocess.run(
        [sys.executable, "-c", IMPORTS_SCRIPT, *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert "imported: []" in done.stdout, done.stdout[-500:] + done.stderr[-500:]
