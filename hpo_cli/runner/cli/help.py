"""``--help`` for ``hpo-run`` and ``hpo-hessian``, and the configuration reference
(``docs/configuration.md``): the options each accepts and one line per key.

Every value shown is the composed configuration's (what a run uses: the schema's default, or the
YAML's where an option deliberately differs), never a schema field's default read on its own.
Hydra's own help lists every entry of the ConfigStore, the internal ``base_*`` schemas included
(``solver=base_cg`` is no option), and hpo-run's experiments in hpo-hessian's help although most
of them set groups hpo-hessian does not take. Here the options of a group are its YAML files, an
experiment is listed for hpo-hessian only when it fits (:func:`experiment_misfit`), a top-level
key is described by the comment on its line in the schema's source, and a group's key by its
constructor's docstring (``Args:``), else by the comment on its line in the option's YAML.

    hpo-run --help                  # groups, and every top-level key with its value (no torch)
    hpo-run solver=cg --help        # and the keys of solver=cg (their docstrings: torch)
    hpo-run --help solver           # the keys of the default solver
    make docs                       # docs/configuration.md, from reference_markdown()
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import io
import os
import re
import sys
import tokenize
from importlib.resources import files
from pathlib import Path
from typing import Any

from hydra.utils import get_object
from omegaconf import DictConfig, OmegaConf

from hpo_cli.runner.cli.preflight import RESUME_MAY_CHANGE, compose_run
from hpo_cli.runner.cli.renames import RENAMED_COLUMNS, RENAMED_KEYS
from hpo_cli.runner.config.schemas import GROUP_SCHEMAS, GROUPS, RunConfig, register_configs

CONF = files("hpo_cli.conf")
REFERENCE = "docs/configuration.md"
REGENERATE = "make docs"


# ---------------------------------------------------------------- where descriptions come from
def group_options(group: str) -> list[str]:
    """The options of a configuration group: the names of its YAML files."""
    folder = CONF / group
    return sorted(
        p.name.removesuffix(".yaml") for p in folder.iterdir() if p.name.endswith(".yaml")
    )


def field_comments(schema: type) -> dict[str, str]:
    """The comment at the end of each field's line in the dataclass ``schema``'s source (or in
    the base class that declares it, when the schema does not redeclare it); none for a
    dataclass made at run time (:func:`hpo_cli.runner.config.schemas.schema_for`)."""
    comments: dict[str, str] = {}
    names = {f.name for f in dataclasses.fields(schema)}
    for declaring in (c for c in schema.__mro__ if dataclasses.is_dataclass(c)):
        try:
            source = inspect.getsource(declaring)
        except (OSError, TypeError):
            continue
        line_names: dict[int, str] = {}
        for token in tokenize.generate_tokens(io.StringIO(source).readline):
            if token.type == tokenize.NAME and token.string in names and token.start[1] == 4:
                line_names.setdefault(token.start[0], token.string)
            elif token.type == tokenize.COMMENT and token.start[0] in line_names:
                comments.setdefault(line_names[token.start[0]], token.string.lstrip("# ").strip())
    return comments


def one_line(text: str, width: int | None = None) -> str:
    """The first sentence of ``text`` on one line, without reST markup or torch's
    ``(default: ...)`` (the value shown beside it is the one a run uses)."""
    text = re.sub(r"\s*\(default: [^)]*\)", "", " ".join(text.split())).replace("``", "")
    text = re.sub(r":\w+:`~?([^`]*)`", r"\1", text).split(" * ", 1)[0].rstrip(": ")
    sentence = re.split(r"(?<!et al)(?<=[a-z0-9)\]])\. ", text, maxsplit=1)[0].rstrip(".")
    if width is None or len(sentence) <= width:
        return sentence
    return sentence[: width - 1].rstrip() + "…"


def docstring_args(target: Any) -> dict[str, str]:
    """Parameter → one line, from the ``Args:``/``Attributes:`` section of ``target``'s
    docstring (Google style, ``name: text`` or torch's ``name (type): text``)."""
    described: dict[str, str] = {}
    lines = (inspect.getdoc(target) or "").splitlines()
    entry = re.compile(r"^(\s*)(\w+)(?: \([^)]*\))?: ?(.*)$")
    section: int | None = None  # the indentation of the section's entries
    current: str | None = None
    for line in lines:
        indent = len(line) - len(line.lstrip())
        if re.match(r"^\s*(Args|Arguments|Attributes|Parameters):\s*$", line):
            section, current = indent + 4, None
        elif section is None or not line.strip():
            continue
        elif indent < section:
            section = current = None
        elif indent == section and (match := entry.match(line)):
            current = match.group(2)
            described[current] = match.group(3)
        elif current is not None:
            described[current] += " " + line.strip()
    return {name: one_line(text) for name, text in described.items()}


def yaml_comments(path: Path) -> dict[str, str]:
    """Top-level key → the comment at the end of its line in the YAML file at ``path``."""
    comments = {}
    for line in path.read_text().splitlines() if path.is_file() else []:
        if match := re.match(r"^(\w+):[^#]*#\s*(.*)$", line):
            comments[match.group(1)] = match.group(2).strip()
    return comments


def node_descriptions(node: DictConfig, schema: type | None, yaml_file: Path | None) -> dict:
    """Key of a group's node (or a nested block) → one line: its ``_target_``'s docstring, else
    the comment on its line in the option's YAML file, else in ``schema``'s source."""
    described: dict[str, str] = {}
    if yaml_file is not None:
        described.update(yaml_comments(yaml_file))
    if schema is not None:
        described.update({k: v for k, v in field_comments(schema).items() if k not in described})
    target = node.get("_target_") if OmegaConf.is_dict(node) else None
    if "curvature" in node and target:  # a solver's: the implicit method's argument
        from hpo_cli.core.methods import ImplicitDifferentiation  # torch: for group=... --help

        described.update(docstring_args(ImplicitDifferentiation))
    if isinstance(target, str):
        with contextlib.suppress(ImportError, AttributeError, ValueError):  # a user's target
            described.update({k: v for k, v in docstring_args(get_object(target)).items() if v})
    return described


# ---------------------------------------------------------------- values as a run sees them
def show(value: Any) -> str:
    """A value as one types it on the command line (YAML): ``null``, ``true``, ``[64]``."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list):
        return "[" + ", ".join(show(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {show(v)}" for k, v in value.items()) + "}"
    return str(value)


def composed(
    config_name: str, schema: type, overrides: list[str]
) -> tuple[DictConfig, dict[str, Any]]:
    """The task configuration (``hydra`` node dropped) composed from ``overrides``, as a run
    composes it, and the option chosen in each group."""
    register_configs()
    cfg = compose_run(overrides, config_name, schema)
    choices = OmegaConf.to_container(cfg.hydra.runtime.choices)
    return OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"]), choices


def key_rows(cfg: DictConfig, schema: type, groups: set[str]) -> list[tuple[str, str, str]]:
    """(key, value, description) of every top-level key outside ``groups``; a block of keys
    (``data``, ``early_stopping``, ...) is listed key by key, ``data.num_workers``."""
    comments = field_comments(schema)
    rows = []
    for field in dataclasses.fields(schema):
        if field.name in groups or field.name not in cfg:
            continue
        value = cfg[field.name]
        if not OmegaConf.is_dict(value):
            rows.append(
                (
                    field.name,
                    show(OmegaConf.to_container(cfg, resolve=False)[field.name]),
                    comments.get(field.name, ""),
                )
            )
            continue
        nested = field.default_factory if dataclasses.is_dataclass(field.default_factory) else None
        described = node_descriptions(value, nested, None)
        for key, item in OmegaConf.to_container(value, resolve=False).items():
            if key != "_target_":
                rows.append((f"{field.name}.{key}", show(item), described.get(key, "")))
    return rows


def option_rows(group: str, option: str | None, node: DictConfig) -> list[tuple[str, str, str]]:
    """(key, value, description) of a group's composed node (``_target_`` aside)."""
    schemas = list(GROUP_SCHEMAS.get(group, {}).values())
    schema = schemas[0] if len(schemas) == 1 else None
    yaml_file = Path(str(CONF / group / f"{option}.yaml")) if option else None
    described = node_descriptions(node, schema, yaml_file)
    return [
        (key, show(value), described.get(key, ""))
        for key, value in OmegaConf.to_container(node, resolve=False).items()
        if key != "_target_"
    ]


def table(rows: list[tuple[str, str, str]], indent: str = "  ") -> list[str]:
    """``key [value] description`` lines, the columns aligned, a description cut at 72
    characters (docs/configuration.md has them whole)."""
    width = max((len(k) for k, _, _ in rows), default=0)
    return [f"{indent}{k:<{width}} [{v}] {one_line(d, 72)}".rstrip() for k, v, d in rows]


# ---------------------------------------------------------------- --help
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


def experiment_summary(name: str) -> str:
    """The first sentence of the comment that opens ``conf/experiment/<name>.yaml``."""
    comment = []
    for line in (CONF / "experiment" / f"{name}.yaml").read_text().splitlines():
        if not line.startswith("#"):
            break
        if not line.startswith("# @package"):
            comment.append(line.lstrip("# "))
    return one_line(" ".join(comment))


def help_text(
    app: str,
    summary: str,
    schema: type,
    groups: dict[str, list[str]],
    config_name: str,
    arguments: list[str] | None = None,
) -> str:
    """The help of ``app`` for the command line ``arguments`` (``--help`` among them): its groups
    with their options (the chosen one marked), its top-level keys with the values the command
    would run with, and the keys of each group named on it (``solver=cg``, or ``solver`` alone).

    Raises:
        ConfigError: the command line does not compose.
    """
    arguments = [a for a in arguments or [] if a not in ("--help", "-h")]
    overrides = [a for a in arguments if "=" in a and not a.startswith("-")]
    cfg, chosen = composed(config_name, schema, overrides)
    named = [a.split("=", 1)[0] for a in overrides if a.split("=", 1)[0] in groups]
    named += [a for a in arguments if a in groups and a not in named]
    lines = [f"{app}: {summary}", "", f"usage: {app} [group=option ...] [key=value ...]", ""]
    lines.append(
        "Groups (group=option; * marks the one chosen; a group's keys are group.key=value,"
    )
    lines.append(f"listed by {app} group=option --help or {app} --help group):")
    for group, options in groups.items():
        marked = [f"{o}*" if o == chosen.get(group) else o for o in options]
        lines.append(f"  {group:<16} {', '.join(marked)}")
    lines += ["", "Keys (key=value; the value this command runs with in brackets):"]
    lines += table(key_rows(cfg, schema, set(groups)))
    for group in named:
        if group in cfg:
            lines += ["", f"{group}={chosen.get(group)} (keys {group}.key=value):"]
            lines += table(option_rows(group, chosen.get(group), cfg[group]))
    lines += [
        "",
        f"A run's composed configuration: {app} --cfg job [overrides]. Hydra's own options: "
        f"{app} --hydra-help. Every option's keys: {REFERENCE}.",
    ]
    return "\n".join(lines)


# ---------------------------------------------------------------- docs/configuration.md
def markdown_table(rows: list[tuple[str, str, str]]) -> list[str]:
    """A Markdown table of (key, value, description) rows."""
    escape = str.maketrans({"|": "\\|"})
    lines = ["| key | default | description |", "| --- | --- | --- |"]
    lines += [f"| `{k}` | `{v}` | {d.translate(escape)} |" for k, v, d in rows]
    return lines


def option_nodes(groups: dict[str, list[str]]) -> dict[tuple[str, str], DictConfig]:
    """(group, option) → its node as hpo-run composes it; composition ``k`` picks every group's
    ``k``-th option at once (group files never refer to one another)."""
    nodes = {}
    for k in range(max(len(options) for options in groups.values())):
        picks = {g: options[min(k, len(options) - 1)] for g, options in groups.items()}
        cfg, _ = composed("config", RunConfig, [f"{g}={o}" for g, o in picks.items()])
        nodes.update({(g, o): cfg[g] for g, o in picks.items()})
    return nodes


def reference_markdown() -> str:
    """``docs/configuration.md``: hpo-run's top-level keys, every option of every group with its
    keys, the experiments and the keys a resume may change, all from the code and the YAML."""
    groups = {group: group_options(group) for group in GROUPS}
    cfg, choices = composed("config", RunConfig, [])
    lines = [
        "# Configuration reference",
        "",
        f"<!-- Generated from the code by {REGENERATE}; do not edit by hand. -->",
        "",
        "The values are those `hpo-run` runs with: the composed default configuration (its schema",
        "`hpo_cli/runner/config/schemas.py`, the options' constructors and YAML files). Set a key",
        "with `key=value`, pick an option with `group=option`; `hpo-run --help` and",
        "`hpo-run group=option --help` print the same from the command line.",
        "",
        "## Top-level keys",
        "",
        *markdown_table(key_rows(cfg, RunConfig, set(groups))),
        "",
        "## Groups",
    ]
    nodes = option_nodes(groups)
    for group, options in groups.items():
        lines += ["", f"### `{group}` (default: `{choices.get(group)}`)"]
        for option in options:
            node = nodes[group, option]
            target = node.get("_target_")
            lines += ["", f"#### `{group}={option}`" + (f" (`{target}`)" if target else "")]
            rows = option_rows(group, option, node)
            lines += ["", *markdown_table(rows)] if rows else ["", "No keys."]
    lines += ["", "## Experiments (`experiment=<name>`)", ""]
    for name in group_options("experiment"):
        lines.append(f"- `{name}`: {experiment_summary(name)}".rstrip(": "))
    lines += [
        "",
        "## What a resume may change",
        "",
        "`hpo-run resume=<run dir> key=value` accepts only these keys (and the keys under them);",
        "any other change is refused. `outer_steps` and `early_stopping.patience` may only grow,",
        "and `eval_every` may change only with early stopping off (why each key leaves the run",
        "as it was: [run-directory.md](run-directory.md#resume)):",
        "",
        *[f"- `{key}`" for key in RESUME_MAY_CHANGE],
        "",
        "## Renamed keys",
        "",
        "A command or a config file that uses an old key is refused in one line naming the new",
        "one (exit 2). A run directory written before the renames (an old key in its saved",
        "configuration, an old column in its `metrics.csv`, a checkpoint of format 1 or 2) is",
        "not resumed: `resume=` (and `hpo-hessian run_dir=`) refuse it in one line and leave its",
        "files as they are.",
        "",
        "| old | new |",
        "| --- | --- |",
        *[f"| `{old}` | `{new}` |" for old, new in RENAMED_KEYS.items()],
        *[
            f"| `{old}` (metrics.csv, summary.json) | `{new}` |"
            for old, new in RENAMED_COLUMNS.items()
        ],
    ]
    return "\n".join(lines) + "\n"


def write_reference(path: str = REFERENCE) -> None:
    """Write :func:`reference_markdown` to ``path`` (``-``: stdout); ``make docs`` calls it."""
    text = reference_markdown()
    if path == "-":
        sys.stdout.write(text)
    else:
        Path(path).write_text(text)


def print_help(text: str) -> None:
    """Print ``text`` to stdout; a reader that stops early (``hpo-run --help | head``) is no
    error."""
    try:
        print(text, flush=True)
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
