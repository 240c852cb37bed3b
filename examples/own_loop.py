"""Hypergradient steps in a hand-written PyTorch training loop, with hpo-cli's JointOptimizer.

    python examples/own_loop.py                   # 30 outer steps on breast-cancer data, CPU
    python examples/own_loop.py --outer-steps 5

The loop below is an ordinary PyTorch loop (a model, a loss, Adam, mini-batches). Joint
optimisation adds three things: a hyperparameter module λ (here one weight decay per weight),
an outer optimiser over λ, and, every ``inner_steps`` steps, one ``joint.hyper_step`` on the
training and validation losses (as closures) that computes dL_v/dλ by implicit differentiation
(an 11-term Neumann series, 10 products) and steps λ. A diverged solve is
skipped and counted (``on_failure="skip"``) instead of corrupting λ.
"""

from __future__ import annotations

import argparse
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from hpo_cli import HyperLosses, JointOptimizer, Neumann
from hpo_cli.hyper import WeightDecay


def breast_cancer(seed: int) -> tuple[tuple[torch.Tensor, torch.Tensor], ...]:
    """scikit-learn's bundled breast-cancer data (569 × 30), standardised, cut 100/100/rest."""
    from sklearn.datasets import load_breast_cancer

    inputs, labels = load_breast_cancer(return_X_y=True)
    x = torch.as_tensor(inputs, dtype=torch.float32)
    x = (x - x.mean(0)) / x.std(0)
    y = torch.as_tensor(labels)
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    return tuple((x[part], y[part]) for part in (order[:100], order[100:200], order[200:]))


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--outer-steps", type=int, default=30)
    parser.add_argument("--inner-steps", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="a tiny model: 1 is fastest")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    (x_train, y_train), (x_val, y_val), (x_test, y_test) = breast_cancer(args.seed)

    model = nn.Sequential(nn.Linear(30, 32), nn.Tanh(), nn.Linear(32, 2))
    decay = WeightDecay(model, granularity="weight", init=1e-2, data=None)  # λ: one per weight

    def training_loss(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:  # L_t(w, λ)
        return F.cross_entropy(model(x), y) + decay.penalty(model)

    def validation_loss() -> torch.Tensor:  # L_v(w)
        return F.cross_entropy(model(x_val), y_val)

    joint = JointOptimizer(
        model,
        list(decay.parameters()),
        optimizer=torch.optim.Adam(model.parameters(), lr=1e-2),
        hyper_optimizer=torch.optim.Adam(decay.parameters(), lr=3e-2),
        solver=Neumann(terms=11, alpha="auto"),
        on_failure="skip",
    )
    batches = torch.Generator().manual_seed(args.seed)
    before = None
    for outer in range(args.outer_steps):
        for _ in range(args.inner_steps):  # the user's own inner loop, unchanged but for one call
            index = torch.randint(len(y_train), (32,), generator=batches)
            joint.inner_step(partial(training_loss, x_train[index], y_train[index]))
        if before is None:
            with torch.no_grad():
                before = float(validation_loss())
        result = joint.hyper_step(
            HyperLosses(partial(training_loss, x_train, y_train), validation_loss)
        )
        if outer % 10 == 0:
            print(f"outer {outer}: |dL_v/dλ| {result.norm:.3g} ({result.solve.status})")
    with torch.no_grad():
        test_error = float((model(x_test).argmax(1) != y_test).float().mean())
        after = float(validation_loss())
    print(
        f"validation loss {before:.4f} -> {after:.4f}, test error {test_error:.3f}, "
        f"skipped hyper-steps {joint.skipped_hyper_steps}"
    )
    return {
        "val_loss_before": before,
        "val_loss_after": after,
        "test_error": test_error,
        "decay_mean": float(decay.constrained_values().mean()),
    }


if __name__ == "__main__":
    main()
