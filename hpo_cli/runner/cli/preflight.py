"""``hpo-run``'s checks before Hydra starts: a command that is refused writes nothing.

Hydra reports its own errors (a misspelt key, a wrong type, an unknown option) with exit status
1, the status of a failed run, and a multirun writes ``multirun.yaml`` into its sweep directory
before any job starts (a job's ``.hydra/`` and log are hpo-cli's, written once the job has claimed
its directory: :meth:`hpo_cli.runner.rundir.directory.RunDirectory.claimed`). So :func:`prepare`
composes the configuration first, as Hydra will, and refuses in one line (exit 2) what cannot
run:

* a key that hpo-cli renamed (:mod:`hpo_cli.runner.cli.renames`: ``logger=mlflow``), on the
  command line or in a config file, with the new key on the same line;
* Hydra's composition errors, with the valid choices of a group on the same line, and a config
  file of the user's own that is not YAML, named with the line of the fault;
* an internal schema used as an option (``solver=base_cg``) and unknown top-level keys
  (``+foo=1``);
* a value out of range (:func:`hpo_cli.runner.config.validation.validate`, the solver's
  constructor included); in a multirun each job is validated as it starts instead, so that a
  refused job is recorded and the others run;
* a run or sweep directory that cannot be one: a file where it or a folder above it should be,
  or a folder that cannot be created (:meth:`RunDirectory.check_creatable`, on the part of
  ``hydra.run.dir`` before its first interpolation);
* a fresh run aimed at a directory that already holds a run, or that another process writes
  (checked again, atomically, when the run claims it), and a sweep aimed at a sweep directory
  that holds another sweep (:func:`check_sweep_dir`);
* a resume of a run directory whose saved configuration names a ``_target_`` that neither
  hpo-cli nor the run's own config directories define, or whose saved overrides set a ``hydra``
  key, unless ``trust_run_dir=true`` (:func:`hpo_cli.runner.config.trust.check_trusted`);
* a resume of a run directory written before the renames (:func:`refuse_renamed_run`): its
  saved configuration, metrics.csv and checkpoint use the old names, and it is not continued
  under new ones;
* a resume that would change the run (:func:`check_resume`): only the keys of
  :data:`RESUME_MAY_CHANGE` may differ from the run's saved ``.hydra/config.yaml``, within
  :func:`resume_restriction` (``outer_steps`` and ``early_stopping.patience`` may only grow,
  ``eval_every`` may change only with early stopping off). The checkpoint must be readable
  and ``metrics.csv`` whole up to it. The runner saves the new configuration in ``.hydra/``
  once it has passed validation and claimed the directory.

In a multirun, every value of every discrete sweep is composed once (the others at their first
value); continuous sweeps (``interval(...)``) are left to the sweeper.
"""

from __future__ import annotations

import dataclasses
import itertools
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml
from hydra import compose, initialize_config_module
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from hpo_cli.runner.cli.hydra_errors import hydra_error_line
from hpo_cli.runner.cli.renames import leaves, refuse_renamed_run, renamed_key_line
from hpo_cli.runner.config.schemas import GROUPS, RunConfig
from hpo_cli.runner.config.trust import check_trusted, trust_argument
from hpo_cli.runner.config.validation import validate
from hpo_cli.runner.errors import ConfigError
from hpo_cli.runner.rundir.directory import RunDirectory
from hpo_cli.runner.rundir.reading import RunDirectoryDamaged, read_yaml, yaml_problem

MULTIRUN_FLAGS = ("-m", "--multirun")
RESUME_MAY_CHANGE = (
    "outer_steps",
    "progress",
    "plots",
    "eval_every",
    "checkpoint_every",
    "max_skipped_fraction",
    "resume",
    "log_every",
    "tracking",
    "early_stopping.patience",
    "quality_every",  # the probe leaves the trajectory as it was
    "quality_horizon",
    "data.num_workers",  # a streamed set's batches do not depend on how many workers read them
    "compile",  # the same maths, compiled: results move by rounding only (docs/performance.md)
)
"""Keys (and the keys under them) a resume may change: the run continues with the weights, λ,
stop step and metrics values of the uninterrupted run (``compile``: to rounding;
tests/runner/test_resume_keys.py checks every key), within :func:`resume_restriction`:
``outer_steps`` may only grow, ``eval_every`` may change only with early stopping off (it counts
evaluations), and ``early_stopping.patience`` may only grow, on purpose: a larger patience trains
on a stopped run (as the uninterrupted run with that patience would have)."""


ADDED_KEYS = {"solver.products": "autograd", "precision": None}
"""Keys added after runs were saved, each with the value a run that predates it ran with: the
resume of such a run may hold that value (and no other)."""


def resume_may_change(key: str, saved: Any, new: Any = None) -> bool:
    """Whether a resume may change ``key`` from its ``saved`` value to ``new``: a key of
    :data:`RESUME_MAY_CHANGE` or under one, an ``early_stopping`` key that the run's saved
    config predates (its checkpoints hold no early-stopping state to contradict), or a key of
    :data:`ADDED_KEYS` that it predates, at the value the run ran with."""
    listed = any(key == k or key.startswith(f"{k}.") for k in RESUME_MAY_CHANGE)
    if saved == "<missing>" and key in ADDED_KEYS:
        return new == ADDED_KEYS[key]
    return listed or (saved == "<missing>" and key.startswith("early_stopping."))


def resume_restriction(saved: DictConfig, new: DictConfig) -> str | None:
    """Why a resume with the configuration ``new`` may not change a key of
    :data:`RESUME_MAY_CHANGE` from the run's ``saved`` one as it does (``None``: it may):

    * ``outer_steps`` below the saved value (a resume only extends a run);
    * ``early_stopping.patience`` below the saved value, or a number where it was null (the run
      would stop before the uninterrupted one; a run whose saved config predates early
      stopping may set it);
    * ``eval_every`` with early stopping on before or after: its patience counts evaluations,
      so the run would stop at another step.
    """
    if new.outer_steps < saved.outer_steps:
        return (
            f"outer_steps={new.outer_steps} is below the run's {saved.outer_steps}; "
            "a resume may only extend a run"
        )
    old_patience = OmegaConf.select(saved, "early_stopping.patience", default=None)
    patience = OmegaConf.select(new, "early_stopping.patience", default=None)
    shrinks = patience is not None and (old_patience is None or patience < old_patience)
    if "early_stopping" in saved and shrinks:
        was = "null" if old_patience is None else old_patience
        return (
            f"early_stopping.patience may only grow on resume ({was} -> {patience}): a "
            "smaller one would stop the run before the uninterrupted one; start a new run"
        )
    if new.eval_every != saved.eval_every and (patience is not None or old_patience is not None):
        return (
            f"cannot change eval_every ({saved.eval_every} -> {new.eval_every}) while early "
            "stopping is on: its patience counts evaluations, so the run would stop at another "
            "step; keep eval_every, or start a new run"
        )
    return None


# ---------------------------------------------------------------- composition
def compose_run(
    overrides: list[str], config_name: str = "config", schema: type = RunConfig
) -> DictConfig:
    """The configuration ``config_name`` (hpo-run's, or ``hessian``: hpo-hessian's) with
    ``overrides``, the ``hydra`` node included.

    Raises:
        ConfigError: Hydra cannot compose it, it picks an internal schema, or it adds a
            top-level key that ``schema`` does not have.
    """
    with initialize_config_module("hpo_cli.conf", version_base="1.3"):
        try:
            cfg = compose(config_name, overrides, return_hydra_config=True)
        except yaml.MarkedYAMLError as error:  # a config file of the user's own
            where = error.problem_mark.name if error.problem_mark else "a config file"
            raise ConfigError(f"{where} is {yaml_problem(error)}") from error
        except (HydraException, OmegaConfBaseException, ValueError) as error:
            line = renamed_key_line(overrides, error) or hydra_error_line(error)
            raise ConfigError(line) from error
    choices = cfg.hydra.runtime.choices
    for group in GROUPS:
        choice = choices.get(group)
        if isinstance(choice, str) and choice.startswith("base_"):
            raise ConfigError(f"{group}={choice} is an internal schema, not an option of {group}")
    known = {f.name for f in dataclasses.fields(schema)}
    unknown = [key for key in cfg if key != "hydra" and key not in known]
    if unknown:
        renamed = renamed_key_line([o for o in overrides if o.lstrip("+~").startswith(unknown[0])])
        if renamed:
            raise ConfigError(renamed)
        raise ConfigError(f"+{unknown[0]}: {unknown[0]} is not a top-level configuration key")
    return cfg


def compose_jobs(
    arguments: list[str], config_name: str = "config", schema: type = RunConfig
) -> list[DictConfig]:
    """:func:`compose_run` for the command line ``arguments`` (``-m``: each job of a sweep,
    see :func:`job_overrides`)."""
    multirun = any(a in MULTIRUN_FLAGS for a in arguments)
    overrides = [a for a in arguments if a not in MULTIRUN_FLAGS]
    try:
        jobs = list(job_overrides(overrides, multirun))
    except HydraException as error:  # a sweep Hydra's grammar cannot parse
        raise ConfigError(hydra_error_line(error)) from error
    return [compose_run(o, config_name, schema) for o in jobs]


def job_overrides(overrides: list[str], multirun: bool) -> Iterator[list[str]]:
    """The override lists to compose: ``overrides`` itself, or in a multirun one list per value
    of each discrete sweep (the other sweeps at their first value)."""
    if not multirun:
        yield overrides
        return
    parsed = OverridesParser.create().parse_overrides(overrides)
    values = [
        list(o.sweep_string_iterator()) if o.is_sweep_override() and o.is_discrete_sweep() else []
        for o in parsed
    ]

    def job(index: int, value: str) -> list[str]:
        chosen = []
        for position, (override, choices) in enumerate(zip(parsed, values, strict=True)):
            if not override.is_sweep_override():
                chosen.append(override.input_line)
            elif choices:
                pick = value if position == index else choices[0]
                chosen.append(f"{override.get_key_element()}={pick}")
        return chosen

    yield job(-1, "")
    for index, choices in enumerate(values):
        for value in choices[1:]:
            yield job(index, value)


# ---------------------------------------------------------------- run directories
def argument(arguments: list[str], key: str) -> str | None:
    """The last value given to ``key`` on the command line, unquoted."""
    found = [a.split("=", 1)[1] for a in arguments if a.split("=", 1)[0].lstrip("+~") == key]
    return found[-1].strip("'\"") if found else None


SWEEP_RECORD = "multirun.yaml"
"""Hydra's record of a sweep, written into the sweep directory before any job starts."""


def check_sweep_dir(job: DictConfig, overrides: list[str]) -> None:
    """Refuse a sweep aimed at a sweep directory that holds another sweep (its record names
    other overrides): Hydra would rewrite the record, and the jobs that found their folders
    taken would be refused one by one. The same sweep again is allowed: its jobs continue
    their interrupted runs (a requeue) and refuse to overwrite finished ones. ``job`` is the
    sweep's first job composed, ``overrides`` the command line's (``-m`` left out).

    Raises:
        ConfigError: naming the directory and the sweep it holds.
    """
    try:
        sweep_dir = Path(str(OmegaConf.select(job, "hydra.sweep.dir"))).expanduser()
    except OmegaConfBaseException:  # an interpolation only a job can resolve: left to the jobs
        return
    record = sweep_dir / SWEEP_RECORD
    if not record.exists():
        return
    task = [o for o in overrides if not o.lstrip("+~").startswith("hydra")]
    saved = OmegaConf.select(read_yaml(record), "hydra.overrides.task", default=None)
    if not isinstance(saved, ListConfig):
        raise RunDirectoryDamaged(record, "is damaged (it lacks hydra.overrides.task)")
    saved = [str(o) for o in saved]
    if sorted(saved) != sorted(task):
        raise ConfigError(
            f"hydra.sweep.dir={sweep_dir} already holds another sweep ({' '.join(saved)}); "
            "give the new sweep a directory of its own"
        )


def literal_prefix(run_dir: str) -> Path:
    """The folders of ``hydra.run.dir`` (or ``hydra.sweep.dir``) before its first interpolation
    (``outputs/runs/${now:...}`` → ``outputs/runs``), absolute: what can be checked before
    Hydra resolves it."""
    parts = Path(run_dir).parts
    literal = list(itertools.takewhile(lambda part: "${" not in part, parts))
    return Path(*literal).expanduser().resolve() if literal else Path.cwd()


def check_fresh(run_dir: Path) -> None:
    """Refuse a new run into a directory that another process writes or that holds a run."""
    files = RunDirectory(run_dir)
    files.check_unlocked()
    files.refuse_existing_run(claimed=True)


def config_dir_arguments(arguments: list[str]) -> list[str]:
    """``--config-dir DIR`` (``-cd DIR``) and ``hydra.searchpath=[...]`` as one
    ``hydra.searchpath`` override of absolute ``file://`` paths, so that the run records it
    (``.hydra/hydra.yaml``) and ``resume=`` finds the user's config directory from anywhere."""
    paths, rest, given = [], [], iter(arguments)
    for argument in given:
        flag, _, value = argument.partition("=")
        if flag in ("--config-dir", "-cd"):
            paths.append(f"file://{Path(value or next(given, '')).expanduser().resolve()}")
        elif flag == "hydra.searchpath":
            for entry in value.strip("[]").split(","):
                entry = entry.strip().strip("'\"")
                if entry.startswith("file://"):
                    entry = f"file://{Path(entry[7:]).expanduser().resolve()}"
                paths.append(entry)
        else:
            rest.append(argument)
    return [*rest, f"hydra.searchpath=[{','.join(paths)}]"] if paths else rest


def saved_searchpath(run_dir: Path) -> list[str]:
    """The ``hydra.searchpath`` override a run was started with (none: an empty list)."""
    overrides = RunDirectory(run_dir).hydra_overrides()
    return [o for o in overrides if o.split("=", 1)[0] == "hydra.searchpath"]


def resume_overrides(run_dir: Path, overrides: list[str]) -> list[str]:
    """The original run's own overrides, updated by the new ones, with Hydra writing into
    ``run_dir`` again."""
    files = RunDirectory(run_dir)
    saved = files.saved_overrides
    if not saved.exists() or not files.saved_config.exists():
        raise ConfigError(f"resume={run_dir} is not an hpo-run run directory (no {saved})")

    def key(override: str) -> str:
        return override.split("=", 1)[0].lstrip("+~")

    merged = {key(o): o for o in [*saved_searchpath(run_dir), *files.overrides()]}
    merged.update({key(a): a for a in overrides})
    merged["resume"] = f"resume={quoted(str(run_dir))}"
    merged["hydra.run.dir"] = f"hydra.run.dir={quoted(str(run_dir))}"
    return list(merged.values())


def quoted(value: str) -> str:
    """``value`` as one quoted string of Hydra's override grammar, whatever it holds (an
    apostrophe, spaces, ``=``, a backslash before a quote or at the end, ``${``)."""
    escaped = re.sub(r"(\\+)(?='|$)", lambda match: match.group(1) * 2, value)
    escaped = escaped.replace("'", "\\'").replace("${", "\\${")
    return f"'{escaped}'"


def changed_keys(saved: DictConfig, new: DictConfig) -> list[tuple[str, Any, Any]]:
    """(key, saved value, new value) for every leaf that differs, in the new config's order;
    a key missing on one side has the value ``<missing>``."""
    old = dict(leaves(OmegaConf.to_container(saved, resolve=False)))
    now = dict(leaves(OmegaConf.to_container(new, resolve=False)))
    keys = list(now) + [k for k in old if k not in now]
    return [
        (k, old.get(k, "<missing>"), now.get(k, "<missing>"))
        for k in keys
        if old.get(k, "<missing>") != now.get(k, "<missing>")
    ]


def check_resume_groups(run_dir: Path, overrides: list[str]) -> None:
    """Refuse new overrides that pick another option of a group (``model=linear``) than the
    saved run's, before composing them with the run's own overrides (which may not fit it)."""
    saved = RunDirectory(run_dir).read_hydra_config("hydra.runtime.choices")
    for group in [*GROUPS, "experiment"]:
        new, old = argument(overrides, group), saved.get(group)
        old = "null" if old is None else str(old)
        if new is not None and new != old:
            raise ConfigError(
                f"resume={run_dir} cannot change {group} ({old} -> {new}): the run "
                "would continue as another one; start a new run instead"
            )


def check_resume(run_dir: Path, cfg: DictConfig, overrides: list[str] = ()) -> None:
    """Refuse a resume of ``run_dir`` with ``cfg`` (the task configuration) that would change
    the run, or that could not continue it whole. Changes that none of the new ``overrides``
    asked for come from hpo-cli's own defaults, changed since the run started: the refusal
    then gives the overrides that continue the run as it was.

    Raises:
        ConfigError: a key outside :data:`RESUME_MAY_CHANGE` differs from the saved
            configuration, one inside it breaks :func:`resume_restriction`, another process
            writes the directory, the
            checkpoint cannot be read, or ``metrics.csv`` is damaged before it.
    """
    files = RunDirectory(run_dir)
    saved = files.read_saved_config()
    changes = [c for c in changed_keys(saved, cfg) if not resume_may_change(*c)]
    asked = {o.split("=", 1)[0].lstrip("+~") for o in overrides}
    if changes and not any(
        key == a or key.startswith(f"{a}.") for key, _, _ in changes for a in asked
    ):
        was = " ".join(f"{key}={old}" for key, old, _ in changes if old != "<missing>")
        raise ConfigError(
            f"resume={run_dir}: hpo-cli's defaults changed since the run started "
            f"({', '.join(f'{key}: {old} -> {new}' for key, old, new in changes)}); continue "
            f"it as it was with: hpo-run resume={run_dir} {was}"
        )
    if changes:
        key, old, new = changes[0]
        others = f" (and {len(changes) - 1} other keys)" if len(changes) > 1 else ""
        raise ConfigError(
            f"resume={run_dir} cannot change {key} ({old} -> {new}){others}: the run would "
            f"continue as another one; start a new run instead (a resume may change only "
            f"{', '.join(RESUME_MAY_CHANGE)})"
        )
    restriction = resume_restriction(saved, cfg)
    if restriction is not None:
        raise ConfigError(f"resume={run_dir}: {restriction}")
    files.check_unlocked()
    files.read_tracking()  # damaged: refused here, before Hydra writes anything
    state = files.load_checkpoint(warn=False)  # the run's own load says it, once
    if state is not None:
        from hpo_cli.runner.loop.state import RUN_STATE_KEYS, refuse_before_renames  # torch
        from hpo_cli.runner.rundir.checkpoint import require_keys

        require_keys(state, RUN_STATE_KEYS)
        try:
            refuse_before_renames(state)
        except ConfigError as error:
            raise ConfigError(f"resume={run_dir}: {error}") from error
        progress = state["progress"]
        files.metrics_log().checked_rows(
            progress.get("outer_step", 0), progress.get("metrics_rows")
        )


# ---------------------------------------------------------------- the whole check
def prepare(arguments: list[str]) -> tuple[list[str], DictConfig | None]:
    """Check an ``hpo-run`` command line before Hydra runs it; returns the arguments to hand
    to Hydra (a resume: the saved overrides updated by the new ones, ``.hydra/`` left alone)
    and, for one run (no sweep, no Hydra flag), the configuration composed for the checks, with
    its ``hydra`` node: the run needs no second composition. With Hydra flags other than ``-m``
    (``--cfg job``, ``--info``: nothing is run), a resume's overrides are merged but nothing is
    checked.

    Raises:
        ConfigError: the command is refused; nothing has been written.
    """
    trusted, arguments = trust_argument(arguments)
    flags = [a for a in arguments if a.startswith("-")]
    checked = all(flag in MULTIRUN_FLAGS for flag in flags)
    multirun = any(flag in MULTIRUN_FLAGS for flag in flags)
    overrides = [a for a in arguments if not a.startswith("-")]
    resume = argument(overrides, "resume")
    if resume in (None, "null", ""):
        if checked:
            configs = compose_jobs(arguments)
            node = configs[0].hydra.sweep if multirun else configs[0].hydra.run
            run_dir = OmegaConf.to_container(node, resolve=False)["dir"]
            RunDirectory(literal_prefix(run_dir)).check_creatable()
            if multirun:
                check_sweep_dir(configs[0], [a for a in arguments if a not in MULTIRUN_FLAGS])
            else:
                validate(configs[0])
                if "${" not in run_dir:
                    check_fresh(Path(run_dir).expanduser().resolve())
                return arguments, configs[0]
        return arguments, None
    if multirun:
        raise ConfigError("resume= continues one run; it cannot be combined with --multirun")
    run_dir = Path(resume).expanduser().resolve()
    check_trusted(run_dir, "resume", trusted)
    refuse_renamed_run(run_dir)
    merged = resume_overrides(run_dir, overrides)
    if not checked:  # flags may take values (--cfg job): keep the command line's order
        kept = [a for a in arguments if argument([a], "resume") is None]
        return [*kept, *[o for o in merged if o not in overrides]], None
    check_resume_groups(run_dir, overrides)
    cfg = compose_run(merged)
    check_resume(run_dir, OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"]), overrides)
    validate(cfg)
    return [*flags, *merged], None if multirun else cfg
