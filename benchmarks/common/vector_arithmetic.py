"""Section 2 of ``benchmarks.hypergradient_cost``: vector arithmetic on lists of tensors
(``hpo_cli.core.vectors``, ``torch._foreach_*``) against one flat buffer: hpo-cli's
``ConjugateGradient`` against the same loop on flat vectors (on the MLP Hessian, and on a
diagonal matrix to isolate the arithmetic), and axpy / dot / norm alone."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from benchmarks.common.harness import (
    Column,
    Sizes,
    Table,
    fmt_ms,
    fmt_ratio,
    fmt_sci,
    log,
    measure_group,
)
from benchmarks.common.problems import (
    CG_DAMPING,
    MLPProblem,
    Vector,
    random_like,
    relative_difference,
)
from hpo_cli import ConjugateGradient, TrainingCurvature
from hpo_cli.core.vectors import add, dot, flatten, norm, unflatten


def flat_axpy(x: torch.Tensor, y: torch.Tensor, alpha: float) -> torch.Tensor:
    """x + alpha·y on flat vectors, with the kernel of ``hpo_cli.core.vectors.add``."""
    return torch.add(x, y, alpha=alpha)


def flat_cg(
    matvec: Callable[[torch.Tensor], torch.Tensor],
    b: torch.Tensor,
    max_iter: int,
    damping: float = 0.0,
) -> tuple[torch.Tensor, int]:
    """The loop of ``hpo_cli.ConjugateGradient(max_iter, tol=0, damping)`` (no preconditioner)
    on one flat vector: the same operations and host synchronisations, step for step."""
    solution = torch.zeros_like(b)
    residual = b
    b_norm = float(torch.linalg.vector_norm(b))
    direction = residual
    rz = float(torch.dot(residual, residual))
    residual_norm, iterations = b_norm, 0
    while residual_norm > 0.0 and iterations < max_iter:
        product = matvec(direction)
        if damping:
            product = flat_axpy(product, direction, damping)
        curvature = float(torch.dot(direction, product))
        if not curvature > 0.0:  # ConjugateGradient stops here too (non-finite or ≤ 0)
            break
        step = rz / curvature
        solution = flat_axpy(solution, direction, step)
        residual = flat_axpy(residual, product, -step)
        residual_norm = float(torch.linalg.vector_norm(residual))
        rz_next = float(torch.dot(residual, residual))
        direction = flat_axpy(residual, direction, rz_next / rz)
        rz = rz_next
        iterations += 1
    bool(torch.isfinite(solution).all())  # ConjugateGradient's final all_finite check
    return solution, iterations


def cg_pair(
    label: str,
    list_matvec: Callable[[Vector], Vector],
    like: Vector,
    b: Vector,
    iterations: int,
    damping: float,
    sizes: Sizes,
    flat_matvec: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> dict[str, Any]:
    """hpo-cli's CG on tensor lists against ``flat_cg``; the flat matvec defaults to the list
    one wrapped as ``flatten(list_matvec(unflatten(v)))``."""
    solver = ConjugateGradient(max_iter=iterations, tol=0.0, damping=damping, warm_start=False)
    b_flat = flatten(b)

    def wrapped_matvec(vector: torch.Tensor) -> torch.Tensor:
        return flatten(list_matvec(unflatten(vector, like)))

    flat_matvec = flat_matvec or wrapped_matvec
    log(f"section 2: {label}")
    timed = measure_group(
        {
            "lists": lambda: solver(list_matvec, b),
            "flat": lambda: flat_cg(flat_matvec, b_flat, iterations, damping),
        },
        sizes,
    )
    list_timing, (list_x, info) = timed["lists"]
    flat_timing, (flat_x, flat_iterations) = timed["flat"]
    return {
        "operation": label,
        **list_timing.columns("list_"),
        **flat_timing.columns("flat_"),
        "list_over_flat": list_timing.median_ms / flat_timing.median_ms,
        "iterations": f"{info.iterations} / {flat_iterations}",
        "rel_diff": relative_difference(unflatten(flat_x, like), list_x),
    }


def micro_pair(
    label: str, list_fn: Callable[[], Any] | None, flat_fn: Callable[[], Any], sizes: Sizes
) -> dict[str, Any]:
    log(f"section 2: {label}")
    statements = {"flat": flat_fn} if list_fn is None else {"lists": list_fn, "flat": flat_fn}
    timed = measure_group(statements, sizes)
    row: dict[str, Any] = {"operation": label, "iterations": None}
    row.update(timed["flat"][0].columns("flat_"))
    if "lists" in timed:
        row.update(timed["lists"][0].columns("list_"))
        row["list_over_flat"] = timed["lists"][0].median_ms / timed["flat"][0].median_ms
    return row


def micro_rows(params: Vector, sizes: Sizes) -> list[dict[str, Any]]:
    xs, ys = random_like(params, seed=4), random_like(params, seed=5)
    x, y = flatten(xs), flatten(ys)
    cases: list[tuple[str, Callable[[], Any] | None, Callable[[], Any]]] = [
        ("axpy x + a·y", lambda: add(xs, ys, alpha=0.5), lambda: flat_axpy(x, y, 0.5)),
        ("dot ⟨x, y⟩", lambda: dot(xs, ys), lambda: torch.dot(x, y)),
        ("norm ‖x‖", lambda: norm(xs), lambda: torch.linalg.vector_norm(x)),
        (
            "flatten(unflatten(x)): a flat design's copy per matvec",
            None,
            lambda: flatten(unflatten(x, params)),
        ),
    ]
    return [micro_pair(label, list_fn, flat_fn, sizes) for label, list_fn, flat_fn in cases]


def section_vector_arithmetic(problem: MLPProblem, sizes: Sizes) -> Table:
    params = problem.params
    dim = sum(p.numel() for p in params)
    table = Table(
        section="2",
        title=f"2. Tensor lists (torch._foreach_*) vs one flat buffer ({len(params)} tensors, "
        f"{dim:,} weights, float32)",
        columns=[
            Column("operation", "operation"),
            Column("list_median_ms", "lists ms", fmt_ms),
            Column("list_iqr_ms", "IQR", fmt_ms),
            Column("flat_median_ms", "flat ms", fmt_ms),
            Column("flat_iqr_ms", "IQR", fmt_ms),
            Column("list_over_flat", "lists / flat", fmt_ratio),
            Column("iterations", "iters lists / flat"),
            Column("rel_diff", "‖x_flat − x_lists‖/‖x_lists‖", fmt_sci),
        ],
    )
    iterations = sizes.cg_iterations
    curvature = TrainingCurvature(problem.train_loss(), params)
    b = [g.detach() for g in torch.autograd.grad(problem.val_loss(), params)]
    table.rows.append(
        cg_pair(
            f"CG, {iterations} iterations, MLP Hessian + μI (μ = {CG_DAMPING:g})",
            curvature.hvp,
            params,
            b,
            iterations,
            CG_DAMPING,
            sizes,
        )
    )
    gen = torch.Generator().manual_seed(6)
    diagonal = [
        (1.0 + 9.0 * torch.rand(p.shape, generator=gen, dtype=p.dtype)).to(p.device) for p in params
    ]
    diagonal_flat = flatten(diagonal)
    table.rows.append(
        cg_pair(
            f"CG, {iterations} iterations, diagonal matrix (vector arithmetic only)",
            lambda v: list(torch._foreach_mul(list(v), diagonal)),
            params,
            b,
            iterations,
            0.0,
            sizes,
            flat_matvec=lambda v: v * diagonal_flat,
        )
    )
    table.rows += micro_rows(params, sizes)
    table.notes += [
        "Lists: hpo-cli's `ConjugateGradient` and `hpo_cli.core.vectors`. Flat: the same CG loop "
        "(same kernels and host syncs) in this file on one 1-D tensor. The HVP row wraps "
        "`TrainingCurvature.hvp` as `flatten(hvp(unflatten(v)))` (built once, outside the timed "
        "region, on the pretrained MLP of section 3b); the diagonal row multiplies natively "
        "(`_foreach_mul` on lists, one `mul` flat), so it isolates the vector arithmetic.",
        "Ratios above 1 mean the tensor lists are slower.",
    ]
    return table
