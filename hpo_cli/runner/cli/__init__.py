"""``hpo-run``'s command line: argument checks before Hydra (:mod:`.preflight`), ``--help``
(:mod:`.help`) and the Hydra task (:mod:`.command`)."""

from hpo_cli.runner.cli.command import main

__all__ = ["main"]
