"""``hpo-hessian``: the curvature of a training loss (spectra, condition, what each solver would
face), as a small application beside ``hpo-run`` sharing its configuration and run directories."""

from hpo_cli.hpo_hessian.cli import main

__all__ = ["main"]
