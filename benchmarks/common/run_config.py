"""hpo-run's configuration for the benchmarks that run its loop (overhead, solvers_in_the_loop,
gpu_check's ResNet-18 configuration)."""

from __future__ import annotations

from collections.abc import Sequence

from hydra import compose, initialize_config_module
from omegaconf import DictConfig

from hpo_cli.runner.config.schemas import register_configs


def compose_config(overrides: Sequence[str]) -> DictConfig:
    """hpo-run's configuration with ``overrides``, composed as the runner composes it."""
    register_configs()
    with initialize_config_module("hpo_cli.conf", version_base="1.3"):
        return compose("config", overrides=list(overrides))
