"""Seed 000's Neumann divergence, on the trained model of a ``neumann_divergence`` run.

At the checkpoint's weights, with b = ∂L_v/∂w, three steps α are compared: α = 1 (the series
without a step, as in seed 000), the run's fixed α, and α = 1/λ̂max (``alpha="auto"``). The left
panel shows the term norms ‖t_k‖/‖t_0‖ of t_k = (I − αH)ᵏ αb, which grow without bound once
ρ(I − αH) > 1; the right one the relative error of the K-term Neumann hypergradient against
``Exact`` (pseudo-inverse; missing where the library reports divergence).

python -m experiments.neumann_divergence <run dir> <out dir>
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import torch

from experiments.common import restore_run, save, script_main
from hpo_cli import Exact, Neumann, TrainingCurvature, hypergradient
from hpo_cli.core.solvers import estimate_largest_eigenvalue
from hpo_cli.core.vectors import add, flatten, norm, scale
from hpo_cli.runner.loop.experiment import Experiment

CAPTION = (
    "Neumann series on seed 000's ReLU MLP: without a step (α = 1) the terms explode and the "
    "library reports divergence; a small fixed α converges; the auto step α = 1/λ̂max is "
    "shown for comparison."
)


def _losses(exp: Experiment) -> tuple[torch.Tensor, torch.Tensor]:
    """Full-batch L_t and L_v at the current weights, with their graphs."""
    train = exp.data.train.sample(None, exp.batches)
    val = exp.data.val.sample(None, exp.batches)
    return (
        exp.hyper.training_loss(exp.model, train, exp.criterion),
        exp.hyper.validation_loss(exp.model, val, exp.criterion),
    )


def term_norms(exp: Experiment, alpha: float, terms: int) -> list[float]:
    """‖t_k‖/‖t_0‖ for k = 0..terms, t_0 = αb, t_{k+1} = t_k − αH t_k (inf once non-finite)."""
    train_loss, val_loss = _losses(exp)
    params = list(exp.model.parameters())
    curvature = TrainingCurvature(train_loss, params)
    b = [g.detach() for g in torch.autograd.grad(val_loss, params)]
    term = scale(b, alpha)
    first = float(norm(term))
    ratios = [1.0]
    for _ in range(terms):
        term = add(term, curvature.hvp(term), alpha=-alpha)
        ratio = float(norm(term)) / first
        ratios.append(ratio if math.isfinite(ratio) else math.inf)
    return ratios


def relative_errors(exp: Experiment, alpha: float, terms: int) -> list[float]:
    """‖g_K − g‖/‖g‖ of the K-term Neumann hypergradient for K = 0..terms (NaN if diverged)."""
    hparams = list(exp.hyper.parameters())
    params = list(exp.model.parameters())

    def solve(solver: object) -> torch.Tensor | None:
        train_loss, val_loss = _losses(exp)
        result = hypergradient(train_loss, val_loss, params, hparams, solver, **QUIET)
        return None if result.failure else flatten(result.grads)

    exact = solve(Exact(method="pinv"))
    errors = []
    for k in range(terms + 1):
        estimate = solve(Neumann(terms=k + 1, alpha=alpha))  # k products
        errors.append(
            math.nan if estimate is None else float((estimate - exact).norm() / exact.norm())
        )
    return errors


QUIET = {"raise_on_failure": False, "check_residual": False}


def step_sizes(exp: Experiment) -> dict[str, float]:
    """α = 1, the run's fixed α and 1/λ̂max from 20 Lanczos steps on H (b as start)."""
    train_loss, val_loss = _losses(exp)
    params = list(exp.model.parameters())
    curvature = TrainingCurvature(train_loss, params)
    b = [g.detach() for g in torch.autograd.grad(val_loss, params)]
    largest, _ = estimate_largest_eigenvalue(curvature.hvp, b, 20)
    alphas = {"α = 1 (no step)": 1.0, "auto α = 1/λ̂max": 1.0 / largest}
    alpha = exp.joint.method.solver.alpha
    if alpha not in (None, "auto"):
        alphas[f"fixed α = {alpha:g}"] = float(alpha)
    return alphas


def curves(run_dir: Path, terms: int = 50) -> pd.DataFrame:
    """One row per (α, k): term-norm ratio and relative hypergradient error."""
    exp = restore_run(run_dir)
    rows = []
    for label, alpha in step_sizes(exp).items():
        ratios = term_norms(exp, alpha, terms)
        errors = relative_errors(exp, alpha, terms)
        for k in range(terms + 1):
            rows.append(
                {"alpha": label, "k": k, "term_ratio": ratios[k], "relative_error": errors[k]}
            )
    return pd.DataFrame(rows)


def plot(run_dir: Path, out_dir: Path, terms: int = 50) -> list[Path]:
    """Write ``neumann_divergence.csv`` and the two-panel figure."""
    table = curves(run_dir, terms)
    out_dir.mkdir(parents=True, exist_ok=True)
    table.to_csv(out_dir / "neumann_divergence.csv", index=False)
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for label, group in table.groupby("alpha", sort=False):
        left.plot(group["k"], group["term_ratio"], label=label)
        right.plot(group["k"], group["relative_error"], label=label)
    left.set(yscale="log", xlabel="term k", ylabel="‖t_k‖ / ‖t_0‖", title="Neumann terms")
    right.set(yscale="log", xlabel="terms K", ylabel="relative error vs exact")
    right.set_title("Hypergradient error (gaps: diverged)")
    left.legend()
    return save(figure, out_dir, "neumann_divergence")


if __name__ == "__main__":
    script_main(plot, "neumann_divergence")
