"""Choosing the device, precision, memory format and threads a run trains with.

The choices are the ones measured fastest in benchmarks/engine_vs_plain.py (see
docs/performance.md): bf16 autocast only where the hardware has bf16 units, channels-last
only for conv nets, fused optimizer steps on CPU and CUDA, and on Linux CPUs a malloc that
keeps freed activation memory instead of faulting it back in every step; on CPUs, subnormal
numbers are flushed to zero while a run trains.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging
import platform
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

logger = logging.getLogger(__name__)

PRECISIONS = ("fp32", "bf16")
# Norms whose CPU kernels are slower on channels-last maps than on contiguous ones (they copy
# to contiguous or take a slow path): a conv net with any of them trains faster contiguous on
# the CPU (docs/performance.md).
CONTIGUOUS_NORMS_ON_CPU = (nn.GroupNorm, nn.LayerNorm, nn.InstanceNorm1d, nn.InstanceNorm2d)
# Devices whose optimizers have fused kernels for Adam, AdamW and SGD in torch >= 2.4.
FUSED_OPTIMIZER_DEVICES = ("cpu", "cuda")
# glibc mallopt parameters (malloc.h) and the values the engine sets: blocks up to 32 MiB (the
# largest threshold glibc accepts) come from the heap, and up to 64 MiB of free heap is kept.
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
MMAP_THRESHOLD_BYTES = 32 << 20
TRIM_THRESHOLD_BYTES = 64 << 20
# OpenMP 5.0 omp_pause_resource_all(omp_pause_hard): the runtime frees the calling thread's pool
# of worker threads; the next parallel region starts new ones.
OMP_PAUSE_HARD = 2
SUBNORMAL = 1e-40  # under fp32's (and bf16's) smallest normal number, 1.2e-38
OPENMP_LIBRARY = re.compile(r"/lib(g|i|i5)?omp[^/]*\.(so|dylib)[^/]*$")


@dataclass(frozen=True)
class Engine:
    """What the training engine picked, logged as params of every run."""

    device: torch.device
    precision: str  # "fp32" or "bf16"
    channels_last: bool
    fused_optimizer: bool = False
    threads: int | None = None  # torch's intra-op threads on CPU; None elsewhere
    tuned_malloc: bool = False  # see tune_malloc
    pools_moved: int = 0  # max pools run before their ReLU (interplay.rewrites)
    flush_denormals: bool = False  # on CPU, while the run trains; see flush_denormals

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        return torch.bfloat16 if self.precision == "bf16" else None

    def as_params(self) -> dict[str, str]:
        params = {
            "engine.device": self.device.type,
            "engine.precision": self.precision,
            "engine.channels_last": str(self.channels_last).lower(),
            "engine.fused_optimizer": str(self.fused_optimizer).lower(),
            "engine.pool_before_relu": str(self.pools_moved),
        }
        if self.threads is not None:
            params["engine.threads"] = str(self.threads)
            params["engine.tuned_malloc"] = str(self.tuned_malloc).lower()
            params["engine.flush_denormals"] = str(self.flush_denormals).lower()
        return params


def mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return mps is not None and bool(mps.is_available())


def pick_device(wanted: str = "auto") -> torch.device:
    """auto picks cuda, then mps, then cpu; an explicit device that is absent is an error."""
    from interplay.errors import ConfigError

    cuda = torch.cuda.is_available()
    mps = mps_available()
    if wanted == "auto":
        return torch.device("cuda" if cuda else "mps" if mps else "cpu")
    if wanted == "cuda" and not cuda:
        raise ConfigError("training.device: cuda is not available here; use auto or cpu")
    if wanted == "mps" and not mps:
        raise ConfigError("training.device: mps is not available here; use auto or cpu")
    return torch.device(wanted)


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> frozenset[str]:
    """The feature flags of the first CPU as the kernel reports them; empty off Linux."""
    try:
        text = cpuinfo.read_text(errors="ignore")
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


@functools.cache
def cpu_has_native_bf16() -> bool:
    """True on CPUs with AMX or AVX-512 bf16 units, where bf16 matmuls beat fp32."""
    # torch exposes no query for bf16 units, so read the flags the kernel reports (Linux only).
    return bool({"amx_bf16", "avx512_bf16"} & cpu_flags())


def native_bf16(device: torch.device) -> bool:
    """Whether the device computes in bf16 natively (faster than fp32, not emulated)."""
    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported(including_emulation=False))
    if device.type == "cpu":
        return cpu_has_native_bf16()
    # TODO: MPS runs bf16 autocast on recent macOS, but it is unmeasured here; fp32 until then.
    return False


def malloc_tunable() -> bool:
    """Whether `tune_malloc` can work here: glibc on Linux, unless INTERPLAY_MALLOC=default."""
    from interplay.errors import engine_env

    if engine_env("INTERPLAY_MALLOC") == "default":
        return False
    return sys.platform == "linux" and platform.libc_ver()[0] == "glibc"


@functools.cache
def tune_malloc() -> bool:
    """Make glibc keep freed activation memory in the process; True if it took effect.

    By default glibc hands large freed blocks back to the kernel and gets them again, one
    zeroed page at a time, on the next allocation: about 2,000 page faults per training step
    of the reference CNN, about 30% of its time on CPU (docs/performance.md). torch has no
    setting for its CPU allocator, so this raises glibc's two thresholds with mallopt, for
    the whole process and for good; the cost is up to 64 MiB of freed memory kept.
    """
    if not malloc_tunable():
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        done = libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) == 1
        done = libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES) == 1 and done
    except (OSError, AttributeError) as err:
        logger.debug("mallopt is not available: %s", err)
        return False
    logger.debug("malloc thresholds raised: %s", done)
    return done


def denormals_flushed() -> bool:
    """Whether this thread's float unit turns subnormal numbers to zero right now."""
    # numpy's scalar arithmetic runs on the same float unit, without a torch op to count.
    return bool(np.float32(SUBNORMAL) * np.float32(1.0) == 0.0)


@functools.cache
def denormals_can_flush() -> bool:
    """Whether torch can make this CPU flush subnormal numbers (x86 with DAZ, say)."""
    before = denormals_flushed()
    able = torch.set_flush_denormal(True)
    torch.set_flush_denormal(before)  # only asked: the calling thread keeps what it had
    return bool(able)


def _openmp_runtimes() -> list[str]:
    """Paths of the OpenMP runtimes loaded in this process (Linux); torch's bundled one else."""
    try:
        maps = Path("/proc/self/maps").read_text(errors="ignore").splitlines()
    except OSError:
        maps = []
    found = {line.split()[-1] for line in maps if OPENMP_LIBRARY.search(line.split()[-1])}
    if not found:
        lib = Path(torch.__file__).parent / "lib"
        found = {str(p) for p in lib.glob("*omp*") if OPENMP_LIBRARY.search(str(p))}
    return sorted(found)


def _restart_openmp_workers() -> bool:
    """Make torch's OpenMP worker threads start again from this thread, and so inherit its
    float settings (a new thread copies them from the thread that creates it).

    torch.set_flush_denormal changes only the calling thread, and the workers of torch's
    intra-op pool, once started, keep what they had: half of a parallel op would still run
    subnormal numbers slowly. No library offers to reach the workers, so this asks the
    OpenMP runtime itself, through its standard pause call, to let its pool go.
    """
    restarted = False
    for path in _openmp_runtimes():
        try:
            runtime = ctypes.CDLL(path)
            restarted = runtime.omp_pause_resource_all(OMP_PAUSE_HARD) == 0 or restarted
        except (OSError, AttributeError) as err:
            logger.debug("cannot pause the OpenMP runtime %s: %s", path, err)
    return restarted


def flush_denormals() -> tuple[bool, Callable[[], None]]:
    """Turn subnormal floats to zero on the CPU, in this thread and torch's OpenMP workers.

    Training drives some values towards zero for good (the optimizer's moments of inputs
    that stay at zero, for instance); once they are subnormal, every op on them takes the
    CPU's slow path: on an Intel Xeon with AMX, the reference CNN's third epoch ran 12-15%
    slower than its first (docs/performance.md). Values below 1.2e-38 then count as zero, as
    under TensorFlow's and XLA's CPU defaults. Returns whether they are flushed and the
    function that restores the setting found (a no-op if it was on already or cannot be set).
    """
    if denormals_flushed():
        _restart_openmp_workers()  # the workers may not have the caller's setting yet
        return True, lambda: None
    if not torch.set_flush_denormal(True):
        return False, lambda: None
    workers = _restart_openmp_workers()
    logger.debug("subnormal numbers flushed to zero (OpenMP workers restarted: %s)", workers)

    def undo() -> None:
        torch.set_flush_denormal(False)
        _restart_openmp_workers()

    return True, undo


def pick_engine(model: nn.Module, device: torch.device, precision: str = "auto") -> Engine:
    """Precision, memory format, optimizer kind and malloc tuning for this model and device.

    bf16 autocast where the hardware runs it natively, channels-last for conv nets (on CPU
    and CUDA, where the convolution kernels are faster in that layout; on the CPU only
    without group, layer or instance norm), fp32 otherwise.
    `INTERPLAY_PRECISION` overrides `auto`, for benchmarks and tests;
    `INTERPLAY_DENORMALS=keep` leaves subnormal numbers as they are.

    Args:
        model: the model to train (its layers decide the memory format).
        device: where it trains, from `pick_device`.
        precision: "auto", "fp32" or "bf16" (the study's training.precision).

    Returns:
        The Engine, whose `as_params()` every run logs.
    """
    from interplay.errors import engine_env

    if precision == "auto":
        precision = engine_env("INTERPLAY_PRECISION")
    if precision == "auto":
        precision = "bf16" if native_bf16(device) else "fp32"
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be auto, fp32 or bf16, not {precision!r}")
    has_conv = any(isinstance(m, nn.Conv2d) for m in model.modules())
    slow_norm = any(isinstance(m, CONTIGUOUS_NORMS_ON_CPU) for m in model.modules())
    channels_last = has_conv and (
        device.type == "cuda" or (device.type == "cpu" and not slow_norm)
    )
    return Engine(
        device=device,
        precision=precision,
        channels_last=channels_last,
        fused_optimizer=device.type in FUSED_OPTIMIZER_DEVICES,
        threads=torch.get_num_threads() if device.type == "cpu" else None,
        tuned_malloc=device.type == "cpu" and malloc_tunable(),
        flush_denormals=device.type == "cpu"
        and engine_env("INTERPLAY_DENORMALS") == "flush"
        and denormals_can_flush(),
    )
