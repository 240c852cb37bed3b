"""The layers of the package: the maths and the analysis never reach up into the applications.

Everything outside the two applications (``hpo_cli/runner``: ``hpo-run``; ``hpo_cli/hpo_hessian``)
is usable from a notebook with plain tensors: it imports neither Hydra, nor OmegaConf, nor an
application; ``hpo_cli.core`` (the IFT maths) imports none of the layers built on it (analysis,
data, models, hyper, optim, the applications); and no module imports, through any chain, itself.
Inside ``hpo-run``, the loop, reports and trackers come after ``build`` and import no configuration.
Checked on the source with :mod:`ast`, so an import inside a function counts too.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "hpo_cli"
APPLICATIONS = ("hpo_cli.runner", "hpo_cli.hpo_hessian")
APPLICATION_ONLY = ("hydra", "omegaconf", *APPLICATIONS)


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
    found = imports(PACKAGE / "runner" / "cli" / "command.py")
    assert any(within(name, "hydra") for name in found)
    assert any(within(name, "hpo_cli.runner") for name in found)
    assert len(modules()) > 40


LAZY_ENTRY_POINTS = {"hpo_cli": ("hpo_cli.runner.results",)}
"""The one exception: ``hpo_cli.load_run`` imports the runner inside the function, on its first
call, so that ``import hpo_cli`` stays free of Hydra (checked below)."""


def test_nothing_outside_the_applications_imports_hydra_omegaconf_or_an_application():
    offenders = [
        f"{path.relative_to(PACKAGE.parent)} imports {name}"
        for path in modules()
        if not any(within(module_name(path), app) for app in APPLICATIONS)
        for name in sorted(imports(path))
        if any(within(name, banned) for banned in APPLICATION_ONLY)
        and not any(within(name, lazy) for lazy in LAZY_ENTRY_POINTS.get(module_name(path), ()))
    ]
    assert offenders == []


def test_import_hpo_cli_loads_neither_hydra_nor_the_runner():
    """The lazy entry point stays lazy: a fresh ``import hpo_cli`` loads no module of Hydra,
    OmegaConf or the applications."""
    code = (
        "import sys, hpo_cli; print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('hydra', 'omegaconf') or m.startswith(('hpo_cli.runner', 'hpo_cli.hpo_hessian'))))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


AFTER_BUILD = ("hpo_cli.runner.loop", "hpo_cli.runner.report", "hpo_cli.runner.tracking")
"""What runs after ``build``: typed objects only, no configuration."""
BEFORE_BUILD = ("hydra", "omegaconf", "hpo_cli.runner.config", "hpo_cli.runner.cli")


def test_nothing_after_build_reads_the_configuration():
    """The loop, the reports and the trackers import neither Hydra, nor OmegaConf, nor the
    config and command-line packages: ``build`` hands them typed objects."""
    offenders = [
        f"{path.relative_to(PACKAGE.parent)} imports {name}"
        for path in modules()
        if any(within(module_name(path), after) for after in AFTER_BUILD)
        for name in sorted(imports(path))
        if any(within(name, before) for before in BEFORE_BUILD)
    ]
    assert offenders == []


def test_the_maths_imports_none_of_the_layers_built_on_it():
    layers = ("analysis", "data", "models", "hyper", "optim", "runner", "hpo_hessian")
    above = [f"hpo_cli.{layer}" for layer in layers]
    offenders = [
        f"{path.relative_to(PACKAGE.parent)} imports {name}"
        for path in modules("core")
        for name in sorted(imports(path))
        if any(within(name, layer) for layer in above)
    ]
    assert offenders == []


def module_map() -> list[str]:
    """The rows of the module map in docs/architecture.md."""
    readme = (PACKAGE.parent / "docs" / "architecture.md").read_text()
    table = readme.split("| layer | module | what it holds |", 1)[1].split("\n\n", 1)[0]
    return [line for line in table.splitlines() if line.startswith("|")][1:]


def test_the_module_map_matches_the_tree():
    """Every path the map names exists (files named in a folder's row too), and every module of
    the package is named, itself or by its folder."""
    named: set[Path] = set()
    for row in module_map():
        _, module, description = (cell.strip() for cell in row.strip("|").split("|"))
        paths = [PACKAGE.parent / part.strip(" `") for part in module.split(",") if part.strip()]
        for path in paths:
            assert path.exists(), f"the map names {path.relative_to(PACKAGE.parent)}: not in tree"
            if path.is_dir():
                for name in re.findall(r"`([a-z_]+\.py)`", description):
                    assert (path / name).exists(), f"the map names {path.name}/{name}: not there"
        named.update(paths)
    missing = [
        str(path.relative_to(PACKAGE.parent))
        for path in modules()
        if path.name != "__init__.py" and not any(path == n or n in path.parents for n in named)
    ]
    assert missing == [], "modules the module map does not name"


def module_imports(path: Path) -> set[str]:
    """The hpo_cli modules ``path`` imports (inside functions too), each with the packages above
    it, which Python imports first (except the packages above ``path`` itself: they are being
    imported already)."""
    known = {module_name(p) for p in modules()}
    found = set()
    for name in imports(path):
        parts = name.split(".")
        found.update(".".join(parts[:i]) for i in range(2, len(parts) + 1))
    own = module_name(path).split(".")
    above = {".".join(own[:i]) for i in range(1, len(own) + 1)}
    return {name for name in found if name in known} - above


def import_cycle() -> list[str]:
    """One cycle of imports between hpo_cli's modules, or ``[]``. An import inside a function
    counts: it hides the cycle from the interpreter, not from the reader."""
    graph = {module_name(path): module_imports(path) for path in modules()}
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(module: str) -> list[str]:
        state[module] = 1
        path.append(module)
        for target in sorted(graph.get(module, ())):
            if state.get(target) == 1:
                return [*path[path.index(target) :], target]
            if target not in state and (cycle := visit(target)):
                return cycle
        path.pop()
        state[module] = 2
        return []

    for module in sorted(graph):
        if module not in state and (cycle := visit(module)):
            return cycle
    return []


def test_no_module_imports_itself_through_a_chain():
    assert import_cycle() == [], "an import cycle"


def test_the_cycle_check_finds_a_planted_cycle(tmp_path, monkeypatch):
    """Not vacuous: two modules that import each other are found."""
    package = tmp_path / "hpo_cli"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from hpo_cli.b import y\nx = 1\n")
    (package / "b.py").write_text("from hpo_cli import a\ny = 2\n")
    monkeypatch.setattr(f"{__name__}.PACKAGE", package)
    assert import_cycle()[0] in ("hpo_cli.a", "hpo_cli.b")


def run_file_literals(path: Path) -> list[str]:
    """The string constants of ``path`` (docstrings aside) that name a run directory's file."""
    from hpo_cli.runner.rundir import names

    spelled = {value for key, value in vars(names).items() if key.isupper()}
    tree = ast.parse(path.read_text(), str(path))
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    return [
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and id(node) not in docstrings and node.value in spelled
    ]


def test_only_the_run_directory_spells_its_file_names():
    """``hpo_cli/runner/rundir/`` owns the run's files: no other module names one in code (every
    other module asks a ``RunDirectory`` for its path)."""
    offenders = [
        f"{path.relative_to(PACKAGE.parent)}: {literal}"
        for path in modules()
        if not within(module_name(path), "hpo_cli.runner.rundir")
        for literal in run_file_literals(path)
    ]
    assert offenders == []


def test_the_file_name_check_sees_a_literal(tmp_path):
    """Not vacuous: a path built from a literal file name is found."""
    planted = tmp_path / "planted.py"
    planted.write_text('"""Doc: metrics.csv."""\nPATH = "run" + "/" + "metrics.csv"\n')
    assert run_file_literals(planted) == ["metrics.csv"]
