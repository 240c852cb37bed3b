"""A finished (or stopped) run, back in Python: :func:`load_run` rebuilds a run directory's model,
hyperparameters and data from its saved configuration and loads a checkpoint into them::

    from hpo_cli import load_run

    run = load_run("outputs/runs/2025-01-01/12-00-00")           # checkpoint_best.pt
    print(run.hyperparameters()["weight_decay/1.weight"].median())
    run.model.eval(); outputs = run.model(run.data.test.inputs)

``which="best"`` loads ``checkpoint_best.pt``, which a run keeps with early stopping
(``early_stopping.patience``); a run without one is refused in one line naming ``which="last"``
(``checkpoint.pt``, the last checkpoint). ``hpo_cli.load_run`` imports this module only when
called, so ``import hpo_cli`` stays free of Hydra and OmegaConf.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from omegaconf import OmegaConf

from hpo_cli.data import Splits
from hpo_cli.hyper import HyperModule
from hpo_cli.runner.config.build import build_problem
from hpo_cli.runner.errors import ConfigError
from hpo_cli.runner.loop.export import named_hyperparameters
from hpo_cli.runner.rundir.checkpoint import CheckpointError
from hpo_cli.runner.rundir.directory import RunDirectory


class RunNotLoadable(ConfigError):
    """A run directory :func:`load_run` cannot load: not a run, no such checkpoint."""


@dataclass
class LoadedRun:
    """One checkpoint of a run, rebuilt as plain PyTorch objects.

    Attributes:
        run_dir: the run directory.
        which: ``"best"`` or ``"last"``: the checkpoint loaded.
        model: the network with the checkpoint's weights (in training mode, as built: call
            ``.eval()`` to evaluate), on ``device``.
        hyper: the hyperparameter module with the checkpoint's λ.
        data: the run's splits (train, val, test), rebuilt from its configuration.
        config: the run's configuration as a plain dict (``.hydra/config.yaml``, unresolved).
        progress: the checkpoint's progress: ``outer_step``, ``total_inner_steps``, ...
        device: where the model, λ and data live.
    """

    run_dir: Path
    which: str
    model: torch.nn.Module
    hyper: HyperModule
    data: Splits
    config: dict[str, Any]
    progress: dict[str, Any]
    device: torch.device

    @property
    def outer_step(self) -> int | None:
        """The outer step the checkpoint was written after."""
        return self.progress.get("outer_step")

    def hyperparameters(self) -> dict[str, torch.Tensor]:
        """λ's constrained values by name, as ``hyperparameters.pt`` holds them
        (:func:`hpo_cli.runner.loop.export.named_hyperparameters`)."""
        return named_hyperparameters(self.hyper, self.model)


def load_run(
    run_dir: str | Path,
    which: Literal["best", "last"] = "best",
    *,
    device: str | None = None,
) -> LoadedRun:
    """Rebuild ``run_dir``'s model, λ and data and load one of its checkpoints into them.

    Args:
        run_dir: an ``hpo-run`` run directory.
        which: ``"best"``: ``checkpoint_best.pt``, the best evaluation's weights (kept with early
            stopping; refused, in one line, for a run without one); ``"last"``: ``checkpoint.pt``
            (or, when it is damaged, the previous checkpoint, with a warning).
        device: ``"cpu"``, ``"cuda"`` or ``"auto"`` instead of the run's own ``device``.

    The run's configuration seeds torch's global generator to build the model
    (:func:`hpo_cli.runner.config.build.build_problem`); the caller's generator state is put
    back afterwards.

    Raises:
        RunNotLoadable: not a run directory, or it has no such checkpoint.
        CheckpointError: the checkpoint is damaged or unsafe.
        ConfigError: the run's configuration cannot be built here (a device, a missing module).
    """
    if which not in ("best", "last"):
        raise RunNotLoadable(f"load_run(which={which!r}): choose 'best' or 'last'")
    files = RunDirectory(Path(run_dir).expanduser().resolve())
    if not files.saved_config.exists():
        raise RunNotLoadable(f"{run_dir} is not an hpo-run run directory (no {files.saved_config})")
    if which == "best":
        if not files.best_checkpoint.exists():
            raise RunNotLoadable(
                f"{run_dir} has no best checkpoint ({files.best_checkpoint.name} is kept with "
                f"early stopping: early_stopping.patience); load_run(..., which='last') loads "
                f"the last one"
            )
        state = files.load_best_checkpoint()
    else:
        state = files.load_checkpoint()
        if state is None:
            raise RunNotLoadable(
                f"{run_dir} has no checkpoint yet (it stopped before its first "
                f"{files.checkpoint.name})"
            )
    if state.get("format", 1) < 3:
        raise RunNotLoadable(
            f"{run_dir} was written before hpo-cli renamed its keys (checkpoint format "
            f"{state.get('format', 1)}); load it with the hpo-cli that wrote it"
        )
    for key in ("model", "hyper"):
        if not isinstance(state.get(key), dict):
            raise CheckpointError(f"{run_dir}'s {which} checkpoint holds no {key} state")
    cfg = OmegaConf.load(files.saved_config)
    if device is not None:
        cfg.device.type = device
    with torch.random.fork_rng(devices=[]):
        problem = build_problem(cfg)
    try:
        problem.model.load_state_dict(state["model"])
        problem.hyper.load_state_dict(state["hyper"])
    except RuntimeError as error:
        first = str(error).strip().splitlines()[0]
        raise CheckpointError(
            f"{run_dir}'s {which} checkpoint does not fit the run's configuration ({first})"
        ) from error
    config = OmegaConf.to_container(cfg, resolve=False)
    assert isinstance(config, dict)
    return LoadedRun(
        run_dir=files.path,
        which=which,
        model=problem.model,
        hyper=problem.hyper,
        data=problem.data,
        config=config,
        progress=dict(state.get("progress", {})),
        device=problem.device,
    )
