"""The engine's exact model rewrites: same outputs and gradients, undone after the run."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch
from torch import nn

from interplay.rewrites import keep_grads_channels_last, pool_before_relu

POOLS = {
    "2x2": lambda: nn.MaxPool2d(2),
    "3x3 stride 2 padded": lambda: nn.MaxPool2d(3, stride=2, padding=1),
    "2x2 ceil": lambda: nn.MaxPool2d(2, ceil_mode=True),
    "dilated": lambda: nn.MaxPool2d(2, dilation=2),
}


def conv_block(pool: nn.Module) -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 6, 3), nn.BatchNorm2d(6), nn.ReLU(), pool, nn.Flatten(), nn.LazyLinear(4)
    )


def outputs_and_grads(model: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    model.zero_grad(set_to_none=True)
    out = model(x)
    (out * torch.arange(out.numel()).reshape(out.shape)).sum().backward()
    return [out.detach(), *(p.grad for p in model.parameters() if p.grad is not None)]


@pytest.mark.parametrize("pool", sorted(POOLS))
def test_pool_before_relu_same_outputs_and_grads(pool: str) -> None:
    written = conv_block(POOLS[pool]())
    # Shifted down so that whole pooling windows are negative (the ReLU zeroes them).
    x = torch.randn(5, 3, 11, 11) - 0.5
    written(x)  # materialise the lazy layer before copying
    rewritten = copy.deepcopy(written)

    moved, _ = pool_before_relu(rewritten)

    assert moved == 1
    assert [type(m) for m in rewritten][2:4] == [type(POOLS[pool]()), nn.ReLU]
    for a, b in zip(outputs_and_grads(written, x), outputs_and_grads(rewritten, x), strict=True):
        assert torch.equal(a, b)


def test_pool_before_relu_undo_restores_the_order() -> None:
    model = nn.Sequential(
        nn.ReLU(), nn.MaxPool2d(2), nn.Sequential(nn.Conv2d(1, 1, 1), nn.ReLU(), nn.MaxPool2d(2))
    )
    before = [type(m) for m in model.modules()]

    moved, undo = pool_before_relu(model)
    undo()

    assert moved == 2
    assert [type(m) for m in model.modules()] == before


@pytest.mark.parametrize(
    "layers",
    [
        [nn.ReLU(), nn.AvgPool2d(2)],
        [nn.GELU(), nn.MaxPool2d(2)],
        [nn.ReLU(), nn.MaxPool2d(2, return_indices=True)],
        [nn.MaxPool2d(2), nn.ReLU()],
    ],
)
def test_pool_before_relu_leaves_other_pairs(layers: list[nn.Module]) -> None:
    model = nn.Sequential(*layers)

    moved, _ = pool_before_relu(model)

    assert moved == 0
    assert list(model) == layers


def test_keep_grads_channels_last_at_flatten() -> None:
    cl = torch.channels_last
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Flatten(), nn.LazyLinear(2))
    x = torch.randn(4, 3, 8, 8).contiguous(memory_format=cl)
    model(x)
    model.to(memory_format=cl)  # type: ignore[call-overload]
    grads: list[torch.Tensor] = []

    def keep_grad(module: nn.Module, args: Any, out: torch.Tensor) -> None:
        out.register_hook(grads.append)

    model[0].register_forward_hook(keep_grad)

    model(x).sum().backward()
    undo = keep_grads_channels_last(model)
    model(x).sum().backward()
    undo()

    without, with_hooks = grads
    assert not without.is_contiguous(memory_format=cl)
    assert with_hooks.is_contiguous(memory_format=cl)
    assert torch.equal(without, with_hooks)
    assert not model[1]._forward_pre_hooks
