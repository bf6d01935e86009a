"""What the benchmark ran on: CPU, versions, matmul peaks, how busy the rest of the machine was.

Figures on a shared machine are only comparable with the load they were taken under, so every
timed section records the CPU time that other processes used meanwhile.
"""

from __future__ import annotations

import os
import platform
import resource
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from interplay.devices import cpu_flags, cpu_has_native_bf16

# /proc/stat columns: user nice system idle iowait irq softirq steal ...
BUSY_COLUMNS = (0, 1, 2, 5, 6)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(errors="ignore").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_lines(threads: int) -> list[tuple[str, str]]:
    """The rows of the machine table: CPU, cores, bf16 units, versions, threads."""
    import mlflow
    import optuna

    bf16_flags = sorted({"amx_bf16", "avx512_bf16"} & cpu_flags())
    return [
        ("CPU", cpu_model()),
        ("cores", str(os.cpu_count())),
        ("bf16 units", ", ".join(bf16_flags) if bf16_flags else "none"),
        ("native bf16 (engine)", str(cpu_has_native_bf16()).lower()),
        ("python", platform.python_version()),
        ("torch", torch.__version__),
        ("mlflow / optuna", f"{mlflow.__version__} / {optuna.__version__}"),
        ("torch threads", str(threads)),
        ("oneDNN", str(torch.backends.mkldnn.is_available()).lower()),
    ]


def _busy_seconds() -> float:
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    ticks = sum(int(fields[i]) for i in BUSY_COLUMNS)
    return ticks / os.sysconf("SC_CLK_TCK")


def _own_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime + children.ru_utime + children.ru_stime


@dataclass
class LoadMonitor:
    """Cores' worth of CPU that other processes used while a section ran (Linux only)."""

    start_wall: float = 0.0
    start_busy: float = 0.0
    start_own: float = 0.0
    others_cores: float = float("nan")
    loadavg: str = ""

    def __enter__(self) -> LoadMonitor:
        self.start_wall = time.perf_counter()
        self.start_busy = _busy_seconds()
        self.start_own = _own_seconds()
        return self

    def __exit__(self, *exc: object) -> None:
        wall = time.perf_counter() - self.start_wall
        others = (_busy_seconds() - self.start_busy) - (_own_seconds() - self.start_own)
        self.others_cores = max(others, 0.0) / wall if wall > 0 else float("nan")
        self.loadavg = " ".join(Path("/proc/loadavg").read_text().split()[:3])


def matmul_peak(dtype: torch.dtype, n: int = 2048, seconds: float = 1.5) -> float:
    """Best GFLOP/s of an n x n matmul in dtype on the CPU, over about `seconds`."""
    a = torch.randn(n, n).to(dtype)
    b = torch.randn(n, n).to(dtype)
    for _ in range(2):
        torch.mm(a, b)
    best = 0.0
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        start = time.perf_counter()
        torch.mm(a, b)
        best = max(best, 2 * n**3 / (time.perf_counter() - start) / 1e9)
    return best
