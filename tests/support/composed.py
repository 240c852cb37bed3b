"""hpo-run's configuration for the tests whose subject is not the composition itself, composed
as Hydra composes it at a fraction of the cost.

Hydra composes a configuration in two stages: the defaults list (the config groups: ``solver=cg``,
``experiment=...``) and then, last, every value override (``solver.max_iter=2``), parsed by its
override grammar and applied with ``OmegaConf.update(cfg, key, value, merge=True)``
(``ConfigLoaderImpl._apply_overrides_to_config``). :func:`run_config` does the first stage with
Hydra, once per process and set of group choices, and the second as Hydra does; a composition
costs about 0.2 s, the second stage a millisecond. Plain ``group=option`` choices need no
composition at all: the option's node is the one :mod:`option_configs` composed (group files
never refer to one another). Anything other than a plain ``key=value`` outside the config
groups and ``hydra`` (``experiment=``, ``+key=``, ``~key``, ``group@package=``) goes to Hydra.
tests/runner/test_composed.py checks that the result is Hydra's own composition.
"""

from __future__ import annotations

import copy
import functools

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from omegaconf import DictConfig, OmegaConf

from tests.support.option_configs import CONF, GROUPS, hydra_compose, option_node

CONFIG_GROUPS = {p.name for p in CONF.iterdir() if p.is_dir() and not p.name.startswith("_")}
"""Every config group folder (``hydra`` and ``experiment`` included)."""


def is_plain(override: Override) -> bool:
    """``key=value``: no ``+``, ``++`` or ``~`` and no ``@package``."""
    special = override.is_add() or override.is_force_add() or override.is_delete()
    return not special and override.package is None


def is_value_override(override: Override) -> bool:
    """A plain ``key=value`` on a key that is neither a config group nor under ``hydra``."""
    key = override.key_or_group
    outside = key not in CONFIG_GROUPS and "/" not in key and not key.startswith("hydra")
    return is_plain(override) and outside


def is_option_choice(override: Override) -> bool:
    """``group=option`` for one of :data:`option_configs.GROUPS` (the groups of options)."""
    return is_plain(override) and override.key_or_group in GROUPS


@functools.cache
def _composed(group_overrides: tuple[str, ...]) -> DictConfig:
    return hydra_compose(*group_overrides)


def run_config(*overrides: str) -> DictConfig:
    """``compose("config", overrides)``: Hydra's composition of the config groups, cached, then
    the value overrides applied in order, as Hydra applies them. Without an experiment or any
    other override for Hydra, a group's option is the node it composes to on its own
    (:func:`option_configs.option_node`): group files never refer to one another."""
    parsed = OverridesParser.create().parse_overrides(list(overrides))
    values = [o for o in parsed if is_value_override(o)]
    groups = [o for o in parsed if not is_value_override(o)]
    if all(is_option_choice(o) for o in groups):
        cfg = copy.deepcopy(_composed(()))
        for override in groups:
            cfg[override.key_or_group] = option_node(override.key_or_group, override.value())
    else:
        cfg = copy.deepcopy(_composed(tuple(o.input_line for o in groups)))
    for override in values:
        OmegaConf.update(cfg, override.key_or_group, override.value(), merge=True)
    return cfg
