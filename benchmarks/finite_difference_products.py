"""What ``solver.products=finite_difference`` costs against autograd's double backward.

Run from the repository root::

    python -m benchmarks.finite_difference_products --threads 1     # a few minutes on a CPU
    python -m benchmarks.finite_difference_products --quick          # seconds

Each case is hpo-run's default experiment (digits, an MLP, per-weight decay: as many λ as
weights, Adam inside), built by the runner from its configuration and trained by
``inner_steps`` Adam steps, then one hyper-step's hypergradient on the same batches with both
products, in float64 and float32:

* the default experiment, MLP 64-64-10 with its solver (Neumann, 4 terms) and with CG (20);
* MLP 64-8-10 with ``solver=exact`` (the dense Hessian and a direct solve): the autograd
  hypergradient there is the dense reference, so its row is the error against the exact solve.

Columns: ‖g_fd − g_ag‖/‖g_ag‖ and cos(g_fd, g_ag) of the two hypergradients, and their times,
measured side by side (``torch.utils.benchmark``, interleaved rounds), with the ratio.
Output: ``<out>/finite_difference_products_<device>[_quick].{md,csv}``.
"""

from __future__ import annotations

import argparse
import sys
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
    resolve_device,
    write_one_table,
)
from benchmarks.common.machine import CpuSnapshot
from benchmarks.common.run_config import compose_config
from hpo_cli.core.methods import ImplicitDifferentiation
from hpo_cli.core.vectors import flatten
from hpo_cli.data import Batch
from hpo_cli.runner.config.build import build_experiment
from hpo_cli.runner.loop.hyper_losses import hyper_losses

CASES = {
    "default (neumann, 4 terms), MLP 64-64-10": ["model.hidden_sizes=[64]"],
    "default with solver=cg (20), MLP 64-64-10": ["model.hidden_sizes=[64]", "solver=cg"],
    "solver=exact (dense solve), MLP 64-8-10": ["model.hidden_sizes=[8]", "solver=exact"],
}
QUICK_CASES = {
    "default (neumann, 4 terms), MLP 64-8-10": ["model.hidden_sizes=[8]"],
    "solver=exact (dense solve), MLP 64-2-10": ["model.hidden_sizes=[2]", "solver=exact"],
}


def relative_error(got: torch.Tensor, want: torch.Tensor) -> float:
    return float((got.double() - want).norm() / want.norm())


def cosine(got: torch.Tensor, want: torch.Tensor) -> float:
    return float(torch.nn.functional.cosine_similarity(got.double(), want, dim=0))


def case_rows(label: str, overrides: list[str], quick: bool) -> list[dict]:
    """Train the case's experiment in float64; then, at those weights and on the same batches,
    both products' hypergradients in float64 and in float32 (model, λ and batches cast), timed
    side by side and compared with float64 autograd's."""
    exp = build_experiment(compose_config([*overrides, "dtype=float64", "device=cpu"]))
    torch.manual_seed(0)
    for _ in range(20 if quick else 300):
        batch = exp.data.train.sample(exp.settings.batch_size, exp.batches)
        exp.joint.inner_step(lambda b=batch: exp.hyper.training_loss(exp.model, b, exp.criterion))
    batches = [
        exp.data.train.sample(exp.settings.hyper_train_batch, exp.batches),
        exp.data.val.sample(exp.settings.hyper_val_batch, exp.batches),
    ]
    solver = exp.joint.method.solver
    sizes = QUICK_SIZES if quick else DEFAULT_SIZES
    rows, truth = [], None
    for dtype in (torch.float64, torch.float32):
        log(f"finite-difference products: {label}, {dtype}")
        exp.model.to(dtype)
        exp.hyper.to(dtype)
        cast = [Batch(b.inputs.to(dtype), b.targets, b.index) for b in batches]
        losses = hyper_losses(exp, *cast)
        hparams = list(exp.hyper.parameters())

        def hypergradient(products: str, losses=losses, hparams=hparams):
            method = ImplicitDifferentiation(solver, products=products)
            state = method.init_state()
            return lambda: method.hypergradient(
                exp.model, hparams, exp.joint.optimizer, losses, state
            )[0]

        timed = measure_group(
            {"autograd": hypergradient("autograd"), "fd": hypergradient("finite_difference")},
            sizes,
        )
        (autograd, reference), (differences, result) = timed["autograd"], timed["fd"]
        want, got = flatten(list(reference.grads)), flatten(list(result.grads))
        truth = want.double() if truth is None else truth
        rows.append(
            {
                "case": label,
                "dtype": str(dtype).removeprefix("torch."),
                "weights": sum(p.numel() for p in exp.model.parameters()),
                "products": reference.hvps,
                "fd_vs_autograd": relative_error(got, want),
                "fd_cosine": cosine(got, want),
                "autograd_vs_truth": relative_error(want, truth),
                "fd_vs_truth": relative_error(got, truth),
                "autograd_median_ms": autograd.median_ms,
                "autograd_iqr_ms": autograd.iqr_ms,
                "fd_median_ms": differences.median_ms,
                "fd_iqr_ms": differences.iqr_ms,
                "ratio": differences.median_ms / autograd.median_ms,
            }
        )
    return rows


def section_products(quick: bool) -> Table:
    rows = []
    for label, overrides in (QUICK_CASES if quick else CASES).items():
        rows += case_rows(label, overrides, quick)
    table = Table(
        section="products",
        title="One hypergradient: finite-difference products against autograd's",
        columns=[
            Column("case", "case"),
            Column("dtype", "dtype"),
            Column("weights", "weights d"),
            Column("products", "products"),
            Column("fd_vs_autograd", "‖g_fd − g_ag‖/‖g_ag‖", fmt_sci),
            Column("fd_cosine", "cos(g_fd, g_ag)", lambda c: f"{c:.9f}"),
            Column("autograd_vs_truth", "g_ag vs float64 g_ag", fmt_sci),
            Column("fd_vs_truth", "g_fd vs float64 g_ag", fmt_sci),
            Column("autograd_median_ms", "autograd ms", fmt_ms),
            Column("fd_median_ms", "finite differences ms", fmt_ms),
            Column("ratio", "fd / autograd", fmt_ratio),
        ],
        rows=rows,
    )
    table.notes += [
        "Weights trained in float64; each dtype's row casts the model, λ and the same two "
        "batches, and both products use the same solver. g_ag, g_fd: the hypergradients with "
        "autograd's and finite-difference products; 'vs float64 g_ag': relative error against "
        "the float64 autograd hypergradient (with solver=exact, the dense solve itself).",
        "products: the solver's products with H plus the residual check (the mixed term is one "
        "more). Expected relative error of one product ≈ ε_m^{2/3}: 4e-11 (float64), 2e-5 "
        "(float32) times the problem's constants (hpo_cli/core/finite_difference.py); the "
        "solve amplifies it by up to H's condition number (the dense solve most).",
        "Each finite-difference product is two forward and two first-order backward passes on "
        "the hyper-step's training batch; autograd's reuses one gradient graph.",
    ]
    return table


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = benchmark_parser(
        "finite_difference_products", "Finite-difference products against autograd's."
    )
    return parse_benchmark_args(parser, argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    device = resolve_device(args.device)
    if device.type != "cpu":
        log("finite-difference products: measured on the CPU only (the runner's device=cpu)")
    start = CpuSnapshot.now()
    table = section_products(args.quick)
    return write_one_table(
        "finite_difference_products",
        argv,
        args,
        torch.device("cpu"),
        start,
        table,
        "Hypergradient products by finite differences of gradients",
        dtype="float64 and float32 (per row)",
        timer="torch.utils.benchmark, both products side by side in rounds",
    )


if __name__ == "__main__":
    sys.exit(main())
