from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from interplay.errors import ConfigError
from interplay.studyfile import grid_levels, grid_points, load_study, load_study_text

from .conftest import small_cnn


def test_load_study_baseline_file() -> None:
    study = load_study(Path(__file__).parents[1] / "studies" / "baseline.yaml").base()
    assert study.name == "baseline"
    assert len(study.model.blocks) == 3
    assert study.training.optimizer.name == "adamw"


def test_load_study_unknown_key_names_closest(write_study) -> None:
    raw = small_cnn()
    raw["model"]["blocks"][0]["layers"][0]["kernal"] = 5
    with pytest.raises(ConfigError) as err:
        load_study(write_study(raw))
    assert "model.blocks[0].layers[0].kernal" in str(err.value)
    assert "did you mean 'kernel'" in str(err.value)


def test_load_study_unknown_section_lists_valid_keys(write_study) -> None:
    raw = small_cnn()
    raw["trainig"] = {}
    with pytest.raises(ConfigError, match="did you mean 'training'"):
        load_study(write_study(raw))


def test_load_study_wrong_value_gives_path_and_allowed(write_study) -> None:
    raw = small_cnn()
    raw["model"]["blocks"][0]["layers"][1]["kind"] = "batchnorm"
    with pytest.raises(ConfigError) as err:
        load_study(write_study(raw))
    message = str(err.value)
    assert "model.blocks[0].layers[1].kind" in message
    assert "'batch', 'layer', 'group', 'instance' or 'none'" in message


def test_load_study_wrong_type_gives_path(write_study) -> None:
    raw = small_cnn(batch_size="large")
    with pytest.raises(ConfigError, match=r"training.batch_size: .*integer.*'large'"):
        load_study(write_study(raw))


def test_load_study_unknown_layer_type(write_study) -> None:
    raw = small_cnn()
    raw["model"]["blocks"][0]["layers"][0]["type"] = "convolution"
    with pytest.raises(ConfigError, match=r"layers\[0\].type: unknown layer type"):
        load_study(write_study(raw))


def test_load_study_yaml_error_names_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("name: x\nmodel:\n  blocks: [\n    - a\n")
    with pytest.raises(ConfigError, match=r"bad.yaml line \d+, column \d+: YAML syntax error"):
        load_study(path)


def test_load_study_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_study(tmp_path / "nope.yaml")


def test_overrides_set_nested_and_list_items(write_study) -> None:
    path = write_study(small_cnn())
    sets = ["training.optimizer.lr=0.1", "model.blocks.0.repeat=3", "data.subset=50"]
    study = load_study(path, sets).base()
    assert study.training.optimizer.lr == pytest.approx(0.1)
    assert study.model.blocks[0].repeat == 3
    assert study.data.subset == 50


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ("training.lr", "dotted.key=value"),
        ("model.blocks.7.repeat=2", "has 2 items"),
        ("training.epochs=zero", "training.epochs"),
    ],
)
def test_overrides_bad_item_is_config_error(write_study, item: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_study(write_study(small_cnn()), [item])


def test_budget_applies_preset_before_overrides(write_study) -> None:
    raw = small_cnn()
    raw["budgets"] = {"quick": {"training.epochs": 2, "data.subset": 30}}
    study = load_study(write_study(raw), ["training.epochs=4"], budget="quick").base()
    assert (study.training.epochs, study.data.subset) == (4, 30)
    with pytest.raises(ConfigError, match="not in the study's budgets"):
        load_study(write_study(raw), budget="full")


def test_placeholders_fill_typed_values_in_several_places() -> None:
    text = """
name: p
model:
  blocks:
    - repeat: ${n_blocks}
      layers:
        - {type: conv, channels: 8}
        - {type: norm, kind: "${norm}"}
        - {type: dropout, p: "${dropout}"}
    - layers:
        - {type: linear, units: 16}
        - {type: dropout, p: "${dropout}"}
search:
  params:
    n_blocks: {values: [1, 2]}
    norm: {values: [batch, group, none]}
    dropout: {low: 0.0, high: 0.5, step: 0.25}
"""
    study_file = load_study_text(text)
    study = study_file.resolve({"n_blocks": 2, "norm": "group", "dropout": 0.25})
    assert study.model.blocks[0].repeat == 2
    assert study.model.blocks[0].layers[1].kind == "group"  # type: ignore[union-attr]
    assert study.model.blocks[1].layers[1].p == pytest.approx(0.25)  # type: ignore[union-attr]
    assert grid_levels(study_file.search)["dropout"] == [0.0, 0.25, 0.5]
    assert len(grid_points(study_file.search)) == 2 * 3 * 3


def test_placeholders_undeclared_name_is_error() -> None:
    text = "name: p\nmodel:\n  blocks:\n    - layers: [{type: dropout, p: '${drop}'}]\n"
    text += "search:\n  params:\n    dropout: {values: [0.1]}\n"
    with pytest.raises(ConfigError, match=r"\$\{drop\} is used but not declared.*dropout"):
        load_study_text(text)


def test_placeholders_bad_level_names_the_combination() -> None:
    text = "name: p\nmodel:\n  blocks:\n    - layers: [{type: norm, kind: '${norm}'}]\n"
    text += "search:\n  params:\n    norm: {values: [batch, nope]}\n"
    study_file = load_study_text(text)
    with pytest.raises(ConfigError, match="with norm=nope"):
        study_file.resolve({"norm": "nope"})


def test_grid_levels_log_range_is_geometric() -> None:
    text = "name: p\nmodel:\n  blocks:\n    - layers: [{type: linear, units: 4}]\n"
    text += "training: {optimizer: {lr: '${lr}'}}\n"
    text += "search:\n  grid_points: 3\n  params:\n    lr: {low: 0.0001, high: 0.01, log: true}\n"
    levels = grid_levels(load_study_text(text).search)["lr"]
    assert levels == pytest.approx([1e-4, 1e-3, 1e-2])


@pytest.mark.parametrize(
    ("param", "message"),
    [
        ({"low": 1, "high": 0}, "must be below"),
        ({"low": 0, "high": 1, "log": True}, "log range needs low > 0"),
        ({"values": []}, "at least one level"),
        ({}, "give values"),
    ],
)
def test_search_param_invalid_range(param: dict[str, object], message: str) -> None:
    text = "name: p\nmodel:\n  blocks:\n    - layers: [{type: linear, units: 4}]\n"
    import yaml

    raw = yaml.safe_load(text)
    raw["search"] = {"params": {"x": param}}
    from interplay.studyfile import from_dict

    with pytest.raises(ConfigError, match=message):
        from_dict(raw)


def test_load_study_duplicate_key_refused(tmp_path: Path) -> None:
    path = tmp_path / "dup.yaml"
    path.write_text("name: x\ntraining:\n  epochs: 1\n  epochs: 30\nmodel: {blocks: []}\n")
    with pytest.raises(ConfigError, match=r"line 4.*'epochs' appears twice"):
        load_study(path)


def test_load_study_unquoted_placeholder_in_flow_mapping_hints_quotes(tmp_path: Path) -> None:
    path = tmp_path / "ph.yaml"
    path.write_text("name: x\nmodel: {blocks: [{layers: [{type: norm, kind: ${n}}]}]}\n")
    with pytest.raises(ConfigError, match=r"placeholder needs quotes"):
        load_study(path)


def test_load_study_python_tag_is_not_evaluated(tmp_path: Path) -> None:
    path = tmp_path / "evil.yaml"
    path.write_text("name: !!python/object/apply:os.system ['echo hacked']\nmodel: {}\n")
    with pytest.raises(ConfigError, match="YAML syntax error"):
        load_study(path)


def test_search_param_declared_but_unused_is_error(write_study) -> None:
    raw = small_cnn()
    raw["search"] = {"params": {"width": {"values": [8, 16]}}}
    with pytest.raises(ConfigError, match=r"search.params.width is declared but no setting"):
        load_study(write_study(raw))


def test_search_param_repeated_level_is_error(write_study) -> None:
    raw = small_cnn()
    raw["model"]["blocks"][0]["repeat"] = "${depth}"
    raw["search"] = {"params": {"depth": {"values": [1, 1, 2]}}}
    with pytest.raises(ConfigError, match=r"search.params.depth.values repeats 1"):
        load_study(write_study(raw))


@pytest.mark.parametrize(
    ("claim", "message"),
    [
        ({"kind": "interaction", "params": ["depth", "depht"]}, "'depht' is not a search param"),
        ({"kind": "beats", "param": "norm", "level": "bacth", "other": "none"}, "not a level"),
    ],
)
def test_load_study_claim_typo_refused_before_training(
    write_study, claim: dict[str, object], message: str
) -> None:
    raw = small_cnn()
    raw["model"]["blocks"][0]["repeat"] = "${depth}"
    raw["model"]["blocks"][0]["layers"][1]["kind"] = "${norm}"
    raw["search"] = {
        "params": {"depth": {"values": [1, 2]}, "norm": {"values": ["none", "batch"]}}
    }
    raw["hypothesis"] = {"text": "t", "claims": [claim]}
    with pytest.raises(ConfigError, match=message):
        load_study(write_study(raw))


def test_load_study_batch_size_one_with_batch_norm_refused(write_study) -> None:
    with pytest.raises(ConfigError, match=r"training.batch_size 1 cannot train batch norm"):
        load_study(write_study(small_cnn(batch_size=1)))
    raw = small_cnn(batch_size=1)
    raw["model"]["blocks"][0]["layers"][1]["kind"] = "group"
    raw["model"]["blocks"][0]["layers"][1]["groups"] = 4
    assert load_study(write_study(raw)).base().training.batch_size == 1


def placement_study(
    values: object, claims: list[dict[str, object]] | None = None
) -> dict[str, Any]:
    raw = small_cnn()
    raw["model"]["blocks"].insert(
        1, {"repeat": "${placement}", "layers": [{"type": "dropout", "p": 0.5}]}
    )
    raw["search"] = {"params": {"placement": {"values": values}}}
    if claims:
        raw["hypothesis"] = {"text": "t", "claims": claims}
    return raw


def test_named_levels_fill_values_and_keep_names(write_study) -> None:
    from interplay.analysis.table import params_from_search

    study_file = load_study(write_study(placement_study({"output_only": 0, "every_block": 1})))

    assert grid_points(study_file.search) == [
        {"placement": "output_only"},
        {"placement": "every_block"},
    ]
    assert study_file.base().model.blocks[1].repeat == 0
    assert study_file.resolve({"placement": "every_block"}).model.blocks[1].repeat == 1
    [info] = params_from_search(study_file.search)
    assert (info.kind, info.levels) == ("categorical", ["output_only", "every_block"])


def test_named_levels_with_one_value_refused(write_study) -> None:
    with pytest.raises(ConfigError, match=r"search.params.placement.values repeats 1"):
        load_study(write_study(placement_study({"every_block": 1, "all_blocks": 1})))


def test_named_levels_claims_use_the_names(write_study) -> None:
    good = {"kind": "beats", "param": "placement", "level": "output_only", "other": "every_block"}
    load_study(write_study(placement_study({"output_only": 0, "every_block": 1}, [good])))

    bad = {**good, "level": 0}
    with pytest.raises(ConfigError, match=r"0 is not a level of placement \(output_only"):
        load_study(write_study(placement_study({"output_only": 0, "every_block": 1}, [bad])))


def norm_study(**search: Any) -> dict[str, Any]:
    raw = small_cnn()
    raw["model"]["blocks"][0]["layers"][1]["kind"] = "${norm}"
    raw["search"] = {"params": {"norm": {"values": ["none", "batch"]}}, **search}
    return raw


@pytest.mark.parametrize(
    ("claim", "values", "message"),
    [
        (
            {"kind": "beats", "param": "norm", "level": "batch", "other": "batch"},
            ["none", "batch"],
            "level and other are both 'batch'",
        ),
        (
            {
                "kind": "beats",
                "param": "norm",
                "level": "batch",
                "other": "none",
                "within": {"norm": "batch"},
            },
            ["none", "batch"],
            "within cannot fix norm",
        ),
        ({"kind": "effect", "param": "norm", "level": "batch"}, ["none", "batch"], "belong to"),
        ({"kind": "effect", "param": "norm"}, ["batch"], "norm has one level"),
    ],
    ids=["same-levels", "within-own-param", "stray-level", "one-level"],
)
def test_load_study_claim_that_cannot_be_judged_refused(
    write_study, claim: dict[str, object], values: list[str], message: str
) -> None:
    raw = norm_study()
    raw["search"]["params"]["norm"]["values"] = values
    raw["hypothesis"] = {"text": "t", "claims": [claim]}
    with pytest.raises(ConfigError, match=message):
        load_study(write_study(raw))


def test_load_study_pruner_on_grid_refused(write_study) -> None:
    with pytest.raises(ConfigError, match="search.*pruner median stops runs early"):
        load_study(write_study(norm_study(pruner="median")))


def test_load_study_unknown_figure_kind_lists_kinds(write_study) -> None:
    raw = small_cnn()
    raw["report"] = {"figures": ["pie"]}
    with pytest.raises(ConfigError, match=r"report.figures.*'heatmap'"):
        load_study(write_study(raw))


def test_load_study_placeholder_in_name_refused(write_study) -> None:
    raw = norm_study()
    raw["name"] = "dn-${norm}"
    with pytest.raises(ConfigError, match=r"name 'dn-\$\{norm\}' holds a placeholder"):
        load_study(write_study(raw))


def test_named_levels_yaml_boolean_name_gets_quote_hint(tmp_path: Path) -> None:
    path = tmp_path / "study.yaml"
    path.write_text(
        "name: s\nmodel:\n  blocks:\n    - layers: [{type: norm, kind: '${norm}'}]\n"
        "search:\n  params:\n    norm: {values: {off: none, bn: batch}}\n"
    )
    with pytest.raises(ConfigError, match=r"level name False is not text; quote it"):
        load_study(path)


def test_overrides_accept_bracket_indexes(write_study) -> None:
    study = load_study(write_study(small_cnn()), ["model.blocks[0].repeat=2"]).base()
    assert study.model.blocks[0].repeat == 2


def test_format_params_reads_like_the_tables() -> None:
    from interplay.words import format_params

    assert format_params({"rate": 0.0, "lr": 0.001, "norm": "batch"}) == (
        "rate=0, lr=1e-3, norm=batch"
    )
