"""Shape inference against real forward passes, the builder, the summary and user factories."""

from __future__ import annotations

import io
import itertools
import math
import sys
import textwrap
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from rich.console import Console
from torch import nn

from interplay.config import LAYER_KINDS, STANDARD_ORDER, ActLayer, ModelConfig, NormLayer
from interplay.errors import ArchitectureError, ConfigError
from interplay.models import (
    ACT_LAYERS,
    ADAPTIVE_POOL_LAYERS,
    DROPOUT_LAYERS,
    LAYERS,
    NORM_LAYERS,
    POOL_LAYERS,
    BlockNet,
    ModelSummary,
    build_model,
    infer_model,
    render_summary,
    summary_of,
    summary_plain_text,
)

MNIST = (1, 28, 28)
CONV: dict[str, Any] = {"type": "conv", "channels": 4}
FLAT: dict[str, Any] = {"type": "flatten"}
NORM_INSTANCE: dict[str, Any] = {"type": "norm", "kind": "instance"}


def model_of(*blocks: Any) -> ModelConfig:
    """A model from blocks given as layer lists, or as whole block dicts."""
    spec = [b if isinstance(b, dict) else {"layers": b} for b in blocks]
    return ModelConfig.model_validate({"blocks": spec})


def layer_at(net: nn.Module, block: int, index: int) -> nn.Module:
    """Layer `index` of block repetition `block` of a built BlockNet (-1: the head)."""
    assert isinstance(net, BlockNet)
    sequential = net.head if block < 0 else net.blocks[block]
    assert isinstance(sequential, nn.Sequential)
    return sequential[index]


def blocks_of(net: nn.Module) -> nn.ModuleList:
    assert isinstance(net, BlockNet)
    return net.blocks


def leaves_of(net: nn.Module) -> list[nn.Module]:
    containers = (nn.Sequential, nn.ModuleList)
    return [m for m in net.modules() if not list(m.children()) and not isinstance(m, containers)]


def leaf_outputs(net: nn.Module, x: torch.Tensor) -> list[tuple[int, ...]]:
    """The output shape of every leaf layer, in call order, without the batch dimension."""
    shapes: list[tuple[int, ...]] = []
    leaves = leaves_of(net)
    handles = [
        m.register_forward_hook(lambda _m, _i, out: shapes.append(tuple(out.shape[1:])))
        for m in leaves
    ]
    try:
        net(x)
    finally:
        for h in handles:
            h.remove()
    return shapes


def check_against_forward(
    model: ModelConfig, input_shape: tuple[int, int, int] = MNIST, num_classes: int = 10
) -> tuple[nn.Module, ModelSummary]:
    """Build, run a batch of 2, and compare every inferred row with the real layer."""
    summary = infer_model(model, input_shape, num_classes)
    net = build_model(model, input_shape, num_classes)
    assert summary_of(net) == summary
    torch.manual_seed(0)
    x = torch.randn(2, *input_shape)
    assert leaf_outputs(net, x) == [row.out_shape for row in summary.rows]
    assert net(x).shape == (2, num_classes)
    assert summary.output_shape == (num_classes,)

    leaves = leaves_of(net)
    assert len(leaves) == len(summary.rows)
    for layer, row in zip(leaves, summary.rows, strict=True):
        assert sum(p.numel() for p in layer.parameters()) == row.params, row.label
    assert summary.total_params == sum(p.numel() for p in net.parameters())
    return net, summary


# ---------------------------------------------------------------- every layer, every norm

# For each layer kind: blocks that end with it, on maps and, where valid, on vectors.
LAYER_CASES: dict[str, list[list[dict[str, Any]]]] = {
    "conv": [
        [{"type": "conv", "channels": 8}],
        [{"type": "conv", "channels": 3, "kernel": 5, "stride": 2, "padding": 0}],
        [{"type": "conv", "channels": 3, "kernel": 4, "stride": 2, "padding": "same"}],
        [{"type": "conv", "channels": 2, "kernel": 1, "bias": False}],
    ],
    "linear": [
        [{"type": "linear", "units": 16}],
        [CONV, {"type": "linear", "units": 5, "in_features": 4 * 28 * 28}],
    ],
    "norm": [[CONV, {"type": "norm", "kind": k, "groups": 2}] for k in NORM_LAYERS]
    + [[FLAT, {"type": "norm", "kind": k, "groups": 2}] for k in NORM_LAYERS if k != "instance"],
    "act": [[CONV, {"type": "act", "fn": fn}] for fn in ACT_LAYERS]
    + [[FLAT, {"type": "act", "fn": fn, "negative_slope": 0.2}] for fn in ACT_LAYERS],
    "pool": [
        [CONV, {"type": "pool", "kind": k, "size": s, "stride": st}]
        for k, s, st in itertools.product(POOL_LAYERS, (2, 3), (None, 1, 2))
    ],
    "adaptive_pool": [
        [CONV, {"type": "adaptive_pool", "kind": k, "output": o}]
        for k, o in itertools.product(ADAPTIVE_POOL_LAYERS, (1, 3))
    ],
    "flatten": [[FLAT], [CONV, FLAT], [FLAT, FLAT]],
    "dropout": [[CONV, {"type": "dropout", "kind": k}] for k in ("auto", *DROPOUT_LAYERS)]
    + [[FLAT, {"type": "dropout", "kind": k, "p": 0.1}] for k in ("auto", "element")],
}


def test_layer_cases_cover_every_layer_kind() -> None:
    assert set(LAYER_CASES) == set(LAYER_KINDS) == set(LAYERS) == set(STANDARD_ORDER)


@pytest.mark.parametrize(
    "layers",
    [case for cases in LAYER_CASES.values() for case in cases],
    ids=[f"{kind}-{i}" for kind, cases in LAYER_CASES.items() for i in range(len(cases))],
)
def test_infer_model_matches_forward(layers: list[dict[str, Any]]) -> None:
    model = model_of({"layers": layers, "order": "as_written"})
    net, summary = check_against_forward(model)
    net.eval()
    assert net(torch.zeros(2, *MNIST)).shape == (2, 10)


EXPECTED_NORMS = {
    ("batch", "map"): nn.BatchNorm2d,
    ("batch", "vector"): nn.BatchNorm1d,
    ("layer", "map"): nn.LayerNorm,
    ("layer", "vector"): nn.LayerNorm,
    ("group", "map"): nn.GroupNorm,
    ("group", "vector"): nn.GroupNorm,
    ("instance", "map"): nn.InstanceNorm2d,
}


@pytest.mark.parametrize(("kind", "on"), list(EXPECTED_NORMS))
def test_norm_layer_class_and_params(kind: str, on: str) -> None:
    before = [CONV] if on == "map" else [FLAT]
    model = model_of({"layers": [*before, {"type": "norm", "kind": kind, "groups": 2}]})
    net, summary = check_against_forward(model)
    norm = layer_at(net, 0, 1)
    assert type(norm) is EXPECTED_NORMS[(kind, on)]
    shape = summary.rows[0].out_shape
    expected = 2 * math.prod(shape) if kind == "layer" else 2 * shape[0]
    assert summary.rows[1].params == expected


def test_norm_layers_registry_has_every_kind_but_none() -> None:
    kinds = set(typing.get_args(NormLayer.model_fields["kind"].annotation))
    assert set(NORM_LAYERS) == kinds - {"none"}
    assert set(EXPECTED_NORMS) >= {(k, "map") for k in NORM_LAYERS}


def test_norm_none_makes_no_layer() -> None:
    net, summary = check_against_forward(model_of([CONV, {"type": "norm", "kind": "none"}]))
    assert [row.kind for row in summary.rows] == ["conv", "flatten", "linear"]
    assert len(list(blocks_of(net)[0].children())) == 1


@pytest.mark.parametrize(
    ("kind", "on", "expected"),
    [
        ("auto", "map", nn.Dropout2d),
        ("auto", "vector", nn.Dropout),
        ("element", "map", nn.Dropout),
        ("channel", "map", nn.Dropout2d),
    ],
)
def test_dropout_kind_picks_layer(kind: str, on: str, expected: type[nn.Module]) -> None:
    before = CONV if on == "map" else FLAT
    net, summary = check_against_forward(model_of([before, {"type": "dropout", "kind": kind}]))
    assert type(layer_at(net, 0, 1)) is expected
    assert summary.rows[1].label.startswith(
        "dropout2d" if expected is nn.Dropout2d else "dropout "
    )


@pytest.mark.parametrize("fn", list(ACT_LAYERS))
def test_act_layer_behaves_as_named(fn: str) -> None:
    layer = ACT_LAYERS[fn](ActLayer.model_validate({"type": "act", "fn": fn}))
    x = torch.linspace(-2, 2, 9)
    reference = {
        "relu": torch.relu,
        "gelu": nn.functional.gelu,
        "silu": nn.functional.silu,
        "leaky_relu": lambda t: nn.functional.leaky_relu(t, 0.01),
        "tanh": torch.tanh,
    }[fn]
    assert torch.allclose(layer(x), reference(x))


# ---------------------------------------------------------------- impossible architectures

P = pytest.param
IMPOSSIBLE = [
    P(
        [{"layers": [{"type": "conv", "channels": 8}, {"type": "pool"}], "repeat": 6}],
        ["model.blocks[0] (block1, repetition 5), layer 1 (max pool 2x2)", "8x1x1", "window 2"],
        id="pool-window-too-big",
    ),
    P(
        [{"layers": [{"type": "conv", "channels": 8, "kernel": 7, "padding": 0}], "repeat": 5}],
        ["repetition 5", "layer 0 (conv 7x7 8)", "8x4x4", "kernel 7", "padding"],
        id="conv-kernel-too-big",
    ),
    P(
        [[{"type": "conv", "channels": 6}, {"type": "norm", "kind": "group", "groups": 4}]],
        ["model.blocks[0] (block1)", "layer 1 (group norm 4)", "6 channels", "1, 2, 3, 6"],
        id="group-not-dividing",
    ),
    P(
        [[CONV], [{"type": "linear", "units": 8, "in_features": 100}]],
        ["model.blocks[1] (block2)", "layer 0 (linear 8)", "in_features is 100", "3136"],
        id="in-features-disagree",
    ),
    P(
        [[FLAT], [CONV]],
        ["model.blocks[1] (block2)", "layer 0 (conv 3x3 4)", "vector of 784", "feature map"],
        id="conv-after-flatten",
    ),
    P(
        [[{"type": "linear", "units": 8}], [CONV]],
        ["model.blocks[1]", "vector of 8 features", "before the first flatten or linear"],
        id="conv-after-linear",
    ),
    P([[FLAT], [{"type": "pool"}]], ["max pool 2x2", "vector of 784"], id="pool-on-vector"),
    P(
        [[FLAT, {"type": "norm", "kind": "instance"}]],
        ["layer 1 (instance norm)", "vector of 784", "batch or layer"],
        id="instance-norm-on-vector",
    ),
    P(
        [{"layers": [CONV, {"type": "adaptive_pool"}, NORM_INSTANCE], "order": "as_written"}],
        ["layer 2 (instance norm)", "4x1x1", "more than one pixel"],
        id="instance-norm-on-one-pixel",
    ),
    P(
        [[FLAT, {"type": "dropout", "kind": "channel"}]],
        ["layer 1 (dropout 0.5)", "vector of 784", "element or auto"],
        id="channel-dropout-on-vector",
    ),
    P(
        [[{"type": "conv", "channels": 4, "kernel": 4}]],
        ["layer 0 (conv 4x4 4)", "'same'", "odd kernel", "kernel to 3 or 5"],
        id="same-padding-even-kernel",
    ),
    P(
        [[CONV, {"type": "act"}, CONV]],
        ["model.blocks[0] (block1)", "conv appears 2 times", "as_written", "split the block"],
        id="standard-order-repeated-kind",
    ),
]


@pytest.mark.parametrize(("blocks", "words"), IMPOSSIBLE)
def test_infer_model_refuses_impossible(blocks: list[Any], words: list[str]) -> None:
    model = model_of(*blocks)
    with pytest.raises(ArchitectureError) as info:
        infer_model(model, MNIST, 10)
    for word in words:
        assert word in str(info.value)
    with pytest.raises(ArchitectureError):
        build_model(model, MNIST, 10)


def test_block_named_head_refused() -> None:
    with pytest.raises(ArchitectureError, match=r"model\.blocks\[0\] \(head\): the name 'head'"):
        infer_model(model_of({"name": "head", "layers": [CONV]}), MNIST, 10)


def test_named_block_appears_in_error() -> None:
    model = model_of({"name": "stem", "layers": [FLAT]}, {"name": "body", "layers": [CONV]})
    with pytest.raises(ArchitectureError, match=r"model\.blocks\[1\] \(body\), layer 0"):
        infer_model(model, MNIST, 10)


# ---------------------------------------------------------------- order, repeat, flatten, bias


def test_standard_order_rearranges_block() -> None:
    written = [
        {"type": "dropout"},
        {"type": "adaptive_pool", "output": 4},
        {"type": "pool"},
        {"type": "act"},
        {"type": "norm"},
        {"type": "conv", "channels": 8},
    ]
    _, summary = check_against_forward(model_of(written))
    block = [row for row in summary.rows if row.block == "block1"]
    assert [row.kind for row in block] == [
        k for k in STANDARD_ORDER if k in {r.kind for r in block}
    ]
    assert len(block) == 6
    assert [row.index for row in block] == [5, 4, 3, 2, 1, 0]
    assert [row.out_shape for row in block][-1] == (8, 4, 4)


def test_as_written_keeps_order_and_repeats() -> None:
    written = [CONV, {"type": "act"}, CONV, {"type": "act"}, {"type": "pool"}]
    _, summary = check_against_forward(model_of({"layers": written, "order": "as_written"}))
    assert [row.kind for row in summary.rows[:5]] == ["conv", "act", "conv", "act", "pool"]


@pytest.mark.parametrize("repeat", [0, 1, 3])
def test_repeat_stacks_block(repeat: int) -> None:
    block = {"layers": [{"type": "conv", "channels": 4}, {"type": "pool"}], "repeat": repeat}
    net, summary = check_against_forward(model_of(block, [{"type": "act"}]))
    assert isinstance(net, BlockNet)
    assert len(blocks_of(net)) == repeat + 1
    stacked = [f"block1.{r}" for r in range(1, repeat + 1)] if repeat > 1 else ["block1"] * repeat
    assert summary.block_names == [*stacked, "block2"]
    side = 28 // 2**repeat
    assert summary.rows[-3].out_shape == ((4, side, side) if repeat else (1, 28, 28))


def test_auto_flatten_before_linear() -> None:
    net, summary = check_against_forward(model_of([CONV], [{"type": "linear", "units": 32}]))
    flatten, linear = summary.rows[1], summary.rows[2]
    assert (flatten.block, flatten.index, flatten.kind) == ("block2", None, "flatten")
    assert flatten.out_shape == (4 * 28 * 28,)
    assert (linear.index, linear.in_shape) == (0, (3136,))
    assert isinstance(layer_at(net, 1, 0), nn.Flatten)
    # The head needs no second flatten on vectors.
    assert [row.kind for row in summary.rows if row.block == "head"] == ["linear"]


def test_head_flattens_feature_map() -> None:
    net, summary = check_against_forward(model_of([CONV]))
    head = [row for row in summary.rows if row.block == "head"]
    assert [(row.kind, row.out_shape) for row in head] == [("flatten", (3136,)), ("linear", (10,))]
    assert isinstance(layer_at(net, -1, 0), nn.Flatten)


def test_all_blocks_dropped_leaves_linear_classifier() -> None:
    net, summary = check_against_forward(model_of({"layers": [CONV], "repeat": 0}), num_classes=3)
    assert summary.total_params == 784 * 3 + 3
    assert len(blocks_of(net)) == 0


@pytest.mark.parametrize(
    ("bias", "follower", "expected"),
    [
        ("auto", {"type": "norm", "kind": "batch"}, False),
        ("auto", {"type": "norm", "kind": "layer"}, True),
        ("auto", {"type": "norm", "kind": "none"}, True),
        ("auto", {"type": "act"}, True),
        (True, {"type": "norm", "kind": "batch"}, True),
        (False, {"type": "act"}, False),
    ],
)
def test_conv_bias_auto(bias: Any, follower: dict[str, Any], expected: bool) -> None:
    conv = {"type": "conv", "channels": 8, "bias": bias}
    net, summary = check_against_forward(model_of([follower, conv]))
    assert (layer_at(net, 0, 0).bias is not None) is expected
    assert summary.rows[0].params == 8 * 9 + (8 if expected else 0)


def test_conv_bias_auto_looks_at_final_order() -> None:
    # As written the batch norm does not directly follow the conv, so the conv keeps its bias.
    layers = [CONV, {"type": "act"}, {"type": "norm"}]
    net, _ = check_against_forward(model_of({"layers": layers, "order": "as_written"}))
    assert layer_at(net, 0, 0).bias is not None
    net, _ = check_against_forward(model_of(layers))
    assert layer_at(net, 0, 0).bias is None


# ---------------------------------------------------------------- MACs and the summary table


def test_macs_of_known_conv() -> None:
    model = model_of([{"type": "conv", "channels": 32, "padding": 1}])
    summary = infer_model(model, MNIST, 10)
    assert summary.rows[0].macs == 28 * 28 * 32 * 9
    assert summary.rows[0].params == 32 * 9 + 32
    assert summary.total_macs == 28 * 28 * 32 * 9 + 32 * 28 * 28 * 10


def test_summary_plain_text_same_cells_aligned() -> None:
    model = model_of({"layers": [{"type": "conv", "channels": 32, "padding": 1}], "repeat": 2})
    summary = infer_model(model, MNIST, 10)
    lines = summary_plain_text(summary).splitlines()
    assert lines[0] == "input 1x28x28"
    assert lines[1].split() == ["block", "layer", "output", "shape", "params", "MACs"]
    rows = lines[3:-2]
    layer = lines[1].index("layer")
    assert [r[layer:].split()[0] for r in rows] == ["conv", "conv", "flatten", "linear"]
    assert [r[:8].strip() for r in rows] == ["block1.1", "block1.2", "head", ""]
    assert lines[-1].split() == ["total", "4", "layers", "10", "260,458", "7.70M"]
    # Numbers are right-aligned: every row's params column ends where the header's does.
    end = lines[1].index("params") + len("params")
    assert [r[:end].split()[-1] for r in rows] == ["320", "9,248", "0", "250,890"]


def test_render_summary_has_totals() -> None:
    model = model_of({"layers": [{"type": "conv", "channels": 32, "padding": 1}], "repeat": 2})
    summary = infer_model(model, MNIST, 10)
    table = render_summary(summary)
    assert [c.header for c in table.columns] == [
        "block",
        "layer",
        "output shape",
        "params",
        "MACs",
    ]
    cells = [list(c._cells) for c in table.columns]
    assert cells[0] == ["block1.1", "block1.2", "head", "", "total"]
    assert cells[1][:2] == ["conv 3x3 32", "conv 3x3 32"]
    assert cells[2][-1] == "10"
    assert cells[3][-1] == f"{summary.total_params:,}" == "260,458"
    console = Console(width=100, record=True, file=io.StringIO())
    console.print(table)
    assert "input 1x28x28" in console.export_text()


# ---------------------------------------------------------------- user factories

FACTORY_SOURCE = """
import torch
from torch import nn

def small_cnn(settings, *, input_shape, num_classes):
    width = settings["options"].get("width", 8)
    return nn.Sequential(
        nn.Conv2d(input_shape[0], width, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(2),
        nn.Flatten(),
        nn.Linear(width * 4, num_classes),
    )

def wrong_output(settings, *, input_shape, num_classes):
    return nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, num_classes + 1))

def not_a_module(settings, *, input_shape, num_classes):
    return 42

def the_class(settings, *, input_shape, num_classes):
    return nn.Linear

def raises(settings, *, input_shape, num_classes):
    raise ValueError("width must be even")

def forward_fails(settings, *, input_shape, num_classes):
    return nn.Sequential(nn.Flatten(), nn.Linear(100, num_classes))

def no_keywords(settings):
    return nn.Linear(1, 1)
"""


@pytest.fixture
def factory_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    name = f"user_nets_{tmp_path.name.replace('-', '_')}"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(FACTORY_SOURCE))
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name
    sys.modules.pop(name, None)


def factory_config(spec: str, **options: Any) -> ModelConfig:
    return ModelConfig.model_validate({"factory": spec, "options": options})


def test_factory_builds_and_measures(factory_module: str) -> None:
    model = factory_config(f"{factory_module}:small_cnn", width=6)
    net = build_model(model, MNIST, 10)
    summary = summary_of(net)
    assert net(torch.zeros(2, *MNIST)).shape == (2, 10)
    assert summary.factory == f"{factory_module}:small_cnn"
    assert summary.total_params == sum(p.numel() for p in net.parameters()) == 60 + 250
    assert summary.total_macs == 28 * 28 * 6 * 9 + 24 * 10
    labels = ["conv 3x3 6", "ReLU", "AdaptiveAvgPool2d", "Flatten", "linear 10"]
    assert [r.label for r in summary.rows] == labels
    shapes = [(6, 28, 28), (6, 28, 28), (6, 2, 2), (24,), (10,)]
    assert [r.out_shape for r in summary.rows] == shapes
    assert net.training  # the dry pass restores the mode
    assert infer_model(model, MNIST, 10).total_params == summary.total_params


@pytest.mark.parametrize(
    ("function", "words"),
    [
        ("wrong_output", ["wrong_output", "2x11", "2x10", "num_classes=10"]),
        ("not_a_module", ["not_a_module", "returned int, not a torch.nn.Module"]),
        ("the_class", ["returned the class Linear", "instance"]),
        ("raises", ["raises", "ValueError: width must be even"]),
        ("forward_fails", ["forward_fails", "dry forward pass", "2x1x28x28", "RuntimeError"]),
        ("no_keywords", ["no_keywords", "(settings)", "input_shape=..., num_classes=..."]),
        ("missing", ["has no attribute 'missing'"]),
        ("small_cn", ["did you mean 'small_cnn'?"]),
    ],
)
def test_factory_refuses_bad_function(
    factory_module: str, function: str, words: list[str]
) -> None:
    with pytest.raises(ArchitectureError) as info:
        build_model(factory_config(f"{factory_module}:{function}"), MNIST, 10)
    for word in words:
        assert word in str(info.value)


def test_factory_missing_module() -> None:
    with pytest.raises(ArchitectureError, match=r"no module named 'no_such_nets_xyz'.*PYTHONPATH"):
        build_model(factory_config("no_such_nets_xyz:net"), MNIST, 10)


def test_factory_module_failing_at_import(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "broken_nets_abc.py").write_text("raise RuntimeError('needs a GPU')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(
        ArchitectureError, match="importing 'broken_nets_abc' failed: RuntimeError"
    ):
        infer_model(factory_config("broken_nets_abc:net"), MNIST, 10)


@pytest.mark.parametrize("spec", ["no_colon", ":net", "module:"])
def test_factory_spec_needs_colon(spec: str) -> None:
    with pytest.raises(ConfigError, match="package.module:function"):
        infer_model(factory_config(spec), MNIST, 10)


def test_summary_of_needs_built_model() -> None:
    with pytest.raises(ValueError, match="not built by build_model"):
        summary_of(nn.Linear(2, 2))


def test_ordered_layers_standard_reorder_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    import logging

    from interplay.config import ModelConfig
    from interplay.models import infer_model

    model = ModelConfig.model_validate(
        {"blocks": [{"layers": [{"type": "dropout"}, {"type": "conv", "channels": 4}]}]}
    )
    with caplog.at_level(logging.INFO, logger="interplay.models"):
        infer_model(model, (1, 9, 9), 3)
    assert "layers run as conv, dropout (order: standard)" in caplog.text
