"""The trust model of a run directory someone else wrote (hpo_cli/runner/config/trust.py): a
resumed or analysed run may build only the ``_target_``\\ s hpo-cli or the run's own config
directories define, and its saved overrides may not set ``hydra`` keys, unless the command says
``trust_run_dir=true``. A refusal is one line, exit 2, with nothing written anywhere."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from hpo_cli.runner.config.trust import check_trusted, config_dirs, trust_argument
from hpo_cli.runner.errors import ConfigError
from tests.support.cli_runs import hpo_hessian, hpo_run
from tests.support.config_dirs import conf_dir
from tests.support.tiny_runs import BRIEF, DATA

OWN_MODEL = ["~model", "+model._target_=tests.support.own_problem.WideNet", "+model.width=8"]


def hashes(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture
def hostile(finished_run, tmp_path) -> tuple[Path, Path]:
    """A copy of a real tiny run whose config.yaml builds ``open(victim, 'w')``; the victim."""
    run_dir, victim = tmp_path / "foreign", tmp_path / "victim.txt"
    shutil.copytree(finished_run, run_dir)
    victim.write_text("precious\n")
    config = OmegaConf.load(run_dir / ".hydra" / "config.yaml")
    config.dataset = {"_target_": "builtins.open", "file": str(victim), "mode": "w"}
    OmegaConf.save(config, run_dir / ".hydra" / "config.yaml")
    return run_dir, victim


def refusal(result) -> str:
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    return lines[0]


def test_a_foreign_target_in_the_saved_config_is_refused_on_resume(hostile):
    run_dir, victim = hostile
    before = hashes(run_dir)
    line = refusal(hpo_run(None, f"resume={run_dir}", "outer_steps=6"))
    assert line == (
        f"hpo-run: error: resume={run_dir} is not trusted: .hydra/config.yaml sets "
        "dataset._target_=builtins.open, a target that neither hpo-cli nor the run's own config "
        "directories define (building it could run any code); if you trust this directory, add "
        "trust_run_dir=true"
    )
    assert victim.read_text() == "precious\n"
    assert hashes(run_dir) == before


def test_hpo_hessian_refuses_the_same_directory(hostile, tmp_path):
    run_dir, victim = hostile
    before, out = hashes(run_dir), tmp_path / "hessian"
    line = refusal(hpo_hessian(out, f"run_dir={run_dir}", "plots=false"))
    assert line.startswith(f"hpo-hessian: error: run_dir={run_dir} is not trusted: ")
    assert "dataset._target_=builtins.open" in line and line.endswith("trust_run_dir=true")
    assert victim.read_text() == "precious\n"
    assert hashes(run_dir) == before and not out.exists()


def test_a_hydra_callback_in_the_saved_overrides_is_refused(finished_run, tmp_path):
    run_dir = tmp_path / "foreign"
    shutil.copytree(finished_run, run_dir)
    overrides = OmegaConf.load(run_dir / ".hydra" / "overrides.yaml")
    overrides.append("+hydra.callbacks.x._target_=tests.support.own_problem.WideNet")
    OmegaConf.save(overrides, run_dir / ".hydra" / "overrides.yaml")
    before = hashes(run_dir)
    line = refusal(hpo_run(None, f"resume={run_dir}"))
    assert line.startswith(f"hpo-run: error: resume={run_dir} is not trusted: ")
    assert "sets +hydra.callbacks.x._target_=tests.support.own_problem.WideNet, a Hydra " in line
    assert hashes(run_dir) == before


@pytest.mark.parametrize(
    "override",
    ["hydra/launcher=slurm", "hydra.run.dir=/elsewhere", "dataset={_target_: os.remove}"],
)
def test_other_saved_overrides_that_could_run_code_are_refused(tmp_path, override):
    run_dir = tmp_path / "run"
    (run_dir / ".hydra").mkdir(parents=True)
    OmegaConf.save(OmegaConf.create(["seed=1", override]), run_dir / ".hydra" / "overrides.yaml")
    with pytest.raises(ConfigError, match=r"is not trusted: \.hydra/overrides\.yaml sets"):
        check_trusted(run_dir, "resume")
    check_trusted(run_dir, "resume", trusted=True)


def test_a_target_from_the_command_line_needs_the_flag_and_the_flag_is_not_saved(tmp_path):
    """A run whose model's ``_target_`` came from the command line alone: on resume that target
    is only the directory's word, so it needs ``trust_run_dir=true``; then the run goes on, and
    the flag is saved neither in its configuration nor in its overrides."""
    run_dir = tmp_path / "run"
    assert hpo_run(run_dir, *OWN_MODEL, *DATA, *BRIEF).returncode == 0
    line = refusal(hpo_run(None, f"resume={run_dir}", "outer_steps=3"))
    assert "model._target_=tests.support.own_problem.WideNet" in line
    result = hpo_run(None, f"resume={run_dir}", "outer_steps=3", "trust_run_dir=true")
    assert result.returncode == 0, result.stderr
    for name in ("config.yaml", "overrides.yaml", "hydra.yaml"):
        assert "trust_run_dir" not in (run_dir / ".hydra" / name).read_text()


def test_a_run_with_its_own_config_directory_resumes_without_the_flag(tmp_path, monkeypatch):
    conf = conf_dir(
        tmp_path, {"model/wide.yaml": "_target_: tests.support.own_problem.WideNet\nwidth: 8\n"}
    )
    run_dir = tmp_path / "run"
    assert hpo_run(run_dir, "--config-dir", str(conf), "model=wide", *DATA, *BRIEF).returncode == 0
    monkeypatch.chdir(tmp_path / "run")  # from anywhere: the run recorded its config directory
    result = hpo_run(None, f"resume={run_dir}", "outer_steps=3")
    assert result.returncode == 0, result.stderr
    out = tmp_path / "hessian"
    result = hpo_hessian(out, f"run_dir={run_dir}", "plots=false", "mode=dense")
    assert "not trusted" not in result.stderr


def test_a_config_directory_inside_the_run_directory_is_not_its_own_word(tmp_path):
    run_dir = tmp_path / "run"
    evil = conf_dir(run_dir, {"dataset/evil.yaml": "_target_: builtins.open\n"})
    (run_dir / ".hydra").mkdir()
    hydra = {"overrides": {"hydra": [f"hydra.searchpath=[file://{evil},file://{tmp_path}]"]}}
    OmegaConf.save(OmegaConf.create({"hydra": hydra}), run_dir / ".hydra" / "hydra.yaml")
    OmegaConf.save(
        OmegaConf.create({"dataset": {"_target_": "builtins.open"}}),
        run_dir / ".hydra" / "config.yaml",
    )
    assert config_dirs(run_dir) == [tmp_path]
    with pytest.raises(ConfigError, match=r"dataset\._target_=builtins\.open"):
        check_trusted(run_dir, "resume")


def test_the_flag_is_taken_out_of_the_arguments():
    assert trust_argument(["seed=1", "trust_run_dir=true"]) == (True, ["seed=1"])
    assert trust_argument(["trust_run_dir=false"]) == (False, [])
    with pytest.raises(ConfigError, match="trust_run_dir=yes is invalid"):
        trust_argument(["trust_run_dir=yes"])
