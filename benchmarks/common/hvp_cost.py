"""Section 1 of ``benchmarks.hypergradient_cost``: the cost of a Hessian-vector product in units
of one gradient (cross-entropy on random data, float32, training mode), for an MLP 784-256-256-10
(ReLU and ELU), LeNet on MNIST shapes and ResNet-18 on CIFAR shapes; see that module's docstring
for the statements timed."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, jvp

from benchmarks.common.harness import (
    Column,
    Sizes,
    Table,
    first_line,
    fmt_ms,
    fmt_ratio,
    fmt_sci,
    log,
    measure_group,
)
from benchmarks.common.problems import (
    ACTIVATIONS,
    CIFAR_SHAPE,
    MNIST_SHAPE,
    Batch,
    Vector,
    make_mlp,
    mlp_widths,
    random_batch,
    random_images,
    random_like,
    relative_difference,
)
from hpo_cli import TrainingCurvature
from hpo_cli.models import LeNet, resnet18


def hvp_closures(
    model: nn.Module, batch: Batch, direction: Vector
) -> dict[str, Callable[[], Sequence[torch.Tensor]]]:
    """The four statements of section 1, keyed by their row label."""
    params = list(model.parameters())

    def loss() -> torch.Tensor:
        return F.cross_entropy(model(batch.x), batch.y)

    def gradient() -> Sequence[torch.Tensor]:
        return torch.autograd.grad(loss(), params)

    curvature = TrainingCurvature(loss(), params)  # built once, outside the timed region

    def hvp_reused() -> Sequence[torch.Tensor]:
        return curvature.hvp(direction)

    def hvp_rebuilt() -> Sequence[torch.Tensor]:
        gradients = torch.autograd.grad(loss(), params, create_graph=True)
        return torch.autograd.grad(gradients, params, grad_outputs=direction)

    names = [name for name, _ in model.named_parameters()]
    primals = {name: p.detach() for name, p in zip(names, params, strict=True)}
    tangents = dict(zip(names, direction, strict=True))

    def functional_loss(weights: dict[str, torch.Tensor]) -> torch.Tensor:
        return F.cross_entropy(functional_call(model, weights, (batch.x,)), batch.y)

    gradient_fn = grad(functional_loss)

    def hvp_forward_over_reverse() -> Sequence[torch.Tensor]:
        _, product = jvp(gradient_fn, (primals,), (tangents,))
        return [product[name] for name in names]

    return {
        "(a) gradient: forward + autograd.grad": gradient,
        "(b) HVP reusing the gradient graph (TrainingCurvature.hvp)": hvp_reused,
        "(c) HVP rebuilding the graph: forward + grad(create_graph) + grad": hvp_rebuilt,
        "(d) HVP by torch.func jvp(grad(f)) (forward-over-reverse)": hvp_forward_over_reverse,
    }


@dataclass
class HvpModel:
    """One model of section 1 with its batch of random data and timing budget."""

    name: str
    activation: str
    model: nn.Module
    batch: Batch
    sizes: Sizes  # the timing budget (min_run_time, max_run_time, rounds) of its statements


def hvp_models(sizes: Sizes, device: torch.device) -> list[HvpModel]:
    """The MLP (ReLU and ELU), LeNet on MNIST shapes and ResNet-18 on CIFAR shapes.

    ResNet-18 runs at ``sizes.resnet_batch_cuda`` on a GPU, at ``sizes.resnet_batch_cpu`` on
    the CPU, with its own (smaller) timing budget.
    """
    models = []
    for activation in ACTIVATIONS:
        model = make_mlp(sizes, activation, device, seed=0)
        batch = random_batch(sizes, torch.Generator().manual_seed(0), device)
        models.append(HvpModel(f"MLP {mlp_widths(sizes)}", activation, model, batch, sizes))
    torch.manual_seed(0)
    lenet = LeNet(MNIST_SHAPE, sizes.classes).to(device)
    gen = torch.Generator().manual_seed(0)
    images = random_images(sizes.lenet_batch, MNIST_SHAPE, sizes.classes, gen, device)
    models.append(HvpModel("LeNet, 1×28×28", "relu", lenet, images, sizes))
    torch.manual_seed(0)
    resnet = resnet18(CIFAR_SHAPE, sizes.classes).to(device)
    batch = sizes.resnet_batch_cuda if device.type == "cuda" else sizes.resnet_batch_cpu
    images = random_images(batch, CIFAR_SHAPE, sizes.classes, gen, device)
    resnet_timing = replace(
        sizes, min_run_time=sizes.resnet_min_run_time, max_run_time=sizes.resnet_max_run_time
    )
    models.append(HvpModel("ResNet-18, 3×32×32", "relu", resnet, images, resnet_timing))
    return models


def hvp_cost_rows(case: HvpModel) -> tuple[list[dict[str, Any]], list[str]]:
    """Section 1's rows for one model, and notes on statements left out.

    Forward-mode AD (d) is tried once before timing; a model that torch.func refuses (ResNet's
    BatchNorm updates its running statistics in place) loses that row, with the error in a note.
    """
    params = list(case.model.parameters())
    direction = random_like(params, seed=3)
    statements = hvp_closures(case.model, case.batch, direction)
    notes = []
    forward_label = next(label for label in statements if label.startswith("(d)"))
    try:
        statements[forward_label]()
    except RuntimeError as error:
        del statements[forward_label]
        notes.append(
            f"{case.name}: (d) left out, torch.func refuses this model in training mode: "
            f"`{first_line(error)}`"
        )
    dim = sum(p.numel() for p in params)
    log(f"section 1: HVP cost, {case.name} ({case.activation}), batch {len(case.batch.y)}")
    timed = measure_group(statements, case.sizes)
    (gradient, _), (_, reference) = list(timed.values())[:2]
    rows = []
    for label, (timing, result) in timed.items():
        row = {
            "model": case.name,
            "weights": dim,
            "batch": len(case.batch.y),
            "activation": case.activation,
            "case": label,
            **timing.columns(),
        }
        row["ratio_to_gradient"] = timing.median_ms / gradient.median_ms
        if not label.startswith("(a)"):
            row["rel_diff_to_b"] = relative_difference(result, reference)
        rows.append(row)
    return rows, notes


def section_hvp_cost(sizes: Sizes, device: torch.device) -> Table:
    table = Table(
        section="1",
        title="1. HVP cost relative to one gradient (cross-entropy, random data, float32)",
        columns=[
            Column("model", "model"),
            Column("weights", "weights", lambda v: f"{v:,}"),
            Column("batch", "batch"),
            Column("activation", "act."),
            Column("case", "statement timed"),
            Column("median_ms", "median ms", fmt_ms),
            Column("iqr_ms", "IQR ms", fmt_ms),
            Column("ratio_to_gradient", "× (a)", fmt_ratio),
            Column("rel_diff_to_b", "‖Hv − Hv_(b)‖/‖Hv_(b)‖", fmt_sci),
        ],
    )
    for case in hvp_models(sizes, device):
        rows, notes = hvp_cost_rows(case)
        table.rows += rows
        table.notes += notes
    resnet_batch = sizes.resnet_batch_cuda if device.type == "cuda" else sizes.resnet_batch_cpu
    table.notes += [
        "Cross-entropy on random inputs and labels at the initial weights, models in training "
        "mode; v is a random direction. (b) builds `TrainingCurvature(loss, params)` (forward + "
        "create_graph gradient) once outside the timed region and times only `.hvp(v)`.",
        f"× (a) divides by the gradient of the same model. LeNet: `hpo_cli.models.LeNet` "
        f"(conv 6, 16; fc 120, 84) at batch {sizes.lenet_batch}. ResNet-18: "
        f"`hpo_cli.models.resnet18` (CIFAR stem) at batch {resnet_batch} on {device.type} "
        f"(full batch {sizes.resnet_batch_cuda} on a GPU only, {sizes.resnet_batch_cpu} on the "
        f"CPU), timed with a smaller budget (min_run_time {sizes.resnet_min_run_time} s, "
        f"max_run_time {sizes.resnet_max_run_time} s per statement); its BatchNorm layers "
        "update their running statistics at every forward pass, as in training.",
        "The last column checks that (c) and (d) compute the same product as (b).",
    ]
    return table
