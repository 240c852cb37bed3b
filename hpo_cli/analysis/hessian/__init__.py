"""Curvature analysis: spectrum, rank, conditioning and solver diagnostics of a Hessian or
Gauss-Newton matrix, densely or matrix-free (no Hydra; plain tensors and products)."""

from hpo_cli.analysis.hessian.analysis import CurvatureReport, analyse
from hpo_cli.analysis.hessian.diagnostics import (
    CGDiagnosis,
    NeumannDiagnosis,
    cg_diagnosis,
    cg_iterations,
    neumann_diagnosis,
)
from hpo_cli.analysis.hessian.lanczos import (
    ExtremeEigenvalues,
    extreme_eigenvalues,
    lanczos_tridiagonal,
    tridiagonal_matrix,
)
from hpo_cli.analysis.hessian.operators import (
    SymmetricOperator,
    ggn_operator,
    hessian_operator,
    matrix_operator,
)
from hpo_cli.analysis.hessian.spectrum import (
    Spectrum,
    analyse_eigenvalues,
    default_tolerance,
    dense_spectrum,
)
from hpo_cli.analysis.hessian.stochastic import (
    QuadratureRule,
    TraceEstimate,
    density_grid,
    gaussian_density,
    hutchinson_trace,
    lanczos_quadrature,
)

__all__ = [
    "CGDiagnosis",
    "CurvatureReport",
    "ExtremeEigenvalues",
    "NeumannDiagnosis",
    "QuadratureRule",
    "Spectrum",
    "SymmetricOperator",
    "TraceEstimate",
    "analyse",
    "analyse_eigenvalues",
    "cg_diagnosis",
    "cg_iterations",
    "default_tolerance",
    "dense_spectrum",
    "density_grid",
    "extreme_eigenvalues",
    "gaussian_density",
    "ggn_operator",
    "hessian_operator",
    "hutchinson_trace",
    "lanczos_quadrature",
    "lanczos_tridiagonal",
    "matrix_operator",
    "neumann_diagnosis",
    "tridiagonal_matrix",
]
