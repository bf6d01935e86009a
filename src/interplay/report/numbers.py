"""How every number of the report is written: one place, so tests format the same way.

Metric values, sds and effects are in the metric's unit (percent points for accuracies) and
shown with two decimals; partial eta squared and Friedman's H with two; F with one; p with
three significant digits (below 0.001 as "< 0.001"); intervals as "[low, high]".
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

from interplay.analysis.table import format_level
from interplay.words import noun, plural

logger = logging.getLogger(__name__)

MISSING = "n/a"
__all__ = ["noun", "plural"]  # re-exported: the report formats counts through this module


def _finite(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


def value(x: Any) -> str:
    """A metric value, sd or effect in the metric's unit: 91.23."""
    return f"{x:.2f}" if _finite(x) else MISSING


def signed(x: Any) -> str:
    """An effect whose sign matters: +1.20, -0.35."""
    return f"{x:+.2f}" if _finite(x) else MISSING


def share(x: Any) -> str:
    """A share between 0 and 1 (partial eta squared, H, importance): 0.42."""
    return f"{x:.2f}" if _finite(x) else MISSING


def stat(x: Any) -> str:
    """A test statistic (F, t): 44.8."""
    return f"{x:.1f}" if _finite(x) else MISSING


def df(x: Any) -> str:
    """Degrees of freedom: whole numbers as such, Welch's fractional ones with one decimal."""
    if not _finite(x):
        return MISSING
    return str(int(x)) if float(x) == int(x) else f"{x:.1f}"


def p_value(p: Any) -> str:
    """'p = 0.0123' or 'p < 0.001'."""
    if not _finite(p):
        return f"p {MISSING}"
    return "p < 0.001" if p < 0.001 else f"p = {p:.3g}"


def ratio(x: Any) -> str:
    """How many times one size is another: 3.1x."""
    return f"{x:.1f}x" if _finite(x) else MISSING


def rank(x: Any) -> str:
    """A rank correlation: +0.50."""
    return f"{x:+.2f}" if _finite(x) else MISSING


def interval(ci: Sequence[Any] | None, fmt: Any = value) -> str:
    """A 95% interval, '[1.98, 3.05]', each end written by `fmt`."""
    if ci is None or len(ci) != 2 or not (_finite(ci[0]) and _finite(ci[1])):
        return ""
    return f"[{fmt(ci[0])}, {fmt(ci[1])}]"


def with_interval(x: Any, ci: Sequence[Any] | None, fmt: Any = value) -> str:
    """'2.60 [1.98, 3.05]', or the value alone when there is no interval."""
    shown = interval(ci, fmt)
    return f"{fmt(x)} {shown}" if shown else fmt(x)


def with_upper(x: Any, ci: Sequence[Any] | None, fmt: Any = value) -> str:
    """'1.25 (≤ 4.08)': a size that cannot be negative, with the upper end of its interval.

    Noise alone lifts such a size (a range of means, a largest |residual|, a variance share)
    and the lower end of its bootstrap interval above zero, so that end would suggest an
    effect the test may not show; the upper end still bounds how large the effect can be.
    """
    if ci is None or len(ci) != 2 or not _finite(ci[1]):
        return fmt(x)
    return f"{fmt(x)} (≤ {fmt(ci[1])})"


def span(low: Any, high: Any, word: str, words: str | None = None) -> str:
    """'2 seeds', '1 seed', or '1 to 2 seeds' when a count varies."""
    if low == high:
        return plural(int(low), word, words)
    return f"{low} to {high} {words or word + 's'}"


def percent(x: Any) -> str:
    """A share as a whole percentage where it is one: 0.9 -> '90%', 0.125 -> '12.5%'."""
    if not _finite(x):
        return MISSING
    shown = f"{100 * x:.1f}".removesuffix(".0")
    return f"{shown}%"


def level(x: Any) -> str:
    """A param level as the figures label it: 1e-3, 0.5, batch."""
    return format_level(x)


def fraction_to_points(x: Any, scale: float = 100.0) -> float | None:
    """A fraction (as test.json stores accuracy) in the report's unit."""
    return float(x) * scale if _finite(x) else None


def duration(seconds: Any) -> str:
    """Compute time: 45 s, 12.5 min, 3.2 h."""
    if not _finite(seconds):
        return MISSING
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"
