"""The one-page A4 report of an analyzed study: report.pdf (Typst) and report.md.

`write_report(study, summary, out_dir, ...)` computes the content once from the analysis
summary (interplay.report.content), then renders it to Typst, fitted to exactly one A4 page
(interplay.report.typst), and to Markdown (interplay.report.markdown).
"""

from interplay.report.content import ReportContent, build_content
from interplay.report.typst import Fit, pdf_pages
from interplay.report.write import ReportFiles, read_reflection, write_report

__all__ = [
    "Fit",
    "ReportContent",
    "ReportFiles",
    "build_content",
    "pdf_pages",
    "read_reflection",
    "write_report",
]
