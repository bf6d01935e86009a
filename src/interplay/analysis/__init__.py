"""Statistics of a study: which runs compare, ANOVA or importance, interactions, claims.

`analyze(table, params, method=...)` runs everything on the tidy results table (one row per
run; columns in interplay.analysis.table) and, given an output folder, writes results.csv,
summary.json (layout in interplay.analysis.summary) and the figures.
"""

from interplay.analysis.claims import ClaimResult, check_claims
from interplay.analysis.summary import AnalysisResult, analyze, to_json
from interplay.analysis.synthetic import simulate_table
from interplay.analysis.table import (
    MetricInfo,
    ParamInfo,
    Prepared,
    TableError,
    metric_info,
    params_from_search,
    prepare,
)

__all__ = [
    "AnalysisResult",
    "ClaimResult",
    "MetricInfo",
    "ParamInfo",
    "Prepared",
    "TableError",
    "analyze",
    "check_claims",
    "metric_info",
    "params_from_search",
    "prepare",
    "simulate_table",
    "to_json",
]
