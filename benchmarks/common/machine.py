"""The machine a benchmark runs on: its CPU and device names, and how busy other processes kept
its cores during a run (from Linux ``/proc/stat``; ``None`` elsewhere), measured between two
:class:`CpuSnapshot` s and turned into a warning for the report."""

from __future__ import annotations

import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path

import torch

BUSY_CORES = 0.25  # warn when other processes kept this many cores busy during the run


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (CUDA {torch.version.cuda})"
    return f"CPU: {cpu_name()}"


def system_busy_seconds() -> float | None:
    """CPU seconds all processes have spent busy since boot (Linux ``/proc/stat``), or None."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]
    except OSError:
        return None
    ticks = [int(x) for x in fields]  # user nice system idle iowait irq softirq steal
    busy = sum(ticks) - ticks[3] - ticks[4]
    return busy / os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class CpuSnapshot:
    """What the whole machine and this process had consumed at one instant."""

    wall: float
    own: float
    system: float | None

    @classmethod
    def now(cls) -> CpuSnapshot:
        return cls(time.perf_counter(), time.process_time(), system_busy_seconds())


def other_cores(start: CpuSnapshot, end: CpuSnapshot) -> float | None:
    """Cores kept busy by other processes between two snapshots, on average."""
    if start.system is None or end.system is None:
        return None
    others = (end.system - start.system) - (end.own - start.own)
    return max(others, 0.0) / (end.wall - start.wall)


def background_warning(background: float | None) -> str | None:
    """A warning when other processes kept a quarter of a core or more busy during the run."""
    if background is None or background < BUSY_CORES:
        return None
    return (
        f"> **Warning:** other processes kept {background:.2f} cores busy on average during "
        "this run, so absolute times are inflated and noisier (with several threads, each "
        "parallel region may wait for a busy core). Statements compared in one table are timed "
        "in interleaved rounds, which keeps their ratios fairer; rerun on an idle machine (or "
        "with --threads 1) for absolute numbers."
    )
