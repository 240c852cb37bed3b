"""The layers of the package: the maths and the analysis never reach up into the runner.

Everything outside ``hpo_cli/runner`` (core, analysis, data, models, hyper, optim) is usable from
a notebook with plain tensors: it imports neither Hydra, nor OmegaConf, nor ``hpo_cli.runner``;
and ``hpo_cli.core`` (the IFT maths) imports none of the layers built on it (analysis, data,
models, hyper, optim, runner). Checked on the source with :mod:`ast`, so an import inside a function
counts too.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "hpo_cli"
RUNNER_ONLY = ("hydra", "omegaconf", "hpo_cli.runner")


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """Every module ``path`` imports, relative imports resolved to absolute names."""
    package = module_name(path).rsplit(".", 0 if path.name == "__init__.py" else 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def modules(under: str = "") -> list[Path]:
    return sorted((PACKAGE / under).rglob("*.py"))


def test_the_walk_sees_the_runners_own_imports():
    """The check below is not vacuous: the same walk finds hydra in the runner."""
    found = imports(PACKAGE / "runner" / "cli.py")
    assert any(within(name, "hydra") for name in found)
    assert any(within(name, "hpo_cli.runner") for name in found)
    assert len(modules()) > 40


def test_nothing_outside_the_runner_imports_hydra_omegaconf_or_the_runner():
    offenders = [
        f"{path.relative_to(PACKAGE.parent)} imports {name}"
        for path in modules()
        if not within(module_name(path), "hpo_cli.runner")
        for name in sorted(imports(path))
        if any(within(name, banned) for banned in RUNNER_ONLY)
    ]
    assert offenders == []


def test_the_maths_imports_none_of_the_layers_built_on_it():
    layers = ("analysis", "data", "models", "hyper", "optim", "runner")
    above = [f"hpo_cli.{layer}" for layer in layers]
    offenders = [
        f"{path.relative_to(PACKAGE.parent)} imports {name}"
        for path in modules("core")
        for name in sorted(imports(path))
        if any(within(name, layer) for layer in above)
    ]
    assert offenders == []


def module_map() -> list[str]:
    """The rows of README.md's module map (section "The library")."""
    readme = (PACKAGE.parent / "README.md").read_text()
    table = readme.split("| layer | module | what it holds |", 1)[1].split("\n\n", 1)[0]
    return [line for line in table.splitlines() if line.startswith("|")][1:]


def test_the_readme_module_map_matches_the_tree():
    """Every path the map names exists (files named in a folder's row too), and every module of
    the package is named, itself or by its folder."""
    named: set[Path] = set()
    for row in module_map():
        _, module, description = (cell.strip() for cell in row.strip("|").split("|"))
        paths = [PACKAGE.parent / part.strip(" `") for part in module.split(",") if part.strip()]
        for path in paths:
            assert path.exists(), f"README names {path.relative_to(PACKAGE.parent)}: not in tree"
            if path.is_dir():
                for name in re.findall(r"`([a-z_]+\.py)`", description):
                    assert (path / name).exists(), f"README names {path.name}/{name}: not there"
        named.update(paths)
    missing = [
        str(path.relative_to(PACKAGE.parent))
        for path in modules()
        if path.name != "__init__.py" and not any(path == n or n in path.parents for n in named)
    ]
    assert missing == [], "modules the README's module map does not name"
