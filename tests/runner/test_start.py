"""``hpo-run --help`` and a refused command answer without importing torch (about 2 s of a
start), pandas or matplotlib: each runs in a fresh interpreter, as the console script does, which
then lists the heavy modules it loaded. A command that passes the checks does import torch (the
check is not vacuous)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = ("torch", "pandas", "matplotlib", "numpy")

ENTRY = """
import json, sys
sys.argv = ["hpo-run", *sys.argv[1:]]
from hpo_cli.runner.cli import main
code = 0
try:
    main()
except SystemExit as error:
    code = error.code
print(json.dumps({"code": code, "heavy": sorted(m for m in HEAVY if m in sys.modules)}))
""".replace("HEAVY", repr(HEAVY))


def start(*arguments: str) -> tuple[dict, str]:
    """Run hpo-run's entry point with ``arguments`` in a fresh interpreter: its exit status and
    the heavy modules it imported, and its stderr."""
    result = subprocess.run(
        [sys.executable, "-c", ENTRY, *arguments], capture_output=True, text=True, timeout=300
    )
    return json.loads(result.stdout.strip().splitlines()[-1]), result.stderr


def test_help_imports_no_torch():
    outcome, _ = start("--help")
    assert outcome == {"code": 0, "heavy": []}


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["solver=cgg"], "Could not find 'solver/cgg'"),
        (["optimizer.lr=-1"], "optimizer.lr=-1.0 is invalid: must be > 0"),
        (["outer_steps=0", "solver=neumann"], "outer_steps=0 is invalid"),
        (["+foo=1"], "foo is not a top-level configuration key"),
    ],
)
def test_a_refused_command_imports_no_torch(tmp_path, arguments, message):
    outcome, stderr = start(*arguments, f"hydra.run.dir={tmp_path / 'run'}")
    assert outcome == {"code": 2, "heavy": []}
    assert stderr.startswith("hpo-run: error: ") and message in stderr
    assert len(stderr.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()


def test_a_constructor_check_runs_after_the_range_checks(tmp_path):
    """``solver.max_iter=0`` is the solver's own range (its constructor, with torch): refused in
    one line all the same, before anything is written."""
    outcome, stderr = start("solver=cg", "solver.max_iter=0", f"hydra.run.dir={tmp_path / 'run'}")
    assert outcome["code"] == 2 and "torch" in outcome["heavy"]
    assert stderr.startswith("hpo-run: error: ") and "max_iter" in stderr
    assert not (tmp_path / "run").exists()


def test_one_run_composes_its_configuration_once(tmp_path, monkeypatch):
    """The preflight's composition is the run's: Hydra's ``main`` (which would compose it twice
    more) is not entered for one run in one process, and the run completes as through it."""
    from hpo_cli.runner.cli import command, preflight
    from tests.support.cli_runs import hpo_run
    from tests.support.tiny_runs import TINY

    calls = []
    compose = preflight.compose

    def counted(*args: object, **kwargs: object) -> object:
        calls.append(args)
        return compose(*args, **kwargs)

    def hydra_main() -> None:
        pytest.fail("Hydra's main composed the configuration again")

    monkeypatch.setattr(preflight, "compose", counted)
    monkeypatch.setattr(command, "run", hydra_main)
    result = hpo_run(tmp_path / "run", *TINY)
    assert result.returncode == 0, result.stderr
    assert len(calls) == 1
    assert (tmp_path / "run" / "summary.json").exists()
