"""Per-example losses and errors for each task a data set declares (``Splits.task``), and their
means in one fused call where a module does not need the per-example values."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F


def squared_error(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-example (z − y)² for outputs (b, 1) and targets (b,)."""
    return (outputs.squeeze(-1) - targets).square()


def cross_entropy(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-example cross-entropy for logits (b, k) and class indices (b,)."""
    return F.cross_entropy(outputs, targets, reduction="none")


def misclassified(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-example 0/1 error."""
    return (outputs.argmax(dim=-1) != targets).to(outputs.dtype)


def mean_squared_error(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """(1/b) Σ_b (z_b − y_b)², a scalar, in one fused call."""
    return F.mse_loss(outputs.squeeze(-1), targets)


def mean_cross_entropy(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """(1/b) Σ_b cross-entropy_b, a scalar, in one fused call (no (b,) tensor of losses)."""
    return F.cross_entropy(outputs, targets)


CRITERIA = {"classification": cross_entropy, "regression": squared_error}
"""Task → the per-example training/validation loss."""
ERRORS = {"classification": misclassified, "regression": squared_error}
"""Task → the per-example error reported in metrics.csv."""
FUSED_MEANS: dict[Callable[..., torch.Tensor], Callable[..., torch.Tensor]] = {
    cross_entropy: mean_cross_entropy,
    squared_error: mean_squared_error,
}
"""Per-example criterion of :data:`CRITERIA` → its mean in one fused call."""


def mean_loss(
    criterion: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    outputs: torch.Tensor,
    targets: torch.Tensor,
) -> torch.Tensor:
    """(1/b) Σ_b criterion(outputs, targets)_b, a scalar: the fused mean of a criterion of
    :data:`CRITERIA` (equal to the per-example losses' mean to rounding, one kernel fewer and
    no (b,) tensor), else the per-example losses averaged (a criterion of one's own)."""
    fused = FUSED_MEANS.get(criterion)
    if fused is not None:
        return fused(outputs, targets)
    return criterion(outputs, targets).mean()
