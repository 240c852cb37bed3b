"""One call that analyses a curvature operator, densely or matrix-free, with solver diagnostics.

``analyse(operator, mode=...)`` returns a :class:`CurvatureReport`:

* ``dense`` (d up to a few thousand): every eigenvalue
  (:mod:`hpo_cli.analysis.hessian.spectrum`), the exact trace, and the density as the
  Gaussian-broadened exact spectrum;
* ``lanczos``: the k largest and k smallest eigenvalues (:func:`extreme_eigenvalues`),
  Hutchinson's trace with its confidence interval and the SLQ density
  (:mod:`hpo_cli.analysis.hessian.stochastic`); rank and κ over the full spectrum need every
  eigenvalue and are not reported, κ = λmax/λmin only when λmin > τ.

In both, the rank tolerance τ is max|λ|·d·ε(dtype) (or ``rank_rtol``·max|λ|) and the solver
diagnostics (:mod:`hpo_cli.analysis.hessian.diagnostics`) use λmin, λmax and τ.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch

from hpo_cli.analysis.hessian.diagnostics import (
    CGDiagnosis,
    NeumannDiagnosis,
    cg_diagnosis,
    neumann_diagnosis,
)
from hpo_cli.analysis.hessian.lanczos import extreme_eigenvalues
from hpo_cli.analysis.hessian.operators import SymmetricOperator
from hpo_cli.analysis.hessian.spectrum import Spectrum, default_tolerance, dense_spectrum
from hpo_cli.analysis.hessian.stochastic import (
    TraceEstimate,
    density_grid,
    gaussian_density,
    hutchinson_trace,
    lanczos_quadrature,
)


@dataclass(frozen=True)
class CurvatureReport:
    """The analysis of one symmetric operator (see module doc); eigenvalues ascending, float64.

    Attributes:
        mode: ``dense`` or ``lanczos``.
        size: d.
        dtype: the precision of the products (e.g. ``float64``).
        eigenvalues: all of them (dense) or the bottom-k then the top-k (lanczos).
        smallest, largest: λmin, λmax.
        converged: False when ARPACK did not converge at one end and Ritz values stand in for
            the eigenvalues there (λmin over-, λmax under-estimated; see
            :class:`~hpo_cli.analysis.hessian.lanczos.ExtremeEigenvalues`).
        tolerance: τ.
        spectrum: the dense analysis (rank, gap, κ's, negatives); None in lanczos mode.
        condition: κ = λmax/λmin when λmin > τ, else inf (dense: κ over the full |λ| spectrum).
        trace: the exact trace (dense) or Hutchinson's estimate.
        trace_estimate: Hutchinson's estimate with its interval (lanczos), else None.
        density_grid, density: the smoothed spectral density φ on its grid.
        density_sigma: σ of the Gaussian broadening.
        neumann: the Neumann diagnosis for the step α asked for.
        cg: the CG prediction.
    """

    mode: str
    size: int
    dtype: str
    eigenvalues: list[float]
    smallest: float
    largest: float
    converged: bool
    tolerance: float
    spectrum: Spectrum | None
    condition: float
    trace: float
    trace_estimate: TraceEstimate | None
    density_grid: list[float]
    density: list[float]
    density_sigma: float
    neumann: NeumannDiagnosis
    cg: CGDiagnosis

    def to_dict(self) -> dict:
        """Plain numbers, lists and strings (non-finite numbers as ``"inf"``/``"nan"``)."""
        data = asdict(self)
        if self.spectrum is not None:
            data["spectrum"] = {
                key: value for key, value in data["spectrum"].items() if key != "eigenvalues"
            }
            data["spectrum"]["negative_eigenvalues"] = data["spectrum"].pop("negative")
        return json_safe(data)


def json_safe(value):
    """JSON-safe copy: tensors to lists, non-finite floats to strings."""
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(item) for item in value]
    if isinstance(value, torch.Tensor):
        return json_safe(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def analyse(
    operator: SymmetricOperator,
    mode: str = "dense",
    k: int = 6,
    probes: int = 50,
    slq_probes: int = 4,
    slq_steps: int = 64,
    neumann_alpha: float = 1.0,
    cg_tol: float = 1e-6,
    rank_rtol: float | None = None,
    seed: int = 0,
    density_points: int = 1000,
    density_width: float = 0.01,
) -> CurvatureReport:
    """Analyse ``operator`` (see module doc).

    Args:
        operator: the symmetric curvature operator.
        mode: ``dense`` or ``lanczos``.
        k: eigenvalues at each end (lanczos).
        probes: Hutchinson probes (lanczos).
        slq_probes, slq_steps: SLQ start vectors and Lanczos steps per vector (lanczos).
        neumann_alpha: the Neumann step α to diagnose (1.0: no step, as in seed 000).
        cg_tol: the CG relative accuracy ε for the iteration prediction.
        rank_rtol: τ = rank_rtol · max|λ| (None: max|λ|·d·ε).
        seed: seeds every random start vector and probe.
        density_points, density_width: grid size and σ as a fraction of λmax − λmin.
    """
    dtype_name = str(operator.dtype).removeprefix("torch.")
    if mode == "dense":
        spectrum = dense_spectrum(operator, rank_rtol)
        converged = True
        eigenvalues = spectrum.eigenvalues
        smallest, largest = spectrum.smallest, spectrum.largest
        tolerance = spectrum.tolerance
        grid, sigma = density_grid(smallest, largest, density_points, density_width)
        weights = torch.full_like(eigenvalues, 1.0 / len(eigenvalues))
        density = gaussian_density(eigenvalues, weights, grid, sigma)
        condition, trace, estimate = spectrum.condition_full, spectrum.trace, None
    elif mode == "lanczos":
        spectrum = None
        low = extreme_eigenvalues(operator, k, "SA", seed)
        high = extreme_eigenvalues(operator, k, "LA", seed)
        bottom, top, converged = low.values, high.values, low.converged and high.converged
        eigenvalues = torch.as_tensor([*bottom, *top], dtype=torch.float64)
        smallest, largest = float(bottom[0]), float(top[-1])
        max_abs = max(abs(smallest), abs(largest))
        if rank_rtol is None:
            tolerance = default_tolerance(max_abs, operator.size, operator.dtype)
        else:
            tolerance = rank_rtol * max_abs
        condition = largest / smallest if smallest > tolerance else math.inf
        estimate = hutchinson_trace(operator, probes, seed)
        trace = estimate.mean
        rule = lanczos_quadrature(operator, slq_probes, slq_steps, seed)
        grid, sigma = density_grid(smallest, largest, density_points, density_width)
        density = gaussian_density(rule.nodes, rule.weights, grid, sigma)
    else:
        raise ValueError(f"mode={mode!r} must be 'dense' or 'lanczos'")
    return CurvatureReport(
        mode=mode,
        size=operator.size,
        dtype=dtype_name,
        eigenvalues=eigenvalues.tolist(),
        smallest=smallest,
        largest=largest,
        converged=converged,
        tolerance=tolerance,
        spectrum=spectrum,
        condition=condition,
        trace=trace,
        trace_estimate=estimate,
        density_grid=grid.tolist(),
        density=density.tolist(),
        density_sigma=sigma,
        neumann=neumann_diagnosis(smallest, largest, neumann_alpha, tolerance),
        cg=cg_diagnosis(smallest, largest, cg_tol, tolerance),
    )
