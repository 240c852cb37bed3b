"""Range checks of a composed configuration, in one line naming the key, before anything runs.

A range has one home. The keys no constructor owns (the top level, ``solver_comparison``,
``tracking``, ``early_stopping``) are checked here with :func:`require`, without importing any
target or torch (:func:`validate_values`), so that ``hpo-run optimizer.lr=-1`` is refused at
once. Then :mod:`hpo_cli.runner.config.constructors` hands the solver's node to its constructor
(which owns its ranges) and checks the model's keys against its ``_target_``'s signature. The
data set, model and hyperparameter module check their own arguments when
:func:`hpo_cli.runner.config.build.build` builds them (they need the data).

``hpo-run`` calls :func:`validate` in its preflight (:mod:`hpo_cli.runner.cli.preflight`), before
Hydra writes the run directory, and again in each job of a multirun.
"""

from __future__ import annotations

from omegaconf import DictConfig

from hpo_cli.runner.config.schemas import tracker_names
from hpo_cli.runner.errors import ConfigError, require
from hpo_cli.runner.loop.early_stopping import MONITORS
from hpo_cli.runner.tracking import TRACKER_NAMES


def validate(cfg: DictConfig) -> None:
    """Range checks that the schemas' types cannot express, then the checks that build or import
    a target (:func:`hpo_cli.runner.config.constructors.validate_constructors`: the solver's
    node given to its constructor, which owns its ranges); raises :class:`ConfigError`. The
    first import no torch, so that a value out of range is refused at once."""
    validate_values(cfg)
    from hpo_cli.runner.config.constructors import validate_constructors  # imports torch

    validate_constructors(cfg)


def validate_values(cfg: DictConfig) -> None:
    """The range checks of :func:`validate` that import no target (and so no torch)."""
    validate_problem(cfg)
    for key in (
        "outer_steps",
        "inner_steps",
        "batch_size",
        "eval_every",
        "checkpoint_every",
        "log_every",
    ):
        require(cfg[key] > 0, key, cfg[key], "must be > 0")
    every = cfg.hessian_every
    require(every is None or every > 0, "hessian_every", every, "must be > 0 or null")
    require(cfg.hessian_probes >= 2, "hessian_probes", cfg.hessian_probes, "must be >= 2")
    validate_solver_comparison(cfg.solver_comparison)
    for key in ("quality_every", "quality_horizon"):
        require(cfg[key] is None or cfg[key] > 0, key, cfg[key], "must be > 0 or null")
    probe = cfg.quality_every
    require(not probe or cfg.hyper_steps, "quality_every", probe, "needs hyper_steps=true")
    require(cfg.warmup_inner_steps >= 0, "warmup_inner_steps", cfg.warmup_inner_steps, ">= 0")
    require(
        not (cfg.compile and cfg.reset_inner_optimizer),
        "reset_inner_optimizer",
        "true",
        "compile=true compiles the optimiser's step once per run; a new optimiser every outer "
        "step would be compiled anew each time (use compile=false)",
    )
    for key in ("hyper_train_batch", "hyper_val_batch"):
        require(cfg[key] is None or cfg[key] > 0, key, cfg[key], "must be > 0 or null")
    for group in ("optimizer", "hyper_optimizer"):  # torch refuses lr < 0 only, and late
        require(cfg[group].lr > 0, f"{group}.lr", cfg[group].lr, "must be > 0")
    fraction = cfg.max_skipped_fraction
    require(0 <= fraction <= 1, "max_skipped_fraction", fraction, "must be in [0, 1]")
    validate_tracking(cfg)
    problem = precision_problem(cfg.precision, cfg.dtype)
    if problem is not None:
        raise ConfigError(problem)


PRECISIONS = ("32", "64", "bf16-mixed", "16-mixed")
"""The values of ``precision`` besides ``null`` (:mod:`hpo_cli.runner.loop.precision`)."""

WEIGHT_DTYPES = {"32": "float32", "64": "float64", "bf16-mixed": "float32", "16-mixed": "float32"}
"""The ``dtype`` each precision needs."""


def precision_problem(precision: str | None, dtype: str) -> str | None:
    """Why ``precision`` cannot run with ``dtype`` (one line), else ``None``."""
    if precision is None:
        return None
    if precision not in PRECISIONS:
        return f"precision={precision} is invalid: null or one of {', '.join(PRECISIONS)}"
    needed = WEIGHT_DTYPES[precision]
    if dtype != needed:
        return (
            f"precision={precision} contradicts dtype={dtype}: precision={precision} needs "
            f"dtype={needed} (dtype is the weights' dtype; precision adds autocast only)"
        )
    return None


MAX_SEED = 2**63 - 1
"""The largest ``seed``: torch's generators take seeds below 2**64, and the data's samplers add
offsets below 2**33 to it (:mod:`hpo_cli.data.streaming`)."""


def validate_problem(cfg: DictConfig) -> None:
    """Range checks of the :class:`ProblemConfig` keys (seed, dtype, threads, device), shared by
    ``hpo-run`` and ``hpo-hessian``; raises :class:`ConfigError`."""
    require(0 <= cfg.seed <= MAX_SEED, "seed", cfg.seed, "must be an integer in [0, 2**63 - 1]")
    require(cfg.dtype in ("float32", "float64"), "dtype", cfg.dtype, "float32 or float64")
    require(cfg.threads is None or cfg.threads > 0, "threads", cfg.threads, "> 0 or null")
    require(
        cfg.device.type in ("cpu", "cuda", "auto"), "device.type", cfg.device.type, "cpu|cuda|auto"
    )
    workers = cfg.data.num_workers
    require(workers >= 0, "data.num_workers", workers, "must be >= 0")


def validate_tracking(cfg: DictConfig) -> None:
    """Range checks of ``tracking`` and ``early_stopping``; raises :class:`ConfigError`."""
    names, known = tracker_names(cfg), TRACKER_NAMES
    require(
        set(names) <= set(known),
        "tracking.trackers",
        names,
        f"a list of {', '.join(known)} (metrics.csv and summary.json are always written)",
    )
    mode = cfg.tracking.wandb_mode
    require(mode in ("offline", "online"), "tracking.wandb_mode", mode, "offline or online")
    stopping = cfg.early_stopping
    patience, min_delta = stopping.patience, stopping.min_delta
    require(patience is None or patience > 0, "early_stopping.patience", patience, "> 0 or null")
    require(min_delta >= 0, "early_stopping.min_delta", min_delta, "must be >= 0")
    monitor = stopping.monitor
    require(monitor in MONITORS, "early_stopping.monitor", monitor, " or ".join(MONITORS))


def validate_solver_comparison(comparison: DictConfig) -> None:
    """Range checks of the ``solver_comparison`` block (its ``solvers``: in
    :func:`hpo_cli.runner.config.constructors.validate_constructors`, beside the list of
    families); raises :class:`ConfigError`."""
    every, key = comparison.every, "solver_comparison"
    require(every is None or every > 0, f"{key}.every", every, "must be > 0 or null")
    require(comparison.budget >= 0, f"{key}.budget", comparison.budget, "must be >= 0")
    alpha = comparison.neumann_alpha
    require(alpha is None or alpha > 0, f"{key}.neumann_alpha", alpha, "must be > 0 or null")
    horizons = list(comparison.horizons)
    require(all(h > 0 for h in horizons), f"{key}.horizons", horizons, "phases must be > 0")
    require(comparison.directions >= 2, f"{key}.directions", comparison.directions, "must be >= 2")
    require(comparison.fd_eps > 0, f"{key}.fd_eps", comparison.fd_eps, "must be > 0")
