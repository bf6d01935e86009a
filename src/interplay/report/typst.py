"""The report as Typst source, compiled to a PDF of exactly one A4 page.

The fit is deterministic: a fixed ladder of `Fit` steps, each showing a little less (whole
items only: fewer interaction rows, no claim statistics, user texts cut at a sentence with a
note that report.md has the rest) or drawing a little smaller. The first step whose PDF has
one page wins; the last step scales the page body down in Typst, which always fits.
"""

from __future__ import annotations

import dataclasses
import functools
import io
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import typst

from interplay.report import numbers as fmt
from interplay.report.content import CONTINUED, FigureRef, ReportContent, shorten
from interplay.report.findings import Line

logger = logging.getLogger(__name__)

A4_PT = (595.2756, 841.8898)


@dataclass(frozen=True)
class Fit:
    """How much of the content the page shows, and how large."""

    font_pt: float = 9.5
    figure_mm: float = 64.0
    figures: int = 4
    interactions: int = 3
    claims: int | None = None
    claim_detail: bool = True
    theory_all: bool = True
    theory_detail: bool = True
    observations: int | None = None
    limitations: int | None = None
    user_chars: int | None = None
    scale: bool = False


def fit_ladder() -> list[Fit]:
    """From the roomiest page to the tightest; each step changes one or two things."""
    steps: list[dict[str, Any]] = [
        {},
        {"theory_all": False},
        {"user_chars": 1400},
        {"interactions": 2},
        {"font_pt": 9.0},
        {"user_chars": 900},
        {"figure_mm": 56.0},
        {"font_pt": 8.5},
        {"claim_detail": False},
        {"observations": 2, "limitations": 6},
        {"figure_mm": 48.0, "theory_detail": False},
        {"interactions": 1, "user_chars": 500, "claims": 6},
        {"font_pt": 8.0, "figures": 2, "limitations": 4},
        {"user_chars": 250, "claims": 4, "observations": 1},
        {"figure_mm": 42.0, "font_pt": 7.5},
        {"scale": True},
    ]
    out, fit = [], Fit()
    for change in steps:
        fit = dataclasses.replace(fit, **change)
        out.append(fit)
    return out


def lit(text: str) -> str:
    """A Typst string literal: markup characters in user text stay plain text."""
    escaped = (
        text.replace("\\", "\\\\")
        .replace('"', '\\"')
        .replace("\n", "\\n")
        .replace("\r", "")
        .replace("\t", " ")
    )
    return f'"{escaped}"'


def render_typst(content: ReportContent, fit: Fit, figure_path: Callable[[FigureRef], str]) -> str:
    """The Typst source of the page: the template, then the body for this fit."""
    template = resources.files("interplay.report").joinpath("template.typ").read_text("utf-8")
    body: list[str] = [
        f"#show: report-setup.with(font-size: {fit.font_pt}pt)",
        f"#set document(title: {lit(content.title)})",
        f"#fit-page({'true' if fit.scale else 'false'})[",
        f"#title-block({lit(content.title)}, {lit(content.subtitle)}, "
        f"({', '.join(lit(m) for m in content.meta)},), {lit(content.design)})",
    ]
    body += _hypothesis(content, fit)
    body += _findings(content, fit)
    body += _figures(content, fit, figure_path)
    body += _reflection(content, fit)
    body += _limitations(content, fit)
    body.append("]")
    return template + "\n" + "\n".join(body) + "\n"


def _text(text: str, fit: Fit) -> list[str]:
    """User text as paragraphs, shortened at a sentence boundary when the fit asks."""
    cut = False
    if fit.user_chars is not None:
        text, cut = shorten(text, fit.user_chars)
        if len(text) > 2 * fit.user_chars:
            # A single sentence far over the budget: leave the whole text to report.md.
            return [f"#note({lit('The text is too long for this page: it is in report.md.')})"]
    paragraphs = [p.strip() for p in re.split(r"\n\s*\n", text) if p.strip()]
    out = [f"#par({lit(' '.join(p.split()))})" for p in paragraphs]
    if cut:
        out.append(f"#note({lit(CONTINUED)})")
    return out


def _line(line: Line, detail: bool = True) -> str:
    parts = []
    if line.tag:
        parts.append(f"#tag({lit(line.tag)})")
    if line.lead:
        parts.append(f"#strong({lit(line.lead + ':')})")
    parts.append(f"#{lit(line.text)}")
    if detail and line.detail:
        parts.append(f"#detail({lit(line.detail)})")
    return "- " + " ".join(parts)


def _more(shown: int, total: int, what: str) -> list[str]:
    if total <= shown:
        return []
    n = total - shown
    return [f"#note({lit(f'{n} more {fmt.noun(n, what)} in report.md.')})"]


def _hypothesis(content: ReportContent, fit: Fit) -> list[str]:
    out = ["= Hypothesis"]
    if content.hypothesis_text:
        out += _text(content.hypothesis_text, fit)
    elif not content.hypothesis_claims:
        out.append(f"#par({lit('No hypothesis was written before the runs.')})")
    claims = content.hypothesis_claims[: fit.claims] if fit.claims else content.hypothesis_claims
    if claims:
        listed = "; ".join(f"({i}) {c}" for i, c in enumerate(claims, start=1))
        out.append(f"#par[#strong({lit('Claims:')}) #{lit(listed + '.')}]")
        out += _more(len(claims), len(content.hypothesis_claims), "claim")
    out += [f"#note({lit(n)})" for n in content.hypothesis_notes]
    return out


def _findings(content: ReportContent, fit: Fit) -> list[str]:
    out = ["= Findings"]
    out += [_line(line) for line in content.best]
    claims = content.claims[: fit.claims] if fit.claims else content.claims
    out += [_line(line, fit.claim_detail) for line in claims]
    out += _more(len(claims), len(content.claims), "claim verdict")
    table = content.interactions
    if table.rows:
        rows = table.rows[: fit.interactions]
        cells = ", ".join(lit(h) for h in table.header)
        body = ",\n  ".join(", ".join(lit(c) for c in row) for row in rows)
        out += [
            f"#block(above: 0.6em, below: 0.3em, table(columns: {len(table.header)},",
            "  table.hline(stroke: 0.5pt),",
            f"  table.header({cells}),",
            "  table.hline(stroke: 0.4pt),",
            f"  {body},",
            "  table.hline(stroke: 0.5pt),",
            "))",
        ]
        out += _more(len(rows), len(table.rows), "pair")
    out.append(f"#note({lit(content.interactions_note + ' ' + content.noise)})")
    return out


def _figures(
    content: ReportContent, fit: Fit, figure_path: Callable[[FigureRef], str]
) -> list[str]:
    out = ["= Figures"]
    figures = content.figures[: fit.figures]
    if not figures:
        return [*out, f"#note({lit('No figure of the analysis was found.')})"]
    cells = []
    for f in figures:
        image = (
            f'image({lit(figure_path(f))}, width: 100%, height: {fit.figure_mm}mm, fit: "contain")'
        )
        cells.append(f"figure({image}, caption: {lit(f.caption)})")
    out.append(
        f"#grid(columns: (1fr, 1fr), column-gutter: 5mm, row-gutter: 3mm, {', '.join(cells)})"
    )
    out += _more(len(figures), len(content.figures), "figure")
    return out


def _reflection(content: ReportContent, fit: Fit) -> list[str]:
    out = ["= Reflection"]
    if content.reflection:
        out += _text(content.reflection, fit)
    else:
        out.append(
            f"#note({lit('No reflection was written (report.reflection in the study file).')})"
        )
    observations = (
        content.observations[: fit.observations] if fit.observations else content.observations
    )
    out += [_line(line) for line in observations]
    theory = (
        content.theory
        if fit.theory_all
        else [t for t in content.theory if t.tag != "not measurable here"]
    )
    out += [_line(line, fit.theory_detail) for line in theory]
    out += _more(
        len(observations) + len(theory),
        len(content.observations) + len(content.theory),
        "observation",
    )
    return out


def _limitations(content: ReportContent, fit: Fit) -> list[str]:
    items = content.limitations[: fit.limitations] if fit.limitations else content.limitations
    out = ["= Limitations"]
    out += [f"- #{lit(item)}" for item in items]
    out += _more(len(items), len(content.limitations), "limitation")
    return out


# ---------------------------------------------------------------- compiling


@functools.cache
def _fonts() -> typst.Fonts:
    """Typst's own fonts plus matplotlib's DejaVu: the same everywhere, so the fit is too."""
    import matplotlib

    ttf = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    return typst.Fonts(include_system_fonts=False, font_paths=[str(ttf)])


def compile_pdf(source: str, root: Path) -> bytes:
    """PDF bytes of a Typst source whose image paths are relative to `root`."""
    compiler = typst.Compiler(root=str(root), font_paths=_fonts(), ignore_system_fonts=True)
    data = compiler.compile(input=source.encode("utf-8"), format="pdf")
    assert isinstance(data, bytes)
    return data


def pdf_pages(data: bytes) -> list[tuple[float, float]]:
    """Width and height in points of each page of a PDF."""
    from pypdf import PdfReader

    reader = PdfReader(io.BytesIO(data))
    return [(float(page.mediabox.width), float(page.mediabox.height)) for page in reader.pages]


def fit_page(
    content: ReportContent, root: Path, figure_path: Callable[[FigureRef], str]
) -> tuple[str, bytes, Fit]:
    """The source and PDF of the first fit in the ladder that gives exactly one page."""
    ladder = fit_ladder()
    for i, fit in enumerate(ladder):
        source = render_typst(content, fit, figure_path)
        pdf = compile_pdf(source, root)
        pages = len(pdf_pages(pdf))
        if pages == 1:
            logger.info("the report fits one page at step %d of %d", i + 1, len(ladder))
            logger.debug("fit: %s", fit)
            return source, pdf, fit
        logger.debug("fit step %d gives %d pages", i + 1, pages)
    raise RuntimeError(f"the report does not fit one page even scaled ({pages} pages)")
