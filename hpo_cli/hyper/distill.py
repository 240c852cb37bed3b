"""Dataset distillation: a few synthetic training examples per class are the hyperparameters."""

from __future__ import annotations

import torch
from torch import nn

from hpo_cli.data import Batch, Splits
from hpo_cli.data.tasks import mean_loss
from hpo_cli.hyper.base import Criterion, HyperModule

LABEL_SMOOTHING = 0.1
"""Learnable soft labels start at (1 − ε)·one-hot + ε/k: a softmax never reaches one-hot."""


class Distill(HyperModule):
    """Synthetic images X̃ (k·m, *input_shape), m per class, and optionally soft labels
    q = softmax(Z) (k·m, k), learned so that a model trained on them alone does well on real data.

    The inner problem trains only on the synthetic set (the real training batch is ignored):

        L_t(w, λ) = (1/km) Σ_j ℓ(f_w(X̃_j), y_j) + c Σ_t ‖w_t‖²,   y_j = q_j or the class of j,

    with a fixed (not tuned) L2 coefficient c = ``weight_decay`` ≥ 0 that keeps the inner
    problem from running off to infinity on a separable synthetic set. λ = (X̃, Z) enters the
    training loss only; the validation loss is the plain mean on real data, so ∂L_v/∂λ = 0.
    Images are unconstrained; soft labels lie on the probability simplex through the softmax.

    Classification only: ``criterion`` receives class indices (b,) for fixed labels and
    probabilities (b, k) for soft labels (``F.cross_entropy`` accepts both).

    Args:
        model: the model trained on the synthetic set (its weights are penalised by c).
        images_per_class: m.
        learn_labels: learn soft labels Z too (else each image keeps its class).
        init: ``"real"`` (m random training examples of each class, drawn with torch's global
            generator) or ``"noise"`` (Gaussian with the training inputs' mean and std).
        weight_decay: c; 1e-3 by default, since without it the weights of a model fitting a
            separable synthetic set grow without bound.
        data: the training data context: classes, input shape and the examples to start from.
    """

    def __init__(
        self,
        model: nn.Module,
        images_per_class: int = 1,
        learn_labels: bool = False,
        init: str = "real",
        weight_decay: float = 1e-3,
        *,
        data: Splits,
    ) -> None:
        super().__init__()
        if data.task != "classification":
            raise ValueError(f"hyper=distill needs a classification dataset, not {data.task}")
        if images_per_class <= 0:
            raise ValueError(f"hyper.images_per_class={images_per_class} is invalid: must be > 0")
        if init not in ("real", "noise"):
            raise ValueError(f"hyper.init={init!r} is unknown; choose real or noise")
        if weight_decay < 0:
            raise ValueError(f"hyper.weight_decay={weight_decay} is invalid: must be >= 0")
        classes, inputs = data.num_outputs, data.train.inputs
        labels = torch.arange(classes, device=inputs.device).repeat_interleave(images_per_class)
        if init == "real":
            images = initial_examples(data, images_per_class)
        else:
            noise = torch.randn(len(labels), *inputs.shape[1:], dtype=inputs.dtype)
            images = inputs.mean() + inputs.std() * noise.to(inputs.device)
        self.images = nn.Parameter(images)
        self.register_buffer("labels", labels)
        self.register_parameter("label_logits", None)
        if learn_labels:
            one_hot = nn.functional.one_hot(labels, classes).to(inputs.dtype)
            smoothed = (1 - LABEL_SMOOTHING) * one_hot + LABEL_SMOOTHING / classes
            self.label_logits = nn.Parameter(smoothed.log())
        self.weight_decay = weight_decay

    def targets(self) -> torch.Tensor:
        """Soft labels softmax(Z) (k·m, k) when learnt, else the class indices (k·m,)."""
        if self.label_logits is None:
            return self.labels
        return torch.softmax(self.label_logits, dim=-1)

    def training_loss(self, model: nn.Module, batch: Batch, criterion: Criterion) -> torch.Tensor:
        """L_t on the synthetic set; ``batch`` (real data) is ignored."""
        return mean_loss(criterion, model(self.images), self.targets()) + self.penalty(model)

    def penalty(self, model: nn.Module) -> torch.Tensor | float:
        """c Σ_t ‖w_t‖² (0 when c = 0)."""
        if not self.weight_decay:
            return 0.0
        return self.weight_decay * sum(w.square().sum() for w in model.parameters())

    def constrained_values(self) -> torch.Tensor:
        values = [self.images.detach().reshape(-1)]
        if self.label_logits is not None:
            values.append(self.targets().detach().reshape(-1))
        return torch.cat(values)


def initial_examples(data: Splits, per_class: int) -> torch.Tensor:
    """``per_class`` distinct random training inputs of each class, class by class."""
    chosen = []
    for label in range(data.num_outputs):
        where = (data.train.targets == label).nonzero().reshape(-1).cpu()
        if len(where) < per_class:
            raise ValueError(
                f"hyper.images_per_class={per_class}: class {label} has only {len(where)} "
                "training examples; lower it, enlarge dataset.train_size or use hyper.init=noise"
            )
        chosen.append(where[torch.randperm(len(where))[:per_class]])
    return data.train.inputs[torch.cat(chosen).to(data.train.inputs.device)].clone()
