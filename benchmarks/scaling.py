"""How one hypergradient's time and memory grow with the number of weights.

Run from the repository root::

    python -m benchmarks.scaling                      # 10³ … 10⁶ weights on the CPU
    python -m benchmarks.scaling --device cuda        # 10³ … 10⁷ weights on the GPU
    python -m benchmarks.scaling --quick              # 10³ … 10⁴: a smoke run in seconds
    python -m benchmarks.scaling --threads 1 --out /tmp/bench

Section 6: an MLP inputs-h-classes (100 inputs, 10 classes, ReLU, batch 128, float32, random
data) with one weight-decay hyperparameter per weight (penalty Σ softplus(θ)·w²), the hidden
width h chosen so that the number of weights N runs over half-decades. One hypergradient is
``hpo_cli.core.hypergradient`` with ``ConjugateGradient(max_iter=10, tol=0, damping=1)``
(damping 1 keeps the damped Hessian positive definite at these random weights, so that CG runs
all K iterations instead of stopping at negative curvature), both
losses built inside the timed statement. Time: ``torch.utils.benchmark`` (median, IQR), each N
timed on its own. Peak memory: ``torch.cuda.max_memory_allocated`` on the GPU, the
``torch.profiler`` allocation peak on the CPU (see ``benchmarks.overhead``), above the memory
held before the call (model, data). The slopes of log(time) and log(memory) against log(N) are
least-squares fits (≈ 1 means linear cost); the plot goes to ``<out>/scaling_<device>.png``,
the tables to ``<out>/scaling_<device>[_quick].{md,csv}``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import torch
from torch import nn

from benchmarks.common.harness import (
    DEFAULT_SIZES,
    QUICK_SIZES,
    BenchmarkRun,
    Column,
    Sizes,
    Table,
    benchmark_command,
    benchmark_parser,
    fmt_ms,
    log,
    measure_group,
    parse_benchmark_args,
    report_stem,
    resolve_device,
    write_report,
)
from benchmarks.common.machine import CpuSnapshot
from benchmarks.common.memory import cuda_peak_bytes, profiler_peak_bytes
from benchmarks.common.problems import (
    WEIGHT_DECAY,
    Batch,
    MLPProblem,
    randint,
    randn,
)
from hpo_cli import ConjugateGradient, hypergradient

INPUTS, CLASSES, BATCH, K = 100, 10, 128, 10
DAMPING = 1.0
CPU_EXPONENTS = (3.0, 3.5, 4.0, 4.5, 5.0, 5.5, 6.0)
GPU_EXPONENTS = (*CPU_EXPONENTS, 6.5, 7.0)
QUICK_EXPONENTS = (3.0, 3.5, 4.0)
FIT_FROM = (1e4, 1e5)  # later fits leave out the sizes where fixed per-call costs dominate


def hidden_width(weights: float) -> int:
    """h with (INPUTS + 1)·h + (h + 1)·CLASSES closest to ``weights``."""
    return max(1, round((weights - CLASSES) / (INPUTS + 1 + CLASSES)))


def make_problem(width: int, device: torch.device) -> MLPProblem:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(INPUTS, width), nn.ReLU(), nn.Linear(width, CLASSES))
    model = model.to(device)
    params = list(model.parameters())
    raw = float(torch.log(torch.expm1(torch.tensor(WEIGHT_DECAY))))
    hparams = [torch.full_like(p, raw).requires_grad_() for p in params]
    gen = torch.Generator().manual_seed(1)

    def batch() -> Batch:
        x = randn(gen, BATCH, INPUTS, dtype=torch.float32, device=device)
        return Batch(x, randint(gen, CLASSES, BATCH, device))

    return MLPProblem(model, params, hparams, batch(), batch())


def statement(problem: MLPProblem) -> Callable[[], Any]:
    solver = ConjugateGradient(max_iter=K, tol=0.0, damping=DAMPING, warm_start=False)

    def run() -> Any:
        result = hypergradient(
            problem.train_loss(),
            problem.val_loss(),
            problem.params,
            problem.hparams,
            solver,
            raise_on_failure=False,
        )
        if problem.params[0].device.type == "cuda":
            torch.cuda.synchronize()
        return result

    return run


def peak_bytes(fn: Callable[[], Any], device: torch.device) -> int:
    return cuda_peak_bytes(fn, device) if device.type == "cuda" else profiler_peak_bytes(fn)


def size_row(exponent: float, device: torch.device, sizes: Sizes) -> dict[str, Any]:
    problem = make_problem(hidden_width(10**exponent), device)
    weights = sum(p.numel() for p in problem.params)
    log(f"section 6: N = {weights:,}")
    run = statement(problem)
    timing, result = measure_group({"hypergradient": run}, sizes)["hypergradient"]
    memory = peak_bytes(run, device)
    return {
        "weights": weights,
        **timing.columns(),
        "peak_mib": memory / 2**20,
        "bytes_per_weight": memory / weights,
        "hvps": result.hvps,
        "status": result.solve.status,
    }


def slope(rows: Sequence[dict[str, Any]], key: str, start: float = 0.0) -> float | None:
    chosen = [r for r in rows if r["weights"] >= start and r[key] > 0]
    if len(chosen) < 2:
        return None
    x = np.log10([r["weights"] for r in chosen])
    y = np.log10([r[key] for r in chosen])
    return float(np.polyfit(x, y, 1)[0])


def fmt_slope(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def plot(rows: Sequence[dict[str, Any]], path: Path, device: torch.device) -> None:
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    weights = [r["weights"] for r in rows]
    figure, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, key, label in (
        (axes[0], "median_ms", "median time per hypergradient (ms)"),
        (axes[1], "peak_mib", "peak memory above baseline (MiB)"),
    ):
        values = [r[key] for r in rows]
        ax.loglog(weights, values, "o-", label=f"measured (slope {fmt_slope(slope(rows, key))})")
        ax.loglog(
            weights,
            [values[-1] * w / weights[-1] for w in weights],
            "k--",
            lw=0.8,
            label="slope 1",
        )
        ax.set_xlabel("weights N (= per-weight hyperparameters)")
        ax.set_ylabel(label)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    figure.suptitle(f"hpo-cli hypergradient, CG K = {K}, {device.type}")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def section_scaling(exponents: Sequence[float], device: torch.device, sizes: Sizes) -> Table:
    rows = [size_row(e, device, sizes) for e in exponents]
    notes = []
    for key, what in (("median_ms", "time"), ("peak_mib", "peak memory")):
        partial = ", ".join(
            f"{fmt_slope(slope(rows, key, start))} over N ≥ {start:.0e}" for start in FIT_FROM
        )
        notes.append(
            f"Fitted slope of log {what} against log N: {fmt_slope(slope(rows, key))} over all "
            f"sizes, {partial}."
        )
    notes.append(
        f"MLP {INPUTS}-h-{CLASSES}, batch {BATCH}, float32, CG K = {K} (tol 0, damping "
        f"{DAMPING:g}); HVPs include the residual check."
    )
    return Table(
        section="6",
        title=f"6. Scaling of one hypergradient with the number of weights (CG, K = {K})",
        columns=[
            Column("weights", "weights N", lambda v: f"{v:,}"),
            Column("median_ms", "median ms", fmt_ms),
            Column("iqr_ms", "IQR ms", fmt_ms),
            Column("peak_mib", "peak MiB", lambda v: f"{v:.3g}"),
            Column("bytes_per_weight", "bytes / weight", lambda v: f"{v:.0f}"),
            Column("hvps", "HVPs"),
            Column("status", "status"),
        ],
        rows=rows,
        notes=notes,
    )


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = benchmark_parser(
        "scaling", "Time and memory of one hypergradient against the number of weights."
    )
    return parse_benchmark_args(parser, argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    device = resolve_device(args.device)
    sizes = QUICK_SIZES if args.quick else DEFAULT_SIZES
    if args.quick:
        exponents = QUICK_EXPONENTS
    else:
        exponents = GPU_EXPONENTS if device.type == "cuda" else CPU_EXPONENTS
    command = benchmark_command("scaling", argv)
    start = CpuSnapshot.now()
    table = section_scaling(exponents, device, sizes)
    run = BenchmarkRun(command, device, sizes, args.quick, start, CpuSnapshot.now())
    stem = report_stem("scaling", device, args.quick)
    args.out.mkdir(parents=True, exist_ok=True)
    plot(table.rows, args.out / f"{stem}.png", device)
    table.notes.append(f"Plot: `{args.out / stem}.png`.")
    title = "hpo-cli hypergradient scaling"
    write_report(args.out, stem, title, run, [table], dtype="float32")
    return 0


if __name__ == "__main__":
    sys.exit(main())
