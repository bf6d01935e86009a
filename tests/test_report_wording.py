"""What the report claims, checked against what the analysis can show.

Sizes that cannot be negative stand next to their test, main effects are told by their F
tests (never by spans of confounded level means in a search), a best configuration near
chance level is flagged, and the header, data line and Limitations count configurations,
runs, seeds and images alike. Analyses run on simulated tables; nothing is trained.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from interplay.analysis import ParamInfo, analyze, simulate_table, to_json
from interplay.config import Claim
from interplay.report import numbers as fmt
from interplay.report.content import ReportContent, build_content
from interplay.report.markdown import render_markdown
from interplay.studyfile import from_dict

from .test_report import PARAMS, planted_mean, study_dict


def test_plural_and_one_sided_formats() -> None:
    assert fmt.plural(1, "epoch") == "1 epoch" and fmt.plural(2, "epoch") == "2 epochs"
    assert fmt.plural(0, "run") == "0 runs" and fmt.noun(1, "trial") == "trial"
    assert fmt.span(1, 2, "seed") == "1 to 2 seeds" and fmt.span(1, 1, "seed") == "1 seed"
    assert fmt.with_upper(1.254, (0.16, 4.081)) == "1.25 (≤ 4.08)"
    assert fmt.with_upper(1.254, None) == "1.25"
    assert fmt.percent(0.9) == "90%" and fmt.percent(0.125) == "12.5%"


def content_of(
    raw: dict[str, Any],
    params: list[ParamInfo],
    mean: Callable[[Mapping[str, Any]], float],
    *,
    fail: Callable[[Any], Any] | None = None,
    method: str = "grid",
    claims: Sequence[dict[str, Any]] = (),
    hypothesis: dict[str, Any] | None = None,
    num_classes: int | None = None,
    **simulate: Any,
) -> ReportContent:
    """Simulate, analyze (no figures) and choose the report's content."""
    table = simulate_table(params, mean, design=method, **simulate)  # type: ignore[arg-type]
    if fail is not None:
        rows = fail(table)
        table.loc[rows, ["state", "reason"]] = ["failed", "loss is nan"]
        table.loc[rows, "val_acc"] = float("nan")
    parsed = [Claim.model_validate(c) for c in claims]
    result = analyze(table, params, method=method, claims=parsed, n_boot=100, n_boot_surrogate=2)
    summary = json.loads(json.dumps(to_json(result.summary)))
    study_file = from_dict(raw)
    return build_content(
        study_file.base(),
        summary,
        analysis_dir=Path("/nonexistent"),
        hypothesis=hypothesis,
        test=None,
        reflection="",
        compute_s=30.0,
        raw=study_file.raw,
        num_classes=num_classes,
    )


def failing_study() -> dict[str, Any]:
    raw = study_dict(["depth", "norm"])
    raw["training"]["epochs"] = 1
    raw["search"]["seeds"] = 3
    return raw


def fail_two_configs_and_a_seed(table: Any) -> Any:
    ids = table["config_id"].unique()
    everything = table.index[table["config_id"].isin(ids[:2])]
    one_seed = table.index[table["config_id"] == ids[2]][:2]
    return everything.union(one_seed)


def test_header_and_limitations_count_failed_configurations_alike() -> None:
    params = [PARAMS["depth"], PARAMS["norm"]]
    content = content_of(
        failing_study(),
        params,
        planted_mean({}),
        fail=fail_two_configs_and_a_seed,
        seeds=3,
        noise_sd=0.5,
    )
    design = content.design
    assert design.startswith("Grid over depth (1, 2) x norm (none, batch): ")
    assert "4 configurations x 3 seeds, up to 1 epoch;" in design
    assert "12 runs: 4 compared, 8 failed;" in design
    assert "2 of 4 configurations compared, with 1 to 3 seeds each; 2 with no compared run " in (
        design
    )
    assert "The grid is incomplete: 2 of 4 configurations have no compared run" in " ".join(
        content.limitations
    )
    # The seeds are counted the same way in the header and the Limitations.
    assert any(item.startswith("Only 1 to 3 seeds per compared") for item in content.limitations)
    assert "At most 1 epoch per run" in " ".join(content.limitations)
    assert "Runs left out of the comparison: 8 of 12 (8 failed)." in content.limitations


def test_best_near_chance_level_is_flagged_not_praised() -> None:
    params = [PARAMS["depth"], PARAMS["norm"]]

    def low(config: Mapping[str, Any]) -> float:
        # 10 classes: 10% is guessing; one configuration a little above it.
        return 15.0 if config["norm"] == "batch" and config["depth"] == 1 else 10.0

    content = content_of(failing_study(), params, low, seeds=3, noise_sd=0.5)
    best = content.best[0].text
    assert "near chance level (guessing among 10 classes scores 10%" in best
    assert content.limitations[0].startswith("The best configuration is near chance level")
    lead = [o.text for o in content.observations if "runner-up" in o.text]
    assert lead == [
        "The best configuration is near chance level, so its lead over the runner-up says "
        "nothing about the params."
    ]
    # Fewer classes, a higher chance level; many classes, none.
    assert (
        "chance"
        not in content_of(failing_study(), params, low, seeds=3, noise_sd=0.5, num_classes=100)
        .best[0]
        .text
    )


def test_data_line_counts_the_split_of_the_subset() -> None:
    content = content_of(
        failing_study(), [PARAMS["depth"], PARAMS["norm"]], planted_mean({}), seeds=2
    )
    assert content.meta[1] == (
        "Fashion-MNIST: 100 images per class drawn (1000 in all), 20% of them held out for "
        "validation: 800 train, 200 validation images"
    )
    assert "on 800 training images (100 per class before the validation share was held out)" in (
        " ".join(content.limitations)
    )


def test_empty_hypothesis_record_claims_no_recording() -> None:
    raw = failing_study()
    raw["hypothesis"] = {"text": "", "claims": []}
    empty = {"recorded_at": "2025-03-01T09:00:00+00:00", "text": "", "claims": [], "edits": []}
    params = [PARAMS["depth"], PARAMS["norm"]]
    for hypothesis in (empty, None):
        content = content_of(raw, params, planted_mean({}), hypothesis=hypothesis, seeds=2)
        assert content.hypothesis_notes == []
        assert "No hypothesis was written" in render_markdown(content, Path("."))


@pytest.mark.parametrize("effect", [0.0, 5.0])
def test_main_effect_observation_follows_its_f_test(effect: float) -> None:
    params = [PARAMS["depth"], PARAMS["norm"]]
    content = content_of(
        failing_study(),
        params,
        lambda c: 85.0 + effect * (c["norm"] == "batch"),
        seeds=2,
        noise_sd=1.0,
        seed=5,
    )
    first = content.observations[0].text
    if effect:
        assert first.startswith("norm moves the metric most: its level means span ")
        assert re.search(r"\(main effect p (< 0\.001|= 0\.0[0-4]\d*)\)\.$", first)
    else:
        assert first.startswith("No main effect reaches p < 0.05: the level means differ by up to")
        assert "moves the metric most" not in first


def test_search_report_judges_main_effects_by_tests_not_spans() -> None:
    params = [ParamInfo("lr", "numeric", log=True), PARAMS["norm"]]
    raw = study_dict(["lr", "norm"])
    raw["search"] = {
        "method": "tpe",
        "seeds": 2,
        "trials": 16,
        "params": {
            "lr": {"low": 1e-3, "high": 0.1, "log": True},
            "norm": {"values": ["none", "batch"]},
        },
    }
    raw["hypothesis"]["claims"] = []
    content = content_of(
        raw,
        params,
        lambda c: 60.0 + (30.0 if c["norm"] == "batch" else 0.0),
        method="random",
        claims=[{"kind": "effect", "param": "lr"}],
        trials=16,
        seeds=2,
        ranges={"lr": (1e-3, 0.1)},
        seed=3,
    )
    texts = [o.text for o in content.observations]
    assert not any("moves the metric most" in t for t in texts)
    assert any(
        t.startswith("Main effects by regression F test (alpha 0.05): norm p < 0.001")
        for t in texts
    )
    assert "marginal level means (confounded)" in content.claims[0].detail
    assert any("level means are marginal and confounded" in t for t in content.limitations)
