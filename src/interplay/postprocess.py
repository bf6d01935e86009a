"""`interplay analyze` and `interplay report`: from a study's stored runs to numbers and a page."""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from interplay.config import Claim
from interplay.errors import ConfigError, UserError
from interplay.study import StudyPaths, record_hypothesis, results_dir
from interplay.studyfile import StudyFile, load_study

if TYPE_CHECKING:
    from interplay.analysis.summary import AnalysisResult

logger = logging.getLogger(__name__)


def recorded_hypothesis(paths: StudyPaths) -> dict[str, Any] | None:
    if not paths.hypothesis.exists():
        return None
    return dict(json.loads(paths.hypothesis.read_text()))


def log_to_parent(paths: StudyPaths, files: list[Path], folder: str | None) -> None:
    """Attach files to the study's MLflow parent run, leaving its status as it is."""
    from interplay.tracking import MLflowSink

    if not paths.mlflow.exists():
        logger.warning("no MLflow parent run recorded in %s; files not logged", paths.root)
        return
    info = json.loads(paths.mlflow.read_text())
    sink = MLflowSink(info["tracking_uri"], info["experiment"], run_id=info["parent_run_id"])
    for path in files:
        sink.log_artifact(path, folder)


def judged_claims(study_file: StudyFile, paths: StudyPaths) -> list[Claim]:
    """The claims as recorded before the first run, not as possibly edited since.

    Recorded claims that no longer fit the study (an old typo, say) give way to the claims as
    now written, with a warning; the report then shows the hypothesis as edited.
    """
    from interplay.analysis.claims import check_claims
    from interplay.analysis.table import params_from_search

    current = study_file.base().hypothesis.claims
    recorded = recorded_hypothesis(paths)
    if recorded is None:
        return list(current)
    claims = [Claim.model_validate(c) for c in recorded["claims"]]
    try:
        check_claims(claims, params_from_search(study_file.search))
    except UserError as err:
        logger.warning(
            "the claims recorded before the first run do not fit the study (%s): "
            "judging the claims as now written",
            err,
        )
        record_hypothesis(study_file, paths, has_results=True)
        return list(current)
    if claims != list(current):
        # Claims are judged as written before any result (pre-registered); an edit made after
        # seeing results is recorded and flagged in the report, never judged in their place.
        logger.warning(
            "the claims in the study file differ from those recorded at %s, before the first "
            "run; the recorded claims are judged and the report notes the edit (start a new "
            "study with --new to test the new claims)",
            recorded.get("recorded_at", "the first run"),
        )
        record_hypothesis(study_file, paths, has_results=True, quiet=True)
    return claims


def analyze_study(
    study_file: StudyFile,
    paths: StudyPaths,
    *,
    metric: str | None = None,
    epoch: int | str | None = None,
    alpha: float = 0.05,
    min_effect: float | None = None,
) -> AnalysisResult:
    """Analyze a study's runs into `results/<study>/analysis/` and log it to MLflow."""
    from interplay.analysis.summary import analyze as _analyze
    from interplay.analysis.table import params_from_search
    from interplay.results import load_optuna_study, results_table

    table = results_table(paths)
    if not study_file.search.params:
        raise UserError("search.params is empty: a study needs params to analyze")
    design = str(load_optuna_study(paths).user_attrs.get("design", study_file.search.method))
    claims = judged_claims(study_file, paths)
    with warnings.catch_warnings():
        # scipy warns of precision loss when replicates are identical; the analysis reports
        # such cases itself (a constant metric, no variance), so the warning adds nothing.
        warnings.filterwarnings("ignore", category=RuntimeWarning, module="scipy")
        result = _analyze(
            table,
            params_from_search(study_file.search),
            method=design,
            metric=metric or study_file.search.metric,
            epoch=epoch,  # type: ignore[arg-type]
            claims=claims,
            alpha=alpha,
            min_effect=min_effect,
            out_dir=paths.analysis,
        )
    files = [paths.analysis / "results.csv", paths.analysis / "summary.json"]
    log_to_parent(paths, files, "analysis")
    figures = sorted((paths.analysis / "figures").glob("*"))
    log_to_parent(paths, figures, "analysis/figures")
    return result


def load_summary(paths: StudyPaths) -> dict[str, Any]:
    path = paths.analysis / "summary.json"
    if not path.exists():
        raise UserError(f"no analysis in {paths.analysis}: run `interplay analyze STUDY` first")
    return dict(json.loads(path.read_text()))


def reflection_text(study_file: StudyFile) -> str:
    """The user's reflection: text in the study file, or a file named there, next to it."""
    from interplay.report.write import read_reflection

    folder = study_file.path.parent if study_file.path is not None else None
    return read_reflection(study_file.base().report.reflection, folder)


def class_count(study_file: StudyFile) -> int | None:
    from interplay.summary import data_shape

    try:
        return data_shape(study_file.base().data)[1]
    except UserError:
        return None


def analysis_choices(summary: dict[str, Any]) -> dict[str, Any]:
    """The metric, epoch, alpha and min_effect an earlier analysis was asked for."""
    metric = summary.get("metric") or {}
    mode = metric.get("mode")
    epoch: int | str | None = None
    if mode == "last common epoch":
        epoch = "common"
    elif mode == "fixed epoch" and metric.get("epoch") is not None:
        epoch = int(metric["epoch"])
    return {
        "metric": metric.get("name"),
        "epoch": epoch,
        "alpha": float(metric.get("alpha") or 0.05),
        "min_effect": metric.get("min_effect"),
    }


def report_study(study_file: StudyFile, paths: StudyPaths, *, test: bool = True) -> Any:
    """Write report.pdf and report.md for an analyzed study and log both to MLflow."""
    from interplay.report import write_report
    from interplay.results import results_table
    from interplay.testset import evaluate_best

    summary_path = paths.analysis / "summary.json"
    if not summary_path.exists():
        logger.info("no analysis of %s yet: analyzing first", study_file.name)
        analyze_study(study_file, paths)
    elif summary_path.stat().st_mtime < paths.journal.stat().st_mtime:
        logger.info("runs were added since the last analysis: analyzing again, as before")
        analyze_study(study_file, paths, **analysis_choices(load_summary(paths)))
    summary = load_summary(paths)
    best = summary.get("best")
    test_record = evaluate_best(study_file, paths, best) if test and best else None
    table = results_table(paths)
    files = write_report(
        study_file.base(),
        summary,
        paths.root,
        analysis_dir=paths.analysis,
        hypothesis=recorded_hypothesis(paths),
        test=test_record,
        reflection=reflection_text(study_file),
        compute_s=float(table["duration_s"].sum()),
        study_dir=study_file.path.parent if study_file.path else None,
        study_file=study_file,
        num_classes=class_count(study_file),
    )
    log_to_parent(paths, [files.pdf, files.md, files.typ], "report")
    return files


def open_study(
    path: Path, sets: list[str], budget: str | None, out: Path | None
) -> tuple[StudyFile, StudyPaths]:
    from interplay.study import recorded_spec_changes, training_spec

    study_file = load_study(path, sets, budget)
    paths = results_dir(study_file, out)
    # The analysis and report describe the runs, so they read the study with the settings the
    # runs were trained with; other --budget or --set values would misdescribe them.
    changes = recorded_spec_changes(paths, training_spec(study_file))
    if changes:
        listed = "\n  ".join(changes)
        raise ConfigError(
            f"the study in {paths.root} ran with other settings:\n  {listed}\n"
            "Pass the --budget and --set values the runs used"
        )
    return study_file, paths
