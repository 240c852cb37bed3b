"""``hpo-run``'s console-script entry point (:func:`main`): ``--help`` and the checks before a
run import no torch, so that they answer in well under a second; only a command that passes them
imports the runner (:mod:`hpo_cli.runner.cli.command`) and with it torch."""

from __future__ import annotations

import sys

from omegaconf import DictConfig, OmegaConf

from hpo_cli.runner.cli.help import group_options, help_text, print_help
from hpo_cli.runner.cli.preflight import config_dir_arguments, prepare
from hpo_cli.runner.config.schemas import GROUPS, RunConfig, register_configs
from hpo_cli.runner.errors import ConfigError

SUMMARY = "gradient-based hyperparameter optimisation by implicit differentiation"


def main() -> None:
    """Console-script entry point: :func:`hpo_cli.runner.cli.preflight.prepare` checks the command
    line (one line and exit 2 when refused, before anything is written), then Hydra runs it
    (:func:`hpo_cli.runner.cli.command.run`). ``--help`` is hpo-run's own
    (:mod:`hpo_cli.runner.cli.help`; ``hpo-run solver=cg --help`` adds the keys of
    ``solver=cg``), with the values the command would run with; Hydra's other flags (``--cfg``,
    ``--hydra-help``, ...) go to Hydra (a resume's overrides merged, see ``prepare``). One run in
    one process starts from the preflight's composition (one Hydra composition per command); a
    sweep, a Hydra flag or a launch of N processes (``torchrun``, ``srun``) goes through
    Hydra's own ``main``."""
    register_configs()
    arguments = config_dir_arguments(sys.argv[1:])  # --config-dir: one recorded searchpath
    try:
        if "--help" in arguments or "-h" in arguments:
            groups = {group: group_options(group) for group in [*GROUPS, "experiment"]}
            print_help(help_text("hpo-run", SUMMARY, RunConfig, groups, "config", arguments))
            return
        arguments, composed = prepare(arguments)
        from hpo_cli.runner.cli.ranks import join, processes  # the run: torch, from here on

        if processes() == 1 and composed is not None and runs_as_composed(composed):
            composed_run = composed
        else:
            composed_run = None
            arguments = join(arguments)  # torchrun's or srun's N processes: one process group
    except ConfigError as error:  # before Hydra has set up logging: stderr only
        print(f"hpo-run: error: {error}", file=sys.stderr)
        sys.exit(2)
    from hpo_cli.runner.cli import command

    if composed_run is not None:
        command.run_composed(composed_run)
        return
    sys.argv = [sys.argv[0], *arguments]
    command.run()


def runs_as_composed(cfg: DictConfig) -> bool:
    """Whether one run can start from the preflight's composition (:func:`command.run_composed`)
    instead of Hydra's second one: nothing of Hydra's own run machinery is asked for (callbacks
    beyond the sweep's aggregation, which acts at the end of a multirun only)."""
    callbacks = OmegaConf.select(cfg, "hydra.callbacks", default=None) or {}
    return set(callbacks) <= {"aggregate_sweep"}
