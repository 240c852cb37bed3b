"""The processes of a data-parallel run: ``hpo-run`` started N times by ``torchrun`` or ``srun``,
or the N tasks of a job that submitit's launcher started.

    torchrun --nproc_per_node=2 $(which hpo-run) hydra.run.dir=outputs/dp dtype=float64
    srun --ntasks=2 hpo-run hydra.run.dir=outputs/dp dtype=float64
    hpo-run -m hydra/launcher=slurm hydra.launcher.tasks_per_node=2 seed=0,1

Each process learns its rank, N and the rendezvous from its launcher's variables
(:mod:`hpo_cli.runner.cli.launch`). With N > 1, :func:`join` (torchrun, srun) makes the process
group (gloo on the CPU, NCCL for CUDA tensors, each process on GPU ``LOCAL_RANK``) once every
process has passed the command line's checks; in a sweep, :func:`job_group` makes one per job of
N tasks, each job one run. :func:`follow` is what ranks ≠ 0 run instead of rank 0's
:func:`hpo_cli.runner.cli.command.execute`: the same checks, experiment and loop in lock-step,
writing nothing (no lock, no ``.hydra/``, no log file, no metrics, checkpoints, trackers or
plots: Hydra is told to write nothing for them). The maths is :mod:`hpo_cli.core.distributed`.

A process that dies ends the others: ``torchrun`` stops the whole group as soon as one worker
exits with an error, and a collective whose peer is gone fails at once; one that hangs is left
behind after :data:`TIMEOUT`, the process group's. A multirun under ``torchrun`` or ``srun`` is
refused: a sweep of distributed runs goes through submitit's launcher.
"""

from __future__ import annotations

import atexit
import contextlib
import math
import os
import signal
import sys
from collections.abc import Iterator
from datetime import timedelta

import torch
import torch.distributed as dist
from hydra.errors import InstantiationException
from omegaconf import DictConfig

from hpo_cli.core import distributed
from hpo_cli.runner.cli.launch import Launch, from_environment, from_submitit
from hpo_cli.runner.cli.preflight import MULTIRUN_FLAGS
from hpo_cli.runner.cli.signals import SIGTERM, stop_on_sigterm
from hpo_cli.runner.config.build import build_experiment
from hpo_cli.runner.config.validation import validate
from hpo_cli.runner.errors import ConfigError
from hpo_cli.runner.loop import train as loop
from hpo_cli.runner.loop.progress import RunFailed, RunInterrupted

TIMEOUT = timedelta(minutes=10)
"""How long a collective waits for a process that neither answers nor dies."""

LEAVE_TIMEOUT = timedelta(seconds=60)
"""How long a process waits at exit for the others to reach theirs."""


def leave() -> None:
    """At exit: wait for the other processes (at most :data:`LEAVE_TIMEOUT`; one that has died
    fails the wait at once), then destroy the process group. Destroying it while a peer still
    talks to it makes gloo abort the process (``terminate called without an active
    exception``, SIGABRT) after a run whose files are complete."""
    with contextlib.suppress(RuntimeError, ValueError):  # a process died or hangs: leave alone
        dist.monitored_barrier(timeout=LEAVE_TIMEOUT)  # gloo's (CPU tensors, or cpu:gloo)
    dist.destroy_process_group()


FOLLOWER_HYDRA = ("hydra.run.dir=.", "hydra.output_subdir=null", "hydra/job_logging=disabled")
"""What Hydra is told in ranks ≠ 0: no run directory of their own, no ``.hydra/``, no log file
(their errors still reach stderr)."""


def processes() -> int:
    """N, from ``torchrun``'s or ``srun``'s variables (1 when started otherwise)."""
    return from_environment(os.environ).world_size


def connect(launch: Launch) -> None:
    """Join the process group of ``launch``'s N processes (``torchrun``'s own rendezvous, else
    rank 0 listening at ``launch.address``:``launch.port``), on GPU ``local_rank`` (modulo the
    GPUs this process sees: ``srun --gpus-per-task=1`` shows each task one), and wait for all."""
    backend = "gloo"
    if torch.cuda.is_available() and dist.is_nccl_available():
        torch.cuda.set_device(launch.local_rank % torch.cuda.device_count())
        backend = "cpu:gloo,cuda:nccl"
    rendezvous = "env://" if launch.launcher == "torchrun" else None
    dist.init_process_group(
        backend,
        init_method=rendezvous or f"tcp://{launch.address}:{launch.port}",
        rank=launch.rank,
        world_size=launch.world_size,
        timeout=TIMEOUT,
    )
    dist.barrier()


def join(arguments: list[str]) -> list[str]:
    """With N > 1 processes (``torchrun``, ``srun``): join the process group, wait until every
    process has passed its checks (nothing has been written yet), and return the arguments Hydra
    gets in this process (rank 0's unchanged, the others' with :data:`FOLLOWER_HYDRA`). One
    process: ``arguments``.

    Raises:
        ConfigError: ``--multirun`` under ``torchrun`` or ``srun``; a launcher's variable that
            does not make sense (:func:`hpo_cli.runner.cli.launch.from_environment`).
    """
    launch = from_environment(os.environ)
    if launch.world_size <= 1:
        return arguments
    if any(flag in MULTIRUN_FLAGS for flag in arguments):
        raise ConfigError(
            f"--multirun under {launch.launcher} ({launch.world_size} processes) is not "
            f"supported: start one {launch.launcher} per run, or sweep through submitit with "
            "hydra/launcher=slurm hydra.launcher.tasks_per_node=N (docs/distributed.md)"
        )
    connect(launch)
    atexit.register(leave)
    if dist.get_rank() == 0:
        return arguments
    own = tuple(option.split("=")[0] + "=" for option in FOLLOWER_HYDRA)
    return [*(a for a in arguments if not a.startswith(own)), *FOLLOWER_HYDRA]


@contextlib.contextmanager
def job_group() -> Iterator[None]:
    """Within a sweep's job that submitit started with N > 1 tasks (``tasks_per_node``): one
    process group of the N tasks while the job runs (:func:`connect`, then :func:`leave`), so
    that the job is one data-parallel run. Rank 0's task claims and writes the job's directory;
    Hydra has given the others the same directory and console logging only, which they leave
    alone (:func:`follow`). Elsewhere: nothing."""
    launch = from_submitit()
    if launch.world_size <= 1:
        yield
        return
    connect(launch)
    try:
        yield
    finally:
        leave()


def follow(cfg: DictConfig, multirun: bool = False) -> float:
    """Rank r ≠ 0: validate ``cfg``, build its experiment and run the loop without files
    (:func:`hpo_cli.runner.loop.train.run` with ``files=None``), SIGTERM handled as rank 0
    handles it. How the run ended is rank 0's to say: a refusal, a failure or an interruption,
    which rank 0 meets as well, ends this process with the same exit code and no line of its
    own; in a sweep's job (``multirun``) the task returns instead, as rank 0's does (a task
    that exits would fail the job for submitit). Returns NaN (Hydra ignores it)."""
    code = 0
    try:
        validate(cfg)
        with stop_on_sigterm() as stop:
            stop.training = True
            loop.run(build_experiment(cfg), None, None, stop)
    except (ConfigError, InstantiationException):
        code = 2
    except RunFailed:
        code = 1
    except RunInterrupted as error:
        code = 128 + signal.SIGTERM if str(error) == SIGTERM else 130
    except KeyboardInterrupt:
        code = 130
    if code and not multirun:
        sys.exit(code)
    return math.nan


def rank_zero() -> bool:
    """Whether this process writes the run (rank 0, or the only process)."""
    return distributed.rank() == 0
