"""The Hessian spectrum of seed 004's two-layer linear network, from ``hpo-hessian``'s output.

Drawn from the ``hessian.json`` of ``hpo-hessian experiment=hessian_condition`` (any dense
``hpo-hessian`` run will do): every |λ| of H in decreasing order on a log scale, the rank
tolerance τ as a line, the eigenvalues counted as zero (|λ| ≤ τ) apart from those kept, with the
rank r, the condition numbers over the non-zero and the full spectrum and the gap that justifies
the rank written on the figure.

python -m experiments.hessian_condition <run dir> <out dir>
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np

from experiments.common import save, script_main

EXPERIMENT = "hessian_condition"
PROGRAM = "hpo-hessian"
FILES = ("hessian.json",)
CAPTION = (
    "Seed 004: the Hessian of the two-layer linear network's squared error with respect to W₂ "
    "is (2/n)·AAᵀ with A = W₁X, so at most as many eigenvalues as X has features are non-zero "
    "and the rest sit at rounding level, far below the rank tolerance τ: κ is infinite over the "
    "full spectrum and finite only over the non-zero one, because τ separates the two groups."
)


def read_report(run_dir: Path) -> dict[str, Any]:
    """``hessian.json`` with its non-finite numbers (stored as strings) back as floats."""
    report = json.loads((run_dir / "hessian.json").read_text())
    spectrum = report.get("spectrum")
    if spectrum is None:
        raise ValueError(f"{run_dir / 'hessian.json'} holds no dense spectrum (mode=lanczos)")
    for key in ("condition_nonzero", "condition_full", "gap", "tolerance"):
        if spectrum.get(key) is not None:
            spectrum[key] = float(spectrum[key])
    return report


def _number(value: float) -> str:
    return "∞" if np.isinf(value) else f"{value:.4g}"


def plot(run_dir: Path, out_dir: Path) -> list[Path]:
    """|λ| in decreasing order (log scale): kept and dropped eigenvalues, τ, rank and κ."""
    report = read_report(run_dir)
    spectrum = report["spectrum"]
    eigenvalues = np.asarray(report["eigenvalues"], dtype=float)
    order = np.argsort(-np.abs(eigenvalues))
    values = eigenvalues[order]
    magnitude = np.abs(values)
    index = np.arange(1, len(values) + 1)
    tolerance = spectrum["tolerance"]
    floor = magnitude[magnitude > 0].min() / 10 if (magnitude > 0).any() else 1e-300
    shown = np.maximum(magnitude, floor)  # exact zeros drawn at the bottom of the axis
    kept = magnitude > tolerance
    figure, axis = plt.subplots(figsize=(7, 4.2))
    for mask, marker, color, label in (
        (kept & (values > 0), "o", "C0", "kept, λ > 0"),
        (kept & (values < 0), "o", "C3", "kept, λ < 0"),
        (~kept & (values >= 0), ".", "0.55", "|λ| ≤ τ (counted as zero), λ ≥ 0"),
        (~kept & (values < 0), "x", "0.55", "|λ| ≤ τ (counted as zero), λ < 0"),
    ):
        if mask.any():
            axis.plot(index[mask], shown[mask], marker, color=color, markersize=4, label=label)
    axis.axhline(tolerance, color="C1", linestyle="--", label=f"rank tolerance τ = {tolerance:.2g}")
    axis.set(yscale="log", xlabel="i (by decreasing |λ|)", ylabel="|λᵢ|")
    gap = spectrum.get("gap")
    lines = [
        f"rank r = {spectrum['rank']} of d = {report['size']}",
        f"κ over the non-zero spectrum = {_number(spectrum['condition_nonzero'])}",
        f"κ over the full spectrum = {_number(spectrum['condition_full'])}",
        f"gap (smallest kept / largest dropped |λ|) = {'none' if gap is None else f'{gap:.2g}'}",
    ]
    axis.text(
        0.98,
        0.45,
        "\n".join(lines),
        transform=axis.transAxes,
        ha="right",
        va="center",
        fontsize=9,
        bbox={"facecolor": "white", "edgecolor": "0.7"},
    )
    names = ", ".join(report["params"])
    axis.set_title(f"Hessian spectrum w.r.t. {names} ({report['dtype']}, {report['curvature']})")
    axis.legend(loc="upper right", fontsize=8)
    return save(figure, out_dir, "hessian_condition")


def describe(run_dir: Path) -> str:
    """One sentence of the report's rank and condition numbers."""
    report = read_report(run_dir)
    spectrum, size = report["spectrum"], report["size"]
    gap = spectrum.get("gap")
    return (
        f" Here: rank {spectrum['rank']} of {size} at τ = {spectrum['tolerance']:.2g}"
        + ("" if gap is None else f" (gap {gap:.2g})")
        + f", κ = {_number(spectrum['condition_nonzero'])} over the non-zero spectrum and "
        f"{_number(spectrum['condition_full'])} over the full one."
    )


if __name__ == "__main__":
    script_main(plot, EXPERIMENT, FILES, PROGRAM)
