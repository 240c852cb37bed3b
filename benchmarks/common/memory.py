"""Peak memory of a statement: the CPU allocator's total (from the profiler's trace), the tensors
autograd saves for backward, and CUDA's peak allocation (``benchmarks.overhead``,
``benchmarks.scaling``)."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch


def profiler_peak_bytes(fn: Callable[[], Any]) -> int:
    """Highest CPU allocator total while ``fn`` runs, above the total before it.

    Every allocation and free that the profiler records is a ``[memory]`` event carrying the
    allocator's running total (``Total Allocated``); they are read from its Chrome trace.
    """
    with torch.profiler.profile(
        activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True
    ) as prof:
        fn()
    with tempfile.TemporaryDirectory() as folder:
        trace = Path(folder) / "trace.json"
        prof.export_chrome_trace(str(trace))
        events = json.loads(trace.read_text())["traceEvents"]
    memory = sorted((e for e in events if e.get("name") == "[memory]"), key=lambda e: e["ts"])
    if not memory:
        return 0
    before = memory[0]["args"]["Total Allocated"] - memory[0]["args"]["Bytes"]
    return max(e["args"]["Total Allocated"] for e in memory) - before


def saved_tensor_bytes(fn: Callable[[], Any]) -> int:
    """Bytes of the distinct tensor storages autograd saves for backward while ``fn`` runs."""
    seen: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        seen[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        fn()
    return sum(seen.values())


def cuda_peak_bytes(fn: Callable[[], Any], device: torch.device) -> int:
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    fn()
    torch.cuda.synchronize(device)
    return torch.cuda.max_memory_allocated(device) - before


def memory_methods(device: torch.device) -> dict[str, Callable[[Callable[[], Any]], int]]:
    if device.type == "cuda":
        return {"torch.cuda.max_memory_allocated": lambda fn: cuda_peak_bytes(fn, device)}
    return {
        "CPU allocator total (torch.profiler)": profiler_peak_bytes,
        "saved tensors (saved_tensors_hooks)": saved_tensor_bytes,
    }
