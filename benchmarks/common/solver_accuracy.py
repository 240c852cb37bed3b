"""Section 3 of ``benchmarks.hypergradient_cost``: time per hypergradient of every solver at
several K, on (3a) ridge regression against the closed form, (b) the MLP 784-256-256-10 with one
weight-decay hyperparameter per weight, in units of one training step, and (c) the same at a
reduced width against the exact hypergradient from a dense ``torch.func`` Hessian."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch.func import functional_call, grad, jacrev

from benchmarks.common.harness import (
    Column,
    Sizes,
    Table,
    Timing,
    fmt_cosine,
    fmt_ms,
    fmt_ratio,
    fmt_sci,
    log,
    measure_group,
)
from benchmarks.common.problems import (
    CG_DAMPING,
    SETUP_LANCZOS_STEPS,
    WEIGHT_DECAY,
    Batch,
    Losses,
    MLPProblem,
    Vector,
    accuracy,
    fixed_alpha,
    make_mlp_problem,
    make_ridge,
    mlp_widths,
    pretrain,
)
from hpo_cli import (
    ConjugateGradient,
    Exact,
    Hypergradient,
    Identity,
    Neumann,
    hypergradient,
)
from hpo_cli.core.solvers import InverseHVPSolver
from hpo_cli.core.vectors import flatten, unflatten

REDUCED_DTYPE = torch.float64  # 3c: errors far below float32 round-off stay measurable


@dataclass(frozen=True)
class SolverCase:
    name: str
    k: int | None
    solver: InverseHVPSolver

    @property
    def label(self) -> str:
        return self.name if self.k is None else f"{self.name}, K = {self.k}"


def solver_cases(
    ks: Sequence[int], alpha: float, cg_damping: float | None, exact: bool
) -> list[SolverCase]:
    """identity; Neumann with fixed α and with α = "auto"; CG (tol = 0); damped CG; exact."""
    cases = [SolverCase("identity", None, Identity())]
    cases += [SolverCase(f"neumann α = {alpha:.3g}", k, Neumann(k + 1, alpha=alpha)) for k in ks]
    cases += [
        SolverCase("neumann α = auto", k, Neumann(k + 1, alpha="auto", warm_start=False))
        for k in ks
    ]
    cases += [
        SolverCase("cg", k, ConjugateGradient(max_iter=k, tol=0.0, warm_start=False)) for k in ks
    ]
    if cg_damping:
        cases += [
            SolverCase(
                f"cg μ = {cg_damping:g}",
                k,
                ConjugateGradient(max_iter=k, tol=0.0, damping=cg_damping, warm_start=False),
            )
            for k in ks
        ]
    if exact:
        cases.append(SolverCase("exact", None, Exact()))
    return cases


def hypergradient_statement(
    case: SolverCase, losses: Losses, params: Vector, hparams: Vector
) -> Callable[[], Hypergradient]:
    """One hypergradient as a user computes it: both losses built, then ``hypergradient``."""

    def run() -> Hypergradient:
        train_loss, val_loss = losses()
        return hypergradient(
            train_loss, val_loss, params, hparams, case.solver, raise_on_failure=False
        )

    return run


def time_solvers(
    cases: Sequence[SolverCase],
    losses: Losses,
    params: Vector,
    hparams: Vector,
    sizes: Sizes,
    extra: dict[str, Callable[[], Any]],
) -> tuple[list[dict[str, Any]], dict[str, Timing]]:
    """Time every solver case (and the ``extra`` statements) side by side; returns one row per
    case, with the hypergradient kept under ``"grads"``, and the extra statements' timings."""
    statements = dict(extra)
    statements |= {
        case.label: hypergradient_statement(case, losses, params, hparams) for case in cases
    }
    timed = measure_group(statements, sizes)
    rows = []
    for case in cases:
        timing, result = timed[case.label]
        rows.append(
            {
                "solver": case.name,
                "k": case.k,
                **timing.columns(),
                "hvps": result.hvps,
                "status": result.solve.status,
                "residual": result.residual,
                "grads": result.grads,
            }
        )
    return rows, {label: timed[label][0] for label in extra}


def marginal_hvp_cost(rows: Sequence[dict[str, Any]]) -> str:
    """Per solver run at two K: (time at the larger K − time at the smaller) / (extra HVPs)."""
    parts = []
    for name, group in itertools.groupby(rows, key=lambda row: row["solver"]):
        runs = [row for row in group if row.get("k") is not None]
        if len(runs) < 2 or runs[-1]["hvps"] <= runs[0]["hvps"]:
            continue
        extra_ms = runs[-1]["median_ms"] - runs[0]["median_ms"]
        parts.append(f"{name}: {extra_ms / (runs[-1]['hvps'] - runs[0]['hvps']):.3g} ms")
    return (
        "Marginal cost per extra HVP inside a solve (between the smallest and the largest K): "
        + "; ".join(parts)
    )


def accuracy_columns(reference: str) -> list[Column]:
    """Columns of a table of solvers timed and checked against ``reference`` (sections 3a, 3c)."""
    return [
        Column("solver", "solver"),
        Column("k", "K"),
        Column("median_ms", "median ms", fmt_ms),
        Column("iqr_ms", "IQR ms", fmt_ms),
        Column("hvps", "HVPs"),
        Column("status", "status"),
        Column("rel_error", f"rel. error vs {reference}", fmt_sci),
        Column("cosine", "cosine", fmt_cosine),
        Column("residual", "‖Hx − b‖/‖b‖", fmt_sci),
    ]


def section_ridge(sizes: Sizes, device: torch.device) -> Table:
    problem = make_ridge(sizes, device)
    params, hparams = [problem.weights], [problem.theta]
    alpha = fixed_alpha(problem.losses()[0], params)
    reference = problem.reference()
    table = Table(
        section="3a",
        title=f"3a. Hypergradient per solver: ridge regression (n = {sizes.ridge_train}, "
        f"d = {sizes.ridge_dim}, per-weight c = exp(θ), float64)",
        columns=accuracy_columns("closed form"),
    )
    log("section 3a: ridge regression")
    cases = solver_cases(sizes.ks, alpha, cg_damping=None, exact=True)
    table.rows, _ = time_solvers(cases, problem.losses, params, hparams, sizes, extra={})
    for row in table.rows:
        row.update(accuracy(row.pop("grads"), reference))
    table.notes.append(marginal_hvp_cost(table.rows) + ".")
    eigenvalues = torch.linalg.eigvalsh(problem.hessian())
    table.notes += [
        f"Fixed α = 1/λ̂max with λ̂max = {1 / alpha:.4g} from {SETUP_LANCZOS_STEPS} Lanczos "
        f"steps at setup (true eigenvalues of H: {eigenvalues.min():.3g} … "
        f"{eigenvalues.max():.4g}); α = auto spends {Neumann().lanczos_iterations} Lanczos "
        "steps inside every call.",
        "Each call builds both losses and runs `hypergradient(..., check_residual=True)`: HVPs "
        "include the residual check; the error is ‖g − g*‖/‖g*‖ against the closed form "
        "dL_v/dθ_i = −2 w*_i [H⁻¹∇L_v(w*)]_i c_i.",
    ]
    return table


def section_mlp(problem: MLPProblem, gradient_norm: float, sizes: Sizes) -> Table:
    params, hparams = problem.params, problem.hparams
    alpha = fixed_alpha(problem.train_loss(), params)
    dim = sum(p.numel() for p in params)
    table = Table(
        section="3b",
        title=f"3b. Hypergradient per solver: MLP {mlp_widths(sizes)}, {dim:,} weight-decay "
        f"hyperparameters, batch {sizes.batch}, float32",
        columns=[
            Column("solver", "solver"),
            Column("k", "K"),
            Column("median_ms", "median ms", fmt_ms),
            Column("iqr_ms", "IQR ms", fmt_ms),
            Column("train_steps", "× training step", fmt_ratio),
            Column("hvps", "HVPs"),
            Column("status", "status"),
            Column("residual", "‖Hx − b‖/‖b‖", fmt_sci),
        ],
    )

    def losses() -> tuple[torch.Tensor, torch.Tensor]:
        return problem.train_loss(), problem.val_loss()

    def training_step() -> Sequence[torch.Tensor]:
        return torch.autograd.grad(problem.train_loss(), params)

    log("section 3b: MLP")
    step_label = "training step: forward + grad of L_t"
    cases = solver_cases(sizes.ks, alpha, cg_damping=CG_DAMPING, exact=False)
    rows, extra = time_solvers(
        cases, losses, params, hparams, sizes, extra={step_label: training_step}
    )
    step = extra[step_label]
    table.rows = [{"solver": step_label, "k": None, **step.columns()}, *rows]
    for row in table.rows:
        row.pop("grads", None)
        row["train_steps"] = row["median_ms"] / step.median_ms
    table.notes.append(marginal_hvp_cost(rows) + ".")
    table.notes += [
        f"Weights pretrained for {sizes.pretrain_steps} Adam steps on the penalised training "
        f"loss (final ‖∂L_t/∂w‖ = {gradient_norm:.2g}); initial softplus(θ) = {WEIGHT_DECAY:g}. "
        "The Hessian is still indefinite there, so undamped CG can stop early on negative "
        "curvature (status column); the damped rows solve (H + μI)x = b.",
        f"Fixed α = 1/λ̂max = {alpha:.4g} from {SETUP_LANCZOS_STEPS} Lanczos steps at "
        "setup. Exact (a dense d×d Hessian) is infeasible at this size and skipped: the "
        "accuracy of each solver on this problem is measured at a reduced width in 3c.",
        "Each call builds both losses (two forward passes) and runs "
        "`hypergradient(..., check_residual=True)`; HVPs include the residual check. The "
        "training step is one forward + `autograd.grad` of the penalised loss (no optimiser).",
    ]
    return table


def dense_mlp_reference(problem: MLPProblem) -> tuple[torch.Tensor, torch.Tensor]:
    """The exact hypergradient of the per-weight decay MLP, and the eigenvalues of H.

    Independent of hpo-cli's curvature products and solvers: H = ∂²L_t/∂w² is the dense d×d
    Hessian of the training loss as a function of the flat weights (``torch.func`` reverse
    over reverse, ``jacrev(jacrev(L_t))``), and with the penalty Σ softplus(θ_i)·w_i²,
    ∂²L_t/∂θ_i∂w_j = δ_ij·2w_i·σ(θ_i), so

        dL_v/dθ = −2 w ⊙ σ(θ) ⊙ H⁻¹ ∂L_v/∂w      (L_v does not depend on θ).

    Returns:
        The flat hypergradient (d entries, hyperparameters in parameter order) and the
        eigenvalues of H in ascending order.
    """
    names = [name for name, _ in problem.model.named_parameters()]
    like = [p.detach() for p in problem.params]
    weights = flatten(like)
    theta = flatten([t.detach() for t in problem.hparams])

    def data_loss(flat: torch.Tensor, batch: Batch) -> torch.Tensor:
        tensors = dict(zip(names, unflatten(flat, like), strict=True))
        return F.cross_entropy(functional_call(problem.model, tensors, (batch.x,)), batch.y)

    def train_loss(flat: torch.Tensor) -> torch.Tensor:
        return data_loss(flat, problem.train) + (F.softplus(theta) * flat.square()).sum()

    hessian = jacrev(jacrev(train_loss))(weights)
    val_gradient = grad(lambda flat: data_loss(flat, problem.val))(weights)
    inverse_hvp = torch.linalg.solve(hessian, val_gradient)
    return -2.0 * weights * torch.sigmoid(theta) * inverse_hvp, torch.linalg.eigvalsh(hessian)


def section_reduced_mlp(sizes: Sizes, activation: str, device: torch.device) -> Table:
    """3c: every solver's time and accuracy on a reduced-width MLP, against the exact answer."""
    reduced = replace(sizes, inputs=sizes.reduced_inputs, hidden=sizes.reduced_hidden)
    problem = make_mlp_problem(reduced, activation, device, dtype=REDUCED_DTYPE)
    params, hparams = problem.params, problem.hparams
    dim = sum(p.numel() for p in params)
    log(f"section 3c: reduced MLP {mlp_widths(reduced)} ({dim:,} weights), pretraining")
    gradient_norm = pretrain(problem, sizes.pretrain_steps)
    reference, eigenvalues = dense_mlp_reference(problem)
    alpha = fixed_alpha(problem.train_loss(), params)
    table = Table(
        section="3c",
        title=f"3c. Hypergradient per solver against the exact one: MLP {mlp_widths(reduced)} "
        f"({activation}), {dim:,} weight-decay hyperparameters, batch {sizes.batch}, "
        f"{str(REDUCED_DTYPE).removeprefix('torch.')}",
        columns=accuracy_columns("exact"),
    )

    def losses() -> tuple[torch.Tensor, torch.Tensor]:
        return problem.train_loss(), problem.val_loss()

    log("section 3c: timing the solvers")
    cases = solver_cases(sizes.ks, alpha, cg_damping=CG_DAMPING, exact=True)
    table.rows, _ = time_solvers(cases, losses, params, hparams, sizes, extra={})
    for row in table.rows:
        row.update(accuracy(row.pop("grads"), reference))
    negative = int((eigenvalues < 0).sum())
    small = int((eigenvalues.abs() < 0.01 * eigenvalues[-1]).sum())
    smallest = float(eigenvalues.abs().min())
    table.notes.append(marginal_hvp_cost(table.rows) + ".")
    table.notes += [
        "The exact hypergradient −2w ⊙ σ(θ) ⊙ H⁻¹∇L_v(w) is computed once from a dense H "
        "(`torch.func.jacrev(jacrev(L_t))` of the flat-weight loss, independent of hpo-cli's "
        "curvature code "
        "and solvers); the `exact` row (hpo-cli's `Exact` solver, timed like the others) "
        "reproduces it, and every other error is measured against it.",
        f"Weights pretrained like 3b ({sizes.pretrain_steps} Adam steps, final ‖∂L_t/∂w‖ = "
        f"{gradient_norm:.2g}), in {str(REDUCED_DTYPE).removeprefix('torch.')} so that errors "
        f"far below float32 round-off stay visible. Eigenvalues of H: {eigenvalues[0]:.3g} … "
        f"{eigenvalues[-1]:.4g}; {negative} of {dim} negative, {small} with |λ| below 1 % of "
        f"λmax, smallest |λ| = {smallest:.2g}. H⁻¹ magnifies the components of ∇L_v along "
        "those directions by 1/|λ|, which can dominate the exact hypergradient while a solver "
        "started from 0 resolves them last, or never: undamped CG stops on negative "
        "curvature, Neumann's terms grow along negative directions, and damped CG converges "
        f"to (H + μI)⁻¹b (μ = {CG_DAMPING:g}), not to H⁻¹b.",
        f"Fixed α = 1/λ̂max = {alpha:.4g} from {SETUP_LANCZOS_STEPS} Lanczos steps at "
        "setup; HVPs include the residual check.",
    ]
    return table
