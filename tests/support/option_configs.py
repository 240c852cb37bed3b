"""Every option of every config group, composed into hpo-run's configuration once per test
process, in as few compositions as the largest group has options.

Group files never refer to one another (tests/runner/test_config.py checks it), so an option's node
is the same whichever options the other groups hold: composition ``k`` picks the ``k``-th option of
every group at once (a group with fewer options repeats its last), and every option of every group
is composed, by Hydra and against its schema, in one of them. A composition costs about a fifth
of a second; one per option would be 35.
"""

from __future__ import annotations

import copy
import functools
from pathlib import Path
from typing import NamedTuple

from hydra import compose, initialize_config_module
from omegaconf import DictConfig, OmegaConf, open_dict

from hpo_cli.runner.config.schemas import register_configs

CONF = Path(__file__).resolve().parents[2] / "hpo_cli" / "conf"
GROUPS = ("dataset", "model", "hyper", "solver", "optimizer", "hyper_optimizer", "device")


def options(group: str) -> list[str]:
    """The options of ``group``: the names of its YAML files."""
    return sorted(path.stem for path in (CONF / group).glob("*.yaml"))


def hydra_compose(*overrides: str, return_hydra_config: bool = False) -> DictConfig:
    """``compose("config", overrides)`` through Hydra itself, hpo-cli's schemas registered."""
    register_configs()
    with initialize_config_module("hpo_cli.conf", version_base="1.3"):
        return compose("config", list(overrides), return_hydra_config=return_hydra_config)


class Composition(NamedTuple):
    choices: dict[str, str]  # group -> the option Hydra composed (hydra.runtime.choices)
    cfg: DictConfig  # the task configuration (without the hydra node)


@functools.cache
def covering_compositions() -> tuple[Composition, ...]:
    """hpo-run's configuration composed once per index ``k`` below the largest group's size,
    with ``group=<its k-th option>`` for every group (its last option past its end)."""
    choices = {group: options(group) for group in GROUPS}
    compositions = []
    for k in range(max(len(names) for names in choices.values())):
        overrides = [f"{g}={names[min(k, len(names) - 1)]}" for g, names in choices.items()]
        cfg = hydra_compose(*overrides, return_hydra_config=True)
        chosen = OmegaConf.to_container(cfg.hydra.runtime.choices)
        with open_dict(cfg):
            del cfg["hydra"]
        compositions.append(Composition(chosen, cfg))
    return tuple(compositions)


def option_node(group: str, name: str) -> DictConfig:
    """A copy of the ``group`` node of hpo-run's configuration composed with ``group=name``."""
    node = next(c.cfg[group] for c in covering_compositions() if c.choices[group] == name)
    return copy.deepcopy(node)
