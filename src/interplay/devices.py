"""Choosing the device, precision and memory format a run trains with."""

from __future__ import annotations

import functools
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Engine:
    """What the training engine picked, logged as params of every run."""

    device: torch.device
    precision: str  # "fp32" or "bf16"
    channels_last: bool

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        return torch.bfloat16 if self.precision == "bf16" else None

    def as_params(self) -> dict[str, str]:
        return {
            "engine.device": self.device.type,
            "engine.precision": self.precision,
            "engine.channels_last": str(self.channels_last).lower(),
        }


def pick_device(wanted: str = "auto") -> torch.device:
    """auto picks cuda, then mps, then cpu; an explicit device that is absent is an error."""
    from interplay.errors import ConfigError

    cuda = torch.cuda.is_available()
    mps = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    if wanted == "auto":
        return torch.device("cuda" if cuda else "mps" if mps else "cpu")
    if wanted == "cuda" and not cuda:
        raise ConfigError("training.device: cuda is not available here; use auto or cpu")
    if wanted == "mps" and not mps:
        raise ConfigError("training.device: mps is not available here; use auto or cpu")
    return torch.device(wanted)


@functools.cache
def cpu_has_native_bf16() -> bool:
    """True on CPUs with AMX or AVX-512 bf16 units, where bf16 matmuls beat fp32."""
    # torch exposes no query for bf16 units, so read the flags the kernel reports (Linux only).
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.is_file():
        return False
    try:
        text = cpuinfo.read_text(errors="ignore")
    except OSError:
        return False
    flags: set[str] = set()
    for line in text.splitlines():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
            break
    return bool({"amx_bf16", "avx512_bf16"} & flags)


def native_bf16(device: torch.device) -> bool:
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return cpu_has_native_bf16()
    return False


def pick_engine(model: nn.Module, device: torch.device, precision: str = "auto") -> Engine:
    """Precision and memory format for this model on this device.

    bf16 autocast where the hardware runs it natively, channels-last for conv nets (on CPU
    and CUDA, where the convolution kernels are faster in that layout), fp32 otherwise.
    `INTERPLAY_PRECISION` overrides `auto`, for benchmarks and tests.
    """
    precision = (
        os.environ.get("INTERPLAY_PRECISION", precision) if precision == "auto" else precision
    )
    if precision == "auto":
        precision = "bf16" if native_bf16(device) else "fp32"
    has_conv = any(isinstance(m, nn.Conv2d) for m in model.modules())
    channels_last = has_conv and device.type in ("cpu", "cuda")
    return Engine(device=device, precision=precision, channels_last=channels_last)
