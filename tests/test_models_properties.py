"""Property: any model spec either builds a model whose forward pass matches shape inference,
or is refused with a user error (ConfigError from the schema, ArchitectureError from inference).
"""

from __future__ import annotations

from typing import Any

import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from torch import nn

from interplay.errors import ArchitectureError, ConfigError
from interplay.models import BlockNet, build_model, plan_model, summary_of
from interplay.studyfile import validate

small = st.integers(min_value=1, max_value=6)

conv = st.fixed_dictionaries(
    {"type": st.just("conv"), "channels": small},
    optional={
        "kernel": st.integers(1, 6),
        "stride": st.integers(1, 3),
        "padding": st.one_of(st.just("same"), st.integers(0, 2)),
        "bias": st.sampled_from([True, False, "auto"]),
    },
)
linear = st.fixed_dictionaries(
    {"type": st.just("linear"), "units": small},
    optional={"in_features": st.sampled_from([None, None, None, 6, 196, 784, 3136])},
)
norm = st.fixed_dictionaries(
    {"type": st.just("norm")},
    optional={
        "kind": st.sampled_from(["batch", "layer", "group", "instance", "none"]),
        "groups": st.integers(1, 4),
    },
)
act = st.fixed_dictionaries(
    {"type": st.just("act")},
    optional={
        "fn": st.sampled_from(["relu", "gelu", "silu", "leaky_relu", "tanh"]),
        "negative_slope": st.floats(0, 0.3),
    },
)
pool = st.fixed_dictionaries(
    {"type": st.just("pool")},
    optional={
        "kind": st.sampled_from(["max", "avg"]),
        "size": st.integers(1, 4),
        "stride": st.integers(1, 3),
    },
)
adaptive_pool = st.fixed_dictionaries(
    {"type": st.just("adaptive_pool")},
    optional={"kind": st.sampled_from(["max", "avg"]), "output": st.integers(1, 5)},
)
flatten = st.just({"type": "flatten"})
dropout = st.fixed_dictionaries(
    {"type": st.just("dropout")},
    optional={
        "p": st.sampled_from([0.0, 0.25, 0.5]),
        "kind": st.sampled_from(["auto", "element", "channel"]),
    },
)
# Feature-map layers are listed twice: one_of picks branches evenly, and vectors early in a
# model leave little for later layers to do.
layer = st.one_of(conv, conv, norm, norm, act, pool, pool, adaptive_pool, flatten, linear, dropout)

# Random layer lists often repeat a kind, which 'standard' (the default) refuses, so most
# blocks here keep their written order.
block = st.fixed_dictionaries(
    {
        "layers": st.lists(layer, min_size=1, max_size=4),
        "order": st.sampled_from(["as_written", "as_written", "standard"]),
    },
    optional={"repeat": st.integers(0, 3)},
)
valid_spec = st.fixed_dictionaries({"blocks": st.lists(block, min_size=1, max_size=4)})


MISTAKES: dict[str, Any] = {
    "no blocks": lambda blocks: blocks.clear(),
    "empty block": lambda blocks: blocks.append({"layers": []}),
    "negative repeat": lambda blocks: blocks[0].update(repeat=-1),
    "zero channels": lambda blocks: blocks[0]["layers"].append({"type": "conv", "channels": 0}),
    "unknown fn": lambda blocks: blocks[0]["layers"].append({"type": "act", "fn": "swish"}),
    "p of 1": lambda blocks: blocks[0]["layers"].append({"type": "dropout", "p": 1.0}),
    "unknown key": lambda blocks: blocks[0]["layers"].append({"type": "pool", "window": 2}),
    "unknown type": lambda blocks: blocks[0]["layers"].append({"type": "attention"}),
}


def _with_mistake(spec: dict[str, Any], mistake: str | None) -> dict[str, Any]:
    """The spec, with one mistake the schema must refuse (as a ConfigError, nothing else)."""
    if mistake is not None:
        MISTAKES[mistake](spec["blocks"])
    return spec


# Mostly valid specs; some carry a mistake.
model_spec = st.builds(_with_mistake, valid_spec, st.sampled_from([*[None] * 40, *MISTAKES]))

# Words of each ArchitectureError, to show in --hypothesis-show-statistics which ones occur.
REASONS = [
    "order 'standard'",
    "smaller than the kernel",
    "smaller than the pool window",
    "odd kernel",
    "needs a feature map",
    "more than one pixel",
    "does not divide",
    "in_features is",
    "dropout kind channel",
]
input_shapes = st.sampled_from([(1, 28, 28), (3, 12, 12), (1, 8, 8), (2, 5, 7)])


def _block_outputs(net: nn.Module, x: torch.Tensor) -> list[tuple[int, ...]]:
    assert isinstance(net, BlockNet)
    shapes: list[tuple[int, ...]] = []
    handles = [
        b.register_forward_hook(lambda _m, _i, out: shapes.append(tuple(out.shape[1:])))
        for b in net.blocks
    ]
    try:
        net(x)
    finally:
        for h in handles:
            h.remove()
    return shapes


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec=model_spec, input_shape=input_shapes, num_classes=st.integers(1, 10))
def test_build_model_builds_or_refuses(
    spec: dict[str, Any], input_shape: tuple[int, int, int], num_classes: int
) -> None:
    try:
        model = validate({"name": "property", "model": spec}).model
    except ConfigError:
        event("refused by the schema")
        return
    try:
        net = build_model(model, input_shape, num_classes)
    except ArchitectureError as err:
        assert str(err).startswith("model.blocks[")
        reason = next((w for w in REASONS if w in str(err)), "other")
        event(f"refused: {reason}")
        return
    event("built")

    summary = summary_of(net)
    torch.manual_seed(0)
    x = torch.randn(2, *input_shape)
    # A block whose layers are all `norm none` is built as an empty (identity) block.
    expected, shape = [], tuple(input_shape)
    for plan in plan_model(model, input_shape, num_classes).blocks:
        shape = plan.layers[-1].row.out_shape if plan.layers else shape
        expected.append(shape)
    assert _block_outputs(net, x) == expected
    net.eval()
    out = net(x)
    assert out.shape == (2, num_classes)
    assert summary.output_shape == (num_classes,)
    assert torch.isfinite(out).all()
    assert summary.total_params == sum(p.numel() for p in net.parameters())
    assert summary.total_macs >= summary.rows[-1].macs > 0
