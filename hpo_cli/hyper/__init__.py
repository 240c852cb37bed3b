"""Hyperparameter modules: one file per way λ enters the losses (see :mod:`hpo_cli.hyper.base`)."""

from hpo_cli.hyper.augment_net import AugmentNet
from hpo_cli.hyper.base import Criterion, HyperModule, training_terms
from hpo_cli.hyper.distill import Distill
from hpo_cli.hyper.dropout import Dropout
from hpo_cli.hyper.loss_weights import LossWeights
from hpo_cli.hyper.weight_decay import WeightDecay

__all__ = [
    "AugmentNet",
    "Criterion",
    "Distill",
    "Dropout",
    "HyperModule",
    "LossWeights",
    "WeightDecay",
    "training_terms",
]
