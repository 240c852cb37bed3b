"""What ``solver=first_order`` costs and how close it comes, next to identity, Neumann and CG.

Run from the repository root::

    python -m benchmarks.first_order_cost --threads 1     # a few minutes on a CPU
    python -m benchmarks.first_order_cost --quick          # seconds

hpo-run's default experiment (digits, an MLP, per-weight decay, Adam inside) in float64, built
by the runner from its configuration and trained by ``inner_steps`` Adam steps; then, at those
weights and on the same two batches, the hypergradient of each solver as its YAML sets it
(``solver=identity``, ``neumann`` (4 terms), ``cg`` (20 steps, Gauss-Newton, damping 0.1),
``first_order``) and of ``solver=exact`` (the dense solve, the reference), timed side by side
(``torch.utils.benchmark``, interleaved rounds, wall and thread CPU time). Columns: cosine and
relative error against the dense solve, products with the curvature, milliseconds per
hypergradient and the ratio to first_order's. Cases: MLP 64-16-10 (1,210 weights: the dense
reference is cheap) and the default MLP 64-64-10 (times only, no dense solve).
Output: ``<out>/first_order_cost_cpu[_quick].{md,csv}``.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

import torch

from benchmarks.common.harness import (
    DEFAULT_SIZES,
    QUICK_SIZES,
    Column,
    Table,
    benchmark_parser,
    fmt_ms,
    fmt_ratio,
    fmt_sci,
    log,
    measure_group,
    parse_benchmark_args,
    write_one_table,
)
from benchmarks.common.machine import CpuSnapshot
from benchmarks.common.run_config import compose_config
from hpo_cli.core.methods import hypergradient_method
from hpo_cli.core.vectors import flatten
from hpo_cli.runner.config.build import (
    build,
    build_experiment,
    method_options,
    solver_without_method_options,
)
from hpo_cli.runner.loop.hyper_losses import hyper_losses

SOLVERS = ("identity", "neumann", "cg", "first_order")
CASES = {"MLP 64-16-10": (["model.hidden_sizes=[16]"], True), "MLP 64-64-10": ([], False)}
QUICK_CASES = {"MLP 64-4-10": (["model.hidden_sizes=[4]"], True)}


def method_of(solver: str, overrides: list[str]):
    """The hypergradient method ``solver=<solver>`` builds in hpo-run."""
    node = compose_config([*overrides, f"solver={solver}"]).solver
    return hypergradient_method(build(solver_without_method_options(node)), **method_options(node))


def case_rows(label: str, overrides: list[str], dense: bool, quick: bool) -> list[dict]:
    """Train the case's experiment (float64), then every solver's hypergradient on the same
    batches, timed side by side; against the dense solve when ``dense``."""
    overrides = [*overrides, "dtype=float64", "device=cpu"]
    exp = build_experiment(compose_config(overrides))
    torch.manual_seed(0)
    for _ in range(20 if quick else 300):
        batch = exp.data.train.sample(exp.settings.batch_size, exp.batches)
        exp.joint.inner_step(lambda b=batch: exp.hyper.training_loss(exp.model, b, exp.criterion))
    losses = hyper_losses(
        exp,
        exp.data.train.sample(exp.settings.hyper_train_batch, exp.batches),
        exp.data.val.sample(exp.settings.hyper_val_batch, exp.batches),
    )
    hparams = list(exp.hyper.parameters())

    def statement(solver: str):
        method = method_of(solver, overrides)
        state = method.init_state()
        return lambda: method.hypergradient(exp.model, hparams, exp.joint.optimizer, losses, state)[
            0
        ]

    truth = None
    if dense:
        log(f"first_order_cost: {label}, dense reference")
        truth = flatten(list(statement("exact")().grads))
    sizes = QUICK_SIZES if quick else DEFAULT_SIZES
    log(f"first_order_cost: {label}, wall time")
    wall = measure_group({s: statement(s) for s in SOLVERS}, sizes)
    log(f"first_order_cost: {label}, thread CPU time")
    cpu = measure_group({s: statement(s) for s in SOLVERS}, sizes, clock=time.thread_time)
    rows = []
    for solver in SOLVERS:
        timing, result = wall[solver]
        got = flatten(list(result.grads))
        cosine = relative = float("nan")
        if truth is not None:
            cosine = float(torch.nn.functional.cosine_similarity(got, truth, dim=0))
            relative = float((got - truth).norm() / truth.norm())
        rows.append(
            {
                "case": label,
                "weights": sum(p.numel() for p in exp.model.parameters()),
                "solver": solver,
                "products": result.hvps,
                "cosine": cosine,
                "rel_error": relative,
                "median_ms": timing.median_ms,
                "iqr_ms": timing.iqr_ms,
                "cpu_median_ms": cpu[solver][0].median_ms,
                "ratio": timing.median_ms / wall["first_order"][0].median_ms,
                "cpu_ratio": cpu[solver][0].median_ms / cpu["first_order"][0].median_ms,
            }
        )
    return rows


def section(quick: bool) -> Table:
    rows = []
    for label, (overrides, dense) in (QUICK_CASES if quick else CASES).items():
        rows += case_rows(label, overrides, dense, quick)
    table = Table(
        section="first_order",
        title="One hypergradient per solver on the default experiment (float64)",
        columns=[
            Column("case", "case"),
            Column("weights", "weights d"),
            Column("solver", "solver"),
            Column("products", "products"),
            Column("cosine", "cos(g, g*)", lambda c: f"{c:+.4f}"),
            Column("rel_error", "‖g − g*‖/‖g*‖", fmt_sci),
            Column("median_ms", "wall ms", fmt_ms),
            Column("cpu_median_ms", "thread CPU ms", fmt_ms),
            Column("ratio", "wall / first_order", fmt_ratio),
            Column("cpu_ratio", "CPU / first_order", fmt_ratio),
        ],
        rows=rows,
    )
    table.notes += [
        "g*: solver=exact's dense solve at the same weights and batches (nan: not computed). "
        "Each solver as its YAML sets it; products: Hessian (or Gauss-Newton) products, the "
        "residual check included; first_order uses none, but two training gradients.",
        "A relative error near 1 with a positive cosine means ‖g‖ ≪ ‖g*‖ (‖g − g*‖² = ‖g‖² − "
        "2‖g‖‖g*‖cos + ‖g*‖²): the scale of g is not comparable across solvers (P ≈ η/√v̂ for "
        "Adam, H⁻¹ for the dense solve); the outer optimiser (RMSprop) normalises it away, "
        "the cosine is what matters.",
    ]
    return table


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = benchmark_parser("first_order_cost", "First-order hypergradient against the others.")
    return parse_benchmark_args(parser, argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    start = CpuSnapshot.now()
    table = section(args.quick)
    return write_one_table(
        "first_order_cost",
        argv,
        args,
        torch.device("cpu"),
        start,
        table,
        "The first-order hypergradient against identity, Neumann and CG",
        dtype="float64",
        timer="torch.utils.benchmark, the solvers side by side in rounds",
    )


if __name__ == "__main__":
    sys.exit(main())
