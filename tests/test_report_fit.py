"""The report on whole studies: always one A4 page, every section, every number from the summary.

Studies with 2, 4 and 6 params are simulated and analyzed with their figures; one small real
Fashion-MNIST grid is trained, analyzed and reported end to end.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from itertools import combinations
from pathlib import Path
from typing import Any

import pytest

from interplay.analysis import analyze, params_from_search
from interplay.config import Claim
from interplay.report import ReportFiles, pdf_pages, write_report
from interplay.report import numbers as fmt
from interplay.report.content import SECTIONS
from interplay.studyfile import StudyFile

from .test_report import HYPOTHESIS, analyzed, heldout_record, record

A4 = (595.28, 841.89)
DESIGNS = {
    2: ["lr", "norm"],
    4: ["lr", "norm", "dropout", "width"],
    6: ["lr", "norm", "dropout", "width", "batch_size", "depth"],
}
PLANTED = {("norm", "lr"): 2.5, ("dropout", "norm"): -1.5}
REFLECTION = (
    "The learning rate mattered most, as expected. Batch norm rescued the largest learning "
    "rate, which I had hoped for but not measured before. Next time I would add a fourth seed."
)
# A decimal number as the report prints it: not part of a level label such as 2.5e-4.
NUMBER = re.compile(r"(?<![\w.])\d+\.\d+(?!\.?\d|\w)")


@pytest.fixture(scope="module")
def studies(tmp_path_factory: pytest.TempPathFactory) -> dict[int, tuple[Any, StudyFile, Path]]:
    out = {}
    for k, names in DESIGNS.items():
        analysis = tmp_path_factory.mktemp(f"p{k}") / "analysis"
        pairs = {p: v for p, v in PLANTED.items() if set(p) <= set(names)}
        summary, study_file = analyzed(names, pairs, analysis, seeds=2)
        out[k] = (summary, study_file, analysis)
    return out


def write(study: tuple[Any, StudyFile, Path], out: Path, **kwargs: Any) -> ReportFiles:
    summary, study_file, analysis = study
    args: dict[str, Any] = {
        "hypothesis": record(study_file),
        "test": heldout_record(summary),
        "reflection": REFLECTION,
        "compute_s": 4321.0,
        "study_file": study_file,
    }
    args.update(kwargs)
    return write_report(study_file.base(), summary, out, analysis_dir=analysis, **args)


def assert_one_a4_page(files: ReportFiles) -> None:
    pdf = files.pdf.read_bytes()
    assert pdf_pages(pdf) == [pytest.approx(A4, abs=0.1)]
    # The page tree's own count agrees with the page objects found.
    assert re.search(rb"/Type\s*/Pages\s*/Count\s+1\b", pdf)
    for section in SECTIONS:
        assert f"/Title({section})".encode() in pdf


def _floats(node: Any) -> Iterator[float]:
    if isinstance(node, dict):
        for value in node.values():
            yield from _floats(value)
    elif isinstance(node, list):
        for value in node:
            yield from _floats(value)
    elif isinstance(node, int | float) and not isinstance(node, bool):
        yield float(node)
    elif isinstance(node, str):
        yield from (float(x) for x in NUMBER.findall(node))


def allowed_numbers(summary: dict[str, Any], test: dict[str, Any] | None) -> set[str]:
    """Every way the report may print a number of the summary (signs dropped)."""
    values = list(_floats(summary))
    if test is not None:
        values += [100 * test["test_acc"]] + (
            [100 * test["test_acc_sd"]] if test["test_acc_sd"] else []
        )
    for entry in summary["interactions"]:
        cells = entry.get("cell_means")
        if cells:
            # The theory checks print 2 x 2 contrasts of these cell means.
            m = cells["means"]
            for i1, i2 in combinations(range(len(m)), 2):
                for j1, j2 in combinations(range(len(m[0])), 2):
                    values.append(m[i2][j2] - m[i1][j2] - m[i2][j1] + m[i1][j1])
    out = set()
    for x in values:
        out |= {f"{abs(x):.2f}", f"{abs(x):.1f}", f"{abs(x):.3g}", fmt.level(abs(x))}
    return out


def expected_numbers(summary: dict[str, Any], files: ReportFiles) -> tuple[list[str], list[str]]:
    """Numbers that report.md must print, and those the page prints at its fit."""
    best, noise = summary["best"], summary["noise"]
    page = [fmt.value(best["mean"]), fmt.value(best["sd"]), fmt.value(noise["pooled_seed_sd"])]
    page += [fmt.value(best["runner_up"]["mean"]), fmt.value(abs(best["difference_to_runner_up"]))]
    claims = []
    for item in summary["claims"]["items"]:
        st = item["statistic"]
        claims += [fmt.p_value(st["p"]), fmt.stat(st.get("F", st.get("t")))]
        if item["kind"] == "interaction":
            claims.append(fmt.with_interval(st["partial_eta2"], st["partial_eta2_ci"], fmt.share))
        if item["kind"] == "beats":
            claims.append(fmt.with_interval(st["difference"], st["difference_ci"], fmt.signed))
    rows = []
    for entry in summary["interactions"]:
        row = [fmt.with_interval(entry["partial_eta2"], entry["partial_eta2_ci"], fmt.share)]
        row += [
            fmt.stat(entry["F"]),
            fmt.p_value(entry["p"]),
            fmt.ratio(entry["residual_to_noise"]),
        ]
        # A size that cannot be negative shows only the upper end of its interval.
        row.append(fmt.with_upper(entry["max_abs_residual"], entry["max_abs_residual_ci"]))
        rows.append(row)
    md = page + claims + [x for row in rows for x in row]
    shown = page + (claims if files.fit.claim_detail else [])
    shown += [x for row in rows[: files.fit.interactions] for x in row]
    return md, shown


@pytest.mark.parametrize("k", sorted(DESIGNS))
def test_write_report_one_a4_page_for_any_number_of_params(
    k: int, studies: dict[int, Any], tmp_path: Path
) -> None:
    files = write(studies[k], tmp_path)
    assert_one_a4_page(files)
    md, source = files.md.read_text(), files.typ.read_text()
    for section in SECTIONS:
        assert f"## {section}" in md and f"\n= {section}\n" in source
    assert len(files.content.figures) == 2
    assert HYPOTHESIS in md and REFLECTION in md


@pytest.mark.parametrize("k", sorted(DESIGNS))
def test_write_report_numbers_equal_the_summary(
    k: int, studies: dict[int, Any], tmp_path: Path
) -> None:
    summary = studies[k][0]
    test = heldout_record(summary)
    files = write(studies[k], tmp_path, test=test)
    md, source = files.md.read_text(), files.typ.read_text()
    in_md, on_page = expected_numbers(summary, files)
    assert [x for x in in_md if x not in md] == []
    assert [x for x in on_page if x not in source] == []
    shown_test = f"{fmt.value(100 * test['test_acc'])} ± {fmt.value(100 * test['test_acc_sd'])} %"
    assert shown_test in md and shown_test in source

    # And the other way round: no printed number comes from anywhere but the summary.
    allowed = allowed_numbers(summary, test) | {fmt.duration(4321.0).split()[0]}
    printed = md.replace(HYPOTHESIS, "").replace(REFLECTION, "")
    strange = sorted(set(NUMBER.findall(printed)) - allowed)
    assert strange == []
    body = source.split("#show: report-setup", 1)[1]
    literals = " ".join(re.findall(r'"((?:[^"\\]|\\.)*)"', body))
    literals = literals.replace(HYPOTHESIS, "").replace(REFLECTION, "")
    assert sorted(set(NUMBER.findall(literals)) - allowed) == []


def test_write_report_long_texts_still_one_page(studies: dict[int, Any], tmp_path: Path) -> None:
    summary, study_file, _ = studies[6]
    sentence = "This part of the reflection explains at length what I expected and why, {}."
    long = " ".join(sentence.format(i) for i in range(60))
    hypothesis = {**record(study_file), "text": long + "\n\n" + long}
    files = write(studies[6], tmp_path, reflection=long, hypothesis=hypothesis)
    assert_one_a4_page(files)
    source = files.typ.read_text()
    assert "(continued in report.md)" in source
    for part in re.findall(r"This part of the reflection[^.]*\.", source):
        assert part in long  # whole sentences only
    md = files.md.read_text()
    assert long in md and md.count(long) == 3


@pytest.mark.slow
def test_report_of_a_real_fashion_mnist_study(
    write_study: Callable[[dict[str, Any]], Path], tmp_path: Path, mlflow_uri: str
) -> None:
    from interplay.results import results_table
    from interplay.runner import run_study
    from interplay.study import StudyPaths
    from interplay.studyfile import load_study

    from .conftest import small_cnn

    raw = small_cnn(epochs=1, batch_size=32)
    raw["name"] = "real"
    raw["data"]["subset"] = 20
    block = raw["model"]["blocks"][0]
    block["layers"][1]["kind"] = "${norm}"
    block["layers"].append({"type": "dropout", "p": "${dropout}"})
    raw["search"] = {
        "params": {"dropout": {"values": [0.0, 0.5]}, "norm": {"values": ["none", "batch"]}},
        "seeds": 2,
    }
    raw["hypothesis"] = {
        "text": "Dropout costs more with batch norm than without it.",
        "claims": [{"kind": "interaction", "params": ["dropout", "norm"]}],
    }
    path = write_study(raw)
    out = tmp_path / "results"
    run_study(path, [], out=out, tracking=mlflow_uri, quiet=True)

    study_file = load_study(path)
    paths = StudyPaths(out)
    table = results_table(paths)
    claims = [Claim.model_validate(c) for c in raw["hypothesis"]["claims"]]
    params = params_from_search(study_file.search)
    analyze(table, params, method="grid", claims=claims, out_dir=paths.analysis, n_boot=200)
    summary = json.loads((paths.analysis / "summary.json").read_text())
    files = write_report(
        study_file.base(),
        summary,
        paths.root,
        analysis_dir=paths.analysis,
        hypothesis=json.loads(paths.hypothesis.read_text()),
        test=None,
        reflection="",
        compute_s=float(table["duration_s"].sum()),
        study_file=study_file,
    )
    assert_one_a4_page(files)
    # Legible at 100 dpi: the page kept full-size type and figures.
    assert files.fit.font_pt >= 9.0 and files.fit.figure_mm >= 56.0
    md = files.md.read_text()
    in_md, _ = expected_numbers(summary, files)
    assert [x for x in in_md if x not in md] == []
    assert (
        "Fashion-MNIST: 20 images per class drawn (200 in all), 20% of them held out for "
        "validation: 160 train, 40 validation images"
    ) in md
    assert "dropout x norm" in md  # the theory check for this pair
    assert all((paths.root / f).is_file() for f in re.findall(r"\]\(([^)]+\.png)\)", md))
