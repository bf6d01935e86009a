"""Changes the engine makes to a model for the length of a run, each undone afterwards.

Both are exact: the model computes the same outputs and gradients, only faster. A trained
model comes back with its layers in the order written and without hooks, so its summary,
state dict and checkpoints are those of the model as configured.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

logger = logging.getLogger(__name__)

Undo = Callable[[], None]


class _ChannelsLastGrad(torch.autograd.Function):
    """Identity forward; backward hands the gradient on in channels-last layout."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        return grad.contiguous(memory_format=torch.channels_last)


def _channels_last_grad_hook(module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...] | None:
    x = args[0] if args else None
    if isinstance(x, torch.Tensor) and x.dim() == 4 and x.requires_grad:
        return (_ChannelsLastGrad.apply(x), *args[1:])
    return None


def keep_grads_channels_last(model: nn.Module) -> Undo:
    """Make the gradient that flows back through each nn.Flatten channels-last again.

    A flatten turns a channels-last feature map into rows in (C, H, W) order, so the gradient
    coming back is in the other layout, and every backward op of the conv layers before it
    then takes torch's slow mixed-layout path: 15% of a step of the reference CNN at two
    threads (docs/performance.md). One copy at the flatten keeps the whole backward in one
    layout. Returns a function that removes the hooks.
    """
    handles = [
        m.register_forward_pre_hook(_channels_last_grad_hook)
        for m in model.modules()
        if isinstance(m, nn.Flatten)
    ]

    def undo() -> None:
        for handle in handles:
            handle.remove()

    return undo


def _swappable(first: nn.Module, second: nn.Module) -> bool:
    pools = (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d)
    return isinstance(first, nn.ReLU) and isinstance(second, pools) and not second.return_indices


def pool_before_relu(model: nn.Module) -> tuple[int, Undo]:
    """Run each max pool that directly follows a ReLU in an nn.Sequential before that ReLU.

    max(relu(a), relu(b)) = relu(max(a, b)) because ReLU never decreases, and the gradient
    reaches the same input element (the pool's argmax, or none when the window's maximum is
    not positive), so the swap is exact for any kernel, stride, padding or dilation. The
    ReLU and its backward then touch a quarter of the elements (2x2 pooling): 4% of a step
    of the reference CNN on a 2-core CPU (docs/performance.md). Returns how many pairs were
    swapped and a function that restores the order as written.
    """
    swapped: list[tuple[nn.Sequential, int]] = []
    for seq in model.modules():
        if not isinstance(seq, nn.Sequential):
            continue
        i = 0
        while i + 1 < len(seq):
            if _swappable(seq[i], seq[i + 1]):
                seq[i], seq[i + 1] = seq[i + 1], seq[i]
                swapped.append((seq, i))
            i += 1

    def undo() -> None:
        for seq, i in reversed(swapped):
            seq[i], seq[i + 1] = seq[i + 1], seq[i]

    logger.debug("max pools moved before their ReLU: %d", len(swapped))
    return len(swapped), undo
