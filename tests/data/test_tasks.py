"""The fused mean losses of ``hpo_cli.data.tasks`` against the mean of the per-example ones."""

import pytest
import torch

from hpo_cli.data.tasks import CRITERIA, mean_loss

DT = torch.float64


def inputs(task: str, soft: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    if task == "regression":
        return torch.randn(7, 1, generator=gen, dtype=DT), torch.randn(7, generator=gen, dtype=DT)
    logits = torch.randn(7, 4, generator=gen, dtype=DT)
    if soft:  # probabilities as targets (learnt soft labels of hyper=distill)
        return logits, torch.softmax(torch.randn(7, 4, generator=gen, dtype=DT), dim=-1)
    return logits, torch.randint(0, 4, (7,), generator=gen)


@pytest.mark.parametrize(
    "task, soft",
    [("classification", False), ("classification", True), ("regression", False)],
    ids=["class_indices", "soft_labels", "regression"],
)
def test_the_fused_mean_is_the_mean_of_the_per_example_losses(task, soft):
    outputs, targets = inputs(task, soft)
    outputs.requires_grad_(True)
    criterion = CRITERIA[task]
    fused, plain = mean_loss(criterion, outputs, targets), criterion(outputs, targets).mean()
    assert fused.shape == ()
    torch.testing.assert_close(fused, plain, rtol=1e-14, atol=0)
    (fused_grad,) = torch.autograd.grad(fused, outputs)
    (plain_grad,) = torch.autograd.grad(plain, outputs)
    torch.testing.assert_close(fused_grad, plain_grad, rtol=1e-13, atol=1e-16)


def test_a_criterion_of_ones_own_is_averaged():
    outputs, targets = inputs("regression")

    def absolute(z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return (z.squeeze(-1) - y).abs()

    expected = (outputs.squeeze(-1) - targets).abs().mean()
    torch.testing.assert_close(mean_loss(absolute, outputs, targets), expected, rtol=1e-15, atol=0)
