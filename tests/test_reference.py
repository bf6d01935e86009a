"""The study-file reference: generated from the schema, committed, and complete."""

from __future__ import annotations

import inspect
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import BaseModel

from interplay import config
from interplay.reference import REGENERATE, Row, reference_sections, render_reference

DOCS = Path(__file__).resolve().parents[1] / "docs" / "study-reference.md"


def schema_models() -> list[type[BaseModel]]:
    """Every model of the study-file schema, found in the module, not by the walker."""
    models: list[type[BaseModel]] = []
    for _, cls in inspect.getmembers(config):
        if isinstance(cls, type) and issubclass(cls, config.Strict) and cls is not config.Strict:
            models.append(cls)
    return models


def rows_by_path() -> dict[str, Row]:
    return {row.path: row for section in reference_sections() for row in section.rows}


def test_reference_docs_file_matches_schema() -> None:
    assert DOCS.is_file(), f"docs/study-reference.md is missing; run {REGENERATE}"
    assert DOCS.read_text(encoding="utf-8") == render_reference(), (
        f"docs/study-reference.md differs from the schema; run {REGENERATE}"
    )


@pytest.mark.parametrize("model", schema_models(), ids=lambda m: m.__name__)
def test_reference_sections_every_field_of_model(model: type[BaseModel]) -> None:
    text = render_reference()
    rows = [r for s in reference_sections() for r in s.rows if r.model is model]
    assert {r.field for r in rows} == set(model.model_fields)
    for row in rows:
        assert f"| `{row.path}` |" in text
        assert row.description == (model.model_fields[row.field].description or "")


def test_reference_sections_every_layer_type() -> None:
    paths = {s.path for s in reference_sections()}
    for kind in config.LAYER_KINDS:
        assert f"model.blocks[].layers[] (type: {kind})" in paths


@pytest.mark.parametrize(
    ("path", "type_", "default"),
    [
        ("name", "string (matching `^[A-Za-z0-9_.-]+$`)", "required"),
        ("training.optimizer.lr", "float (> 0)", "0.001"),
        ("training.optimizer.name", "sgd | adam | adamw", "adam"),
        ("model.blocks[].layers[] (type: conv).kernel", "int (> 0)", "3"),
        ("model.blocks[].layers[] (type: conv).channels", "int (> 0)", "required"),
        ("model.blocks[].layers[] (type: dropout).p", "float (>= 0, < 1)", "0.5"),
        ("model.blocks[].repeat", "int (>= 0)", "1"),
        ("model.blocks[].layers", "list of layers (at least 1)", "required"),
        ("data.subset", "int | null (> 0)", "null"),
        ("search.params.<name>.log", "bool", "false"),
        ("search.params", "mapping of string to mapping", "{}"),
        ("training.optimizer", "mapping", "(section)"),
        (
            "report.figures",
            "list of heatmap | interaction | main_effects | curves | gap | importance",
            "[heatmap, interaction]",
        ),
        ("description", "string", '""'),
    ],
)
def test_reference_rows_type_and_default(path: str, type_: str, default: str) -> None:
    row = rows_by_path()[path]
    assert (row.type, row.default) == (type_, default)


def test_reference_render_escapes_pipes_in_cells() -> None:
    line = next(
        ln for ln in render_reference().splitlines() if ln.startswith("| `data.dataset` |")
    )
    assert "fashion-mnist \\| mnist \\| digits \\| folder" in line
    assert line.count(" | ") == 3


def test_reference_module_prints_reference() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "interplay.reference"], capture_output=True, text=True, check=True
    )
    assert done.stdout == render_reference()
