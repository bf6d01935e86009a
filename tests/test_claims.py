"""Hypothesis claims judged on simulated tables with a planted answer."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from interplay.analysis import ParamInfo, analyze, check_claims, simulate_table
from interplay.config import Claim
from interplay.errors import ConfigError

DROPOUT = ParamInfo("dropout", "numeric", levels=[0.0, 0.25, 0.5])
NORM = ParamInfo("norm", "categorical", levels=["none", "batch", "layer"])
PARAMS = [DROPOUT, NORM]


def mean_with(interaction: float, dropout_slope: float = 4.0, batch: float = 2.0) -> Any:
    def mean(c: Mapping[str, Any]) -> float:
        d = c["dropout"] / 0.5
        norm = {"none": 0.0, "batch": batch, "layer": 1.0}[c["norm"]]
        return 85.0 + dropout_slope * d + norm + interaction * d * (c["norm"] == "batch")

    return mean


def verdicts(
    claims: list[Claim], *, interaction: float = 0.0, seeds: int = 3, noise: float = 0.5, **kw: Any
) -> list[Any]:
    table = simulate_table(
        PARAMS, mean_with(interaction, **kw), seeds=seeds, noise_sd=noise, seed=5
    )
    return analyze(table, PARAMS, method="grid", claims=claims, n_boot=300).claims


INTERACTION = Claim(kind="interaction", params=["dropout", "norm"])


@pytest.mark.parametrize(
    ("setup", "verdict"),
    [
        ({"interaction": 3.0}, "supported"),
        # No interaction and little noise: the 95% interval of its size stays below 1 point.
        ({"interaction": 0.0, "noise": 0.2, "seeds": 4}, "not supported"),
        # A small interaction in heavy noise: neither found nor excluded.
        ({"interaction": 0.5, "noise": 2.0}, "inconclusive"),
        # One seed: the interaction cannot be tested at all.
        ({"interaction": 3.0, "seeds": 1}, "inconclusive"),
    ],
)
def test_claim_interaction_verdicts(setup: dict[str, Any], verdict: str) -> None:
    (result,) = verdicts([INTERACTION], **setup)
    assert result.verdict == verdict, result.reason
    if setup.get("seeds") == 1:
        assert "no replicates" in result.reason
    else:
        assert {"F", "p", "partial_eta2", "partial_eta2_ci", "contrast"} <= set(result.statistic)


@pytest.mark.parametrize(
    ("direction", "slope", "verdict"),
    [
        ("increasing", 4.0, "supported"),
        ("decreasing", 4.0, "not supported"),
        ("any", 4.0, "supported"),
        ("increasing", 0.0, "inconclusive"),
    ],
)
def test_claim_effect_direction_verdicts(direction: str, slope: float, verdict: str) -> None:
    claim = Claim(kind="effect", param="dropout", direction=direction)  # type: ignore[arg-type]
    (result,) = verdicts([claim], dropout_slope=slope, noise=1.5)
    assert result.verdict == verdict, result.reason
    assert result.statistic["levels"] == ["0", "0.25", "0.5"]


@pytest.mark.parametrize(
    ("level", "other", "batch", "noise", "verdict"),
    [
        ("batch", "none", 2.0, 0.5, "supported"),
        ("none", "batch", 2.0, 0.5, "not supported"),
        # Equal levels, precise runs: the difference's interval lies within +-1 point.
        ("batch", "none", 0.0, 0.2, "not supported"),
        ("batch", "none", 0.5, 3.0, "inconclusive"),
    ],
)
def test_claim_beats_verdicts(
    level: str, other: str, batch: float, noise: float, verdict: str
) -> None:
    claim = Claim(kind="beats", param="norm", level=level, other=other)
    (result,) = verdicts([claim], batch=batch, noise=noise, dropout_slope=0.0)
    assert result.verdict == verdict, result.reason
    assert result.statistic["n_level"] == result.statistic["n_other"] == 9
    assert "Welch" in result.method


def test_claim_beats_within_one_level_uses_only_those_runs() -> None:
    claim = Claim(kind="beats", param="norm", level="batch", other="none", within={"dropout": 0.5})
    (result,) = verdicts([claim], interaction=3.0)
    assert result.statistic["n_level"] == result.statistic["n_other"] == 3
    # Within dropout 0.5 batch is ahead by its main effect plus the interaction.
    assert result.statistic["difference"] == pytest.approx(5.0, abs=1.0)
    assert result.verdict == "supported"
    assert result.text == "norm=batch beats norm=none (within dropout=0.5)"


def test_claim_beats_within_a_sampled_range_says_no_run_matches() -> None:
    # A search samples lr from a range: no run sits exactly at lr=0.1, and the verdict must
    # say so instead of a bare "fewer than two runs".
    params = [ParamInfo("lr", "numeric", log=True), NORM]
    table = simulate_table(
        params,
        lambda c: 80.0 + (3.0 if c["norm"] == "batch" else 0.0),
        design="random",
        trials=12,
        seeds=2,
        ranges={"lr": (1e-3, 1e-1)},
        seed=2,
    )
    claim = Claim(kind="beats", param="norm", level="batch", other="none", within={"lr": 0.1})
    (result,) = analyze(
        table, params, method="random", claims=[claim], n_boot=0, n_boot_surrogate=2
    ).claims
    assert result.verdict == "inconclusive"
    assert result.reason.startswith("no compared run matches within lr=0.1")
    assert "searched over a range" in result.reason
    assert result.statistic["n_within"] == 0


@pytest.mark.parametrize(
    ("claim", "message"),
    [
        (Claim(kind="effect", param="depth"), "'depth' is not a search param"),
        (Claim(kind="beats", param="norm", level="group", other="none"), "not a level of norm"),
        (Claim(kind="interaction", params=["norm", "norm"]), "two different params"),
        (
            Claim(kind="beats", param="norm", level="batch", other="none", within={"dropout": 9}),
            "not a level of dropout",
        ),
    ],
)
def test_check_claims_unknown_names_raise_config_error(claim: Claim, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        check_claims([claim], PARAMS)


def test_claims_summary_states_rule_and_alpha() -> None:
    table = simulate_table(PARAMS, mean_with(3.0), seeds=3, noise_sd=0.5, seed=5)
    result = analyze(table, PARAMS, method="grid", claims=[INTERACTION], alpha=0.01, n_boot=50)
    claims = result.summary["claims"]
    assert claims["alpha"] == 0.01 and claims["min_effect"] == 1.0
    assert "supported" in claims["rule"] and "inconclusive" in claims["rule"]
    assert claims["items"][0]["text"] == "dropout and norm interact"
