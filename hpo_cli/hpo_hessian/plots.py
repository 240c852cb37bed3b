"""Figures of a :class:`~hpo_cli.analysis.hessian.analysis.CurvatureReport`: the eigenvalues on a
symlog axis (linear within ±τ, logarithmic beyond, so negative, zero and large eigenvalues all
show) and
the smoothed spectral density."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from hpo_cli.analysis.hessian.analysis import CurvatureReport


def plot_spectrum(report: CurvatureReport, path: Path) -> None:
    """Eigenvalues against their index (dense) or the bottom-k and top-k (lanczos), with the
    band |λ| ≤ τ counted as zero shaded."""
    figure, axes = plt.subplots(figsize=(6.4, 4.0))
    values = report.eigenvalues
    if report.mode == "dense":
        axes.plot(range(1, len(values) + 1), values, ".", markersize=3)
        axes.set_xlabel("index i (ascending)")
    else:
        half = len(values) // 2
        axes.plot(range(1, half + 1), values[:half], "o", label="smallest (Lanczos)")
        top = range(report.size - half + 1, report.size + 1)
        axes.plot(top, values[half:], "o", label="largest (Lanczos)")
        axes.set_xscale("log")
        axes.set_xlabel("index i (ascending, of d)")
    threshold = max(report.tolerance, 1e-300)
    axes.set_yscale("symlog", linthresh=threshold)
    axes.axhspan(-report.tolerance, report.tolerance, color="0.85", label="|λ| ≤ τ")
    axes.legend(loc="upper left")
    axes.set_ylabel("eigenvalue λ (symlog)")
    axes.set_title(f"{report.mode} spectrum, d = {report.size}, τ = {report.tolerance:.2g}")
    axes.grid(True, alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def plot_density(report: CurvatureReport, path: Path) -> None:
    """The Gaussian-broadened spectral density φ(λ) on a logarithmic density axis."""
    figure, axes = plt.subplots(figsize=(6.4, 4.0))
    floor = max(max(report.density) * 1e-12, 1e-300)
    axes.plot(report.density_grid, [max(value, floor) for value in report.density])
    axes.set_yscale("log")
    axes.set_xlabel("eigenvalue λ")
    axes.set_ylabel("density φ(λ)")
    source = "exact eigenvalues" if report.mode == "dense" else "stochastic Lanczos quadrature"
    axes.set_title(f"spectral density ({source}, σ = {report.density_sigma:.2g})")
    axes.grid(True, alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
