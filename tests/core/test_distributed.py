"""Data parallelism (:mod:`hpo_cli.core.distributed`) against one process, in float64: two
processes (gloo on 127.0.0.1), each on its half of every batch, give every method's
hypergradient (Hessian and Gauss-Newton, warm and cold, unrolled) and the weights after inner
steps of a single process on the whole batches, to 1e-10, and the same bits on both ranks."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.nn import functional as F

from hpo_cli.core import distributed
from hpo_cli.core.joint import JointOptimizer
from hpo_cli.core.methods import HyperLosses, hypergradient_method
from hpo_cli.core.solvers import ConjugateGradient, Exact, Identity, Neumann
from hpo_cli.core.unrolled import Unrolled
from hpo_cli.data import Batch, Split, Splits
from hpo_cli.hyper import AugmentNet, Distill, LossWeights, WeightDecay

DT = torch.float64
PROCESSES = 2
BATCH = 8  # examples in every batch: 4 per rank


def criterion(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(outputs, targets, reduction="none")


def methods() -> dict[str, tuple[object, str]]:
    """Every solver (two curvatures, data-dependent stopping and λ̂max included) and unrolling."""
    return {
        "identity": (Identity(), "hessian"),
        "neumann_fixed": (Neumann(terms=6, alpha=0.05), "hessian"),
        "neumann_auto": (Neumann(terms=6, alpha="auto"), "hessian"),
        "cg": (ConjugateGradient(max_iter=30, tol=1e-3, damping=0.1), "hessian"),
        "cg_hutchinson": (
            ConjugateGradient(max_iter=8, damping=0.1, preconditioner="hutchinson"),
            "hessian",
        ),
        "cg_ggn": (ConjugateGradient(max_iter=10, tol=1e-4), "ggn"),
        "exact": (Exact(damping=0.1), "hessian"),
        "unrolled": (Unrolled(steps=3), "hessian"),
    }


def problem(hyper_name: str) -> tuple[nn.Module, nn.Module, Splits]:
    """A tanh MLP on 3 classes, 16 training and 16 validation examples, the same on every rank."""
    gen = torch.Generator().manual_seed(0)
    inputs = torch.randn(32, 5, generator=gen, dtype=DT)
    targets = torch.randint(0, 3, (32,), generator=gen)
    train, val = Split(inputs[:16], targets[:16]), Split(inputs[16:], targets[16:])
    splits = Splits(train, val, val, "classification", 3, (5,))
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 6), nn.Tanh(), nn.Linear(6, 3)).to(DT)
    if hyper_name == "loss_weights":
        hyper: nn.Module = LossWeights(model, data=splits)
        with torch.no_grad():
            hyper.raw.copy_(torch.randn(16, generator=gen, dtype=DT))
    elif hyper_name == "augment_net":  # one augmentation of every training input
        hyper = AugmentNet(model, width=4, init_scale=0.1, data=splits).to(DT)
    elif hyper_name == "distill":  # the synthetic set, the same on every rank: not sharded
        hyper = Distill(model, images_per_class=1, data=splits).to(DT)
    else:
        hyper = WeightDecay(model, init=1e-2, init_noise=1.0, data=splits)
    return model, hyper, splits


QUICK = ("weight_decay/cg", "weight_decay/unrolled", "loss_weights/cg")
"""The cases of ``make test`` (one IFT solver that stops on its tolerance, unrolling, and a module
holding one λ per training example); the slow group runs every case."""


def cases() -> list[str]:
    """Every (hyperparameter module, method) case: each method on weight decay, two on loss
    weights, CG on the augmentation network and on distilled data (the modules that hold the
    whole training split or train on data of their own)."""
    names = [f"weight_decay/{name}" for name in methods()]
    others = ["loss_weights/cg", "loss_weights/unrolled", "augment_net/cg", "distill/cg"]
    return [*names, *others]


def compute(rank: int, world: int, chosen: list[str]) -> dict[str, list[torch.Tensor]]:
    """The ``chosen`` cases' hypergradients and, after 3 Adam inner steps, weights, with this
    rank's shard of every batch (``world=1``: the whole batches)."""
    results: dict[str, list[torch.Tensor]] = {}
    for key in chosen:
        hyper_name, name = key.split("/")
        solver, curvature = methods()[name]
        grads, weights, iterations = one_case(hyper_name, solver, curvature, rank, world)
        results[key], results[f"{key}/weights"] = grads, weights
        results[f"{key}/iterations"] = [torch.tensor(iterations)]
    return results


def one_case(
    hyper_name: str, solver: object, curvature: str, rank: int, world: int
) -> tuple[list[torch.Tensor], list[torch.Tensor], int]:
    """(dL_v/dλ of the second of two hyper-steps' solves, the weights, the solver's iterations)
    after 3 inner steps, on this rank's shards."""
    model, hyper, splits = problem(hyper_name)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    generator = torch.Generator().manual_seed(1)

    def draw(split: Split) -> Batch:
        return split.sample(BATCH, generator).shard(rank, world)

    def loss_on(batch: Batch) -> torch.Tensor:
        return hyper.training_loss(model, batch, criterion)

    method = hypergradient_method(solver, curvature=curvature)
    hparams = list(hyper.parameters())
    joint = JointOptimizer(model, hparams, optimizer, torch.optim.SGD(hparams), method)
    for _ in range(3):
        batch = draw(splits.train)
        joint.inner_step(lambda batch=batch: loss_on(batch))
    train_batch, val_batch = draw(splits.train), draw(splits.val)
    inner = [draw(splits.train) for _ in range(method.inner_batches)]
    losses = HyperLosses(
        training_loss=lambda: loss_on(train_batch),
        validation_loss=lambda: hyper.validation_loss(model, val_batch, criterion),
        inner_training_loss=lambda k: loss_on(inner[k]),
        penalty=lambda: hyper.penalty(model),
    )
    state = method.init_state()
    for _ in range(2):  # the second solve from the first's state (warm starts, λ̂max)
        result, state = method.hypergradient(model, hparams, optimizer, losses, state)
    grads = [g.detach().clone() for g in result.grads]
    return grads, [p.detach().clone() for p in model.parameters()], result.solve.iterations


def worker(rank: int, port: int, out: Path, chosen: list[str]) -> None:
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=PROCESSES
    )
    try:
        assert distributed.world_size() == PROCESSES and distributed.rank() == rank
        torch.save(compute(rank, PROCESSES, chosen), out / f"rank{rank}.pt")
        same, own = [torch.arange(4.0)], [torch.arange(4.0) + rank]
        helpers = [
            distributed.agree(same),
            distributed.agree(own),
            distributed.from_rank_zero(rank),
        ]
        torch.save(helpers, out / f"helpers{rank}.pt")
        dist.barrier()  # both done before either destroys the group (gloo aborts otherwise)
    finally:
        dist.destroy_process_group()


def dying_worker(rank: int, port: int, out: Path) -> None:
    """Rank 1 leaves at once; rank 0's next all-reduce must fail in one line, not hang."""
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=PROCESSES
    )
    if rank == 1:
        os._exit(0)
    try:
        distributed.all_reduce_mean_([torch.ones(3)])
    except distributed.ProcessGroupError as error:
        (out / "error.txt").write_text(str(error))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def check_two_processes_equal_one(chosen: list[str], out: Path) -> dict[str, list[torch.Tensor]]:
    """Run ``chosen`` in 2 processes and in this one; assert the ranks' results equal this
    process's to 1e-10 and each other's bit for bit; returns this process's."""
    mp.spawn(worker, args=(free_port(), out, chosen), nprocs=PROCESSES, join=True)
    ranks = [torch.load(out / f"rank{r}.pt") for r in range(PROCESSES)]
    for r in range(PROCESSES):  # the checksum compare sees a difference; rank 0's object is sent
        assert torch.load(out / f"helpers{r}.pt") == [True, False, 0]
    reference = compute(0, 1, chosen)
    assert set(ranks[0]) == set(reference)
    for key, expected in reference.items():
        for rank in ranks:
            for got, want in zip(rank[key], expected, strict=True):
                assert torch.allclose(got, want, rtol=0, atol=1e-10), key
        for a, b in zip(ranks[0][key], ranks[1][key], strict=True):
            assert torch.equal(a, b), f"{key}: the ranks differ"
    return reference


def test_helpers_are_the_identity_in_one_process() -> None:
    x = [torch.arange(3.0)]
    assert not distributed.active() and distributed.world_size() == 1
    assert distributed.all_reduce_mean_(x) is x and torch.equal(x[0], torch.arange(3.0))
    assert distributed.agree(x) and distributed.from_rank_zero("a") == "a"


@pytest.mark.slow  # gloo sometimes aborts the survivor (SIGABRT) instead of raising: flaky
def test_a_process_that_leaves_fails_the_next_collective_in_one_line(tmp_path: Path) -> None:
    mp.spawn(dying_worker, args=(free_port(), tmp_path), nprocs=PROCESSES, join=True)
    message = (tmp_path / "error.txt").read_text()
    assert message.startswith("a collective across the 2 processes failed (another process")
    assert "\n" not in message


def test_shards_are_equal_and_their_union_is_the_batch() -> None:
    batch = Split(torch.arange(12.0).reshape(6, 2), torch.arange(6)).head(None)
    parts = [batch.shard(r, 3) for r in range(3)]
    assert torch.equal(torch.cat([p.index for p in parts]), batch.index)
    assert torch.equal(torch.cat([p.inputs for p in parts]), batch.inputs)
    with pytest.raises(ValueError, match="cannot be cut into 4 equal shards"):
        batch.shard(0, 4)


def test_two_processes_equal_one(tmp_path: Path) -> None:
    reference = check_two_processes_equal_one(list(QUICK), tmp_path)
    # not a trivial problem: non-zero hypergradients, and CG stopped on its tolerance
    assert all(float(g.abs().max()) > 1e-6 for g in reference["weight_decay/cg"])
    assert 0 < int(reference["weight_decay/cg/iterations"][0]) < 30


@pytest.mark.slow
def test_two_processes_equal_one_for_every_method(tmp_path: Path) -> None:
    check_two_processes_equal_one(cases(), tmp_path)
