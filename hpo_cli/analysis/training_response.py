"""How well a hypergradient predicts what the real training does: references beyond the dense IFT.

A hypergradient g ≈ dL_v/dλ claims that moving λ by ε d changes the validation loss by ε ⟨g, d⟩.
What training actually does over a horizon of h inner steps is the response

    r(d) = d/dε L_v(w_h(λ + ε d)) at ε = 0,

with w_h the weights after h steps of the *configured* inner optimiser from the current weights
and optimiser state, on fixed mini-batches. Two references measure it:

* the unrolled hypergradient g_h = dL_v(w_h)/dλ (:mod:`hpo_cli.core.unrolled`), exact for r:
  r(d) = ⟨g_h, d⟩;
* central differences r̂(d) = [L_v(w_h(λ + εd)) − L_v(w_h(λ − εd))] / 2ε of the real,
  non-differentiated training over the same batches and state, for a few random unit directions
  d_1..d_m: they validate g_h (their correlation with ⟨g_h, d_i⟩ should be 1).

For every candidate g (identity, Neumann, CG, the Gauss-Newton variants, unrolled with K steps)
this module reports its cosine and relative error against g_h, and the Pearson correlation of its
predictions ⟨g, d_i⟩ with the measured r̂(d_i): does the hypergradient predict, over that horizon,
which directions of λ help? Nothing here trains the model or touches the optimiser.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from hpo_cli.core.unrolled import evaluate_at, unroll
from hpo_cli.core.unrolled.unroll import TrainingLoss, ValidationLoss
from hpo_cli.core.unrolled.updates import InnerUpdate, State


def random_directions(hparams: Sequence[torch.Tensor], count: int, seed: int) -> torch.Tensor:
    """``count`` random unit directions in λ's flattened space, (count, p), from a private
    generator (the global RNG is untouched)."""
    size = sum(h.numel() for h in hparams)
    generator = torch.Generator().manual_seed(seed)
    directions = torch.randn(count, size, generator=generator, dtype=torch.float64)
    directions /= directions.norm(dim=1, keepdim=True)
    return directions.to(hparams[0])


def _shift_(hparams: Sequence[torch.Tensor], flat: torch.Tensor) -> None:
    offset = 0
    with torch.no_grad():
        for h in hparams:
            h.add_(flat[offset : offset + h.numel()].view_as(h))
            offset += h.numel()


def directional_responses(
    model: nn.Module,
    hparams: Sequence[torch.Tensor],
    update: InnerUpdate,
    state: State,
    training_loss: TrainingLoss,
    validation_loss: ValidationLoss,
    steps: int,
    directions: torch.Tensor,
    eps: float,
) -> torch.Tensor:
    """r̂(d_i) by central differences of L_v after ``steps`` real updates, one per row of
    ``directions`` (m, p); λ is restored exactly afterwards. ``training_loss`` must give the same
    function for the same k at every call (fixed batches, reseeded noise)."""

    def val_after() -> float:
        weights, _ = unroll(model, update, state, training_loss, steps, create_graph=False)
        with torch.no_grad():
            return float(evaluate_at(model, weights, validation_loss))

    saved = [h.detach().clone() for h in hparams]
    responses = []
    try:
        for direction in directions:
            _shift_(hparams, eps * direction)
            plus = val_after()
            _shift_(hparams, -2 * eps * direction)
            minus = val_after()
            with torch.no_grad():
                for h, s in zip(hparams, saved, strict=True):
                    h.copy_(s)
            responses.append((plus - minus) / (2 * eps))
    finally:
        with torch.no_grad():
            for h, s in zip(hparams, saved, strict=True):
                h.copy_(s)
    return torch.tensor(responses, dtype=torch.float64)


def correlation(predicted: torch.Tensor, measured: torch.Tensor) -> float:
    """Pearson correlation of two vectors (NaN when either is constant or not finite)."""
    predicted, measured = predicted.double(), measured.double()
    if not (torch.isfinite(predicted).all() and torch.isfinite(measured).all()):
        return math.nan
    a, b = predicted - predicted.mean(), measured - measured.mean()
    scale = float(a.norm() * b.norm())
    return float(a @ b) / scale if scale > 0 else math.nan


def agreement(estimate: torch.Tensor | None, reference: torch.Tensor) -> tuple[float, float]:
    """(cosine, relative error) of a flat hypergradient against a reference; NaN when it failed;
    cosine 0 when either is zero."""
    if estimate is None:
        return math.nan, math.nan
    norms = float(estimate.norm() * reference.norm())
    cosine = float(estimate @ reference) / norms if norms > 0 else 0.0
    reference_norm = float(reference.norm())
    error = (
        float((estimate - reference).norm()) / reference_norm if reference_norm > 0 else math.nan
    )
    return cosine, error
