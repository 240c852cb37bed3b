"""Randomised estimates from products only: trace (Hutchinson) and spectral density (SLQ).

* Hutchinson: for probes z with independent Rademacher entries (±1), E[zᵀAz] = tr A. With m
  probes the estimate is the sample mean t̄ of t_i = z_iᵀ A z_i, reported with the normal
  confidence interval t̄ ± z_{(1+c)/2} · s/√m (s the sample standard deviation, c the
  confidence level): a statement about the randomness of the probes, not a bound.
* Stochastic Lanczos quadrature (Ubaru, Chen & Saad 2017; Ghorbani, Krishnan & Xiao 2019): for a
  unit Gaussian-direction probe v, m Lanczos steps give nodes θ_j and weights τ_j = y_j[0]²
  (Σ_j τ_j = 1) with Σ_j τ_j f(θ_j) ≈ vᵀ f(A) v, whose expectation is (1/d) Σ_i f(λ_i). Taking
  f a Gaussian kernel of width σ and averaging over probes gives a smoothed density
  φ(t) ≈ (1/d) Σ_i N(t; λ_i, σ²), which integrates to 1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

import torch

from hpo_cli.analysis.hessian.lanczos import lanczos_tridiagonal, tridiagonal_matrix
from hpo_cli.analysis.hessian.operators import SymmetricOperator


@dataclass(frozen=True)
class TraceEstimate:
    """Hutchinson's estimate of tr A with its confidence interval.

    Attributes:
        mean: t̄, the estimate.
        std_error: s/√m.
        lower, upper: t̄ ∓ z · s/√m.
        probes: m.
        confidence: c (e.g. 0.95).
    """

    mean: float
    std_error: float
    lower: float
    upper: float
    probes: int
    confidence: float


def hutchinson_trace(
    operator: SymmetricOperator, probes: int, seed: int = 0, confidence: float = 0.95
) -> TraceEstimate:
    """tr A from ``probes`` ≥ 2 Rademacher probes drawn on the operator's device with ``seed``."""
    if probes < 2:
        raise ValueError(f"probes={probes} must be >= 2 for a confidence interval")
    generator = torch.Generator(device=operator.device).manual_seed(seed)
    samples = []
    for _ in range(probes):
        signs = torch.randint(
            0, 2, (operator.size,), generator=generator, device=operator.device
        ).to(operator.dtype)
        probe = 2 * signs - 1
        samples.append(torch.dot(probe, operator.flat_matvec(probe)))
    values = torch.stack(samples).to("cpu", torch.float64)
    mean = float(values.mean())
    std_error = float(values.std()) / math.sqrt(probes)
    half_width = NormalDist().inv_cdf(0.5 + confidence / 2) * std_error
    return TraceEstimate(mean, std_error, mean - half_width, mean + half_width, probes, confidence)


def gaussian_density(
    nodes: torch.Tensor, weights: torch.Tensor, grid: torch.Tensor, sigma: float
) -> torch.Tensor:
    """φ(t) = Σ_j w_j N(t; θ_j, σ²) on ``grid`` (g,) for nodes θ (n,) and weights w (n,)."""
    nodes, weights, grid = (x.to("cpu", torch.float64) for x in (nodes, weights, grid))
    offsets = (grid[:, None] - nodes[None, :]) / sigma
    kernel = torch.exp(-0.5 * offsets.square()) / (sigma * math.sqrt(2 * math.pi))
    return kernel @ weights


@dataclass(frozen=True)
class QuadratureRule:
    """Nodes θ and weights τ (each (n,), float64 on the CPU) of averaged Lanczos quadrature:
    Σ τ_j f(θ_j) ≈ (1/d) tr f(A); the weights sum to 1."""

    nodes: torch.Tensor
    weights: torch.Tensor


def lanczos_quadrature(
    operator: SymmetricOperator, probes: int, steps: int, seed: int = 0
) -> QuadratureRule:
    """The SLQ rule from ``probes`` Gaussian start vectors and ``steps`` Lanczos steps each."""
    generator = torch.Generator(device=operator.device).manual_seed(seed)
    nodes, weights = [], []
    for _ in range(probes):
        start = torch.randn(
            operator.size, generator=generator, device=operator.device, dtype=operator.dtype
        )
        diagonal, off_diagonal = lanczos_tridiagonal(operator, start, steps)
        values, vectors = torch.linalg.eigh(tridiagonal_matrix(diagonal, off_diagonal))
        nodes.append(values)
        weights.append(vectors[0].square() / probes)
    return QuadratureRule(torch.cat(nodes), torch.cat(weights))


def density_grid(
    low: float, high: float, points: int = 1000, width: float = 0.01
) -> tuple[torch.Tensor, float]:
    """A grid covering [low, high] with margins of 5σ, and σ = width · (high − low) (or
    width · max(|low|, 1) for a single point): returns (grid (points,), σ)."""
    spread = high - low
    sigma = width * (spread if spread > 0 else max(abs(low), 1.0))
    grid = torch.linspace(low - 5 * sigma, high + 5 * sigma, points, dtype=torch.float64)
    return grid, sigma
