"""Per-example losses and errors for each task a data set declares (``Splits.task``)."""

from __future__ import annotations

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


CRITERIA = {"classification": cross_entropy, "regression": squared_error}
"""Task → the per-example training/validation loss."""
ERRORS = {"classification": misclassified, "regression": squared_error}
"""Task → the per-example error reported in metrics.csv."""
