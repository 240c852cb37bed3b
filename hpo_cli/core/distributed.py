"""Data parallelism across processes (``torch.distributed``): the few collectives the maths needs,
each the identity when no process group is initialised (one process: nothing changes).

N processes (ranks) hold the same weights w and hyperparameters λ; each evaluates its losses on
its own shard of every batch, equal shards of b/N examples (:meth:`hpo_cli.data.Batch.shard`).
Every quantity the IFT needs is linear in the loss, and the mean of the per-rank mean losses over
equal shards is the mean over the whole batch, so averaging across ranks gives the single-process
value exactly (up to rounding):

    L = (1/N) Σ_r L_r,   ∂L/∂w = (1/N) Σ_r ∂L_r/∂w,   H v = (1/N) Σ_r H_r v,
    (∂²L_t/∂λ∂w)ᵀ x = (1/N) Σ_r (∂²L_{t,r}/∂λ∂w)ᵀ x,

a penalty R(w, λ) inside every L_{t,r} included ((1/N) Σ_r (ℓ_r + R) = ℓ + R). All-reduce
returns the same bits on every rank, so a solver fed averaged products runs in lock-step: the
same inputs give the same iterates, and every data-dependent decision (CG's stopping test, a
negative curvature, a divergence) is taken on the same numbers everywhere.

:func:`all_reduce_mean_` is the all-reduce of DDP (one flat buffer, one collective per call);
:func:`averaged` wraps a matvec; :func:`differentiable_mean` is the all-reduce that autograd
differentiates through (unrolled differentiation's inner gradients); :func:`agree` compares a
checksum of tensors across ranks. A collective that fails (another process died, or did not
answer within the process group's timeout) raises :class:`ProcessGroupError`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
import torch.distributed as dist

from hpo_cli.core.hvp import MatVec
from hpo_cli.core.vectors import TensorList


class ProcessGroupError(RuntimeError):
    """A collective failed: another process of the group stopped (died, was killed, failed) or
    did not answer within the process group's timeout. The message is one line."""


@contextmanager
def collective() -> Iterator[None]:
    """Turn the backend's error of a failed collective (gloo's, NCCL's) into a one-line
    :class:`ProcessGroupError`."""
    try:
        yield
    except RuntimeError as error:
        first = (str(error).strip().splitlines() or [type(error).__name__])[0].split(". ")[0]
        raise ProcessGroupError(
            f"a collective across the {dist.get_world_size()} processes failed (another process "
            f"stopped, or did not answer in time): {first}"
        ) from error


def active() -> bool:
    """Whether this process is one of several in an initialised process group."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    """N, the number of processes (1 without a process group)."""
    return dist.get_world_size() if active() else 1


def rank() -> int:
    """This process's rank r ∈ [0, N) (0 without a process group)."""
    return dist.get_rank() if active() else 0


def all_reduce_mean_(tensors: TensorList) -> TensorList:
    """Replace every tensor by its mean over the ranks, in place, with one collective on one flat
    buffer (the order and shapes must be the same on every rank); returns ``tensors``."""
    if not active() or not tensors:
        return tensors
    flat = torch.cat([t.reshape(-1) for t in tensors])
    with collective():
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat.div_(dist.get_world_size())
    offset = 0
    for tensor in tensors:
        tensor.copy_(flat[offset : offset + tensor.numel()].view_as(tensor))
        offset += tensor.numel()
    return tensors


def averaged(matvec: MatVec) -> MatVec:
    """v ↦ (1/N) Σ_r A_r v: ``matvec`` itself without a process group."""
    if not active():
        return matvec

    def mean_product(vector: TensorList) -> list[torch.Tensor]:
        return list(all_reduce_mean_(matvec(vector)))

    return mean_product


def differentiable_mean(tensors: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """(1/N) Σ_r tensors_r, differentiable: the backward pass all-reduces (sums) the incoming
    gradients, so that summing the ranks' gradients of a leaf they all hold (λ) gives the
    derivative of the sum of their losses. The identity without a process group."""
    if not active():
        return list(tensors)
    from torch.distributed.nn.functional import all_reduce

    flat = torch.cat([t.reshape(-1) for t in tensors])
    with collective():
        flat = all_reduce(flat, op=dist.ReduceOp.SUM) / dist.get_world_size()
    parts = flat.split([t.numel() for t in tensors])
    return [part.view_as(t) for part, t in zip(parts, tensors, strict=True)]


def checksum(tensors: TensorList) -> str:
    """A SHA-256 of the tensors' bytes (their values, dtypes and shapes, in order)."""
    digest = hashlib.sha256()
    for tensor in tensors:
        digest.update(str((tensor.dtype, tuple(tensor.shape))).encode())
        digest.update(
            tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
        )
    return digest.hexdigest()


def agree(tensors: TensorList) -> bool:
    """Whether every rank holds bit-identical ``tensors`` (one small all-gather of checksums);
    ``True`` without a process group."""
    if not active():
        return True
    sums: list[Any] = [None] * dist.get_world_size()
    with collective():
        dist.all_gather_object(sums, checksum(tensors))
    return len(set(sums)) == 1


def from_rank_zero(value: Any) -> Any:
    """Rank 0's ``value`` on every rank (any picklable object, e.g. a checkpoint's state);
    ``value`` itself without a process group."""
    if not active():
        return value
    box = [value if dist.get_rank() == 0 else None]
    with collective():
        dist.broadcast_object_list(box, src=0)
    return box[0]
