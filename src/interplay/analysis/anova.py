"""ANOVA with main effects and all pairwise interactions (statsmodels).

Grid studies: every param is a categorical factor, numeric ones included. A factorial grid
has a handful of levels per param, and a factor makes no assumption about the shape of an
effect (a learning rate's effect is rarely linear), so the interaction test is the general
one: any departure from additivity over the cells.

Sums of squares are type II. With balanced cells types I, II and III agree; with unbalanced
cells (failed runs) type II tests each main effect after the other main effects, respecting
marginality, and is the more powerful when the interaction is small, while type III main
effects (averaged over an interaction that exists) answer a question nobody asked here.

Other designs (random, tpe, gp): a regression with numeric params as quadratic trends (on the
log10 scale when log-scaled) and categorical params as factors; an interaction is the product
of the linear parts. Each term is tested by a nested-model F test.
"""

from __future__ import annotations

import itertools
import logging
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import statsmodels.formula.api as smf
from statsmodels.stats.anova import anova_lm

from interplay.analysis.table import Prepared, level_codes
from interplay.words import plural

logger = logging.getLogger(__name__)

Term = tuple[str, ...]

# A residual below this share of the total sum of squares is treated as exactly zero.
_ZERO = 1e-12


@dataclass
class AnovaTerm:
    term: str
    params: Term
    df: int
    sum_sq: float
    f: float | None
    p: float | None
    partial_eta2: float | None
    partial_eta2_ci: tuple[float, float] | None = None
    # The F test's denominator df: the full model's residual df in a grid; in a search the
    # residual df of the model the term was tested in (it leaves out interactions with it).
    df_resid: int | None = None


@dataclass
class AnovaResult:
    method: str
    formula: str
    terms: list[AnovaTerm]
    residual_df: int
    residual_ss: float
    residual_sd: float | None
    not_estimable: list[dict[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def term(self, *params: str) -> AnovaTerm | None:
        for t in self.terms:
            if set(t.params) == set(params):
                return t
        return None

    def why_not(self, *params: str) -> str | None:
        """Why a term was left out of the model, or None."""
        for item in self.not_estimable:
            if set(item["term"].split(":")) == set(params):
                return item["why"]
        if self.term(*params):
            return None
        for name in params:
            for note in self.notes:
                if note.startswith(f"param {name} "):
                    return note
        left_out = [n for n in self.notes if "left out" in n or "nothing to test" in n]
        if left_out:
            return left_out[-1]
        return f"{':'.join(params)} is not in the model"


def factor_codes(prepared: Prepared) -> tuple[dict[str, np.ndarray], list[str]]:
    """Dense level codes (0..L-1 over the observed levels, in study order) per param."""
    codes: dict[str, np.ndarray] = {}
    notes = []
    for p in prepared.params:
        if p.levels is None:
            raise ValueError(f"param {p.name} has no levels: a grid needs levels")
        raw = level_codes(p, prepared.runs[p.column])
        observed = np.unique(raw)
        if len(observed) < 2:
            notes.append(f"param {p.name} has one level among the compared runs: left out")
            continue
        if len(observed) < len(p.levels):
            notes.append(
                f"param {p.name}: {plural(len(p.levels) - len(observed), 'level')} "
                "without a compared run"
            )
        codes[p.name] = np.searchsorted(observed, raw)
    return codes, notes


def design_matrix(
    codes: dict[str, np.ndarray], terms: list[Term]
) -> tuple[np.ndarray, dict[Term, slice]]:
    """Intercept, treatment dummies per main effect, and their products per interaction."""
    n = len(next(iter(codes.values()))) if codes else 0
    dummies = {name: np.eye(c.max() + 1)[c][:, 1:] for name, c in codes.items()}
    blocks: dict[Term, slice] = {}
    columns = [np.ones((n, 1))]
    start = 1
    for term in terms:
        if len(term) == 1:
            block = dummies[term[0]]
        else:
            a, b = dummies[term[0]], dummies[term[1]]
            block = (a[:, :, None] * b[:, None, :]).reshape(n, -1)
        columns.append(block)
        blocks[term] = slice(start, start + block.shape[1])
        start += block.shape[1]
    return np.hstack(columns), blocks


def _contains(outer: Term, inner: Term) -> bool:
    return set(inner) <= set(outer) and set(inner) != set(outer)


class TypeIISums:
    """Type II sums of squares of many response vectors at once, by projections.

    The bootstrap resamples seeds within configurations, so every resampled run keeps its
    cell and the design matrix never changes: only the responses do. Refitting statsmodels a
    thousand times would take tens of seconds, so the same sums are computed here from
    orthonormal bases of the nested models (checked against statsmodels in the tests).
    """

    def __init__(self, codes: dict[str, np.ndarray], terms: list[Term]) -> None:
        self.terms = terms
        self._codes = codes
        self._bases: dict[frozenset[Term], np.ndarray] = {}

    def _basis(self, subset: frozenset[Term]) -> np.ndarray:
        if subset not in self._bases:
            x, _ = design_matrix(self._codes, [t for t in self.terms if t in subset])
            u, s, _ = np.linalg.svd(x, full_matrices=False)
            self._bases[subset] = u[:, s > s[0] * 1e-10]
        return self._bases[subset]

    def _rss(self, y: np.ndarray, subset: frozenset[Term]) -> np.ndarray:
        q = self._basis(subset)
        fitted = q.T @ y
        return np.maximum((y**2).sum(axis=0) - (fitted**2).sum(axis=0), 0.0)

    def residual(self, y: np.ndarray) -> np.ndarray:
        y = y - y.mean(axis=0)
        return self._rss(y, frozenset(self.terms))

    def sums(self, y: np.ndarray) -> dict[Term, np.ndarray]:
        """SS of each term for each column of y (runs x resamples)."""
        y = y - y.mean(axis=0)
        out = {}
        for term in self.terms:
            without = frozenset(t for t in self.terms if t != term and not _contains(t, term))
            out[term] = np.maximum(self._rss(y, without) - self._rss(y, without | {term}), 0.0)
        return out


def estimable_terms(
    codes: dict[str, np.ndarray],
) -> tuple[list[Term], list[dict[str, str]], int]:
    """Main effects and the pairwise interactions the compared runs can estimate."""
    names = list(codes)
    n = len(next(iter(codes.values()))) if codes else 0
    mains: list[Term] = [(name,) for name in names]
    pairs: list[Term] = []
    dropped: list[dict[str, str]] = []
    for a, b in itertools.combinations(names, 2):
        cells = set(zip(codes[a].tolist(), codes[b].tolist(), strict=True))
        full = (codes[a].max() + 1) * (codes[b].max() + 1)
        if len(cells) < full:
            empty = plural(full - len(cells), "empty cell")
            why = f"{empty} of {a} x {b}: the interaction is not estimable"
            dropped.append({"term": f"{a}:{b}", "why": why})
        else:
            pairs.append((a, b))
    terms = mains + pairs
    x = design_matrix(codes, terms)[0] if codes else np.ones((n, 1))
    rank = np.linalg.matrix_rank(x)
    if pairs and rank < x.shape[1]:
        why = "the configurations with runs do not separate the interactions (rank deficient)"
        dropped += [{"term": ":".join(t), "why": why} for t in pairs]
        terms = mains
        rank = np.linalg.matrix_rank(design_matrix(codes, terms)[0])
    if pairs and n - rank <= 0 and terms != mains:
        # TODO: Tukey's one-degree-of-freedom test could still test a multiplicative
        # interaction without replicates; statsmodels has none, so it is not offered yet.
        why = (
            "no replicates: with one run per configuration the interaction is all that is left "
            "as residual, so it cannot be tested; train more seeds"
        )
        dropped += [{"term": ":".join(t), "why": why} for t in terms if len(t) == 2]
        terms = mains
        rank = np.linalg.matrix_rank(design_matrix(codes, terms)[0])
    return terms, dropped, int(n - rank)


def grid_anova(prepared: Prepared) -> tuple[AnovaResult, dict[str, np.ndarray], list[Term]]:
    """Type II ANOVA of a grid study with every param as a categorical factor.

    Returns:
        The ANOVA table, the dense level codes per param, and the terms in the model.
    """
    codes, notes = factor_codes(prepared)
    y = prepared.runs["value"].to_numpy(dtype=float)
    terms, dropped, resid_df = estimable_terms(codes)
    names = {name: f"f{i}" for i, name in enumerate(codes)}
    formula = (
        "value ~ " + " + ".join(":".join(f"C({names[n]})" for n in term) for term in terms)
        if terms
        else "value ~ 1"
    )
    method = (
        "OLS (statsmodels), every param a categorical factor, main effects and pairwise "
        "interactions, type II sums of squares, F tests"
    )
    if len(codes) >= 3 and resid_df > 0 and prepared.runs["config_id"].nunique() == len(y):
        notes.append(
            "no replicates: the residual is the three-way and higher interaction, assumed zero"
        )
    total = float(((y - y.mean()) ** 2).sum()) if len(y) else 0.0
    result = AnovaResult(method, formula, [], resid_df, 0.0, None, dropped, notes)
    if not terms:
        notes.append("no param varies among the compared runs: nothing to test")
        return result, codes, terms
    if resid_df <= 0:
        notes.append("too few runs for any test: each configuration needs more seeds")
        return result, codes, terms
    frame = pd.DataFrame({names[n]: [f"L{c}" for c in codes[n]] for n in codes})
    frame["value"] = y
    sums = TypeIISums(codes, terms)
    resid = float(sums.residual(y[:, None])[0])
    result.residual_ss = resid
    result.residual_sd = float(np.sqrt(resid / resid_df))
    if total <= _ZERO * max(1.0, float(np.mean(y**2))):
        notes.append("the metric is constant over the compared runs: nothing to test")
        result.terms = [
            AnovaTerm(":".join(t), t, _df(codes, t), 0.0, None, None, None) for t in terms
        ]
        return result, codes, terms
    if resid <= _ZERO * total:
        notes.append("the residual is zero (identical replicates): no F test is possible")
        ss = {t: float(v[0]) for t, v in sums.sums(y[:, None]).items()}
        result.terms = [
            AnovaTerm(":".join(t), t, _df(codes, t), ss[t], None, None, 1.0 if ss[t] > 0 else None)
            for t in terms
        ]
        return result, codes, terms
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = smf.ols(formula, data=frame).fit()
        table = anova_lm(fit, typ=2)
    for term in terms:
        row = table.loc[":".join(f"C({names[n]})" for n in term)]
        term_ss = float(row["sum_sq"])
        result.terms.append(
            AnovaTerm(
                term=":".join(term),
                params=term,
                df=int(round(row["df"])),
                sum_sq=term_ss,
                f=_finite(row["F"]),
                p=_finite(row["PR(>F)"]),
                partial_eta2=term_ss / (term_ss + resid) if term_ss + resid > 0 else None,
                df_resid=resid_df,
            )
        )
    result.residual_ss = float(table.loc["Residual", "sum_sq"])
    return result, codes, terms


def _df(codes: dict[str, np.ndarray], term: Term) -> int:
    return int(np.prod([codes[n].max() for n in term]))


def _finite(value: object) -> float | None:
    x = float(value)  # type: ignore[arg-type]
    return x if np.isfinite(x) else None


def regression_anova(prepared: Prepared) -> AnovaResult:
    """Nested-model F tests for designs that are not a grid (random, tpe, gp)."""
    runs = prepared.runs
    frame = pd.DataFrame({"value": runs["value"].to_numpy(dtype=float)})
    pieces: dict[Term, str] = {}
    linear: dict[str, str] = {}
    notes: list[str] = []
    for i, p in enumerate(prepared.params):
        name = f"x{i}"
        if p.kind == "categorical":
            frame[name] = [str(v) for v in runs[p.column]]
            if frame[name].nunique() < 2:
                notes.append(f"param {p.name} has one level among the compared runs: left out")
                continue
            linear[p.name] = pieces[(p.name,)] = f"C({name})"
            continue
        x = runs[p.column].to_numpy(dtype=float)
        x = np.log10(x) if p.log else x
        if np.ptp(x) == 0:
            notes.append(f"param {p.name} is constant among the compared runs: left out")
            continue
        # Standardized so the square and the products stay well conditioned.
        frame[name] = (x - x.mean()) / x.std()
        linear[p.name] = name
        quad = len(np.unique(x)) >= 3
        pieces[(p.name,)] = f"{name} + I({name}**2)" if quad else name
    for a, b in itertools.combinations(list(linear), 2):
        pieces[(a, b)] = f"{linear[a]}:{linear[b]}"
    method = (
        "OLS (statsmodels): numeric params as quadratic trends (log10 scale when log-scaled), "
        "categorical params as factors, interactions as products of the linear parts; each "
        "term by a nested-model F test against the model of the terms not containing it"
    )
    # Too few runs for every term leaves no residual to test against: fall back to simpler
    # models (no interactions, then linear trends only) and say so, rather than test nothing.
    simpler: dict[Term, str] = {t: v for t, v in pieces.items() if len(t) == 1}
    linear_only: dict[Term, str] = {(n,): linear[n] for n in linear}
    candidates: list[tuple[dict[Term, str], str]] = [
        (pieces, ""),
        (simpler, "pairwise interaction terms left out: too few runs to estimate them"),
        (linear_only, "interaction and quadratic terms left out: too few runs to estimate them"),
    ]
    y = frame["value"].to_numpy()
    result = AnovaResult(method, "value ~ 1", [], 0, 0.0, None, [], notes)
    if not pieces or float(np.ptp(y)) == 0:
        notes.append("nothing to test: no varying param or a constant metric")
        return result
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fitted = None
        for chosen, note in candidates:
            formula = "value ~ " + " + ".join(chosen.values())
            full = smf.ols(formula, data=frame).fit()
            if full.df_resid >= 2 and full.ssr > _ZERO * full.centered_tss:
                fitted = chosen
                notes.extend([note] if note else [])
                break
        if fitted is None:
            notes.append("no residual left (too few runs for the model): nothing to test")
            return result
        pieces = fitted
        terms = list(pieces)
        result.formula = formula
        result.residual_df = int(full.df_resid)
        result.residual_ss = float(full.ssr)
        result.residual_sd = float(np.sqrt(full.mse_resid))
        for term in terms:
            without = [t for t in terms if t != term and not _contains(t, term)]
            reduced = _fit(frame, [pieces[t] for t in without])
            bigger = _fit(frame, [pieces[t] for t in [*without, term]])
            df_diff = int(round(bigger.df_model - reduced.df_model))
            if df_diff <= 0 or bigger.df_resid <= 0:
                result.not_estimable.append(
                    {"term": ":".join(term), "why": "confounded with the other terms"}
                )
                continue
            f, p, _ = bigger.compare_f_test(reduced)
            ss = float(reduced.ssr - bigger.ssr)
            result.terms.append(
                AnovaTerm(
                    ":".join(term),
                    term,
                    df_diff,
                    ss,
                    _finite(f),
                    _finite(p),
                    ss / (ss + bigger.ssr),
                    df_resid=int(round(bigger.df_resid)),
                )
            )
    return result


def _fit(frame: pd.DataFrame, pieces: list[str]) -> Any:
    return smf.ols("value ~ " + (" + ".join(pieces) if pieces else "1"), data=frame).fit()
