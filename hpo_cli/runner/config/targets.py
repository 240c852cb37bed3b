"""Any class or function as a group's ``_target_``: its keys checked against its own signature,
and run-time objects offered only to the constructors that ask for them.

A group node (``model``, ``dataset``, ``hyper``, ``solver``, ...) names a callable by
``_target_``; its other keys are that callable's keyword arguments. :func:`check_node` checks
them against the callable's signature, not against a registered schema, so an outside model or
solver (``model._target_=mypackage.Net``) gets the same one-line errors as a built-in one:

* a key that is not a parameter: ``model.widht is not a parameter of mypackage.Net; did you
  mean model.width? valid keys: depth, width``; a key that the default option's YAML left in
  the node when only ``_target_`` changed (``model._target_=mypackage.Net`` keeps
  ``model.hidden_sizes``) names the way to replace the node instead (``~model
  +model._target_=mypackage.Net``);
* a value of the wrong type for an annotated parameter (``int``, ``float``, ``bool``, ``str``,
  lists of them);
* a required parameter that neither the configuration nor the runner supplies.

:func:`offered_arguments` then picks, from what the runner can supply (the data's shapes, the
model, the data, the seed), the names the callable's signature lists, so a constructor never
has to accept what it does not use.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import inspect
import typing
from collections.abc import Callable, Mapping
from dataclasses import make_dataclass
from typing import Any

from hydra.utils import get_object
from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import ValidationError

from hpo_cli.runner.config.schemas import checkable_type
from hpo_cli.runner.errors import ConfigError


def node_key(node: DictConfig) -> str:
    """The node's full key in the configuration (``model``, ``dataset.transform``, ...)."""
    return str(node._get_full_key(None)) or "<config>"


def locate(node: DictConfig) -> Callable[..., Any]:
    """The callable that ``node._target_`` names; one line when it cannot be imported."""
    key, path = node_key(node), node.get("_target_")
    if not isinstance(path, str) or not path:
        raise ConfigError(f"{key}._target_ is missing: name a class or function, e.g. pkg.Net")
    try:
        target = get_object(path)
    except Exception as error:  # ImportError, AttributeError, or whatever the import raised
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ConfigError(
            f"{key}._target_={path} cannot be imported ({reason}); is its package installed "
            f"or on PYTHONPATH?"
        ) from error
    if not callable(target):
        raise ConfigError(f"{key}._target_={path} is not a class or function")
    return target


def _parameters(target: Callable[..., Any]) -> tuple[dict[str, inspect.Parameter], bool]:
    """Keyword-passable parameters of ``target``, and whether it takes ``**kwargs``."""
    try:
        signature = inspect.signature(target)
    except (TypeError, ValueError):  # a builtin without a signature: nothing to check
        return {}, True
    named = {
        name: p
        for name, p in signature.parameters.items()
        if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD, p.POSITIONAL_ONLY)
    }
    takes_kwargs = any(p.kind is p.VAR_KEYWORD for p in signature.parameters.values())
    return named, takes_kwargs


def _hints(target: Callable[..., Any]) -> dict[str, Any]:
    function = target.__init__ if isinstance(target, type) else target
    try:
        return typing.get_type_hints(function)
    except Exception:  # unresolvable forward references: check names only
        return {}


def accepts(target: Callable[..., Any], name: str) -> bool:
    """Whether ``target`` has a parameter called ``name`` (``**kwargs`` does not count)."""
    return name in _parameters(target)[0]


def did_you_mean(word: str, choices: typing.Iterable[str], prefix: str = "") -> str:
    """``did you mean <prefix><closest>?`` for the choice closest to ``word``
    (:func:`difflib.get_close_matches`), or an empty string when none is close."""
    close = difflib.get_close_matches(word, [str(c) for c in choices], n=1)
    return f"did you mean {prefix}{close[0]}?" if close else ""


def unknown_key_line(node: DictConfig, name: str, valid: list[str]) -> str:
    """The one line for ``name``, a key of ``node`` that its ``_target_`` does not take: the
    closest valid key, the valid keys, and, for a key that a built-in option's schema put there
    (its YAML's keys stay when only ``_target_`` changes), how to replace the whole node."""
    key, target = node_key(node), node["_target_"]
    guess = did_you_mean(str(name), valid, f"{key}.")
    line = f"{key}.{name} is not a parameter of {target}; " + (f"{guess} " if guess else "")
    line += f"valid keys: {', '.join(valid) or '(none)'}"
    schema = OmegaConf.get_type(node)
    if schema is not None and dataclasses.is_dataclass(schema):
        fields = {f.name: f.default for f in dataclasses.fields(schema)}
        if name in fields and fields.get("_target_") not in (None, target):
            line += (
                f" ({name} comes from the YAML of {fields['_target_']}, whose keys stay when only "
                f"{key}._target_ changes: replace the node instead, ~{key} "
                f"+{key}._target_={target} (+{key}.<key>=... for its keys), or give it a YAML "
                f"file of its own: --config-dir DIR {key}=<name>)"
            )
    return line


def check_keys(node: DictConfig, supplied: typing.Iterable[str] = ()) -> Callable[..., Any]:
    """Check that every key of ``node`` is a parameter of its ``_target_`` (names only: before
    the run-time objects exist); returns the target.

    Raises:
        ConfigError: :func:`unknown_key_line` for the first key that is not a parameter.
    """
    target = locate(node)
    parameters, takes_kwargs = _parameters(target)
    valid = sorted(n for n in parameters if n not in set(supplied))
    for name in node:
        if not str(name).startswith("_") and name not in parameters and not takes_kwargs:
            raise ConfigError(unknown_key_line(node, str(name), valid))
    return target


def check_node(
    node: DictConfig, supplied: typing.Iterable[str] = (), positional: int = 0
) -> Callable[..., Any]:
    """Check ``node``'s keys against the signature of its ``_target_``; returns the target.

    Args:
        node: a group node with ``_target_``.
        supplied: parameter names the runner may pass itself (never required in the node).
        positional: how many leading parameters the runner passes positionally.

    Raises:
        ConfigError: one line naming the key: not a parameter (with the valid keys), a value
            of the wrong type, or a required parameter nobody supplies.
    """
    target, key = locate(node), node_key(node)
    parameters, _ = _parameters(target)
    supplied = set(supplied) | set(list(parameters)[:positional])
    check_keys(node, supplied)
    given = [name for name in node if not str(name).startswith("_")]
    name_of = node["_target_"]
    hints = _hints(target)
    values = OmegaConf.to_container(node, resolve=True)
    for name in given:
        if name in hints:
            _check_type(f"{key}.{name}", name, hints[name], values[name], name_of)
    for name, parameter in parameters.items():
        required = parameter.default is inspect.Parameter.empty
        if required and name not in given and name not in supplied:
            raise ConfigError(
                f"{key}.{name} is missing: {name_of} requires it (set it in the group's YAML "
                f"or with +{key}.{name}=...)"
            )
    return target


PLAIN_TYPES = {bool: (bool,), int: (int,), float: (int, float), str: (str,)}
"""Annotation → the Python types of the values OmegaConf accepts for it as they are."""


def _plainly_valid(kind: Any, value: Any) -> bool:
    """Whether OmegaConf would accept ``value`` for ``kind`` without converting it: the common
    case (a number for a number, a string for a string, None for an optional), decided without
    a structured config; False means "ask OmegaConf"."""
    arguments = typing.get_args(kind)
    if value is None:
        return type(None) in arguments
    if type(None) in arguments and len(arguments) == 2:  # Optional[X]
        kind = next(a for a in arguments if a is not type(None))
    accepted = PLAIN_TYPES.get(kind)
    return accepted is not None and type(value) in accepted


def _check_type(full_key: str, name: str, kind: Any, value: Any, target: str) -> None:
    if _plainly_valid(kind, value):
        return
    try:
        schema = _value_schema(kind)
    except TypeError:  # an annotation that cannot be hashed: not cached
        schema = _value_schema.__wrapped__(kind)
    if schema is None or isinstance(value, dict):
        return
    try:
        OmegaConf.merge(schema, {"value": value})
    except ValidationError as error:
        expected = getattr(kind, "__name__", str(kind))
        raise ConfigError(
            f"{full_key}={value!r} is invalid: {target} takes {name}: {expected}"
        ) from error


@functools.cache
def _value_schema(kind: Any) -> DictConfig | None:
    """A structured config with one field ``value: kind`` that checks a value by merging it in,
    or None where OmegaConf cannot check ``kind``; made once per annotation (making a dataclass
    costs a millisecond, and every build checks every key of every node)."""
    kind = checkable_type(kind, "value", MISSING)
    if kind is Any:
        return None
    return OmegaConf.structured(make_dataclass("Check", [("value", kind, MISSING)]))


def offered_arguments(target: Callable[..., Any], node: DictConfig, offers: Mapping[str, Any]):
    """The entries of ``offers`` that ``target``'s signature names and ``node`` does not set
    (a value in the configuration wins over what the runner would offer)."""
    parameters, _ = _parameters(target)
    return {
        name: value for name, value in offers.items() if name in parameters and name not in node
    }
