"""Checkpoints: everything a run needs to continue exactly where it stopped.

Written atomically (a temporary file, then ``os.replace``) so a kill during the write leaves the
previous checkpoint intact.
"""

from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch

from hpo_cli.runner.build import Experiment
from hpo_cli.runner.progress import Progress

CHECKPOINT_NAME = "checkpoint.pt"


def save_checkpoint(run_dir: Path, state: dict[str, Any]) -> None:
    """Save ``state`` (tensors, state dicts, RNG states, plain numbers) to the run directory."""
    path = run_dir / CHECKPOINT_NAME
    partial = path.with_suffix(".pt.partial")
    torch.save(state, partial)
    os.replace(partial, path)


def load_checkpoint(run_dir: Path) -> dict[str, Any] | None:
    """The last checkpoint of a run directory, or ``None`` when it has none yet."""
    path = run_dir / CHECKPOINT_NAME
    if not path.exists():
        return None
    return torch.load(path, map_location="cpu", weights_only=False)


def checkpoint_state(exp: Experiment, progress: Progress, elapsed_s: float) -> dict[str, Any]:
    """Everything :func:`restore` needs: progress (with ``elapsed_s`` so far), the model, λ, both
    optimisers, the batch generator, streamed data's samplers and the global RNG states."""
    return {
        "progress": {
            **progress.__dict__,
            "phase_s": dict(progress.phase_s),
            "elapsed_s": elapsed_s,
        },
        "model": exp.model.state_dict(),
        "hyper": exp.hyper.state_dict(),
        "optimizer": exp.joint.optimizer.state_dict(),
        "hyper_optimizer": exp.joint.hyper_optimizer.state_dict(),
        "batches": exp.batches.get_state(),
        "data": exp.data.state_dict(),  # streamed splits' sampler positions (plain ints)
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if exp.device.type == "cuda" else None,
    }


def restore(exp: Experiment, state: dict[str, Any]) -> Progress:
    """Load a :func:`checkpoint_state` into ``exp``; returns the run's progress."""
    exp.model.load_state_dict(state["model"])
    exp.hyper.load_state_dict(state["hyper"])
    exp.joint.optimizer.load_state_dict(state["optimizer"])
    exp.joint.hyper_optimizer.load_state_dict(state["hyper_optimizer"])
    exp.batches.set_state(state["batches"])
    exp.data.load_state_dict(state.get("data", {}))
    torch.set_rng_state(state["torch_rng"])
    if state["cuda_rng"] is not None:
        torch.cuda.set_rng_state_all(state["cuda_rng"])
    progress = Progress(**state["progress"])
    progress.phase_s = defaultdict(float, progress.phase_s)
    exp.joint.skipped_hyper_steps = progress.skipped_hyper_steps
    return progress
