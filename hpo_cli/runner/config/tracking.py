"""From the configuration to the run's :class:`hpo_cli.runner.tracking.Trackers`: which
trackers (``tracking.trackers``), what they record (the flattened config, the run's name, its
sweep, tags).
"""

from __future__ import annotations

from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from hpo_cli.runner.config.schemas import tracker_names
from hpo_cli.runner.errors import ConfigError
from hpo_cli.runner.tracking import (
    RunInfo,
    Trackers,
    TrackerUnavailable,
    TrackingSettings,
    flatten,
    open_trackers,
)
from hpo_cli.runner.tracking import hpo_cli_version as _version


def sweep_id(sweep_dir: Path) -> str:
    """A sweep's id, ``<date>/<time>`` for Hydra's default ``outputs/multirun/<date>/<time>``:
    the W&B group and the suffix of the MLflow experiment of its jobs."""
    return f"{sweep_dir.parent.name}/{sweep_dir.name}"


def run_info(cfg: DictConfig, run_dir: Path, overrides: list[str], multirun: bool) -> RunInfo:
    """What the trackers record: the flattened config (without ``resume``), the run's name (a
    sweep job: ``job N``), its sweep and its tags (the command-line overrides among them)."""
    tracking = OmegaConf.to_container(cfg.tracking, resolve=True)
    settings = TrackingSettings(**{k: v for k, v in tracking.items() if k != "_target_"})
    params = flatten(OmegaConf.to_container(cfg, resolve=True))
    params = {key: value for key, value in params.items() if not key.startswith("resume")}
    device = cfg.device.type
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    tags = {"hpo_cli_version": _version(), "device": device, "status": "running"}
    tags["overrides"] = " ".join(overrides)[:5000]
    if multirun:
        group = sweep_id(run_dir.parent)
        name = f"job {run_dir.name}"
        tags.update(sweep=group, job=run_dir.name)
    else:
        group, name = None, f"{run_dir.parent.name}/{run_dir.name}"
    return RunInfo(run_dir, name, group, params, tags, settings)


def trackers_for(cfg: DictConfig, run_dir: Path, overrides: list[str], multirun: bool) -> Trackers:
    """The run's trackers, each checked (installed, its server answering).

    Raises:
        ConfigError: a tracker cannot be used, in one line saying how to fix it.
    """
    info = run_info(cfg, run_dir, overrides, multirun)
    try:
        return open_trackers(tracker_names(cfg), run_dir, info, info.settings)
    except TrackerUnavailable as error:
        raise ConfigError(str(error)) from error
