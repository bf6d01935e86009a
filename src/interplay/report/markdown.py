"""The report as Markdown: the whole content, figures linked as files next to it."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from interplay.report.content import ReportContent
from interplay.report.findings import Line, Table

logger = logging.getLogger(__name__)


def render_markdown(content: ReportContent, out_dir: Path) -> str:
    """Markdown of every item of `content`; figure links are relative to `out_dir`."""
    out = [f"# {content.title}", ""]
    if content.subtitle:
        out += [content.subtitle, ""]
    out += [" · ".join(content.meta), "", content.design, ""]

    out += ["## Hypothesis", ""]
    if content.hypothesis_text:
        out += [content.hypothesis_text, ""]
    elif not content.hypothesis_claims:
        out += ["No hypothesis was written before the runs.", ""]
    if content.hypothesis_claims:
        out += ["Claims:", ""]
        out += [f"{i}. {c}" for i, c in enumerate(content.hypothesis_claims, start=1)]
        out.append("")
    for note in content.hypothesis_notes:
        out += [f"*{note}*", ""]

    out += ["## Findings", ""]
    out += [_line(line) for line in content.best] + [""]
    if content.claims:
        out += [_line(line) for line in content.claims]
        out += ["", f"*Verdict rule: {content.claims_rule}.*", ""]
    if content.interactions.rows:
        out += [*_table(content.interactions), ""]
    out += [f"*{content.interactions_note} {content.noise}*", ""]

    out += ["## Figures", ""]
    for i, figure in enumerate(content.figures, start=1):
        path = Path(os.path.relpath(figure.png, out_dir)).as_posix()
        out += [f"![Figure {i}: {figure.kind}]({path})", "", f"*Figure {i}: {figure.caption}*", ""]
    if content.missing_figures:
        out += [f"*Not in the analysis: {', '.join(content.missing_figures)}.*", ""]

    out += ["## Reflection", ""]
    if content.reflection:
        out += [content.reflection, ""]
    else:
        out += ["*No reflection was written (report.reflection in the study file).*", ""]
    out += [_line(line) for line in content.observations + content.theory] + [""]

    out += ["## Limitations", ""]
    out += [f"- {item}" for item in content.limitations] + [""]
    return "\n".join(out)


def _line(line: Line) -> str:
    parts = []
    if line.tag:
        parts.append(f"`{line.tag}`")
    if line.lead:
        parts.append(f"**{line.lead}:**")
    parts.append(line.text)
    if line.detail:
        parts.append(line.detail)
    return "- " + " ".join(parts)


def _table(table: Table) -> list[str]:
    def row(cells: list[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    return [row(table.header), row(["---"] * len(table.header)), *[row(r) for r in table.rows]]
