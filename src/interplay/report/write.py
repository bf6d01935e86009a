"""`write_report`: report.pdf (one A4 page) and report.md from one computed content."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any

from interplay.config import Study
from interplay.errors import ConfigError
from interplay.report.content import FigureRef, ReportContent, build_content
from interplay.report.markdown import render_markdown
from interplay.report.typst import Fit, fit_page

if TYPE_CHECKING:
    from interplay.studyfile import StudyFile

logger = logging.getLogger(__name__)


# Suffixes that make a one-word report.reflection a file name rather than the text itself.
REFLECTION_FILES = (".md", ".markdown", ".txt", ".typ")


@dataclass
class ReportFiles:
    """What write_report wrote, the content both files carry, and the fit the page took."""

    pdf: Path
    md: Path
    content: ReportContent
    typ: Path
    fit: Fit


def write_report(
    study: Study,
    summary: dict[str, Any],
    out_dir: Path,
    *,
    analysis_dir: Path,
    hypothesis: dict[str, Any] | None,
    test: dict[str, Any] | None,
    reflection: str,
    compute_s: float | None,
    study_dir: Path | None = None,
    study_file: StudyFile | None = None,
    today: date | None = None,
    num_classes: int | None = None,
) -> ReportFiles:
    """Write out_dir/report.pdf (exactly one A4 page), report.md and report.typ.

    Args:
        study: the study (first-level resolution: names, data and training settings).
        summary: the analysis summary (summary.json, schema interplay.analysis/1).
        out_dir: where the report files go.
        analysis_dir: the folder the summary's figure paths are relative to.
        hypothesis: hypothesis.json of the study's results folder, or None.
        test: test.json of the best configuration, or None when it was not evaluated.
        reflection: the user's reflection; a file name is read from `study_dir`.
        compute_s: total run time of the study's runs in seconds, or None.
        study_dir: the study file's folder, where a reflection file lives.
        study_file: the study file before its placeholders are filled; it tells which
            setting each param sets (else param names are used to spot theory pairs).
        today: the report's date (default: today).
        num_classes: the dataset's number of classes, for the chance level of accuracies;
            None reads it from the study's data section.

    Returns:
        The files written and the content they carry.
    """
    out_dir = Path(out_dir)
    analysis_dir = Path(analysis_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    content = build_content(
        study,
        summary,
        analysis_dir=analysis_dir,
        hypothesis=hypothesis,
        test=test,
        reflection=read_reflection(reflection or study.report.reflection, study_dir),
        compute_s=compute_s,
        raw=study_file.raw if study_file is not None else None,
        today=today,
        num_classes=num_classes,
    )
    # Typst reads images only below its root: the folder holding the report and analysis.
    root = Path(os.path.commonpath([out_dir.resolve(), analysis_dir.resolve()]))
    typ = out_dir / "report.typ"

    here = root == out_dir.resolve()

    def figure_path(figure: FigureRef) -> str:
        # Relative to report.typ when the figures are below it; otherwise root-relative,
        # which `typst compile --root ROOT report.typ` understands as well.
        inside = figure.png.resolve().relative_to(root).as_posix()
        return inside if here else "/" + inside

    source, pdf, fit = fit_page(content, root, figure_path)
    typ.write_text(source, encoding="utf-8")
    pdf_path = out_dir / "report.pdf"
    pdf_path.write_bytes(pdf)
    md = out_dir / "report.md"
    md.write_text(render_markdown(content, out_dir), encoding="utf-8")
    logger.info("report written: %s and %s", pdf_path, md)
    return ReportFiles(pdf=pdf_path, md=md, content=content, typ=typ, fit=fit)


def read_reflection(reflection: str, study_dir: Path | None) -> str:
    """The reflection text, or the text of the file it names next to the study file."""
    text = reflection.strip()
    if not text or "\n" in text or study_dir is None:
        return text
    candidate = Path(study_dir) / text
    if candidate.is_file():
        return candidate.read_text(encoding="utf-8").strip()
    if " " not in text and Path(text).suffix.lower() in REFLECTION_FILES:
        # A file name would otherwise land in the report as the reflection itself.
        raise ConfigError(
            f"report.reflection: {candidate} not found; write that file next to the study "
            "file, or put the reflection's text itself in report.reflection"
        )
    return text
