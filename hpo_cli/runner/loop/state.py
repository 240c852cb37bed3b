"""A run's state as a checkpoint holds it (:func:`checkpoint_state`) and back (:func:`restore`):
the model, λ, both optimisers, the hypergradient method's state, the batch generator, streamed
data's samplers, the RNGs and the progress. The file itself is :mod:`hpo_cli.runner.rundir.
checkpoint`'s."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import torch

from hpo_cli.core import distributed
from hpo_cli.core.methods import ImplicitDifferentiation
from hpo_cli.core.solvers import Neumann
from hpo_cli.runner.loop.experiment import Experiment
from hpo_cli.runner.loop.progress import Progress
from hpo_cli.runner.rundir.checkpoint import (
    CheckpointError,
    check_module,
    load_into,
    require_keys,
)

CHECKPOINT_FORMAT = 3
"""2: Neumann's terms=K sums K terms (format 1, unmarked: K + 1); 3: the progress counts
``total_inner_steps`` (formats 1 and 2: ``inner_steps``), written by the hpo-cli that renamed
its configuration keys (:data:`hpo_cli.runner.cli.renames.RENAMED_KEYS`)."""

RUN_STATE_KEYS = (
    "model",
    "hyper",
    "optimizer",
    "hyper_optimizer",
    "batches",
    "torch_rng",
    "cuda_rng",
    "progress",
)
"""What :func:`restore` needs of a checkpoint (the rest is optional)."""


def checkpoint_state(exp: Experiment, progress: Progress, elapsed_s: float) -> dict[str, Any]:
    """Everything :func:`restore` needs: progress (with ``elapsed_s`` so far), the model, λ, both
    optimisers, the solver's warm-start state (when it keeps one), the batch generator, streamed
    data's samplers, the global RNG states, the number of processes that trained it and the
    inner steps' gradient scaler (``precision=16-mixed``)."""
    return {
        "format": CHECKPOINT_FORMAT,
        "progress": {
            **progress.__dict__,
            "phase_s": dict(progress.phase_s),
            "elapsed_s": elapsed_s,
        },
        "model": exp.model.state_dict(),
        "hyper": exp.hyper.state_dict(),
        "optimizer": exp.joint.optimizer.state_dict(),
        "hyper_optimizer": exp.joint.hyper_optimizer.state_dict(),
        "solver": exp.joint.method_state_dict(),
        "batches": exp.batches.get_state(),
        "data": exp.data.state_dict(),  # streamed splits' sampler positions (plain ints)
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if exp.device.type == "cuda" else None,
        "processes": distributed.world_size(),
        "grad_scaler": scaler.state_dict() if (scaler := exp.joint.grad_scaler) else None,
    }


def check_fits(exp: Experiment, state: dict[str, Any]) -> None:
    """Refuse a checkpoint that lacks a part of the run's state or whose weights or λ have
    other names or shapes than ``exp``'s, before anything is loaded or written.

    Raises:
        CheckpointError: naming the file and the first mismatch.
    """
    require_keys(state, RUN_STATE_KEYS)
    refuse_other_processes(state)
    check_module(state, "model", exp.model, state["model"])
    check_module(state, "hyperparameters", exp.hyper, state["hyper"])


def restore(exp: Experiment, state: dict[str, Any]) -> Progress:
    """Load a :func:`checkpoint_state` into ``exp``; returns the run's progress.

    Raises:
        CheckpointError: a checkpoint of format 1 (before Neumann's re-indexing) of a run whose
            solver is Neumann: its saved ``terms`` would now mean one term fewer; or one of
            format 1 or 2 (before the renames): its run's saved configuration holds old keys;
            one that lacks a part of the run's state (:data:`RUN_STATE_KEYS`) or holds another
            architecture's weights.
    """
    require_keys(state, RUN_STATE_KEYS)
    refuse_other_processes(state)
    refuse_old_neumann(exp, state)
    refuse_before_renames(state)
    load_into(exp.model, state["model"], state, "model")
    load_into(exp.hyper, state["hyper"], state, "hyperparameters")
    load_into(exp.joint.optimizer, state["optimizer"], state, "optimizer")
    load_into(exp.joint.hyper_optimizer, state["hyper_optimizer"], state, "hyper-optimizer")
    exp.joint.load_method_state_dict(state.get("solver"))  # None before warm starts
    if exp.joint.grad_scaler is not None and state.get("grad_scaler"):  # precision=16-mixed
        exp.joint.grad_scaler.load_state_dict(state["grad_scaler"])
    exp.batches.set_state(state["batches"])
    exp.data.load_state_dict(state.get("data", {}))
    torch.set_rng_state(state["torch_rng"])
    if state["cuda_rng"] is not None:
        torch.cuda.set_rng_state_all(state["cuda_rng"])
    progress = Progress(**state["progress"])
    progress.phase_s = defaultdict(float, progress.phase_s)
    exp.joint.skipped_hyper_steps = progress.skipped_hyper_steps
    return progress


def refuse_other_processes(state: dict[str, Any]) -> None:
    """Refuse a checkpoint written by another number of processes (data parallelism): its
    batches were cut into other shards, so the resumed run would not be the run it continues
    (older checkpoints, without the count, were written by one)."""
    written, now = state.get("processes", 1), distributed.world_size()
    if written != now:
        raise CheckpointError(
            f"this checkpoint was written by a run of {written} process(es), not {now}: resume "
            f"it with the same number (torchrun --nproc_per_node={written}, or plain hpo-run "
            "for 1)"
        )


def refuse_old_neumann(exp: Experiment, state: dict[str, Any]) -> None:
    """Refuse resuming a format-1 checkpoint with ``solver=neumann``, whose ``terms=K`` summed
    K + 1 terms then and K now (the resumed run would silently compute something else)."""
    method = exp.joint.method
    if not isinstance(method, ImplicitDifferentiation) or not isinstance(method.solver, Neumann):
        return
    solver = method.solver
    if state.get("format", 1) < 2:
        raise CheckpointError(
            f"this checkpoint predates Neumann's re-indexing: solver.terms={solver.terms} now sums "
            f"{solver.terms} terms (old terms=K is new terms=K+1); start a new run, or rerun "
            f"with an older hpo-cli"
        )


def refuse_before_renames(state: dict[str, Any]) -> None:
    """Refuse a checkpoint of format 1 or 2, written before the renames (its progress counts
    ``inner_steps``, its run's configuration and metrics.csv use the old names): the run is
    not continued under names it was not started with."""
    if state.get("format", 1) < 3 or "inner_steps" in state.get("progress", {}):
        raise CheckpointError(
            f"this checkpoint (format {state.get('format', 1)}) predates hpo-cli's renamed "
            f"keys and columns (inner_steps is now total_inner_steps); it cannot be resumed: "
            f"start a new run, or finish it with the hpo-cli that wrote it"
        )
