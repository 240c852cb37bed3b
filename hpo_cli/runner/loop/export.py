"""λ in full at the end of a run: every tensor of the hyperparameter module through its
constraint, named by what it belongs to (:func:`named_hyperparameters`), written by
:func:`export_hyperparameters` into ``hyperparameters.pt`` / ``hyperparameters_best.pt`` /
``hyperparameters.json`` (:mod:`hpo_cli.runner.rundir.hyperparameters`)."""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn

from hpo_cli.hyper import AugmentNet, Distill, Dropout, HyperModule, LossWeights, WeightDecay
from hpo_cli.hyper.dropout import hidden_layers
from hpo_cli.runner.loop.experiment import Experiment
from hpo_cli.runner.loop.progress import Progress
from hpo_cli.runner.rundir.checkpoint import CheckpointError
from hpo_cli.runner.rundir.directory import RunDirectory

log = logging.getLogger(__name__)


def named_hyperparameters(hyper: HyperModule, model: nn.Module) -> dict[str, torch.Tensor]:
    """λ's constrained values by name, each tensor detached in its own shape:

    * weight decay: ``weight_decay/<model parameter>`` (per weight: the parameter's shape; per
      layer: a scalar), or one ``weight_decay`` (scalar granularity);
    * dropout: ``dropout_rate/<hidden activation module>`` (per unit or one per layer);
    * loss weights: ``example_weights`` (one per training example, mean 1);
    * distillation: ``distill/images`` and ``distill/labels`` (soft labels when learnt, else the
      fixed class indices);
    * augmentation network: ``augment_net/<its parameter>`` (unconstrained);
    * a module of one's own: its ``named_constrained_values()`` if it has one, else its
      flattened ``constrained_values()`` as ``constrained_values``.
    """
    with torch.no_grad():
        if callable(getattr(hyper, "named_constrained_values", None)):
            return {name: t.detach() for name, t in hyper.named_constrained_values().items()}
        if isinstance(hyper, WeightDecay):
            coefficients = hyper.coefficients()
            if hyper.granularity == "scalar":
                return {"weight_decay": coefficients[0]}
            names = [name for name, _ in model.named_parameters()]
            return {f"weight_decay/{n}": c for n, c in zip(names, coefficients, strict=True)}
        if isinstance(hyper, Dropout):
            return {
                f"dropout_rate/{n}": rate
                for n, rate in zip(dropout_names(model, hyper), hyper.rates(), strict=True)
            }
        if isinstance(hyper, LossWeights):
            return {"example_weights": hyper.weights()}
        if isinstance(hyper, Distill):
            return {"distill/images": hyper.images.detach(), "distill/labels": hyper.targets()}
        if isinstance(hyper, AugmentNet):
            return {f"augment_net/{n}": p.detach() for n, p in hyper.named_parameters()}
        return {"constrained_values": hyper.constrained_values().detach()}


def dropout_names(model: nn.Module, hyper: Dropout) -> list[str]:
    """The names (in ``model``) of the activation modules whose outputs dropout drops, or their
    positions when they cannot be matched."""
    names = {id(module): name for name, module in model.named_modules()}
    layers = [names.get(id(module)) for module, _ in hidden_layers(model)]
    if len(layers) != len(hyper.raw) or None in layers:
        return [str(index) for index in range(len(hyper.raw))]
    return [str(name) for name in layers]


def best_hyperparameters(
    exp: Experiment, files: RunDirectory
) -> tuple[dict[str, torch.Tensor] | None, int | None]:
    """λ of ``checkpoint_best.pt`` by name and its outer step, when the run keeps one (early
    stopping, now or before a resume that turned it off); the live module is put back as it
    was. A damaged best checkpoint is a warning and no best values."""
    try:
        state = files.load_best_checkpoint()
    except CheckpointError as error:
        log.warning("no best hyperparameters written: %s", error)
        return None, None
    if state is None:
        return None, None
    current = {key: value.clone() for key, value in exp.hyper.state_dict().items()}
    try:
        exp.hyper.load_state_dict(state["hyper"])
        best = {name: t.clone() for name, t in named_hyperparameters(exp.hyper, exp.model).items()}
    finally:
        exp.hyper.load_state_dict(current)
    return best, state.get("progress", {}).get("outer_step")


def export_hyperparameters(exp: Experiment, progress: Progress, files: RunDirectory) -> None:
    """Write λ in full, the last values and (early stopping) the best checkpoint's, into
    ``files``. A failure to do so is a warning: it must not hide how the run ended."""
    try:
        best, best_step = best_hyperparameters(exp, files)
        about: dict[str, Any] = {
            "hyper": f"{type(exp.hyper).__module__}.{type(exp.hyper).__qualname__}",
            "constrained": True,
            "last_outer_step": progress.outer_step,
            "best_outer_step": best_step,
        }
        last = named_hyperparameters(exp.hyper, exp.model)
        files.write_hyperparameters(last, best, about)
    except Exception as error:  # reported; the run's own outcome goes on
        log.warning("the hyperparameters could not be written to %s: %s", files.path, error)
