"""Hyperparameter modules: one file per way λ enters the losses (see :mod:`hpo_cli.hyper.base`)."""

from hpo_cli.hyper.base import Criterion, HyperModule
from hpo_cli.hyper.weight_decay import WeightDecay

__all__ = ["Criterion", "HyperModule", "WeightDecay"]
