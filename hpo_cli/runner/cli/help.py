"""``--help`` for ``hpo-run`` and ``hpo-hessian``: the options each accepts and one line per key.

Hydra's own help lists every entry of the ConfigStore, the internal ``base_*`` schemas
included (``solver=base_cg`` is no option), and hpo-run's experiments in hpo-hessian's help
although most of them set groups hpo-hessian does not take. Here the options of a group are its
YAML files, an experiment is listed for hpo-hessian only when it fits (:func:`experiment_misfit`),
and each top-level key is described by the comment on its line in the schema's source (one
source of truth for the help and the code).
"""

from __future__ import annotations

import dataclasses
import inspect
import io
import tokenize
from importlib.resources import files
from typing import Any

from omegaconf import OmegaConf

CONF = files("hpo_cli.conf")


def group_options(group: str) -> list[str]:
    """The options of a configuration group: the names of its YAML files."""
    folder = CONF / group
    return sorted(
        p.name.removesuffix(".yaml") for p in folder.iterdir() if p.name.endswith(".yaml")
    )


def default_choices(config_name: str) -> dict[str, str | None]:
    """Group → option chosen by the defaults list of ``conf/<config_name>.yaml``."""
    defaults = OmegaConf.to_container(OmegaConf.load(str(CONF / f"{config_name}.yaml")).defaults)
    chosen: dict[str, str | None] = {}
    for entry in defaults:
        if isinstance(entry, dict):
            for key, value in entry.items():
                chosen[str(key).removeprefix("optional ")] = value
    return chosen


def field_comments(schema: type) -> dict[str, str]:
    """The comment at the end of each field's line in the dataclass ``schema``'s source (or in
    the base class that declares it, when the schema does not redeclare it); for a field without
    one that holds a dataclass, the keys it holds."""
    comments: dict[str, str] = {}
    names = {f.name for f in dataclasses.fields(schema)}
    for declaring in (c for c in schema.__mro__ if dataclasses.is_dataclass(c)):
        line_names: dict[int, str] = {}
        for token in tokenize.generate_tokens(io.StringIO(inspect.getsource(declaring)).readline):
            if token.type == tokenize.NAME and token.string in names and token.start[1] == 4:
                line_names.setdefault(token.start[0], token.string)
            elif token.type == tokenize.COMMENT and token.start[0] in line_names:
                comments.setdefault(line_names[token.start[0]], token.string.lstrip("# ").strip())
    for field in dataclasses.fields(schema):
        if field.name not in comments and dataclasses.is_dataclass(field.default_factory):
            keys = ", ".join(
                f"{field.name}.{f.name}" for f in dataclasses.fields(field.default_factory)
            )
            comments[field.name] = f"keys {keys}"
    return comments


def experiment_misfit(name: str, groups: set[str], keys: set[str]) -> str | None:
    """The first group or top-level key that hpo-run's experiment ``name`` sets outside
    ``groups`` and ``keys`` (what another app accepts), or ``None`` when it fits."""
    content = OmegaConf.load(str(CONF / "experiment" / f"{name}.yaml"))
    for entry in content.get("defaults", []):
        for key in entry if OmegaConf.is_dict(entry) else []:
            group = str(key).removeprefix("override ").strip("/")
            if group not in groups:
                return group
    return next((k for k in content if k != "defaults" and k not in keys), None)


def help_text(
    app: str, summary: str, schema: type, groups: dict[str, list[str]], config_name: str
) -> str:
    """The help of ``app``: its groups with their options (the default marked) and its
    top-level keys with their defaults and descriptions."""
    chosen = default_choices(config_name)
    lines = [f"{app}: {summary}", "", f"usage: {app} [group=option ...] [key=value ...]", ""]
    lines.append("Groups (group=option; * marks the default, a group's keys are group.key=value):")
    for group, options in groups.items():
        marked = [f"{o}*" if o == chosen.get(group) else o for o in options]
        lines.append(f"  {group:<16} {', '.join(marked)}")
    lines += ["", "Keys (key=value; default in brackets):"]
    comments = field_comments(schema)
    for field in dataclasses.fields(schema):
        if field.name in groups:
            continue
        default: Any = field.default
        if default is dataclasses.MISSING:
            default = "{...}"
        lines.append(f"  {field.name:<22} [{default}] {comments.get(field.name, '')}".rstrip())
    lines += [
        "",
        f"A run's composed configuration: {app} --cfg job [overrides]. Hydra's own options: "
        f"{app} --hydra-help.",
    ]
    return "\n".join(lines)
