"""The report's content as plain data, chosen from the analysis summary once.

Typst and Markdown both render a `ReportContent`: the PDF shows as much of it as one A4
page holds (see interplay.report.typst), report.md shows all of it. Every number is written
by interplay.report.numbers, from the summary, test.json or the study file.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

from interplay.config import Claim, Study
from interplay.report.findings import (
    Line,
    Table,
    best_lines,
    claim_line,
    interactions_note,
    interactions_table,
    noise_line,
)
from interplay.report.header import (
    data_facts,
    data_line,
    dataset_classes,
    design_line,
    near_chance,
)
from interplay.report.observations import (
    limitations,
    measurable_first,
    observations,
    theory_line,
)
from interplay.report.theory import TheoryCheck, check_theory, param_roles

logger = logging.getLogger(__name__)

SECTIONS = ("Hypothesis", "Findings", "Figures", "Reflection", "Limitations")
CONTINUED = "(continued in report.md)"
PAIR_FIGURES = ("heatmap", "interaction")


@dataclass
class FigureRef:
    kind: str
    params: list[str]
    png: Path
    caption: str


@dataclass
class ReportContent:
    """Everything the report says, in reading order; the renderers only lay it out."""

    title: str
    subtitle: str
    meta: list[str]
    design: str
    hypothesis_text: str
    hypothesis_claims: list[str]
    hypothesis_notes: list[str]
    best: list[Line]
    claims: list[Line]
    claims_rule: str
    interactions: Table
    interactions_note: str
    noise: str
    figures: list[FigureRef]
    missing_figures: list[str]
    reflection: str
    observations: list[Line]
    theory: list[Line]
    limitations: list[str]
    checks: list[TheoryCheck] = field(default_factory=list)


def build_content(
    study: Study,
    summary: dict[str, Any],
    *,
    analysis_dir: Path,
    hypothesis: dict[str, Any] | None,
    test: dict[str, Any] | None,
    reflection: str,
    compute_s: float | None,
    raw: dict[str, Any] | None = None,
    today: date | None = None,
    num_classes: int | None = None,
) -> ReportContent:
    """Choose what the report says from the analysis summary and the study.

    Args:
        study: the study (its first-level resolution is enough: names, data, training).
        summary: summary.json of the analysis.
        analysis_dir: the folder summary.json's figure paths are relative to.
        hypothesis: hypothesis.json of the results folder, or None when none was recorded.
        test: test.json (test accuracy as a fraction), or None when not evaluated.
        reflection: the user's reflection text.
        compute_s: summed duration of all runs in seconds.
        raw: the study file's settings before placeholders are filled (StudyFile.raw), to
            tell which setting each param sets; None falls back to param names.
        today: the report's date.
        num_classes: the dataset's number of classes, for the chance level; None reads it
            from the study's data section (nothing is decoded).

    Returns:
        The content, complete; renderers decide how much of it fits the page.
    """
    metric = summary.get("metric") or {}
    design = summary.get("design") or {}
    names = [p["name"] for p in design.get("params") or []]
    roles = param_roles(names, raw)
    checks = check_theory(summary, roles)
    record = _hypothesis_record(study, hypothesis)
    claims = [claim_line(item, summary) for item in (summary.get("claims") or {}).get("items", [])]
    figures, missing = _figures(study.report.figures, summary, analysis_dir)
    facts = data_facts(study.data, num_classes or dataset_classes(study.data))
    chance = near_chance(summary, facts)
    return ReportContent(
        title=study.report.title or study.name,
        subtitle=study.description,
        meta=_meta(study, metric, today or date.today(), data_line(study.data, facts)),
        design=design_line(study, design, compute_s),
        hypothesis_text=str(record.get("text") or "").strip(),
        hypothesis_claims=_claim_texts(record.get("claims") or [], metric.get("name", "")),
        hypothesis_notes=_hypothesis_notes(hypothesis, record),
        best=best_lines(summary, test, chance),
        claims=claims,
        claims_rule=str((summary.get("claims") or {}).get("rule", "")),
        interactions=interactions_table(summary),
        interactions_note=interactions_note(summary),
        noise=noise_line(summary),
        figures=figures,
        missing_figures=missing,
        reflection=reflection.strip(),
        observations=observations(summary, checks, chance),
        theory=[theory_line(c) for c in measurable_first(checks)],
        limitations=limitations(study, summary, test, hypothesis, facts, chance),
        checks=checks,
    )


def shorten(text: str, chars: int) -> tuple[str, bool]:
    """Whole sentences of `text` up to about `chars` characters; True when some were left out.

    The first sentence is always kept whole, however long: a sentence is never cut.
    """
    if len(text) <= chars:
        return text, False
    paragraphs = [p.strip() for p in re.split(r"\n\s*\n", text.strip()) if p.strip()]
    kept: list[list[str]] = []
    used = 0
    for paragraph in paragraphs:
        current: list[str] = []
        for sentence in re.split(r"(?<=[.!?])\s+", paragraph):
            if used and used + len(sentence) > chars:
                kept.append(current)
                return "\n\n".join(" ".join(p) for p in kept if p), True
            current.append(sentence)
            used += len(sentence) + 1
        kept.append(current)
    return text, False


# ---------------------------------------------------------------- header


def _meta(study: Study, metric: dict[str, Any], today: date, data: str) -> list[str]:
    mode = metric.get("mode", "final")
    when = {
        "final": "final epoch",
        "fixed epoch": f"epoch {metric.get('epoch')}",
        "last common epoch": f"epoch {metric.get('epoch')} (last one every run reached)",
    }.get(mode, mode)
    label = metric.get("label", metric.get("name", "metric"))
    unit = f" ({metric['unit']})" if metric.get("unit") else ""
    return [f"{today.isoformat()}", data, f"Metric: {label}{unit}, {when}"]


# ---------------------------------------------------------------- hypothesis


def _hypothesis_record(study: Study, hypothesis: dict[str, Any] | None) -> dict[str, Any]:
    if hypothesis is not None:
        return hypothesis
    return study.hypothesis.model_dump(mode="json")


def _claim_texts(claims: list[dict[str, Any]], metric: str) -> list[str]:
    from interplay.analysis.claims import claim_text

    out = []
    for raw in claims:
        try:
            out.append(claim_text(Claim.model_validate(raw), metric))
        except ValueError:
            out.append(str(raw))
    return out


def _hypothesis_notes(hypothesis: dict[str, Any] | None, shown: dict[str, Any]) -> list[str]:
    written = bool(str(shown.get("text") or "").strip() or shown.get("claims"))
    if hypothesis is None:
        if not written:
            return []
        return ["No hypothesis was recorded before the first run; shown as in the study file."]
    recorded = str(hypothesis.get("recorded_at", "?"))[:10]
    edits = hypothesis.get("edits") or []
    late = [e for e in edits if e.get("after_results")]
    # An empty record is no hypothesis: "as recorded" would claim one was written.
    notes = [f"As recorded on {recorded}, before the first run."] if written else []
    if late:
        when = ", ".join(sorted({str(e.get("at", "?"))[:10] for e in late}))
        notes.append(
            f"The hypothesis was edited after results existed ({when}); the edit is in "
            "hypothesis.json and is not used here."
        )
    elif edits:
        notes.append("It was edited before any result existed; the first version is shown.")
    return notes


# ---------------------------------------------------------------- figures


def _figures(
    kinds: Sequence[str], summary: dict[str, Any], analysis_dir: Path
) -> tuple[list[FigureRef], list[str]]:
    listed = summary.get("figures") or []
    top = (summary.get("interactions") or [None])[0]
    # The param whose curves are shown: the most important one. In a search the spans of
    # level means are confounded, so fANOVA's importance ranks the params there.
    shares = {
        p["param"]: p.get("importance") or 0.0
        for p in (summary.get("importance") or {}).get("params") or []
    }

    def weight(m: dict[str, Any]) -> float:
        return float(shares.get(m["param"], 0.0) if shares else m.get("range") or 0.0)

    mains = sorted(summary.get("main_effects") or [], key=lambda m: -weight(m))
    out, missing = [], []
    for kind in kinds:
        if kind in PAIR_FIGURES and top is not None:
            wanted = set(top["params"])
        elif kind == "curves" and mains:
            wanted = {mains[0]["param"]}
        else:
            wanted = None
        found = next(
            (
                f
                for f in listed
                if f.get("kind") == kind and (wanted is None or set(f.get("params", [])) == wanted)
            ),
            None,
        )
        if found is None or not (analysis_dir / found["png"]).is_file():
            logger.warning("figure %r is not in the analysis; the report goes without it", kind)
            missing.append(kind)
            continue
        out.append(
            FigureRef(
                kind,
                list(found.get("params", [])),
                analysis_dir / found["png"],
                str(found.get("caption", "")),
            )
        )
    return out, missing
