"""The runner's inner steps against a bare PyTorch loop, timed side by side (sections 4b and 4c of
``benchmarks.overhead``): the bare loop itself, the clocks and the per-step rows."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch
from torch.nn import functional as F

from benchmarks.common.harness import Column, Sizes, fmt_ms, fmt_ratio, log, measure_group
from hpo_cli.runner.loop.experiment import Experiment

BARE = "bare PyTorch loop"
BARE_ROUNDS = 10  # interleaved rounds of sections 4b and 4c (the load of a shared machine drifts)


def clocks_of(exp: Experiment) -> dict[str, Callable[[], float] | None]:
    """Wall time (torch's clock), and this thread's CPU time on the CPU with one thread."""
    clocks: dict[str, Callable[[], float] | None] = {"wall": None}
    if exp.device.type == "cpu" and torch.get_num_threads() == 1:
        clocks["cpu"] = time.thread_time
    return clocks


def per_step_rows(
    statements: dict[str, Callable[[], Any]],
    sizes: Sizes,
    clocks: dict[str, Callable[[], float] | None],
    steps: int,
    section: str,
) -> dict[str, dict[str, Any]]:
    """Each statement of ``steps`` inner steps timed side by side on every clock: per statement,
    the median and IQR per inner step and the ratio to :data:`BARE`'s median (one row each)."""
    rows: dict[str, dict[str, Any]] = {label: {"case": label} for label in statements}
    for name, clock in clocks.items():
        log(f"section {section} ({name} time)")
        timed = measure_group(statements, sizes, clock)
        base = timed[BARE][0].median_ms
        for label, (timing, _) in timed.items():
            rows[label][f"{name}_ms"] = timing.median_ms / steps
            rows[label][f"{name}_iqr_ms"] = timing.iqr_ms / steps
            rows[label][f"{name}_ratio"] = timing.median_ms / base
    return rows


def bare_loop(exp: Experiment) -> Callable[[], torch.Tensor]:
    """``inner_steps`` steps of a plain PyTorch loop on ``exp``'s model, no hpo-cli code inside:
    a new optimiser of the same class and settings, the same training split, batch size and
    batch draws (a generator seeded as the runner's), and the penalty Σ c·w² with c =
    softplus(θ) of ``exp``'s λ computed once per call (once per outer step)."""
    model = exp.model
    params = list(model.parameters())
    optimizer = type(exp.joint.optimizer)(params, **exp.joint.optimizer.defaults)
    inputs, targets = exp.data.train.inputs, exp.data.train.targets
    thetas = list(exp.hyper.parameters())
    generator = torch.Generator().manual_seed(exp.settings.seed)
    batch, steps = exp.settings.batch_size, exp.settings.inner_steps

    def run() -> torch.Tensor:
        with torch.no_grad():
            decay = [F.softplus(theta) for theta in thetas]
        for _ in range(steps):
            index = torch.randperm(len(targets), generator=generator)[:batch].to(inputs.device)
            x, y = inputs[index], targets[index]
            optimizer.zero_grad(set_to_none=True)
            penalty = torch.stack(
                [(c * w.square()).sum() for c, w in zip(decay, params, strict=True)]
            ).sum()
            loss = F.cross_entropy(model(x), y) + penalty
            loss.backward()
            optimizer.step()
        return loss.detach()

    return run


def per_step_columns(clocks: dict[str, Callable[[], float] | None]) -> list[Column]:
    """The table columns of :func:`per_step_rows`' rows: the statement, then per clock measured
    the time per inner step, its IQR and the ratio to the bare loop."""
    columns = [Column("case", "statement timed")]
    for name, header in (("wall", "wall"), ("cpu", "thread CPU")):
        if name in clocks:
            columns += [
                Column(f"{name}_ms", f"{header} ms per inner step", fmt_ms),
                Column(f"{name}_iqr_ms", "IQR ms", fmt_ms),
                Column(f"{name}_ratio", "× bare loop", fmt_ratio),
            ]
    return columns
