"""The Findings, Reflection and Limitations items of the report, from the analysis summary.

Each builder reads summary.json's fields (layout in interplay.analysis.summary) and writes
every number with interplay.report.numbers.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from interplay.config import Study
from interplay.report import numbers as fmt
from interplay.report.theory import PREDICTIONS, ROLE_WORDS, TheoryCheck

logger = logging.getLogger(__name__)

DATASETS = {"fashion-mnist": "Fashion-MNIST", "mnist": "MNIST", "digits": "digits (8x8)"}


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


# ---------------------------------------------------------------- findings


def _params_text(params: dict[str, Any]) -> str:
    return ", ".join(f"{k}={fmt.level(v)}" for k, v in params.items())


def best_lines(summary: dict[str, Any], test: dict[str, Any] | None) -> list[Line]:
    best = summary.get("best")
    if not best:
        return [Line("No configuration has a compared run.", lead="Best configuration")]
    label = (summary.get("metric") or {}).get("label", "metric")
    vu, uw = value_unit(summary), unit_word(summary)
    n = best.get("n")
    spread = f" ± {fmt.value(best['sd'])}" if best.get("sd") is not None else ""
    over = f"mean ± sd over {n} seeds" if spread else f"{n} seed"
    lines = [
        Line(
            f"{_params_text(best['params'])}: {label} {fmt.value(best['mean'])}{spread}{vu} "
            f"({over}).",
            lead="Best configuration",
        )
    ]
    runner = best.get("runner_up")
    if runner:
        gap = best.get("difference_to_runner_up")
        noise = (summary.get("noise") or {}).get("pooled_seed_sd")
        vs = f", against a seed sd of {fmt.value(noise)}" if noise is not None else ""
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
    n = test.get("n")
    spread = f" ± {fmt.value(sd)}" if sd is not None else ""
    over = f"mean ± sd over {n} models" if sd is not None else f"{n} model{'s' if n != 1 else ''}"
    when = str(test.get("evaluated_at", ""))[:10]
    images = f" of {test['test_images']} images" if test.get("test_images") else ""
    return Line(
        f"{fmt.value(acc)}{spread} % ({over}), evaluated once on the held-out test set{images}"
        + (f" on {when}." if when else "."),
        lead="Test accuracy",
    )


def claim_line(item: dict[str, Any], summary: dict[str, Any]) -> Line:
    st = item.get("statistic") or {}
    kind = item.get("kind")
    lead = f"Claim {int(item.get('index', 0)) + 1}"
    text = str(item.get("text", ""))
    verdict = str(item.get("verdict", ""))
    if "p" not in st:
        return Line(f"{text}.", lead=lead, tag=verdict, detail=str(item.get("reason", "")))
    short = fmt.p_value(st.get("p"))
    resid_df = st.get("df_resid")
    if resid_df is None:
        resid_df = ((summary.get("anova") or {}).get("residual") or {}).get("df")
    uw = unit_word(summary)
    if kind == "beats":
        test = f"Welch t({fmt.df(st.get('df'))}) = {fmt.stat(st.get('t'))}, {short}"
        diff = fmt.with_interval(st.get("difference"), st.get("difference_ci"), fmt.signed)
        return Line(f"{text}.", lead=lead, tag=verdict, detail=f"difference {diff} {uw}; {test}")
    test = f"F({fmt.df(st.get('df'))}, {fmt.df(resid_df)}) = {fmt.stat(st.get('F'))}, {short}"
    if kind == "interaction":
        eta = fmt.with_interval(st.get("partial_eta2"), st.get("partial_eta2_ci"), fmt.share)
        size = f"partial η² {eta}"
        if "h_size" in st:
            size += f"; H size {fmt.with_interval(st['h_size'], st.get('h_size_ci'))} {uw}"
        return Line(f"{text}.", lead=lead, tag=verdict, detail=f"{test}; {size}")
    span = fmt.with_interval(st.get("range"), st.get("range_ci"))
    detail = f"{test}; level means span {span} {uw}"
    if "direction" in str(item.get("method", "")) and st.get("trend_spearman") is not None:
        detail += f"; Spearman {fmt.rank(st['trend_spearman'])}"
    return Line(f"{text}.", lead=lead, tag=verdict, detail=detail)


def interactions_table(summary: dict[str, Any]) -> Table:
    entries = summary.get("interactions") or []
    uw = unit_word(summary)
    resid_df = ((summary.get("anova") or {}).get("residual") or {}).get("df")
    grid = any("cell_means" in e for e in entries)
    if grid:
        header = [
            "Pair",
            "partial η² [95% CI]",
            "F test",
            f"largest departure from additive [95% CI], {uw}",
            "in seed sds",
        ]
    else:
        header = ["Pair", f"H size [95% CI], {uw}", "H [95% CI]", "F test (linear terms)"]
    rows = []
    for e in entries:
        a, b = e["params"]
        if e.get("p") is not None:
            test = f"F({fmt.df(e.get('df'))}, {fmt.df(resid_df)}) = {fmt.stat(e.get('F'))}, "
            test += fmt.p_value(e.get("p"))
        else:
            test = f"untested: {e.get('why_not') or 'no test'}"
        if grid:
            rows.append(
                [
                    f"{a} x {b}",
                    fmt.with_interval(e.get("partial_eta2"), e.get("partial_eta2_ci"), fmt.share),
                    test,
                    fmt.with_interval(e.get("max_abs_residual"), e.get("max_abs_residual_ci")),
                    fmt.ratio(e.get("residual_to_noise")),
                ]
            )
        else:
            rows.append(
                [
                    f"{a} x {b}",
                    fmt.with_interval(e.get("size"), e.get("size_ci")),
                    fmt.with_interval(e.get("h"), e.get("h_ci"), fmt.share),
                    test,
                ]
            )
    return Table(header, rows)


def interactions_note(summary: dict[str, Any]) -> str:
    entries = summary.get("interactions") or []
    if not entries:
        return "The study varies fewer than two params: there is no interaction to measure."
    if any("cell_means" in e for e in entries):
        return (
            "Strongest first. Departure from additive: the largest distance of a cell mean "
            "from row mean + column mean - grand mean, also in seed sds."
        )
    return (
        "Strongest first, by Friedman's H size (the interaction part of a random-forest "
        "surrogate's partial dependence, in metric units)."
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


# ---------------------------------------------------------------- reflection


def observations(summary: dict[str, Any], checks: list[TheoryCheck]) -> list[Line]:
    out = []
    uw = unit_word(summary)
    noise = (summary.get("noise") or {}).get("pooled_seed_sd")
    mains = [m for m in summary.get("main_effects") or [] if m.get("range") is not None]
    if mains:
        top = max(mains, key=lambda m: m["range"])
        vs = f", against a seed sd of {fmt.value(noise)}" if noise is not None else ""
        span = fmt.with_interval(top["range"], top.get("range_ci"))
        out.append(
            Line(f"{top['param']} moves the metric most: its level means span {span} {uw}{vs}.")
        )
    importance = summary.get("importance")
    if importance and importance.get("params"):
        first = max(importance["params"], key=lambda p: p.get("importance") or 0.0)
        share = fmt.with_interval(first.get("importance"), first.get("ci"), fmt.share)
        out.append(
            Line(
                f"fANOVA gives {first['param']} the largest share of the variance ({share}); "
                f"the surrogate explains R² {fmt.share(importance.get('surrogate_r2'))} of it."
            )
        )
    tested = [e for e in summary.get("interactions") or [] if e.get("p") is not None]
    if tested:
        alpha = float((summary.get("metric") or {}).get("alpha", 0.05))
        hits = [e for e in tested if e["p"] < alpha]
        out.append(
            Line(
                f"{len(hits)} of {len(tested)} pair interactions reach p < {alpha} "
                "(each tested on its own, no correction for multiple comparisons)."
            )
        )
    best = summary.get("best") or {}
    gap = best.get("difference_to_runner_up")
    if gap is not None and noise:
        if abs(gap) > 2 * noise:
            word = "more than twice the seed sd, more than seed noise alone usually makes"
        else:
            word = "within two seed sds: other seeds could well swap the two"
        out.append(Line(f"The best configuration's lead over the runner-up is {word}."))
    if not checks:
        pairs = "; ".join(f"{ROLE_WORDS[p.a]} x {ROLE_WORDS[p.b]}" for p in PREDICTIONS)
        out.append(
            Line(
                "None of the pairs with a clear prediction in the literature "
                f"({pairs}) is varied here."
            )
        )
    return out


def measurable_first(checks: list[TheoryCheck]) -> list[TheoryCheck]:
    return sorted(checks, key=lambda c: c.verdict == "not measurable here")


def theory_line(check: TheoryCheck) -> Line:
    a, b = check.pair
    return Line(
        f"Prediction: {check.statement} ({check.reference}).",
        lead=f"{a} x {b}",
        tag=check.verdict,
        detail=f"Here: {check.evidence}.",
    )


# ---------------------------------------------------------------- limitations


def limitations(
    study: Study,
    summary: dict[str, Any],
    test: dict[str, Any] | None,
    hypothesis: dict[str, Any] | None,
) -> list[str]:
    design = summary.get("design") or {}
    exclusions = summary.get("exclusions") or {}
    out = []
    seeds = design.get("seeds_min")
    if seeds is not None and seeds < 5:
        out.append(
            f"Only {seeds} seed{'s' if seeds != 1 else ''} per configuration: intervals from "
            "so few replicates are rough, and small interactions go undetected."
        )
    budget = f"At most {study.training.epochs} epochs per run"
    if study.data.subset is not None:
        budget += f", on {study.data.subset} training images per class"
    out.append(budget + ": rankings can change with longer training or the full data.")
    counts = exclusions.get("counts") or {}
    if counts:
        listed = ", ".join(f"{n} {why}" for why, n in sorted(counts.items()))
        out.append(f"Runs left out of the comparison: {listed}.")
    early = exclusions.get("early_stopped_kept") or 0
    if early:
        out.append(f"{early} runs stopped early and are compared at their last epoch.")
    if design.get("complete_grid") is False:
        out.append("The grid is incomplete: some configurations have no compared run.")
    if design.get("balanced") is False:
        out.append("Configurations have different numbers of seeds (unbalanced design).")
    anova = summary.get("anova") or {}
    for item in anova.get("not_estimable") or []:
        out.append(f"Not estimable: {item.get('term')} ({item.get('why')}).")
    tested = [e for e in summary.get("interactions") or [] if e.get("p") is not None]
    if len(tested) > 1:
        out.append(
            f"{len(tested)} pair interactions are tested at the same alpha without correction."
        )
    if design.get("method") not in (None, "grid"):
        out.append(
            "Not a grid: interaction strengths come from a surrogate model and have no "
            "direction; the F tests use linear terms only."
        )
    if test is None:
        out.append("The held-out test set was not evaluated.")
    if hypothesis and any(e.get("after_results") for e in hypothesis.get("edits") or []):
        out.append("The hypothesis was edited after results existed.")
    out.append(
        f"One dataset ({DATASETS.get(study.data.dataset, study.data.dataset)}) and one "
        "model family: other data or architectures may interact differently."
    )
    return out
