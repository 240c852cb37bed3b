"""The pieces of Hessian-free's local quadratic model, from one evaluation of the objective.

An *evaluation* is what a Hessian-free closure returns: a scalar loss L(w) with its autograd
graph, or a pair (L, z) adding the network outputs z (shape (n, ...), one row per example)
through which the data term of L depends on w. From it:

* :func:`gradient` — ∇L;
* :func:`curvature_product` — v ↦ B v with B the generalised Gauss-Newton matrix Jᵀ H_z J
  (J = ∂z/∂w, H_z = ∂²L/∂z², PSD for a convex loss of z; needs z) or the Hessian ∂²L/∂w², both
  from :mod:`hpo_cli.core.hvp`, reusing one graph for every product;
* :func:`empirical_fisher_diagonal` — the diagonal of the empirical Fisher,
  F = n Σ_i (J_iᵀ ∂L/∂z_i)², which for L the mean of per-example losses ℓ_i is (1/n) Σ_i (∇ℓ_i)²
  (squares elementwise). Needs z.

Only the dependence of L on w *through z* enters the Gauss-Newton matrix and the Fisher: a
penalty R(w) added to L counts in the gradient and the Hessian, not there (damping stands in
for its curvature).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from hpo_cli.core.curvature import loss_and_outputs as loss_and_outputs  # lives in core
from hpo_cli.core.hvp import GaussNewtonCurvature, MatVec, TrainingCurvature

CURVATURES = ("gauss_newton", "hessian")

Evaluation = tuple[torch.Tensor, torch.Tensor | None]
"""(loss with its graph, outputs with theirs or ``None``)."""


def as_evaluation(result: torch.Tensor | tuple[torch.Tensor, torch.Tensor]) -> Evaluation:
    """Read a closure's result: a scalar loss, or a pair (loss, outputs)."""
    loss, outputs = result if isinstance(result, tuple | list) else (result, None)
    if not isinstance(loss, torch.Tensor) or loss.dim() != 0:
        raise ValueError("the closure must return a scalar loss tensor or a pair (loss, outputs)")
    if not loss.requires_grad:
        raise ValueError(
            "the closure's loss has no autograd graph: Hessian-free differentiates it itself, so "
            "compute it with gradients enabled and do not call backward()"
        )
    return loss, outputs


def loss_of(result: torch.Tensor | tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """The loss of a closure's result, without the checks (for evaluations under no_grad)."""
    return result[0] if isinstance(result, tuple | list) else result


def batch_size(evaluation: Evaluation) -> int:
    """n, the leading dimension of the outputs (1 when the closure returned no outputs)."""
    outputs = evaluation[1]
    return 1 if outputs is None or outputs.dim() == 0 else outputs.shape[0]


def require_outputs(evaluation: Evaluation, what: str) -> torch.Tensor:
    outputs = evaluation[1]
    if outputs is None:
        raise ValueError(f"{what} needs the closure to return (loss, outputs), not the loss alone")
    return outputs


def gradient(evaluation: Evaluation, params: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """∇L, detached, keeping the graph for the curvature and the Fisher."""
    grads = torch.autograd.grad(
        evaluation[0], list(params), retain_graph=True, allow_unused=True, materialize_grads=True
    )
    return [g.detach() for g in grads]


def curvature_product(kind: str, evaluation: Evaluation, params: Sequence[torch.Tensor]) -> MatVec:
    """v ↦ B v for ``kind`` ``"gauss_newton"`` (B = Jᵀ H_z J) or ``"hessian"`` (B = ∂²L/∂w²)."""
    loss, _ = evaluation
    if kind == "gauss_newton":
        outputs = require_outputs(evaluation, "curvature='gauss_newton'")
        return GaussNewtonCurvature(outputs, loss, params).gvp
    if kind == "hessian":
        return TrainingCurvature(loss, params).hvp
    raise ValueError(f"curvature={kind!r} is unknown; choose one of {', '.join(CURVATURES)}")


def empirical_fisher_diagonal(
    evaluation: Evaluation, params: Sequence[torch.Tensor], chunk: int = 32
) -> list[torch.Tensor]:
    """F = n Σ_i (J_iᵀ ∂L/∂z_i)², shaped like ``params``.

    J_iᵀ ∂L/∂z_i is example i's share of ∇L (ℓ_i/n for a mean loss), computed for ``chunk``
    examples at a time by one vmapped backward pass (``is_grads_batched``) whose cotangent keeps
    row i of ∂L/∂z only. Cost: n backward passes' worth of arithmetic, chunk·d memory.
    """
    loss, _ = evaluation
    outputs = require_outputs(evaluation, "the Fisher preconditioner")
    params = list(params)
    (output_gradient,) = torch.autograd.grad(loss, outputs, retain_graph=True)
    n = outputs.shape[0]
    fisher = [torch.zeros_like(p) for p in params]
    for start in range(0, n, chunk):
        rows = torch.arange(start, min(start + chunk, n), device=outputs.device)
        cotangents = outputs.new_zeros((len(rows), *outputs.shape))
        cotangents[torch.arange(len(rows), device=outputs.device), rows] = output_gradient[rows]
        shares = torch.autograd.grad(
            outputs,
            params,
            grad_outputs=cotangents,
            is_grads_batched=True,
            retain_graph=True,
            allow_unused=True,
            materialize_grads=True,
        )
        fisher = [f + s.square().sum(dim=0) for f, s in zip(fisher, shares, strict=True)]
    return [n * f for f in fisher]
