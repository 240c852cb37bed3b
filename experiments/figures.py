"""Run the experiment catalogue once and draw every figure into one folder with ``REPORT.md``.

python -m experiments.figures [--out outputs/figures] [--full]

Runs go to ``<out>/runs/<experiment>``; a run whose ``summary.json`` says completed is reused,
not re-run (delete its folder to run it again). Small settings by default; ``--full`` uses the
catalogue's own (paper-scale) settings.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from experiments import (
    distillation,
    inverse_comparison,
    neumann_divergence,
    overfit_validation,
    ridge_closed_form,
)
from experiments.common import read_summary

HPO_RUN = str(Path(sys.executable).parent / "hpo-run")


@dataclass(frozen=True)
class Figure:
    """A catalogue figure: experiment name, caption, plot function and small-run overrides."""

    name: str
    caption: str
    plot: Callable[[Path, Path], list[Path]]
    small: list[str] = field(default_factory=list)


CATALOGUE = [
    Figure("overfit_validation", overfit_validation.CAPTION, overfit_validation.plot,
           ["outer_steps=50"]),
    Figure("neumann_divergence", neumann_divergence.CAPTION, neumann_divergence.plot),
    Figure("ridge_closed_form", ridge_closed_form.CAPTION, ridge_closed_form.plot),
    Figure("distillation", distillation.CAPTION, distillation.plot),
]  # fmt: skip


def ensure_run(name: str, run_dir: Path, overrides: list[str]) -> Path:
    """Run ``hpo-run experiment=name`` into ``run_dir`` unless a completed run is already there."""
    summary = run_dir / "summary.json"
    if summary.exists() and read_summary(run_dir)["status"] == "completed":
        return run_dir
    command = [HPO_RUN, f"experiment={name}", *overrides, "progress=false"]
    subprocess.run([*command, f"hydra.run.dir={run_dir}"], check=True)
    return run_dir


def _line(run_dir: Path) -> str:
    """One sentence with the run's final errors, from its ``summary.json``."""
    final = read_summary(run_dir)["final"]
    return (
        f" Run `{run_dir.name}`: final validation error {final['val_error']:.3g}, "
        f"test error {final['test_error']:.3g}."
    )


def build(out_dir: Path, full: bool = False, budget: int = 50) -> Path:
    """Run (or reuse) every catalogue run, draw every figure, write ``REPORT.md``; return it."""
    sections = []
    for figure in CATALOGUE:
        run_dir = ensure_run(
            figure.name, out_dir / "runs" / figure.name, [] if full else figure.small
        )
        figure.plot(run_dir, out_dir)
        sections.append((figure.name, figure.caption + _line(run_dir)))
    inverse_comparison.plot(out_dir, budget)
    sections.append(("inverse_comparison", inverse_comparison.CAPTION))
    lines = ["# hpo-cli figures", ""]
    for name, text in sections:
        lines += [f"## {name}", "", f"![{name}]({name}.png)", "", text, ""]
    report = out_dir / "REPORT.md"
    report.write_text("\n".join(lines))
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("outputs/figures"))
    parser.add_argument("--full", action="store_true", help="the catalogue's paper-scale settings")
    arguments = parser.parse_args()
    print(build(arguments.out, arguments.full))


if __name__ == "__main__":
    main()
