"""Hydra's composition errors as one line that says how to fix them: a missing option with the
group's valid choices (and the closest one, or how to add a config directory of one's own), a
misspelt key with the closest key and the valid keys of its node."""

from __future__ import annotations

import difflib
import re

from hydra.errors import MissingConfigException
from omegaconf import DictConfig

from hpo_cli.runner.config.targets import did_you_mean


def hydra_error_line(error: Exception) -> str:
    """One line for one of Hydra's composition errors, saying how to fix it: a missing option
    keeps the group's valid choices (without the internal ``base_*`` schemas) with the closest
    one, or, when none is close, how to add a config directory of one's own; a misspelt key the
    closest key and the valid keys of its node."""
    text = str(error)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if isinstance(error, MissingConfigException) and "Available options" in text:
        start = next(i for i, line in enumerate(lines) if line.startswith("Available options"))
        end = next((i for i, line in enumerate(lines) if line.startswith("Config search")), None)
        options = [o for o in lines[start + 1 : end] if not o.startswith("base_")]
        first = lines[0].removeprefix("In 'config': ")
        line = f"{first}; {lines[start].rstrip(':').lower()}: {', '.join(options)}"
        return line + _missing_option_hint(first, options, lines[end or len(lines) :])
    cause = error.__cause__
    if cause is not None and str(cause).strip():
        line = f"{lines[0].rstrip('.')}: {str(cause).strip().splitlines()[0]}"
        return line + _misspelt_key_hint(lines[0], cause)
    return "; ".join(line.rstrip(".") for line in lines[:4])


def _missing_option_hint(first: str, options: list[str], search_path: list[str]) -> str:
    """``; did you mean neumann?`` for a misspelt option; for one that no option resembles
    (``model=wide``: the user's own?), the flag that adds a config directory, or, where one was
    given, where its file must be."""
    found = re.search(r"Could not find '([^'/]+)/([^']+)'", first)
    if found is None:
        return ""
    group, name = found.groups()
    guess = did_you_mean(name, options)
    if guess:
        return f"; {guess}"
    dirs = [p.split("path=file://", 1)[1].rstrip(")") for p in search_path if "path=file://" in p]
    if dirs:
        where = " or ".join(dirs)
        return f"; if {group}={name} is your own, it must be {group}/{name}.yaml in {where}"
    return (
        f"; if {group}={name} is your own, name its config directory: "
        f"hpo-run --config-dir DIR {group}={name} (DIR holding {group}/{name}.yaml)"
    )


def _misspelt_key_hint(first: str, cause: BaseException) -> str:
    """``; did you mean solver.tol? valid keys of solver: ...`` for a key that the node of an
    override does not have (a top-level key: the closest one only, with the rest of the
    override's key: ``did you mean optimizer.lr?``)."""
    key, full_key, parent = (getattr(cause, a, None) for a in ("key", "full_key", "parent_node"))
    if not isinstance(key, str) or not isinstance(full_key, str):
        return ""
    if not isinstance(parent, DictConfig) or key in parent:  # a bad value, not a bad key
        return ""
    path = full_key.rsplit(".", 1)[0] if "." in full_key else ""
    valid = [str(k) for k in parent if not str(k).startswith("_")]
    close = difflib.get_close_matches(key, valid, n=1)
    overridden = re.search(r"Could not override '([^']+)'", first)
    rest = overridden.group(1) if overridden else full_key
    rest = rest[len(full_key) :] if rest.startswith(full_key) else ""
    line = f"; did you mean {path + '.' if path else ''}{close[0]}{rest}?" if close else ";"
    if path:
        line += f" valid keys of {path}: {', '.join(sorted(valid))}"
    return line if line != ";" else ""
