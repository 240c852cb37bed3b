"""Run the experiment catalogue once and draw every figure into one folder with ``REPORT.md``.

python -m experiments.figures [--out outputs/figures] [--full] [--from-disk]

Runs go to ``<out>/runs/<experiment>``; a completed run is reused, not re-run (delete its folder
to run it again). Small settings by default; ``--full`` uses the catalogue's own (paper-scale)
settings. ``--from-disk`` runs nothing: every figure is drawn from the runs already there, and a
missing or unfinished one stops the build with one line naming the command that makes it.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from experiments import (
    distillation,
    hessian_condition,
    hypergradient_quality,
    inverse_comparison,
    neumann_divergence,
    overfit_validation,
    ridge_closed_form,
    solver_defaults,
)
from experiments.common import RUN_FILES, MissingRun, check_run, read_summary

BIN = Path(sys.executable).parent


def final_errors(run_dir: Path) -> str:
    """One sentence with the run's final errors, from its ``summary.json``."""
    final = read_summary(run_dir)["final"]
    return (
        f" Run `{run_dir.name}`: final validation error {final['val_error']:.3g}, "
        f"test error {final['test_error']:.3g}."
    )


@dataclass(frozen=True)
class Figure:
    """A catalogue figure: the experiment, how to draw and describe it, and how to run it.

    Attributes:
        name: the experiment (``conf/experiment/<name>.yaml``) and the figure's file stem.
        caption: what the figure shows (REPORT.md).
        plot: ``plot(run_dir, out_dir) -> paths`` from the run's files.
        small: overrides of the small (default) build.
        files: what a finished run leaves that the figure needs.
        program: ``hpo-run`` or ``hpo-hessian``.
        describe: one sentence of the run's own numbers for REPORT.md.
        study: a study of many runs, ``study(run_dir, full)``, run in this process instead of
            one ``program`` run (``python -m experiments.<name> RUN_DIR [--full]``).
    """

    name: str
    caption: str
    plot: Callable[[Path, Path], list[Path]]
    small: list[str] = field(default_factory=list)
    files: Sequence[str] = RUN_FILES
    program: str = "hpo-run"
    describe: Callable[[Path], str] = final_errors
    study: Callable[[Path, bool], object] | None = None

    def overrides(self, full: bool) -> list[str]:
        return [] if full else list(self.small)

    def study_command(self, run_dir: Path, full: bool) -> str | None:
        """The command line of the figure's study, or None for one ``program`` run."""
        if self.study is None:
            return None
        return f"python -m experiments.{self.name} {run_dir}" + (" --full" if full else "")

    def check(self, run_dir: Path, full: bool) -> None:
        """Raise :class:`MissingRun` unless ``run_dir`` holds a finished run of this figure."""
        command = self.study_command(run_dir, full)
        check_run(run_dir, self.name, self.files, self.overrides(full), self.program, command)


CATALOGUE = [
    Figure("overfit_validation", overfit_validation.CAPTION, overfit_validation.plot,
           ["outer_steps=50"]),
    Figure("inverse_comparison", inverse_comparison.CAPTION, inverse_comparison.plot,
           ["outer_steps=20", "solver_comparison.every=20"], inverse_comparison.FILES,
           describe=inverse_comparison.describe),
    Figure("neumann_divergence", neumann_divergence.CAPTION, neumann_divergence.plot),
    Figure("ridge_closed_form", ridge_closed_form.CAPTION, ridge_closed_form.plot),
    Figure("hessian_condition", hessian_condition.CAPTION, hessian_condition.plot, [],
           hessian_condition.FILES, hessian_condition.PROGRAM, hessian_condition.describe),
    Figure("distillation", distillation.CAPTION, distillation.plot),
    Figure("hypergradient_quality", hypergradient_quality.CAPTION, hypergradient_quality.plot,
           ["outer_steps=30", "solver_comparison.horizons=[1,5]"], hypergradient_quality.FILES,
           describe=hypergradient_quality.describe),
    Figure("hypergradient_quality_ridge", hypergradient_quality.RIDGE_CAPTION,
           hypergradient_quality.plot, ["outer_steps=30", "solver_comparison.horizons=[1,5]"],
           hypergradient_quality.FILES, describe=hypergradient_quality.describe),
    Figure("solver_defaults", solver_defaults.CAPTION, solver_defaults.plot,
           files=solver_defaults.FILES, describe=solver_defaults.describe,
           study=solver_defaults.run_study),
]  # fmt: skip


def ensure_run(figure: Figure, run_dir: Path, full: bool) -> Path:
    """Run the figure's experiment into ``run_dir`` unless a finished run is already there."""
    try:
        figure.check(run_dir, full)
        return run_dir
    except MissingRun:
        pass
    if figure.study is not None:
        run_dir.mkdir(parents=True, exist_ok=True)
        figure.study(run_dir, full)
        return run_dir
    command = [str(BIN / figure.program), f"experiment={figure.name}", *figure.overrides(full)]
    if figure.program == "hpo-run":
        command.append("progress=false")
        if (run_dir / "checkpoint.pt").exists():  # interrupted: continue it
            command = [str(BIN / "hpo-run"), f"resume={run_dir}", "progress=false"]
    subprocess.run([*command, f"hydra.run.dir={run_dir}"], check=True)
    return run_dir


def check_all(runs: dict[str, Path], full: bool) -> None:
    """Raise one :class:`MissingRun` for the first missing or unfinished run, naming the others."""
    problems = []
    for figure in CATALOGUE:
        try:
            figure.check(runs[figure.name], full)
        except MissingRun as error:
            problems.append((figure.name, str(error)))
    if problems:
        others = [name for name, _ in problems[1:]]
        more = f" (also missing or unfinished: {', '.join(others)})" if others else ""
        raise MissingRun(problems[0][1] + more)


def build(out_dir: Path, full: bool = False, from_disk: bool = False) -> Path:
    """Run (or reuse) every catalogue run, draw every figure, write ``REPORT.md``; return it.

    Raises:
        MissingRun: with ``from_disk``, a run is missing or unfinished (nothing is drawn).
    """
    runs = {figure.name: out_dir / "runs" / figure.name for figure in CATALOGUE}
    if from_disk:
        check_all(runs, full)
    else:
        for figure in CATALOGUE:
            ensure_run(figure, runs[figure.name], full)
    lines = ["# hpo-cli figures", ""]
    for figure in CATALOGUE:
        run_dir = runs[figure.name]
        figure.plot(run_dir, out_dir)
        text = figure.caption + figure.describe(run_dir)
        lines += [f"## {figure.name}", "", f"![{figure.name}]({figure.name}.png)", "", text, ""]
    report = out_dir / "REPORT.md"
    report.write_text("\n".join(lines))
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("outputs/figures"))
    parser.add_argument("--full", action="store_true", help="the catalogue's paper-scale settings")
    parser.add_argument(
        "--from-disk",
        action="store_true",
        help="run nothing; a missing run is an error naming the command to run",
    )
    arguments = parser.parse_args()
    try:
        print(build(arguments.out, arguments.full, arguments.from_disk))
    except MissingRun as error:
        print(f"experiments.figures: error: {error}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
