"""A constructor's keyword parameters, read from hpo-cli's source without importing it.

``hpo-run`` derives the schema of each of its YAML files from the signature of the ``_target_``
the YAML names (:func:`hpo_cli.runner.config.schemas.yaml_schemas`). Importing a target imports
torch (about 2 s), which ``hpo-run --help`` and a refused command should not wait for, so the
signature is read from the module's source with :mod:`ast` instead:

* a function's parameters, a class's ``__init__``'s (its own, else the first of its bases
  defined in hpo-cli that has one), or a dataclass's fields (its dataclass bases' first);
* each default a literal, a module-level name bound to one, or ``field(default=...)`` /
  ``field(default_factory=...)`` of one (``list``, or a ``lambda`` returning a literal);
* each annotation of a parameter with a default built from builtins and ``typing`` names only.

Anything else (a module outside hpo-cli, a computed default, an annotation naming a class of its
own, a base whose ``__init__`` lives outside hpo-cli) raises :class:`Unreadable`, and the caller
imports the target instead. ``tests/runner/test_signatures.py`` checks that the two readings
agree for every hpo-cli YAML file.
"""

from __future__ import annotations

import ast
import functools
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[3]
"""The folder that holds the ``hpo_cli`` package."""

TYPE_NAMES: dict[str, Any] = {
    **{t.__name__: t for t in (int, float, str, bool, bytes, list, dict, tuple, set)},
    **{name: getattr(typing, name) for name in ("Any", "Optional", "Union", "Literal")},
    "None": None,
}
"""The names an annotation read from source may use."""


class Unreadable(Exception):
    """The signature cannot be read from source; the caller imports the target."""


@dataclass(frozen=True)
class Parameter:
    """A keyword parameter with a default: its name, its annotation (``Any`` when it has none)
    and its default value."""

    name: str
    annotation: Any
    default: Any


@dataclass(frozen=True)
class Definition:
    """A top-level ``def`` or ``class`` and the module that holds it."""

    module: str
    node: ast.FunctionDef | ast.ClassDef


def parameters(target: str) -> list[Parameter]:
    """The parameters with a default of ``target`` (``package.module.Name``), in
    :func:`inspect.signature`'s order.

    Raises:
        Unreadable: see the module docstring.
    """
    definition = find(target)
    if isinstance(definition.node, ast.FunctionDef):
        return function_parameters(definition, skip_self=False)
    return class_parameters(definition)


def ancestors(target: str) -> list[str]:
    """``package.module.Name`` of the class ``target`` and of each base class defined in hpo-cli,
    transitively (a base from outside hpo-cli is not followed)."""
    definition = find(target)
    found = [target]
    for base in bases(definition):
        if base is not None:
            found += [name for name in ancestors(base) if name not in found]
    return found


# ---------------------------------------------------------------- finding a definition
@functools.cache
def module_tree(module: str) -> ast.Module:
    """The parsed source of hpo-cli's ``module``."""
    if module.split(".")[0] != "hpo_cli":
        raise Unreadable(f"{module} is not an hpo-cli module")
    base = ROOT.joinpath(*module.split("."))
    path = base.with_suffix(".py") if base.with_suffix(".py").is_file() else base / "__init__.py"
    if not path.is_file():
        raise Unreadable(f"no source for {module}")
    return ast.parse(path.read_text(), str(path))


def find(target: str) -> Definition:
    """The top-level ``def`` or ``class`` ``target`` names, following ``from ... import``."""
    module, _, name = target.rpartition(".")
    for node in module_tree(module).body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and node.name == name:
            return Definition(module, node)
        if isinstance(node, ast.ImportFrom):
            for alias in node.names:
                if (alias.asname or alias.name) == name:
                    return find(f"{absolute(module, node)}.{alias.name}")
    raise Unreadable(f"{target}: no top-level def or class of that name")


def absolute(module: str, node: ast.ImportFrom) -> str:
    """The module a ``from ... import`` in ``module`` imports from."""
    if not node.level:
        return node.module or ""
    parts = module.split(".")
    anchor = parts if (ROOT.joinpath(*parts) / "__init__.py").is_file() else parts[:-1]
    anchor = anchor[: len(anchor) - (node.level - 1)]
    return ".".join([*anchor, node.module] if node.module else anchor)


def bases(definition: Definition) -> list[str | None]:
    """The base classes of a class as ``package.module.Name`` (``None``: one from outside
    hpo-cli, or not a plain name)."""
    assert isinstance(definition.node, ast.ClassDef)
    found: list[str | None] = []
    for base in definition.node.bases:
        if not isinstance(base, ast.Name):
            found.append(None)
            continue
        try:
            found.append(qualified(find(f"{definition.module}.{base.id}")))
        except Unreadable:
            found.append(None)
    return found


def qualified(definition: Definition) -> str:
    return f"{definition.module}.{definition.node.name}"


# ---------------------------------------------------------------- parameters
def is_dataclass(node: ast.ClassDef) -> bool:
    """Whether ``node`` is decorated with ``@dataclass`` or ``@dataclass(...)``; a decorator
    call that sets ``init`` or ``kw_only`` is refused."""
    for decorator in node.decorator_list:
        call = decorator if isinstance(decorator, ast.Call) else None
        name = call.func if call else decorator
        if isinstance(name, ast.Name) and name.id == "dataclass":
            if call and any(k.arg in ("init", "kw_only") for k in call.keywords):
                raise Unreadable(f"{node.name}: a dataclass with init= or kw_only=")
            return True
    return False


def class_parameters(definition: Definition) -> list[Parameter]:
    node = definition.node
    assert isinstance(node, ast.ClassDef)
    if is_dataclass(node):
        return dataclass_fields(definition)
    for item in node.body:
        if isinstance(item, ast.FunctionDef) and item.name == "__init__":
            return function_parameters(Definition(definition.module, item), skip_self=True)
    inherited = bases(definition)[:1]  # inspect.signature: the first base's __init__
    if inherited == [None]:
        raise Unreadable(f"{node.name}: its __init__ comes from outside hpo-cli")
    return class_parameters(find(inherited[0])) if inherited else []


def dataclass_fields(definition: Definition) -> list[Parameter]:
    """The ``__init__`` parameters with a default of a dataclass: its dataclass bases' fields,
    then its own (a field redeclared keeps its place)."""
    node = definition.node
    assert isinstance(node, ast.ClassDef)
    fields: dict[str, Parameter | None] = {}
    for base in reversed(bases(definition)):
        if base is None:  # ABC, Protocol, ...: no fields, unless it is a dataclass of its own
            continue
        found = find(base)
        if isinstance(found.node, ast.ClassDef) and is_dataclass(found.node):
            fields.update({p.name: p for p in dataclass_fields(found)})
    for item in node.body:
        if not isinstance(item, ast.AnnAssign) or not isinstance(item.target, ast.Name):
            continue
        if "ClassVar" in ast.unparse(item.annotation):
            continue
        name = item.target.id
        if item.value is None:
            fields[name] = None
            continue
        default, init = field_default(definition.module, item.value)
        if init:
            fields[name] = Parameter(name, annotation(item.annotation), default)
    return [p for p in fields.values() if p is not None]


def field_default(module: str, value: ast.expr) -> tuple[Any, bool]:
    """A dataclass field's default and whether ``__init__`` takes it (``field(init=False)``)."""
    call = value if isinstance(value, ast.Call) else None
    if call is None or not (isinstance(call.func, ast.Name) and call.func.id == "field"):
        return literal(module, value), True
    keywords = {k.arg: k.value for k in call.keywords}
    init = keywords.get("init")
    if init is not None and literal(module, init) is False:
        return None, False
    if "default" in keywords:
        return literal(module, keywords["default"]), True
    factory = keywords.get("default_factory")
    if isinstance(factory, ast.Name) and factory.id in ("list", "dict"):
        return ([] if factory.id == "list" else {}), True
    if isinstance(factory, ast.Lambda):
        return literal(module, factory.body), True
    raise Unreadable("a field without a literal default")


def function_parameters(definition: Definition, skip_self: bool) -> list[Parameter]:
    """The parameters with a default of a ``def`` (``self`` skipped for ``__init__``)."""
    node = definition.node
    assert isinstance(node, ast.FunctionDef)
    arguments = node.args
    positional = [*arguments.posonlyargs, *arguments.args][1 if skip_self else 0 :]
    defaults = [None] * (len(positional) - len(arguments.defaults)) + list(arguments.defaults)
    pairs = [*zip(positional, defaults, strict=True)]
    pairs += zip(arguments.kwonlyargs, arguments.kw_defaults, strict=True)
    return [
        Parameter(
            argument.arg,
            annotation(argument.annotation),
            literal(definition.module, default),
        )
        for argument, default in pairs
        if default is not None
    ]


def literal(module: str, node: ast.expr) -> Any:
    """The value of a literal, or of a module-level name bound to a literal in ``module``."""
    if isinstance(node, ast.Name):
        for item in module_tree(module).body:
            targets = item.targets if isinstance(item, ast.Assign) else []
            if isinstance(item, ast.AnnAssign) and item.value is not None:
                targets = [item.target]
            if any(isinstance(t, ast.Name) and t.id == node.id for t in targets):
                return literal(module, item.value)  # type: ignore[union-attr]
        raise Unreadable(f"{node.id} is not a module-level literal of {module}")
    try:
        return ast.literal_eval(node)
    except ValueError as error:
        raise Unreadable(f"{ast.unparse(node)} is not a literal") from error


def annotation(node: ast.expr | None) -> Any:
    """The type an annotation names, from :data:`TYPE_NAMES` only (none: ``Any``; a union of
    several types other than ``None``: ``Any``, as OmegaConf cannot type it)."""
    if node is None:
        return Any
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        node = ast.parse(node.value, mode="eval").body
    if len([arm for arm in union_arms(node) if ast.unparse(arm) != "None"]) > 1:
        return Any  # what the schema makes of it (checkable_type), whatever the arms name
    for part in ast.walk(node):
        if isinstance(part, ast.Name) and part.id not in TYPE_NAMES:
            raise Unreadable(f"the annotation {ast.unparse(node)} names {part.id}")
        if not isinstance(
            part,
            (ast.Name, ast.Subscript, ast.BinOp, ast.BitOr, ast.Tuple, ast.Constant, ast.Load),
        ):
            raise Unreadable(f"the annotation {ast.unparse(node)} is not a plain type")
    expression = ast.Expression(node)
    return eval(compile(expression, "<annotation>", "eval"), {"__builtins__": {}}, TYPE_NAMES)


def union_arms(node: ast.expr) -> list[ast.expr]:
    """The arms of ``A | B | ...`` (one arm: ``[node]``)."""
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
        return [*union_arms(node.left), *union_arms(node.right)]
    return [node]
