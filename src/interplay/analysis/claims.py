"""Hypothesis claims from the study file, each judged with the statistic behind it.

The rule (also written into summary.json):
- supported: the claim's test is significant at alpha, and where the claim has a direction
  (an increasing or decreasing effect, a level that beats another) the estimate has it;
- not supported: the test is significant in the opposite direction, or the effect's 95%
  interval lies below `min_effect` (the smallest effect that matters, 1 point for
  accuracies), so an effect worth having is excluded;
- inconclusive: anything else, including a test that cannot be run (no replicates, too few
  runs), which the verdict's reason names.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd
from scipy import stats

from interplay.analysis.anova import AnovaResult, AnovaTerm
from interplay.analysis.effects import MainEffect, PairEffect
from interplay.analysis.importance import PairStrength
from interplay.analysis.table import ParamInfo, Prepared, format_level, level_index
from interplay.config import Claim
from interplay.errors import ConfigError

logger = logging.getLogger(__name__)

Verdict = Literal["supported", "not supported", "inconclusive"]

RULE = (
    "supported: the test is significant at alpha and the estimate has the claimed direction; "
    "not supported: significant in the opposite direction, or the effect's 95% interval lies "
    "below min_effect; inconclusive: otherwise, including tests that cannot be run"
)


@dataclass
class ClaimResult:
    index: int
    kind: str
    text: str
    verdict: Verdict
    reason: str
    method: str
    statistic: dict[str, Any] = field(default_factory=dict)


@dataclass
class Evidence:
    """What the analysis found, as the claims need it."""

    prepared: Prepared
    anova: AnovaResult | None
    mains: dict[str, MainEffect]
    pairs: dict[frozenset[str], PairEffect]
    strengths: dict[frozenset[str], PairStrength]


def check_claims(claims: list[Claim], params: list[ParamInfo]) -> None:
    """Raise ConfigError when a claim names a param or level the study does not have."""
    known = {p.name: p for p in params}
    for i, claim in enumerate(claims):
        where = f"hypothesis.claims[{i}]"
        compared = list(claim.params or []) + ([claim.param] if claim.param else [])
        for name in compared + list((claim.within or {}).keys()):
            if name not in known:
                raise ConfigError(
                    f"{where}: {name!r} is not a search param (params: {', '.join(known)})"
                )
        if claim.kind == "interaction" and claim.params and claim.params[0] == claim.params[1]:
            raise ConfigError(f"{where}: an interaction needs two different params")
        for name in compared:
            own = known[name].levels
            if own is not None and len(own) < 2:
                raise ConfigError(
                    f"{where}: {name} has one level, so nothing can differ across it; give "
                    f"search.params.{name} two or more levels or drop the claim"
                )
        checks = []
        if claim.kind == "beats" and claim.param:
            checks = [(claim.param, claim.level), (claim.param, claim.other)]
        checks += list((claim.within or {}).items())
        for name, value in checks:
            p = known[name]
            if p.levels is not None and level_index(p, value) < 0:
                levels = ", ".join(format_level(v) for v in p.levels)
                raise ConfigError(f"{where}: {value!r} is not a level of {name} ({levels})")


def claim_text(claim: Claim, metric: str) -> str:
    if claim.kind == "interaction":
        a, b = claim.params or ["?", "?"]
        return f"{a} and {b} interact"
    if claim.kind == "effect":
        if claim.direction == "any":
            return f"{claim.param} affects {metric}"
        return f"{metric} {claim.direction[:-3]}es with {claim.param}"
    within = ", ".join(f"{k}={format_level(v)}" for k, v in (claim.within or {}).items())
    tail = f" (within {within})" if within else ""
    level, other = format_level(claim.level), format_level(claim.other)
    return f"{claim.param}={level} beats {claim.param}={other}{tail}"


def evaluate_claims(
    claims: list[Claim], evidence: Evidence, *, alpha: float, min_effect: float | None
) -> list[ClaimResult]:
    """Judge each claim; see the module docstring for the rule."""
    check_claims(claims, evidence.prepared.params)
    out = []
    for i, claim in enumerate(claims):
        text = claim_text(claim, evidence.prepared.metric.name)
        if claim.within and claim.kind != "beats":
            # TODO: restricting an effect or interaction claim means refitting the model on
            # the subset; until then only beats claims honour `within`.
            logger.warning("claim %d: 'within' applies to beats claims only; ignored", i)
        if claim.kind == "interaction":
            verdict, reason, method, stat = _interaction(claim, evidence, alpha, min_effect)
        elif claim.kind == "effect":
            verdict, reason, method, stat = _effect(claim, evidence, alpha, min_effect)
        else:
            verdict, reason, method, stat = _beats(claim, evidence, alpha, min_effect)
        out.append(ClaimResult(i, claim.kind, text, verdict, reason, method, stat))
        logger.info("claim %d (%s): %s; %s", i, text, verdict, reason)
    return out


Judged = tuple[Verdict, str, str, dict[str, Any]]


def _small(ci: tuple[float, float] | None, min_effect: float | None) -> bool:
    return ci is not None and min_effect is not None and max(abs(ci[0]), abs(ci[1])) < min_effect


def _interaction(claim: Claim, ev: Evidence, alpha: float, min_effect: float | None) -> Judged:
    a, b = claim.params or ["", ""]
    method = ev.anova.method if ev.anova else "no ANOVA"
    term = ev.anova.term(a, b) if ev.anova else None
    stat: dict[str, Any] = {}
    pair = ev.pairs.get(frozenset((a, b)))
    strength = ev.strengths.get(frozenset((a, b)))
    size_ci = None
    if pair is not None:
        stat |= {
            "contrast": pair.contrast,
            "contrast_ci": pair.contrast_ci,
            "contrast_levels": pair.contrast_levels,
            "max_abs_residual": pair.max_abs_residual,
            "max_abs_residual_ci": pair.max_abs_residual_ci,
        }
        size_ci = pair.max_abs_residual_ci
    if strength is not None:
        stat |= {"h": strength.h, "h_size": strength.size, "h_size_ci": strength.size_ci}
        size_ci = strength.size_ci
    if term is None or term.p is None:
        why = _untested_why(ev, term, a, b)
        return "inconclusive", f"the interaction cannot be tested: {why}", method, stat
    stat |= _f_test_stat(term)
    if term.p < alpha:
        return "supported", f"interaction F test p = {term.p:.3g} < {alpha}", method, stat
    if _small(size_ci, min_effect):
        assert size_ci is not None
        reason = (
            f"p = {term.p:.3g} and the interaction is at most {size_ci[1]:.2g} "
            f"(95% interval), below min_effect {min_effect}"
        )
        return "not supported", reason, method, stat
    return (
        "inconclusive",
        f"p = {term.p:.3g} >= {alpha}; a relevant size is not excluded",
        method,
        stat,
    )


def _untested_why(ev: Evidence, term: AnovaTerm | None, *names: str) -> str:
    """Why the ANOVA has no test of these params' term."""
    why = (ev.anova.why_not(*names) if ev.anova else None) or "no test could be run"
    if ev.anova and term is not None:
        why = "; ".join(ev.anova.notes) or why
    return why


def _f_test_stat(term: AnovaTerm) -> dict[str, Any]:
    """The F test of an ANOVA term, as the claim's statistic records it."""
    return {
        "F": term.f,
        "df": term.df,
        "df_resid": term.df_resid,
        "p": term.p,
        "partial_eta2": term.partial_eta2,
        "partial_eta2_ci": term.partial_eta2_ci,
    }


def _effect(claim: Claim, ev: Evidence, alpha: float, min_effect: float | None) -> Judged:
    name = claim.param or ""
    method = ev.anova.method if ev.anova else "no ANOVA"
    term = ev.anova.term(name) if ev.anova else None
    main = ev.mains.get(name)
    stat: dict[str, Any] = {}
    if main is not None:
        stat |= {
            "levels": main.labels,
            "level_means": main.means,
            "range": main.range,
            "range_ci": main.range_ci,
            "trend_spearman": main.trend,
        }
    if claim.direction != "any":
        method += "; direction: sign of the Spearman correlation of level means with level order"
    if term is None or term.p is None:
        why = _untested_why(ev, term, name)
        return "inconclusive", f"the effect cannot be tested: {why}", method, stat
    stat |= _f_test_stat(term)
    range_ci = main.range_ci if main else None
    significant = term.p < alpha
    if claim.direction == "any":
        if significant:
            return "supported", f"main effect p = {term.p:.3g} < {alpha}", method, stat
    else:
        sign = 1.0 if claim.direction == "increasing" else -1.0
        trend = main.trend if main else None
        if significant and trend is not None and trend * sign > 0:
            reason = f"p = {term.p:.3g} < {alpha} and the level means are {claim.direction}"
            return "supported", reason + f" (Spearman {trend:+.2f})", method, stat
        if significant and trend is not None and trend * sign < 0:
            reason = f"p = {term.p:.3g} < {alpha} but the level means trend the other way"
            return "not supported", reason + f" (Spearman {trend:+.2f})", method, stat
        if significant:
            reason = f"p = {term.p:.3g} < {alpha} but the level means show no monotone trend"
            return "inconclusive", reason, method, stat
    if _small(range_ci, min_effect):
        assert range_ci is not None
        reason = (
            f"p = {term.p:.3g}; the level means span at most {range_ci[1]:.2g} (95% interval), "
            f"below min_effect {min_effect}"
        )
        return "not supported", reason, method, stat
    return "inconclusive", f"p = {term.p:.3g}; a relevant effect is not excluded", method, stat


def _beats(claim: Claim, ev: Evidence, alpha: float, min_effect: float | None) -> Judged:
    prepared = ev.prepared
    runs = prepared.runs
    mask = np.ones(len(runs), dtype=bool)
    for name, value in (claim.within or {}).items():
        mask &= _at(prepared, runs, name, value)
    p = prepared.param(claim.param or "")
    x = runs.loc[mask & _at(prepared, runs, p.name, claim.level), "value"].to_numpy(dtype=float)
    z = runs.loc[mask & _at(prepared, runs, p.name, claim.other), "value"].to_numpy(dtype=float)
    method = (
        f"Welch t-test between the runs at {p.name}={format_level(claim.level)} and at "
        f"{p.name}={format_level(claim.other)}, pooled over the other params"
    )
    better = 1.0 if prepared.metric.direction == "maximize" else -1.0
    stat: dict[str, Any] = {"n_level": len(x), "n_other": len(z)}
    within = ", ".join(f"{k}={format_level(v)}" for k, v in (claim.within or {}).items())
    if within:
        stat["n_within"] = int(mask.sum())
    if within and not mask.any():
        # A search samples a range, so a `within` value is rarely hit exactly: say so rather
        # than leave the verdict unexplained.
        ranged = [k for k in claim.within or {} if prepared.param(k).levels is None]
        hint = (
            f"; {', '.join(ranged)} is searched over a range, so no run sits exactly at that "
            "value (use a grid, or drop `within`)"
            if ranged
            else ""
        )
        return "inconclusive", f"no compared run matches within {within}{hint}", method, stat
    if len(x) < 2 or len(z) < 2:
        where = f" within {within} ({int(mask.sum())} runs there)" if within else ""
        reason = (
            f"fewer than two runs at a level{where}: {len(x)} at {p.name}="
            f"{format_level(claim.level)}, {len(z)} at {p.name}={format_level(claim.other)}; "
            "no test"
        )
        return "inconclusive", reason, method, stat
    diff = float(x.mean() - z.mean())
    stat |= {"mean_level": float(x.mean()), "mean_other": float(z.mean()), "difference": diff}
    if np.ptp(np.concatenate([x, z])) == 0:
        return "inconclusive", "the metric is constant at both levels", method, stat
    test = stats.ttest_ind(x, z, equal_var=False)
    ci = test.confidence_interval(0.95)
    stat |= {"t": float(test.statistic), "df": float(test.df), "p": float(test.pvalue)}
    stat["difference_ci"] = (float(ci.low), float(ci.high))
    pvalue = float(test.pvalue)
    if not np.isfinite(pvalue):
        return "inconclusive", "the t-test is undefined (no spread)", method, stat
    if pvalue < alpha and diff * better > 0:
        return "supported", f"p = {pvalue:.3g} < {alpha}, difference {diff:+.3g}", method, stat
    if pvalue < alpha:
        reason = f"p = {pvalue:.3g} < {alpha} but the other level is better ({diff:+.3g})"
        return "not supported", reason, method, stat
    if _small(stat["difference_ci"], min_effect):
        reason = f"p = {pvalue:.3g}; the difference's 95% interval lies within +-{min_effect}"
        return "not supported", reason, method, stat
    return (
        "inconclusive",
        f"p = {pvalue:.3g} >= {alpha}; a relevant difference is not excluded",
        method,
        stat,
    )


def _at(prepared: Prepared, runs: pd.DataFrame, name: str, value: Any) -> np.ndarray:
    p = prepared.param(name)
    if p.levels is not None:
        target = level_index(p, value)
        return np.array([level_index(p, v) == target for v in runs[p.column]], dtype=bool)
    return (runs[p.column] == value).to_numpy()
