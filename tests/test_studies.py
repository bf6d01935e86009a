"""The ready studies in studies/: each passes summary, shape inference and a tiny quick run."""

from __future__ import annotations

import io
import re
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState
from rich.console import Console

from interplay.analysis.claims import check_claims
from interplay.analysis.table import params_from_search
from interplay.results import load_optuna_study
from interplay.runner import run_study
from interplay.study import StudyPaths, total_trials
from interplay.studyfile import grid_points, load_study
from interplay.summary import check_combinations, summarize_study

from .conftest import STUDIES

optuna.logging.set_verbosity(optuna.logging.WARNING)

STUDY_FILES = sorted(STUDIES.glob("*.yaml"))
# The numbered studies are the experiments of the assignment; baseline.yaml is a single run.
EXPERIMENTS = [p for p in STUDY_FILES if p.name[:2].isdigit()]
BUDGETS = [None, "quick", "full"]

# Enough to train every grid combination once on real images: 10 per class leaves one
# validation image per class at the default val_fraction.
TINY = ["data.subset=10", "training.epochs=1", "search.seeds=1", "training.batch_size=32"]


def test_studies_folder_has_the_five_experiments() -> None:
    names = [p.name for p in EXPERIMENTS]
    assert names == [
        "01-dropout-x-norm.yaml",
        "02-depth-x-width.yaml",
        "03-dropout-placement.yaml",
        "04-lr-x-batchnorm.yaml",
        "05-pooling-x-depth.yaml",
    ]


@pytest.mark.parametrize("budget", BUDGETS)
@pytest.mark.parametrize("path", STUDY_FILES, ids=lambda p: p.stem)
def test_study_summary_passes(path: Path, budget: str | None) -> None:
    if budget is not None and budget not in (load_study(path).raw.get("budgets") or {}):
        pytest.skip(f"{path.name} has no {budget} budget")
    text = io.StringIO()
    summarize_study(path, [], budget, Console(file=text, width=120))
    printed = text.getvalue()
    assert "head" in printed and "total" in printed
    study_file = load_study(path, budget=budget)
    assert check_combinations(study_file) == []
    if study_file.search.params:
        n = len(grid_points(study_file.search))
        assert f"{n} of {n} grid combinations pass shape inference" in printed


@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: p.stem)
def test_study_design_hypothesis_and_budgets(path: Path) -> None:
    study_file = load_study(path)
    search = study_file.search
    assert search.method == "grid"
    assert search.seeds >= 2
    assert len(search.params) == 2

    hypothesis = study_file.base().hypothesis
    assert len(hypothesis.text) > 200
    assert {c.kind for c in hypothesis.claims} >= {"interaction"}
    # Every claim names declared params and levels that are in the grid.
    check_claims(hypothesis.claims, params_from_search(search))

    quick = load_study(path, budget="quick").base()
    assert quick.data.subset is not None and 300 <= quick.data.subset <= 500
    assert 2 <= quick.training.epochs <= 3
    full = load_study(path, budget="full").base()
    assert full.data.subset is None
    assert 10 <= full.training.epochs <= 15


@pytest.fixture(scope="module")
def shared_store(tmp_path_factory: pytest.TempPathFactory) -> str:
    # One sqlite store for the module: each study is its own experiment in it, and the store's
    # tables are created once instead of once per test.
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"


@pytest.mark.parametrize("path", STUDY_FILES, ids=lambda p: p.stem)
def test_study_quick_budget_completes(path: Path, tmp_path: Path, shared_store: str) -> None:
    budget = "quick" if "quick" in (load_study(path).raw.get("budgets") or {}) else None
    out = tmp_path / "results"
    run_study(path, TINY, budget=budget, out=out, tracking=shared_store, quiet=True)

    study_file = load_study(path, TINY, budget)
    trials = load_optuna_study(StudyPaths(out)).get_trials()
    assert len(trials) == total_trials(study_file)
    assert [t.state for t in trials] == [TrialState.COMPLETE] * len(trials)
    expected = grid_points(study_file.search) if study_file.search.params else [{}]
    assert sorted(map(repr, (t.params for t in trials))) == sorted(map(repr, expected))
    for trial in trials:
        record = trial.user_attrs["rep0"]
        assert record["state"] == "complete"
        assert record["epochs_done"] == 1
        assert 0.0 <= record["final"]["val_acc"] <= 1.0


def test_readme_example_study_passes_summary(tmp_path: Path) -> None:
    readme = (STUDIES.parent / "README.md").read_text(encoding="utf-8")
    found = re.search(r"```yaml\n(name: my-dropout-study\n.*?)```", readme, re.S)
    assert found is not None, "README.md lost its example study"
    path = tmp_path / "example.yaml"
    path.write_text(found.group(1), encoding="utf-8")
    text = io.StringIO()
    summarize_study(path, [], "quick", Console(file=text, width=120))
    assert "4 of 4 grid combinations pass shape inference" in text.getvalue()
    check_claims(
        load_study(path).base().hypothesis.claims, params_from_search(load_study(path).search)
    )
