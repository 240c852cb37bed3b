"""Whether a run directory's saved configuration may be built: the trust check of ``resume=``
(hpo-run) and ``run_dir=`` (hpo-hessian), run before anything is composed, built or written.

Building a configuration instantiates every ``_target_`` it names, and a run directory is files
anyone can edit or hand over: a saved ``dataset._target_: builtins.open`` with ``mode: w`` would
truncate a file of whoever resumes the run. So a saved run may name only the ``_target_``\\ s
that an hpo-cli command could name by itself (:func:`allowed_targets`):

* anything inside ``hpo_cli``;
* the ``_target_``\\ s of hpo-cli's own configuration (its YAML files and hand-written schemas:
  torch's optimisers);
* the ``_target_``\\ s written in the YAML files of the user's own config directories that the
  run recorded (``hydra.searchpath`` in ``.hydra/hydra.yaml``), a directory inside the run
  directory itself excepted.

Its saved overrides (``.hydra/overrides.yaml``, the command line a resume composes again) may
not set ``hydra`` keys or groups at all: Hydra never saves them there, and they could add a
callback, a launcher or a sweeper (code) or send the output elsewhere.

Anything else is refused in one line naming the file, the key and the target, unless the command
says the directory is trusted: :data:`TRUST_FLAG` ``=true`` on the command line, handled outside
the configuration (:func:`trust_argument`), so that it is never saved with the run.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from hpo_cli.runner.config.schemas import CONF_DIR, GROUP_SCHEMAS
from hpo_cli.runner.errors import ConfigError
from hpo_cli.runner.rundir.directory import RunDirectory

TRUST_FLAG = "trust_run_dir"
"""``hpo-run resume=DIR trust_run_dir=true``, ``hpo-hessian run_dir=DIR trust_run_dir=true``:
build whatever the directory's saved configuration names."""

_TARGET = re.compile(r"""_target_['"]?\s*:\s*['"]?([A-Za-z_][\w.]*)""")


def trust_argument(arguments: list[str]) -> tuple[bool, list[str]]:
    """Whether ``arguments`` say :data:`TRUST_FLAG` ``=true``, and the arguments without it
    (Hydra never sees it, and a run never saves it).

    Raises:
        ConfigError: it has a value other than true or false.
    """
    trusted, rest = False, []
    for argument in arguments:
        key, _, value = argument.partition("=")
        if key.lstrip("+~") != TRUST_FLAG:
            rest.append(argument)
            continue
        value = value.strip("'\"").lower()
        if value not in ("true", "false"):
            raise ConfigError(f"{TRUST_FLAG}={value} is invalid: use {TRUST_FLAG}=true or false")
        trusted = value == "true"
    return trusted, rest


def _yaml_targets(directory: Path, skip: Path | None = None) -> set[str]:
    """The ``_target_``\\ s written in the YAML files under ``directory``, ``skip``'s excepted."""
    targets: set[str] = set()
    for path in sorted(directory.rglob("*.yaml")):
        if skip is not None and path.resolve().is_relative_to(skip):
            continue
        try:
            targets.update(_TARGET.findall(path.read_text(encoding="utf-8")))
        except (OSError, UnicodeDecodeError):
            continue
    return targets


@functools.cache
def own_targets() -> frozenset[str]:
    """The ``_target_``\\ s of hpo-cli's own configuration: its YAML files and schemas."""
    targets = _yaml_targets(CONF_DIR)
    for schemas in GROUP_SCHEMAS.values():
        for schema in schemas.values():
            target = getattr(schema, "_target_", None)
            if isinstance(target, str):
                targets.add(target)
    return frozenset(targets)


def config_dirs(run_dir: Path) -> list[Path]:
    """The user's config directories that ``run_dir`` recorded (``file://`` entries of its
    ``hydra.searchpath``), less any inside ``run_dir`` (and :func:`allowed_targets` skips
    ``run_dir`` in those that hold it): a directory cannot vouch for itself."""
    files = RunDirectory(run_dir)
    if not files.hydra_config.exists():
        return []
    overrides = files.hydra_overrides()  # as written: hydra.run.dir=out/${seed} unresolved
    dirs = []
    for override in overrides:
        key, _, value = str(override).partition("=")
        if key.lstrip("+~") != "hydra.searchpath":
            continue
        for entry in value.strip("[]").split(","):
            entry = entry.strip().strip("'\"")
            if entry.startswith("file://"):
                path = Path(entry[7:]).expanduser().resolve()
                if not path.is_relative_to(run_dir):
                    dirs.append(path)
    return dirs


def allowed_targets(run_dir: Path) -> frozenset[str]:
    """Every ``_target_`` that ``run_dir``'s saved configuration may name beyond ``hpo_cli.*``."""
    targets = set(own_targets())
    for directory in config_dirs(run_dir):
        if directory.is_dir():
            targets |= _yaml_targets(directory, skip=run_dir)
    return frozenset(targets)


def _targets(node: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(key, value) of every ``_target_`` in a plain container, nested dicts and lists included."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "_target_":
                yield f"{prefix}{key}", value
            else:
                yield from _targets(value, f"{prefix}{key}.")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _targets(value, f"{prefix}{index}.")


def _override_targets(override: str) -> Iterator[tuple[str, Any]]:
    """(key, value) of every ``_target_`` an override sets: its key's, or inside its value."""
    key, _, value = override.partition("=")
    key = key.lstrip("+~")
    if key == "_target_" or key.endswith("._target_"):
        yield key, value.strip().strip("'\"")
    elif "_target_" in value:
        for found in _TARGET.findall(value):
            yield f"{key}._target_", found
        if not _TARGET.search(value):  # spelt some way the pattern misses: refuse it whole
            yield key, value


def check_trusted(run_dir: Path, flag: str, trusted: bool = False) -> None:
    """Refuse ``run_dir`` (named by ``flag``: ``resume`` or ``run_dir``) if its saved
    configuration or overrides name a ``_target_`` outside :func:`allowed_targets` or its saved
    overrides set a ``hydra`` key or group, unless ``trusted``. Reads ``.hydra/`` only.

    Raises:
        ConfigError: one line naming the file, the key and the target, and how to trust it.
    """
    if trusted:
        return
    files = RunDirectory(run_dir)
    allowed: frozenset[str] | None = None
    found: list[tuple[Path, str, Any]] = []
    if files.saved_config.exists():
        saved = OmegaConf.to_container(files.read_saved_config(), resolve=False)
        found += [(files.saved_config, k, v) for k, v in _targets(saved)]
    if files.saved_overrides.exists():
        for override in files.overrides():
            key = override.partition("=")[0].lstrip("+~")
            if key == "hydra" or key.startswith(("hydra.", "hydra/")):
                _refuse(
                    run_dir,
                    flag,
                    files.saved_overrides,
                    override,
                    "a Hydra setting, which hpo-run never saves there (it could add code or "
                    "send the output elsewhere)",
                )
            found += [(files.saved_overrides, k, v) for k, v in _override_targets(override)]
    for path, key, target in found:
        if isinstance(target, str) and target.startswith("hpo_cli."):
            continue
        allowed = allowed_targets(run_dir) if allowed is None else allowed
        if not isinstance(target, str) or target not in allowed:
            _refuse(
                run_dir,
                flag,
                path,
                f"{key}={target}",
                "a target that neither hpo-cli nor the run's own config directories define "
                "(building it could run any code)",
            )


def _refuse(run_dir: Path, flag: str, path: Path, setting: str, why: str) -> None:
    raise ConfigError(
        f"{flag}={run_dir} is not trusted: {path.parent.name}/{path.name} sets {setting}, {why}; "
        f"if you trust this directory, add {TRUST_FLAG}=true"
    )
