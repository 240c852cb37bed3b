"""Diagonal preconditioners M = diag(m) for CG on (A + μI) x = b, A = H the training Hessian.

Preconditioned CG needs M symmetric positive definite; it then converges at the rate of the
spectrum of M^{-1/2}(A + μI)M^{-1/2}, which a good diagonal clusters when A is
diagonally dominant (per-weight scales that differ by orders of magnitude). Vectors are lists of
tensors shaped like the weights (:mod:`hpo_cli.core.vectors`); a diagonal is such a list too.

* **Hutchinson's diagonal** (Bekas, Kokiopoulou & Saad, 2007): for probes z with independent
  Rademacher entries (±1), E[z ⊙ A z] = diag(A), since (z ⊙ Az)_i = A_ii + Σ_{j≠i} z_i z_j A_ij.
  The mean of m probes has variance Σ_{j≠i} A_ij² / m per entry: exact for a diagonal A with one
  probe, and never guaranteed positive for an indefinite A or a noisy estimate.
* **The inner optimiser's second moments**: Adam's (AdamW's) bias-corrected v̂ = v/(1 − β₂ᵗ) or
  RMSprop's v, a running mean of g² (the diagonal of the empirical Fisher, a curvature proxy);
  m = √v̂ + ε, the optimiser's own denominator.

:func:`spd_diagonal` turns either into an SPD M: m_i = max(|d_i| + μ, floor · mean_j(|d_j| + μ)),
absolute values because a Hessian's diagonal (or its estimate) may be ≤ 0 where the curvature
along a weight is negative or the estimate noisy, and a floor relative to the mean so that no
entry of M⁻¹ can amplify a residual component by more than 1/floor times the typical one.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from hpo_cli.core.hvp import MatVec
from hpo_cli.core.vectors import TensorList

DIAGONAL_FLOOR = 1e-3  # m_i ≥ this × mean(m): M⁻¹ amplifies no entry 1000× beyond the typical
MOMENT_KEYS = ("exp_avg_sq", "square_avg")  # Adam/AdamW's v, RMSprop's v in optimizer.state
MOMENT_OPTIMIZERS = (torch.optim.Adam, torch.optim.AdamW, torch.optim.RMSprop)


def rademacher(like: TensorList, generator: torch.Generator) -> list[torch.Tensor]:
    """A probe z with independent ±1 entries shaped like ``like`` (dtype and device too), drawn
    on the CPU from ``generator`` so that the same seed gives the same probe on every device."""
    return [
        (2 * torch.randint(0, 2, x.shape, generator=generator) - 1).to(x.device, x.dtype)
        for x in like
    ]


def hutchinson_diagonal(
    matvec: MatVec, like: TensorList, probes: int, generator: torch.Generator
) -> list[torch.Tensor]:
    """d̂ = (1/m) Σ_{k=1}^{m} z_k ⊙ A z_k, an unbiased estimate of diag(A); ``probes`` = m ≥ 1
    products with A, shaped like ``like``."""
    if probes < 1:
        raise ValueError(f"probes must be >= 1, got {probes}")
    total = [torch.zeros_like(x) for x in like]
    for _ in range(probes):
        probe = rademacher(like, generator)
        torch._foreach_addcmul_(total, probe, matvec(probe))
    torch._foreach_div_(total, float(probes))
    return total


def spd_diagonal(
    diagonal: TensorList, shift: float = 0.0, floor: float = DIAGONAL_FLOOR
) -> list[torch.Tensor]:
    """m = max(|d| + shift, floor · mean(|d| + shift)) entrywise: the diagonal of an SPD M from
    any diagonal d (entries ≤ 0 included); an all-zero d gives m = 1 (M = I)."""
    magnitude = [x.abs() + shift for x in diagonal]
    count = sum(x.numel() for x in magnitude)
    mean = torch.stack([x.sum() for x in magnitude]).sum() / max(count, 1)  # on the device
    usable = (mean > 0) & torch.isfinite(mean)
    lowest = floor * mean
    return [torch.where(usable, torch.maximum(x, lowest), torch.ones_like(x)) for x in magnitude]


def second_moment_diagonal(
    optimizer: torch.optim.Optimizer, params: Sequence[torch.Tensor]
) -> list[torch.Tensor] | None:
    """√v̂ + ε per weight from ``optimizer``'s state (Adam/AdamW: v̂ = v/(1 − β₂ᵗ); RMSprop:
    v̂ = v), shaped like ``params``; ``None`` until every weight has such a state (before the
    first step, or for an optimiser without second moments)."""
    groups = {id(p): group for group in optimizer.param_groups for p in group["params"]}
    diagonal = []
    for param in params:
        state = optimizer.state.get(param, {})
        key = next((k for k in MOMENT_KEYS if k in state), None)
        group = groups.get(id(param))
        if key is None or group is None:
            return None
        moment = state[key].detach()
        if key == "exp_avg_sq":
            steps = float(state["step"])
            moment = moment / (1.0 - group["betas"][1] ** steps)
        diagonal.append(moment.sqrt().add_(group["eps"]))
    return diagonal
