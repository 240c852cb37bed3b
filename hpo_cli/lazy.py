"""Names a package re-exports, imported from their modules on first use (PEP 562).

``import hpo_cli`` and ``import hpo_cli.data`` would otherwise import torch (about 2 s) before
``hpo-run --help`` or a refused command could answer; with :func:`lazy_exports`, a package's
``__init__`` names its exports and nothing is imported until one is used::

    __getattr__, __dir__ = lazy_exports(__name__, {"hpo_cli.core.joint": ("JointOptimizer",)})
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from typing import Any


def lazy_exports(
    package: str, exports: dict[str, tuple[str, ...]]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The module ``__getattr__`` and ``__dir__`` of ``package``, whose names are
    ``exports`` (module → the names it defines). A name is imported on first use and then kept
    in the package's namespace."""
    home = {name: module for module, names in exports.items() for name in names}

    def __getattr__(name: str) -> Any:
        if name not in home:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(home[name]), name)
        setattr(sys.modules[package], name, value)
        return value

    def __dir__() -> list[str]:
        return sorted({*vars(sys.modules[package]), *home})

    return __getattr__, __dir__
