"""The Reflection's observations and the Limitations, from the analysis summary.

An observation never lets a size speak for an effect its test does not show: "moves the
metric most" needs a main-effect F test significant at alpha, and in a search (not a grid)
the level means of a param are confounded with the other params, so there the main
effects are told by the regression F tests and fANOVA, never by spans of level means.
"""

from __future__ import annotations

import logging
from typing import Any

from interplay.config import Study
from interplay.report import numbers as fmt
from interplay.report.findings import Line, alpha_of, is_grid, unit_word
from interplay.report.header import DataFacts, not_compared, seeds_text
from interplay.report.theory import PREDICTIONS, ROLE_WORDS, TheoryCheck

logger = logging.getLogger(__name__)

SEARCHES = {"random": "random search", "tpe": "TPE search", "gp": "Gaussian-process search"}


def _main_terms(summary: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The tested main-effect terms of the ANOVA, by param."""
    terms = (summary.get("anova") or {}).get("terms") or []
    return {
        t["params"][0]: t
        for t in terms
        if len(t.get("params") or []) == 1 and t.get("p") is not None
    }


def _grid_main_effect(summary: dict[str, Any]) -> Line | None:
    uw = unit_word(summary)
    alpha = alpha_of(summary)
    tests = _main_terms(summary)
    mains = [m for m in summary.get("main_effects") or [] if m.get("range") is not None]
    if not mains:
        return None
    tested = [m for m in mains if m["param"] in tests]
    significant = [m for m in tested if tests[m["param"]]["p"] < alpha]
    if significant:
        top = max(significant, key=lambda m: m["range"])
        span = fmt.with_upper(top["range"], top.get("range_ci"))
        return Line(
            f"{top['param']} moves the metric most: its level means span {span} {uw} "
            f"(main effect {fmt.p_value(tests[top['param']]['p'])})."
        )
    if tested:
        top = max(tested, key=lambda m: m["range"])
        return Line(
            f"No main effect reaches p < {alpha}: the level means differ by up to "
            f"{fmt.value(top['range'])} {uw} ({top['param']}, "
            f"{fmt.p_value(tests[top['param']]['p'])}), a difference seed noise alone could make."
        )
    top = max(mains, key=lambda m: m["range"])
    return Line(
        f"{top['param']}'s level means span the most ({fmt.value(top['range'])} {uw}), but no "
        "main effect could be tested, so this may be seed noise alone."
    )


def _search_main_effects(summary: dict[str, Any]) -> list[Line]:
    alpha = alpha_of(summary)
    tests = _main_terms(summary)
    out = []
    method = (summary.get("design") or {}).get("method", "")
    search = SEARCHES.get(method, f"{method} search")
    if tests:
        listed = ", ".join(
            f"{name} {fmt.p_value(t['p'])}" for name, t in sorted(tests.items(), key=_by_p)
        )
        out.append(
            Line(
                f"Main effects by regression F test (alpha {alpha}): {listed}. Level means are "
                f"not compared: in a {search} each param's levels come with uneven "
                "levels of the others, so their differences are confounded."
            )
        )
    importance = summary.get("importance")
    if importance and importance.get("params"):
        first = max(importance["params"], key=lambda p: p.get("importance") or 0.0)
        share = fmt.with_upper(first.get("importance"), first.get("ci"), fmt.share)
        test = tests.get(first["param"])
        beside = f"; its F test {fmt.p_value(test['p'])}" if test else "; untested"
        out.append(
            Line(
                f"fANOVA gives {first['param']} the largest share of the variance ({share}"
                f"{beside}); the surrogate explains R² "
                f"{fmt.share(importance.get('surrogate_r2'))} of it."
            )
        )
    return out


def _by_p(item: tuple[str, dict[str, Any]]) -> float:
    return float(item[1]["p"])


def _lead(summary: dict[str, Any], chance: str | None) -> Line | None:
    best = summary.get("best") or {}
    if not best.get("runner_up"):
        return None
    if chance:
        return Line(
            "The best configuration is near chance level, so its lead over the runner-up says "
            "nothing about the params."
        )
    gap, se = best.get("difference_to_runner_up"), best.get("difference_se")
    if gap is None or not se:
        return None
    count = len(summary.get("configs") or [])
    if abs(gap) > 2 * se:
        return Line(
            f"The best configuration's lead over the runner-up is more than twice its standard "
            f"error, though the best of {count} configurations is picked for a large lead."
        )
    return Line(
        "The best configuration's lead over the runner-up is within two standard errors: "
        "other seeds could well swap the two."
    )


def observations(
    summary: dict[str, Any], checks: list[TheoryCheck], chance: str | None = None
) -> list[Line]:
    out = []
    if is_grid(summary):
        main = _grid_main_effect(summary)
        out += [main] if main else []
    else:
        out += _search_main_effects(summary)
    tested = [e for e in summary.get("interactions") or [] if e.get("p") is not None]
    if tested:
        alpha = alpha_of(summary)
        hits = sum(e["p"] < alpha for e in tested)
        if len(tested) == 1:
            does = "reaches" if hits else "does not reach"
            text = f"The one tested pair interaction {does} p < {alpha}."
        else:
            text = (
                f"{hits} of {len(tested)} pair interactions reach p < {alpha} (each tested on "
                "its own, no correction for multiple comparisons)."
            )
        out.append(Line(text))
    lead = _lead(summary, chance)
    out += [lead] if lead else []
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


def limitations(
    study: Study,
    summary: dict[str, Any],
    test: dict[str, Any] | None,
    hypothesis: dict[str, Any] | None,
    facts: DataFacts,
    chance: str | None = None,
) -> list[str]:
    design = summary.get("design") or {}
    exclusions = summary.get("exclusions") or {}
    out = []
    if chance:
        out.append(
            f"The best configuration is near chance level ({chance}): at this budget the "
            "models barely learned, so no comparison here says much about the params."
        )
    seeds = design.get("seeds_min")
    if design.get("seeds_max") == 1:
        out.append(
            "Only 1 seed per configuration: seed-to-seed noise is not measured, and any "
            "ranking of configurations may be noise."
        )
    elif seeds is not None and seeds < 5:
        out.append(
            f"Only {seeds_text(design)} per compared configuration: intervals from so few "
            "replicates are rough, and small interactions go undetected."
        )
    budget = f"At most {fmt.plural(study.training.epochs, 'epoch')} per run"
    if facts.train_images is not None and facts.per_class is not None:
        budget += (
            f", on {facts.train_images} training images ({facts.per_class} per class before "
            "the validation share was held out)"
        )
    elif facts.per_class is not None:
        budget += f", on {facts.per_class} images per class before the validation split"
    # per_class is set only when the runs trained on a subset of the data.
    more = "longer training or the full data" if facts.per_class is not None else "longer training"
    out.append(f"{budget}: rankings can change with {more}.")
    counts = exclusions.get("counts") or {}
    if counts:
        listed = ", ".join(f"{n} {why}" for why, n in sorted(counts.items()))
        total = design.get("runs_total")
        of = f" of {total}" if total is not None else ""
        out.append(f"Runs left out of the comparison: {sum(counts.values())}{of} ({listed}).")
    early = exclusions.get("early_stopped_kept") or 0
    if early:
        out.append(
            f"{fmt.plural(early, 'run')} stopped early and {'is' if early == 1 else 'are'} "
            "compared at the last epoch reached."
        )
    if design.get("complete_grid") is False:
        missing, why = not_compared(design)
        planned = design.get("configs_planned")
        if missing and planned:
            shown = f"{missing} of {planned} configurations have no compared run ({why})"
        else:
            shown = "some configurations have no compared run"
        out.append(f"The grid is incomplete: {shown}.")
    if design.get("balanced") is False:
        out.append(
            f"Configurations have different numbers of compared seeds ({seeds_text(design)}): "
            "an unbalanced design."
        )
    anova = summary.get("anova") or {}
    for item in anova.get("not_estimable") or []:
        out.append(f"Not estimable: {item.get('term')} ({item.get('why')}).")
    tested = [e for e in summary.get("interactions") or [] if e.get("p") is not None]
    if len(tested) > 1:
        out.append(
            f"{len(tested)} pair interactions are tested at the same alpha without correction."
        )
    if not is_grid(summary):
        out.append(
            "Not a grid: level means are marginal and confounded, so main effects are judged "
            "by regression F tests and fANOVA; interaction strengths come from a surrogate "
            "model and have no direction; the F tests of pairs use linear terms only."
        )
    if test is None:
        out.append("The held-out test set was not evaluated.")
    if hypothesis and any(e.get("after_results") for e in hypothesis.get("edits") or []):
        out.append("The hypothesis was edited after results existed.")
    out.append(
        f"One dataset ({facts.name}) and one model family: other data or architectures may "
        "interact differently."
    )
    return out
