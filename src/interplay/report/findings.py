"""The Findings items of the report, from the analysis summary.

Each builder reads summary.json's fields (layout in interplay.analysis.summary) and writes
every number with interplay.report.numbers. Sizes that cannot be negative (partial eta
squared, a range of level means, the largest departure from additivity, Friedman's H)
always stand next to the p of their test, and their bootstrap intervals show only the
upper end: noise alone lifts such a size above zero, so it must not read as an effect.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from interplay.report import numbers as fmt

logger = logging.getLogger(__name__)


@dataclass
class Line:
    """One item of a list: a bold lead, the text, a verdict tag, and detail that can go."""

    text: str
    lead: str = ""
    tag: str = ""
    detail: str = ""


@dataclass
class Table:
    header: list[str]
    rows: list[list[str]]


def unit_word(summary: dict[str, Any]) -> str:
    unit = (summary.get("metric") or {}).get("unit", "")
    return "points" if unit == "%" else unit


def value_unit(summary: dict[str, Any]) -> str:
    unit = (summary.get("metric") or {}).get("unit", "")
    return f" {unit}" if unit else ""


def alpha_of(summary: dict[str, Any]) -> float:
    return float((summary.get("metric") or {}).get("alpha", 0.05))


def is_grid(summary: dict[str, Any]) -> bool:
    return (summary.get("design") or {}).get("method", "grid") == "grid"


def eta2_level(summary: dict[str, Any]) -> str:
    """The confidence of the partial eta squared intervals: '90%' for alpha 0.05."""
    interval = (summary.get("anova") or {}).get("partial_eta2_interval") or {}
    return fmt.percent(interval.get("level", 1.0 - 2.0 * alpha_of(summary)))


def _params_text(params: dict[str, Any]) -> str:
    return ", ".join(f"{k}={fmt.level(v)}" for k, v in params.items())


def best_lines(
    summary: dict[str, Any], test: dict[str, Any] | None, chance: str | None = None
) -> list[Line]:
    """The best configuration, the runner-up and the test accuracy.

    `chance` says why the best accuracy is near chance level (see
    interplay.report.header.near_chance), or is None.
    """
    best = summary.get("best")
    if not best:
        return [Line("No configuration has a compared run.", lead="Best configuration")]
    label = (summary.get("metric") or {}).get("label", "metric")
    vu, uw = value_unit(summary), unit_word(summary)
    n = best.get("n")
    spread = f" ± {fmt.value(best['sd'])}" if best.get("sd") is not None else ""
    over = f"mean ± sd over {fmt.plural(n, 'seed')}" if spread else fmt.plural(n, "seed")
    text = f"{_params_text(best['params'])}: {label} {fmt.value(best['mean'])}{spread}{vu} "
    text += f"({over})."
    if chance:
        text += (
            f" This is near chance level ({chance}): the models barely learned, so the "
            "ranking says little."
        )
    lines = [Line(text, lead="Best configuration")]
    runner = best.get("runner_up")
    if runner:
        gap = best.get("difference_to_runner_up")
        se = best.get("difference_se")
        vs = f"; standard error of the difference {fmt.value(se)}" if se is not None else ""
        lines.append(
            Line(
                f"{_params_text(runner['params'])}: {fmt.value(runner['mean'])}{vu}, "
                f"{fmt.value(abs(gap)) if gap is not None else fmt.MISSING} {uw} behind{vs}.",
                lead="Runner-up",
            )
        )
    lines.append(test_line(summary, test))
    return lines


def test_line(summary: dict[str, Any], test: dict[str, Any] | None) -> Line:
    best = summary.get("best") or {}
    if test is None:
        return Line("The held-out test set was not evaluated.", lead="Test accuracy")
    if best and test.get("config_id") != best.get("config_id"):
        return Line(
            f"test.json is for configuration {test.get('config_id')}, not the best one "
            f"({best.get('config_id')}): the test set was not evaluated for it.",
            lead="Test accuracy",
        )
    # test.json holds accuracy as a fraction whatever metric the study compared.
    acc = fmt.fraction_to_points(test.get("test_acc"))
    sd = fmt.fraction_to_points(test.get("test_acc_sd"))
    n = int(test.get("n") or 0)
    spread = f" ± {fmt.value(sd)}" if sd is not None else ""
    models = fmt.plural(n, "model")
    over = f"mean ± sd over {models}" if sd is not None else models
    when = str(test.get("evaluated_at", ""))[:10]
    images = f" of {test['test_images']} images" if test.get("test_images") else ""
    return Line(
        f"{fmt.value(acc)}{spread} % ({over}), evaluated once on the held-out test set{images}"
        + (f" on {when}." if when else "."),
        lead="Test accuracy",
    )


def f_test(st: dict[str, Any], summary: dict[str, Any]) -> str:
    """'F(3, 8) = 0.3, p = 0.814' from a claim statistic or an interaction entry."""
    resid_df = st.get("df_resid")
    if resid_df is None:
        resid_df = ((summary.get("anova") or {}).get("residual") or {}).get("df")
    return (
        f"F({fmt.df(st.get('df'))}, {fmt.df(resid_df)}) = {fmt.stat(st.get('F'))}, "
        f"{fmt.p_value(st.get('p'))}"
    )


def eta2_text(st: dict[str, Any], summary: dict[str, Any]) -> str:
    """'partial η² 0.11 [0.00, 0.21] (90% CI)': its interval comes from the same F test."""
    eta = fmt.with_interval(st.get("partial_eta2"), st.get("partial_eta2_ci"), fmt.share)
    level = f" ({eta2_level(summary)} CI)" if fmt.interval(st.get("partial_eta2_ci")) else ""
    return f"partial η² {eta}{level}"


def claim_line(item: dict[str, Any], summary: dict[str, Any]) -> Line:
    st = item.get("statistic") or {}
    kind = item.get("kind")
    lead = f"Claim {int(item.get('index', 0)) + 1}"
    text = str(item.get("text", ""))
    verdict = str(item.get("verdict", ""))
    if "p" not in st:
        return Line(f"{text}.", lead=lead, tag=verdict, detail=str(item.get("reason", "")))
    uw = unit_word(summary)
    if kind == "beats":
        test = f"Welch t({fmt.df(st.get('df'))}) = {fmt.stat(st.get('t'))}, "
        test += fmt.p_value(st.get("p"))
        diff = fmt.with_interval(st.get("difference"), st.get("difference_ci"), fmt.signed)
        return Line(f"{text}.", lead=lead, tag=verdict, detail=f"difference {diff} {uw}; {test}")
    test = f_test(st, summary)
    if kind == "interaction":
        size = eta2_text(st, summary)
        if "h_size" in st:
            size += f"; H size {fmt.with_upper(st['h_size'], st.get('h_size_ci'))} {uw}"
        return Line(f"{text}.", lead=lead, tag=verdict, detail=f"{test}; {size}")
    means = "level means" if is_grid(summary) else "marginal level means (confounded)"
    detail = f"{test}; {means} span {fmt.with_upper(st.get('range'), st.get('range_ci'))} {uw}"
    if "direction" in str(item.get("method", "")) and st.get("trend_spearman") is not None:
        detail += f"; Spearman {fmt.rank(st['trend_spearman'])}"
    return Line(f"{text}.", lead=lead, tag=verdict, detail=detail)


def interactions_table(summary: dict[str, Any]) -> Table:
    entries = summary.get("interactions") or []
    uw = unit_word(summary)
    grid = any("cell_means" in e for e in entries)
    if grid:
        header = [
            "Pair",
            "F test",
            f"partial η² [{eta2_level(summary)} CI]",
            f"largest departure from additive, {uw}",
            "in seed sds",
        ]
    else:
        header = ["Pair", "F test (linear terms)", f"H size, {uw}", "H"]
    rows = []
    for e in entries:
        a, b = e["params"]
        if e.get("p") is not None:
            test = f_test(e, summary)
        else:
            # The first clause only: the whole reason is in the Limitations ("Not estimable").
            test = f"untested: {str(e.get('why_not') or 'no test').split(':')[0]}"
        if grid:
            rows.append(
                [
                    f"{a} x {b}",
                    test,
                    fmt.with_interval(e.get("partial_eta2"), e.get("partial_eta2_ci"), fmt.share),
                    fmt.with_upper(e.get("max_abs_residual"), e.get("max_abs_residual_ci")),
                    fmt.ratio(e.get("residual_to_noise")),
                ]
            )
        else:
            rows.append(
                [
                    f"{a} x {b}",
                    test,
                    fmt.with_upper(e.get("size"), e.get("size_ci")),
                    fmt.with_upper(e.get("h"), e.get("h_ci"), fmt.share),
                ]
            )
    return Table(header, rows)


def interactions_note(summary: dict[str, Any]) -> str:
    entries = summary.get("interactions") or []
    if not entries:
        return "The study varies fewer than two params: there is no interaction to measure."
    alpha = fmt.share(alpha_of(summary))
    upper = (
        "(≤ x): the upper end of a 95% bootstrap interval; these sizes cannot be negative, so "
        "noise alone keeps them above 0 and whether an interaction exists is the F test's p."
    )
    if any("cell_means" in e for e in entries):
        return (
            f"Strongest first. The η² interval inverts the F test, so it holds 0 exactly when "
            f"p ≥ {alpha}. Departure from additive: the largest distance of a cell mean from "
            f"row mean + column mean - grand mean, also in seed sds; {upper}"
        )
    return (
        "Strongest first, by Friedman's H size (the interaction part of a random-forest "
        f"surrogate's partial dependence, in metric units; H is its share); {upper}"
    )


def noise_line(summary: dict[str, Any]) -> str:
    noise = summary.get("noise") or {}
    sd = noise.get("pooled_seed_sd")
    if sd is None:
        return "Seed-to-seed noise: not measurable (no configuration has two seeds)."
    return (
        f"Seed-to-seed noise: sd {fmt.value(sd)} {unit_word(summary)} between the seeds of a "
        f"configuration (pooled, df {fmt.df(noise.get('df'))})."
    )
