"""Reading a run's YAML and JSON files, each failure one line: :class:`RunDirectoryDamaged` names
the file and what is wrong with it. :class:`.directory.RunDirectory` reads every run file with
these; the sweep aggregation and the preflight catch its error."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from hpo_cli.runner.errors import ConfigError


class RunDirectoryDamaged(ConfigError):
    """A run file that is missing, unreadable or not what hpo-run wrote; the message names the
    file and what is wrong with it, in one line."""

    def __init__(self, path: Path, what: str) -> None:
        super().__init__(f"{path} {what}")
        self.path = path


def one_line(error: BaseException) -> str:
    """An exception's message on one line (YAML's and JSON's span several)."""
    return " ".join(str(error).split())


def yaml_problem(error: yaml.MarkedYAMLError) -> str:
    """``not valid YAML at line 2, column 1: <what the parser found>``, one line."""
    mark, problem = error.problem_mark, error.problem or error.context
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
    return f"not valid YAML{where}: {problem}"


def read_yaml(path: Path) -> DictConfig | ListConfig:
    """``path`` read by OmegaConf.

    Raises:
        RunDirectoryDamaged: the file is missing, unreadable or not valid YAML.
    """
    if not path.is_file():
        raise RunDirectoryDamaged(path, "is missing; the run directory is incomplete")
    try:
        return OmegaConf.load(path)
    except yaml.MarkedYAMLError as error:
        raise RunDirectoryDamaged(path, f"is damaged ({yaml_problem(error)})") from error
    except (OSError, UnicodeDecodeError, yaml.YAMLError, OmegaConfBaseException) as error:
        what = f"is damaged (not valid YAML: {one_line(error)})"
        raise RunDirectoryDamaged(path, what) from error


def read_json(path: Path) -> Any:
    """``path``'s JSON content.

    Raises:
        RunDirectoryDamaged: the file is unreadable or not valid JSON.
    """
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as error:
        what = f"is damaged (not valid JSON: {one_line(error)})"
        raise RunDirectoryDamaged(path, what) from error
