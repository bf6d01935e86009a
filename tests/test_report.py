"""The report's pieces: number formats, sentence trimming, theory checks, content, renderers.

Analyses here run on simulated results tables (interplay.analysis.synthetic) with planted
effects, so the report's verdicts have a known answer; nothing is trained.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
import typst

from interplay.analysis import ParamInfo, analyze, simulate_table, to_json
from interplay.config import Claim
from interplay.report import numbers as fmt
from interplay.report import pdf_pages, write_report
from interplay.report.content import CONTINUED, SECTIONS, shorten
from interplay.report.theory import PREDICTIONS, Prediction, check_theory, param_roles
from interplay.studyfile import StudyFile, from_dict

PARAMS: dict[str, ParamInfo] = {
    "lr": ParamInfo("lr", "numeric", log=True, levels=[0.001, 0.01, 0.1]),
    "norm": ParamInfo("norm", "categorical", levels=["none", "batch"]),
    "dropout": ParamInfo("dropout", "numeric", levels=[0.0, 0.5]),
    "width": ParamInfo("width", "numeric", levels=[16, 64]),
    "batch_size": ParamInfo("batch_size", "numeric", levels=[64, 256]),
    "depth": ParamInfo("depth", "numeric", levels=[1, 2]),
}
HYPOTHESIS = (
    "Batch norm should let the network train at a larger learning rate. Dropout should cost "
    "more with batch norm than without it."
)


def study_dict(names: Sequence[str], **extra: Any) -> dict[str, Any]:
    """A study whose ${param} placeholders sit where each param's role says."""

    def slot(name: str, default: Any) -> Any:
        return f"${{{name}}}" if name in names else default

    return {
        "name": "planted",
        "description": "Simulated runs with planted effects",
        "data": {"dataset": "fashion-mnist", "subset": 100, "val_fraction": 0.2},
        "model": {
            "blocks": [
                {
                    "repeat": slot("depth", 1),
                    "layers": [
                        {"type": "conv", "channels": slot("width", 16), "kernel": 3},
                        {"type": "norm", "kind": slot("norm", "batch")},
                        {"type": "act", "fn": "relu"},
                        {"type": "dropout", "p": slot("dropout", 0.0)},
                    ],
                }
            ]
        },
        "training": {
            "epochs": 2,
            "batch_size": slot("batch_size", 64),
            "optimizer": {"lr": slot("lr", 0.003)},
        },
        "search": {
            "method": "grid",
            "seeds": 3,
            "params": {n: {"values": PARAMS[n].levels} for n in names},
        },
        "hypothesis": {"text": HYPOTHESIS, "claims": _claims(names)},
        **extra,
    }


def _claims(names: Sequence[str]) -> list[dict[str, Any]]:
    if len(names) < 2:
        return []
    claims: list[dict[str, Any]] = [{"kind": "interaction", "params": list(names[:2])}]
    claims.append({"kind": "effect", "param": names[0], "direction": "increasing"})
    if "norm" in names:
        claims.append({"kind": "beats", "param": "norm", "level": "batch", "other": "none"})
    return claims


def high(name: str, config: Mapping[str, Any]) -> float:
    """1 at a param's last level (batch norm, the largest number), else 0."""
    if name not in config:
        return 0.0
    return 1.0 if config[name] == (PARAMS[name].levels or [])[-1] else 0.0


def planted_mean(pairs: Mapping[tuple[str, str], float]) -> Callable[[Mapping[str, Any]], float]:
    """85 points, half a point per param at its high level, plus each planted contrast."""

    def mean(config: Mapping[str, Any]) -> float:
        value = 85.0 + 0.5 * sum(high(n, config) for n in config)
        for (a, b), size in pairs.items():
            value += size * high(a, config) * high(b, config)
        return value

    return mean


def analyzed(
    names: Sequence[str],
    pairs: Mapping[tuple[str, str], float],
    out_dir: Path | None = None,
    *,
    seeds: int = 3,
    noise_sd: float = 0.3,
) -> tuple[dict[str, Any], StudyFile]:
    """Simulate a grid study, analyze it, and return summary.json as the report reads it."""
    study_file = from_dict(study_dict(names))
    params = [PARAMS[n] for n in names]
    table = simulate_table(params, planted_mean(pairs), seeds=seeds, noise_sd=noise_sd)
    claims = [Claim.model_validate(c) for c in study_file.raw["hypothesis"]["claims"]]
    result = analyze(table, params, method="grid", claims=claims, out_dir=out_dir, n_boot=200)
    if out_dir is None:
        return json.loads(json.dumps(to_json(result.summary))), study_file
    return json.loads((out_dir / "summary.json").read_text()), study_file


def record(study_file: StudyFile, edits: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """hypothesis.json as interplay.study writes it."""
    hypothesis = study_file.raw["hypothesis"]
    return {"recorded_at": "2025-03-01T09:00:00+00:00", **hypothesis, "edits": edits or []}


def heldout_record(summary: dict[str, Any], acc: float = 0.8612, sd: float | None = 0.0031) -> Any:
    best = summary["best"]
    return {
        "config_id": best["config_id"],
        "params": best["params"],
        "test_acc": acc,
        "test_acc_sd": sd,
        "n": 3,
        "evaluated_at": "2025-03-02T10:00:00+00:00",
    }


# ---------------------------------------------------------------- numbers and text


@pytest.mark.parametrize(
    ("p", "shown"),
    [(0.0004, "p < 0.001"), (0.001, "p = 0.001"), (0.0495, "p = 0.0495"), (0.2345, "p = 0.234")],
)
def test_p_value_format(p: float, shown: str) -> None:
    assert fmt.p_value(p) == shown


def test_numbers_intervals_and_missing_values() -> None:
    assert fmt.with_interval(2.6029, (1.981, 3.0514)) == "2.60 [1.98, 3.05]"
    assert fmt.with_interval(0.88, None, fmt.share) == "0.88"
    assert fmt.interval((-1.0, None)) == ""
    assert fmt.signed(-0.354) == "-0.35" and fmt.signed(1.2) == "+1.20"
    assert fmt.value(float("nan")) == fmt.MISSING and fmt.value(None) == fmt.MISSING
    assert fmt.df(12.0) == "12" and fmt.df(15.23) == "15.2"
    assert [fmt.duration(s) for s in (45, 750, 11520)] == ["45 s", "12.5 min", "3.2 h"]
    assert fmt.level(0.001) == "1e-3" and fmt.level("batch") == "batch"


def test_shorten_keeps_whole_sentences() -> None:
    sentences = [f"Sentence number {i} says something about the study." for i in range(20)]
    text = " ".join(sentences[:10]) + "\n\n" + " ".join(sentences[10:])
    short, cut = shorten(text, 300)
    assert cut and len(short) <= 300
    kept = re.split(r"(?<=[.!?])\s+", short.replace("\n\n", " "))
    assert kept == sentences[: len(kept)]
    assert shorten(text, 10_000) == (text, False)


def test_shorten_keeps_a_long_first_sentence_whole() -> None:
    first = "A first sentence that is much longer than the budget allows for " * 5 + "."
    short, cut = shorten(first + " Second one.", 40)
    assert (short, cut) == (first, True)


# ---------------------------------------------------------------- theory


@pytest.mark.parametrize("with_study_file", [True, False])
def test_param_roles_from_placeholders_or_names(with_study_file: bool) -> None:
    names = list(PARAMS)
    raw = study_dict(names) if with_study_file else None
    assert param_roles(names, raw) == {n: n for n in names}


def test_param_roles_follow_the_setting_not_the_name() -> None:
    raw = study_dict([])
    raw["model"]["blocks"][0]["layers"][1]["kind"] = "${a}"
    raw["model"]["blocks"][0]["layers"][0]["channels"] = "${b}"
    raw["model"]["blocks"][0]["repeat"] = "${c}"
    raw["training"]["optimizer"]["lr"] = "${d}"
    roles = param_roles(["a", "b", "c", "d", "seed_like"], raw)
    assert roles == {"a": "norm", "b": "width", "c": "depth", "d": "lr"}


def test_param_roles_repeat_of_a_block_without_weights_is_not_depth() -> None:
    raw = study_dict([])
    raw["model"]["blocks"].insert(
        1, {"repeat": "${every_block}", "layers": [{"type": "dropout", "p": 0.5}]}
    )
    # Neither the setting (a dropout-only block) nor the name ("block") makes it depth.
    assert param_roles(["every_block"], raw) == {}


@pytest.mark.parametrize("prediction", PREDICTIONS, ids=lambda p: f"{p.a}-{p.b}")
@pytest.mark.parametrize(
    ("planted", "verdict"), [(1.0, "agrees"), (-1.0, "disagrees"), (0.0, "inconclusive")]
)
def test_check_theory_verdict_follows_the_planted_interaction(
    prediction: Prediction, planted: float, verdict: str
) -> None:
    names = [prediction.a, prediction.b]
    size = 3.0 * planted * prediction.sign
    summary, study_file = analyzed(names, {(prediction.a, prediction.b): size})
    checks = check_theory(summary, param_roles(names, study_file.raw))
    assert [c.verdict for c in checks] == [verdict]
    assert checks[0].reference == prediction.reference
    # The evidence prints the contrast at the theory's levels, recomputed here by hand.
    cells = summary["interactions"][0]["cell_means"]
    m = {
        (x, y): cells["means"][i][j]
        for i, x in enumerate(cells["levels_a"])
        for j, y in enumerate(cells["levels_b"])
    }
    a_levels = PARAMS[cells["params"][0]].levels or []
    b_levels = PARAMS[cells["params"][1]].levels or []
    lo_a, hi_a, lo_b, hi_b = a_levels[0], a_levels[-1], b_levels[0], b_levels[-1]
    contrast = m[hi_a, hi_b] - m[lo_a, hi_b] - m[hi_a, lo_b] + m[lo_a, lo_b]
    assert f": {fmt.signed(contrast)}" in checks[0].evidence


def test_check_theory_not_measurable_without_a_grid() -> None:
    params = [ParamInfo("lr", "numeric", log=True), PARAMS["norm"]]
    table = simulate_table(
        params,
        lambda c: 85.0 + (2.0 if c["norm"] == "batch" else 0.0) * math.log10(c["lr"] / 1e-4),
        design="random",
        trials=20,
        seeds=2,
        ranges={"lr": (1e-4, 1e-1)},
    )
    result = analyze(table, params, method="random", n_boot=0, n_boot_surrogate=4)
    summary = json.loads(json.dumps(to_json(result.summary)))
    checks = check_theory(summary, param_roles(["lr", "norm"]))
    assert [c.verdict for c in checks] == ["not measurable here"]
    assert "Friedman's H size" in checks[0].evidence


def test_check_theory_needs_a_none_level_for_normalization() -> None:
    summary, _ = analyzed(["norm", "lr"], {})
    for entry in summary["interactions"]:
        entry["cell_means"]["levels_a" if entry["params"][0] == "norm" else "levels_b"] = [
            "layer",
            "batch",
        ]
    checks = check_theory(summary, param_roles(["norm", "lr"]))
    assert checks[0].verdict == "not measurable here"
    assert "'none' and 'batch'" in checks[0].evidence


# ---------------------------------------------------------------- content and renderers


@pytest.fixture(scope="module")
def two_params(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], StudyFile, Path]:
    analysis = tmp_path_factory.mktemp("two") / "analysis"
    summary, study_file = analyzed(["lr", "norm"], {("norm", "lr"): 2.5}, analysis)
    return summary, study_file, analysis


def report(
    two_params: tuple[dict[str, Any], StudyFile, Path],
    out: Path,
    **kwargs: Any,
) -> Any:
    summary, study_file, analysis = two_params
    args: dict[str, Any] = {
        "hypothesis": record(study_file),
        "test": heldout_record(summary),
        "reflection": "",
        "compute_s": 754.0,
        "study_file": study_file,
    }
    args.update(kwargs)
    return write_report(study_file.base(), summary, out, analysis_dir=analysis, **args)


def test_write_report_sections_in_pdf_markdown_and_source(two_params: Any, tmp_path: Path) -> None:
    files = report(two_params, tmp_path)
    pdf = files.pdf.read_bytes()
    assert pdf_pages(pdf) == [pytest.approx((595.28, 841.89), abs=0.1)]
    md, source = files.md.read_text(), files.typ.read_text()
    for section in SECTIONS:
        assert f"/Title({section})".encode() in pdf  # the PDF outline lists every heading
        assert f"## {section}" in md
        assert f"\n= {section}\n" in source
    assert "compute 12.6 min" in md and "compute 12.6 min" in source


def test_write_report_markdown_links_the_figures(two_params: Any, tmp_path: Path) -> None:
    files = report(two_params, tmp_path / "report")
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", files.md.read_text())
    assert len(links) == 2
    assert all((files.md.parent / link).is_file() for link in links)
    summary = two_params[0]
    assert [f.kind for f in files.content.figures] == ["heatmap", "interaction"]
    assert {str(f.png.name) for f in files.content.figures} == {
        Path(summary["interactions"][0]["figures"][k]["png"]).name
        for k in ("heatmap", "interaction")
    }


def test_write_report_says_the_hypothesis_was_edited_after_results(
    two_params: Any, tmp_path: Path
) -> None:
    study_file = two_params[1]
    late = {"at": "2025-03-05T12:00:00+00:00", "after_results": True, "hypothesis": {}}
    files = report(two_params, tmp_path, hypothesis=record(study_file, [late]))
    for text in (files.md.read_text(), files.typ.read_text()):
        assert "edited after results existed (2025-03-05)" in text
        assert "As recorded on 2025-03-01, before the first run." in text
    assert "The hypothesis was edited after results existed." in files.content.limitations


def test_write_report_without_test_set_says_so(two_params: Any, tmp_path: Path) -> None:
    files = report(two_params, tmp_path, test=None)
    assert "The held-out test set was not evaluated." in files.md.read_text()
    assert "The held-out test set was not evaluated." in files.content.limitations


def test_write_report_test_accuracy_of_another_config_is_not_shown(
    two_params: Any, tmp_path: Path
) -> None:
    other = {**heldout_record(two_params[0]), "config_id": "elsewhere"}
    files = report(two_params, tmp_path, test=other)
    md = files.md.read_text()
    assert "test.json is for configuration elsewhere" in md and "86.12" not in md


def test_write_report_reads_the_reflection_file_next_to_the_study(
    two_params: Any, tmp_path: Path
) -> None:
    (tmp_path / "reflection.md").write_text("Batch norm rescued the largest learning rate.\n")
    files = report(two_params, tmp_path / "out", reflection="reflection.md", study_dir=tmp_path)
    assert "Batch norm rescued the largest learning rate." in files.md.read_text()
    assert "Batch norm rescued the largest learning rate." in files.typ.read_text()


def test_write_report_user_text_stays_text_in_typst(two_params: Any, tmp_path: Path) -> None:
    tricky = 'Use #set, $x$ and "quotes" \\ with *stars* and = signs; nothing here is markup.'
    files = report(two_params, tmp_path, reflection=tricky)
    assert len(pdf_pages(files.pdf.read_bytes())) == 1
    assert tricky in files.md.read_text()


def test_pdf_pages_reads_count_and_size() -> None:
    source = '#set page(paper: "us-letter")\nOne\n#pagebreak()\nTwo\n#pagebreak()\nThree'
    pages = pdf_pages(typst.compile(source.encode()))
    assert pages == [pytest.approx((612.0, 792.0), abs=0.1)] * 3


def test_long_text_is_shortened_at_a_sentence_with_a_note(two_params: Any, tmp_path: Path) -> None:
    sentences = [f"Observation {i} of a long reflection goes on for a while." for i in range(90)]
    text = " ".join(sentences)
    files = report(two_params, tmp_path, reflection=text)
    source = files.typ.read_text()
    assert len(pdf_pages(files.pdf.read_bytes())) == 1
    assert CONTINUED in source and files.fit.user_chars is not None
    shown = [s for s in sentences if s in source]
    assert 0 < len(shown) < len(sentences) and shown == sentences[: len(shown)]
    assert text in files.md.read_text()


def test_read_reflection_text_file_or_missing_file(tmp_path: Path) -> None:
    from interplay.errors import ConfigError
    from interplay.report import read_reflection

    (tmp_path / "reflection.md").write_text("Dropout hurt most with batch norm.\n")

    assert read_reflection("reflection.md", tmp_path) == "Dropout hurt most with batch norm."
    assert read_reflection("Short text.", tmp_path) == "Short text."
    with pytest.raises(ConfigError, match=r"report.reflection: .*refl.md not found"):
        read_reflection("refl.md", tmp_path)
