"""Configuration keys hpo-cli renamed: an old key on the command line or in a config file is
refused in one line naming the new one, and a run directory written before the renames is not
continued under the new names (its saved configuration, metrics.csv and checkpoint use the old
ones)."""

from __future__ import annotations

import csv
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from hpo_cli.runner.errors import ConfigError
from hpo_cli.runner.rundir.directory import RunDirectory

RENAMED_KEYS = {
    "logger": "tracking.trackers",
    "solver.checkpoint": "solver.gradient_checkpointing",
    "data.train_size": "data.split_train",
    "data.val_size": "data.split_val",
    "data.test_size": "data.split_test",
}
"""Configuration keys hpo-cli renamed, old → new. An old key on the command line or in a config
file is refused in one line naming the new one (:func:`renamed_key_line`), and a run directory
whose saved configuration holds one is not resumed (:func:`refuse_renamed_run`)."""

RENAMED_COLUMNS = {"inner_steps": "total_inner_steps"}
"""metrics.csv columns (and summary.json and checkpoint keys) renamed with :data:`RENAMED_KEYS`:
the cumulative count; ``inner_steps`` is the configuration's count per outer step."""


def renamed_key_line(overrides: list[str], error: Exception | None = None) -> str | None:
    """One line for the first renamed key (:data:`RENAMED_KEYS`) among ``overrides`` or, failing
    that, named by Hydra's ``error`` (a config file that sets it); ``None`` when there is none."""
    for override in overrides:
        key, _, value = override.partition("=")
        key = key.lstrip("+~")
        if key in RENAMED_KEYS:
            return _renamed(key, value)
    text = f"{error} {getattr(error, '__cause__', '')}" if error is not None else ""
    for key in re.findall(r"full_key: (\S+)|Could not override '([^']+)'", text):
        key = next(k for k in key if k)
        if key in RENAMED_KEYS:
            return _renamed(key, None)
    return None


def _renamed(key: str, value: str | None) -> str:
    new = RENAMED_KEYS[key]
    if new == "tracking.trackers":
        names = [n.strip(" '\"") for n in (value or "").strip("[]").split(",")]
        use = f"[{','.join(n for n in names if n and n != 'csv')}]"
        note = "; metrics.csv and summary.json are always written"
        return f"{key}= is now {new}=[...]" + (f": use {new}={use}{note}" if value else note)
    line = f"{key}= is now {new}=..." + (f": use {new}={value}" if value else "")
    if key.startswith("data."):
        line += f" (the {key[5:]} of a loader's own arguments stays dataset.{key[5:]})"
    return line


def refuse_renamed_run(run_dir: Path, flag: str = "resume") -> None:
    """Refuse a run directory written before the renames: its saved configuration or overrides
    hold a key of :data:`RENAMED_KEYS`, or its metrics.csv a column of :data:`RENAMED_COLUMNS`.
    Continuing it would mix old and new names in one run (its checkpoint, of format 1 or 2, is
    refused as well: :func:`hpo_cli.runner.loop.state.refuse_before_renames`).

    Raises:
        ConfigError: one line saying why and what to do.
    """
    files = RunDirectory(run_dir)
    found: list[str] = []
    if files.saved_config.exists():
        saved = OmegaConf.to_container(files.read_saved_config(), resolve=False)
        found += [k for k, _ in leaves(saved) if k in RENAMED_KEYS]
    if files.saved_overrides.exists():
        keys = [o.split("=", 1)[0].lstrip("+~") for o in files.overrides()]
        found += [k for k in keys if k in RENAMED_KEYS]
    found = list(dict.fromkeys(found))
    renames = [f"{k} is now {RENAMED_KEYS[k]}" for k in found]
    if files.has_metrics():
        with files.metrics.open(newline="") as handle:
            header = next(csv.reader(handle), [])
        renames += [
            f"metrics.csv's {c} is now {n}" for c, n in RENAMED_COLUMNS.items() if c in header
        ]
    if renames:
        raise ConfigError(
            f"{flag}={run_dir} was written before hpo-cli renamed its keys ({'; '.join(renames)}), "
            "so it cannot be continued without changing the run; start a new run with the new "
            "names (the old run's files stay readable), or finish it with the hpo-cli that wrote it"
        )


def leaves(node: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted key, value) for every leaf of a nested dict (a configuration as a container)."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield from leaves(value, f"{prefix}{key}.")
    else:
        yield prefix[:-1], node
