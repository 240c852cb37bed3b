"""Who started this process, read from the variables its launcher set: :func:`from_environment`,
a pure function of an environment, gives the rank, the number of processes, the local rank and
the rendezvous address of one run's N processes (:class:`Launch`).

- ``torchrun`` (or ``python -m torch.distributed.run``) sets ``WORLD_SIZE``, ``RANK``,
  ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``.
- ``srun`` sets, in each task of a job step, ``SLURM_STEP_NUM_TASKS`` (N), ``SLURM_PROCID``,
  ``SLURM_LOCALID`` and ``SLURM_STEP_NODELIST``; the rendezvous is on the first host of that list
  (``MASTER_ADDR`` when set), at ``MASTER_PORT`` when set, else at :func:`default_port` of the
  job and step ids. A batch script or an ``salloc`` shell has the allocation's ``SLURM_NTASKS``
  but no step variables: ``hpo-run`` started there is one process, not one of N.
- Anything else: one process.

torchrun's variables come first: ``srun torchrun ...`` (one torchrun per node) is a torchrun run.
:func:`from_submitit` reads the tasks of a job that submitit started (Hydra's
``hydra/launcher=slurm`` or ``submitit_local`` with ``tasks_per_node`` > 1).
"""

from __future__ import annotations

import itertools
import os
import re
import zlib
from collections.abc import Mapping
from dataclasses import dataclass

from hpo_cli.runner.errors import ConfigError

PORTS = (20000, 40000)
"""The rendezvous port's range when no ``MASTER_PORT`` is given: :func:`default_port`."""


@dataclass(frozen=True)
class Launch:
    """Process ``rank`` of ``world_size`` (``local_rank`` on its machine), meeting the others at
    ``address``:``port``, started by ``launcher`` (``torchrun``, ``srun``, ``submitit``; ``None``:
    one process, nothing to meet)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    address: str = "127.0.0.1"
    port: int = 0
    launcher: str | None = None


def default_port(job: str) -> int:
    """A port in :data:`PORTS` that every task of the job ``job`` (e.g. ``"4242.0"``, SLURM's job
    and step ids) computes alike and that other jobs' differ from (a CRC-32 of ``job``)."""
    low, high = PORTS
    return low + zlib.crc32(job.encode()) % (high - low)


def hostnames(nodelist: str) -> list[str]:
    """SLURM's compressed host list, expanded in order: ``node[01-03,07],gpu1`` → ``node01``,
    ``node02``, ``node03``, ``node07``, ``gpu1`` (zero padding kept); several bracket groups in
    one name multiply (``r[1-2]n[1-2]`` → ``r1n1``, ``r1n2``, ``r2n1``, ``r2n2``).

    Raises:
        ConfigError: not a host list (an unclosed bracket, a range that is not two numbers).
    """
    names = [n for n in re.split(r",(?![^\[]*\])", nodelist.strip()) if n]
    if not names:
        raise ConfigError(f"the SLURM host list {nodelist!r} names no host")
    hosts: list[str] = []
    for name in names:
        parts = re.split(r"\[([^\[\]]*)\]", name)
        if any(c in part for part in parts[::2] for c in "[]"):
            raise ConfigError(f"{nodelist!r} is not a SLURM host list (unbalanced brackets)")
        choices = [[p] if i % 2 == 0 else _ranges(p, nodelist) for i, p in enumerate(parts)]
        hosts.extend("".join(pieces) for pieces in itertools.product(*choices))
    return hosts


def _ranges(spec: str, nodelist: str) -> list[str]:
    """``01-03,07`` → ``01``, ``02``, ``03``, ``07``."""
    numbers: list[str] = []
    for item in spec.split(","):
        match = re.fullmatch(r"(\d+)(?:-(\d+))?", item)
        if match is None or (match[2] is not None and int(match[2]) < int(match[1])):
            raise ConfigError(f"{nodelist!r} is not a SLURM host list ({item!r} is not a range)")
        first, last = match[1], match[2] or match[1]
        numbers.extend(str(n).zfill(len(first)) for n in range(int(first), int(last) + 1))
    return numbers


def _integer(environ: Mapping[str, str], name: str, default: str | None = None) -> int:
    """``environ[name]`` as an integer (``default`` when absent), or a one-line error."""
    value = environ.get(name, default)
    try:
        return int(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ConfigError(f"{name}={value} is not an integer (set by the launcher)") from None


def _checked(launch: Launch) -> Launch:
    if not 0 <= launch.rank < launch.world_size:
        raise ConfigError(
            f"rank {launch.rank} of {launch.world_size} processes (from {launch.launcher}'s "
            "variables) is out of range"
        )
    return launch


def from_environment(environ: Mapping[str, str]) -> Launch:
    """The launch that ``environ`` describes: ``torchrun``'s variables first, then a SLURM job
    step of more than one task (``srun``), else one process (see the module's docstring).

    Raises:
        ConfigError: a launcher's variable that is not an integer, a rank out of range, or a
            node list that is not a SLURM host list.
    """
    if "WORLD_SIZE" in environ:
        return _checked(
            Launch(
                rank=_integer(environ, "RANK", "0"),
                world_size=_integer(environ, "WORLD_SIZE"),
                local_rank=_integer(environ, "LOCAL_RANK", "0"),
                address=environ.get("MASTER_ADDR", "127.0.0.1"),
                port=_integer(environ, "MASTER_PORT", "0"),
                launcher="torchrun",
            )
        )
    if _integer(environ, "SLURM_STEP_NUM_TASKS", "1") <= 1:
        return Launch()
    nodes = environ.get("SLURM_STEP_NODELIST") or environ.get("SLURM_JOB_NODELIST", "127.0.0.1")
    job = f"{environ.get('SLURM_JOB_ID', '')}.{environ.get('SLURM_STEP_ID', '')}"
    return _checked(
        Launch(
            rank=_integer(environ, "SLURM_PROCID"),
            world_size=_integer(environ, "SLURM_STEP_NUM_TASKS"),
            local_rank=_integer(environ, "SLURM_LOCALID", "0"),
            address=environ.get("MASTER_ADDR") or hostnames(nodes)[0],
            port=_integer(environ, "MASTER_PORT", str(default_port(job))),
            launcher="srun",
        )
    )


def from_submitit() -> Launch:
    """The task of a job that submitit started (``SUBMITIT_EXECUTOR`` is set), from submitit's
    ``JobEnvironment``: its global rank among the job's tasks, their number, its local rank, the
    job's first host (127.0.0.1 for ``submitit_local``, whose tasks share this machine) and
    :func:`default_port` of the job id; one process elsewhere."""
    if not os.environ.get("SUBMITIT_EXECUTOR"):
        return Launch()
    import submitit

    job = submitit.JobEnvironment()
    return _checked(
        Launch(
            rank=job.global_rank,
            world_size=job.num_tasks,
            local_rank=job.local_rank,
            address="127.0.0.1" if job.cluster == "local" else job.hostnames[0],
            port=default_port(str(job.job_id)),
            launcher="submitit",
        )
    )
