"""``hpo-run``'s command line: the entry point (:mod:`.entry`), argument checks before Hydra
(:mod:`.preflight`), ``--help`` (:mod:`.help`) and the Hydra task (:mod:`.command`)."""

from hpo_cli.runner.cli.entry import main

__all__ = ["main"]
