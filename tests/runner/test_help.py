"""``--help`` tells the truth: every value it shows, typed back on the command line, is the value
the composed configuration holds (the top-level keys, and the keys of each group's default
option); docs/configuration.md is what its generator writes today."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_module
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf

from hpo_cli.hpo_hessian import cli as hessian_cli
from hpo_cli.runner.cli import entry
from hpo_cli.runner.cli.help import REFERENCE, REGENERATE, reference_markdown
from hpo_cli.runner.config.schemas import GROUP_SCHEMAS, RunConfig
from tests.support.cli_runs import call_main
from tests.support.composed import run_config
from tests.support.option_configs import GROUPS, option_node

ROOT = Path(__file__).resolve().parents[2]


def bracketed(text: str) -> str:
    """The text inside the first bracket pair of ``text``, nested brackets kept (``[[csv]]``)."""
    start, depth = text.index("["), 0
    for position in range(start, len(text)):
        depth += {"[": 1, "]": -1}.get(text[position], 0)
        if depth == 0:
            return text[start + 1 : position]
    raise AssertionError(f"unbalanced brackets in {text!r}")


def typed_back(shown: str) -> object:
    """What ``key=<shown>`` on the command line sets the key to (Hydra's override grammar)."""
    return OverridesParser.create().parse_override(f"key={shown}").value()


def shown_values(text: str, header: str | None = None) -> dict[str, object]:
    """key → the value shown for it, in the help's ``Keys`` block or the block under
    ``header`` (a group's ``solver=cg (keys ...):``)."""
    blocks = text.split("\n\n")
    if header is None:
        (block,) = [b for b in blocks if b.startswith("Keys (")]
    else:
        (block,) = [b for b in blocks if b.startswith(header)]
    values = {}
    for line in block.splitlines()[1:]:
        key, rest = line.strip().split(" ", 1)
        values[key] = typed_back(bracketed(rest))
    return values


def leaves(node: DictConfig, prefix: str = "") -> dict[str, object]:
    """Every key of ``node`` (a block's keys as ``block.key``; ``_target_`` aside), its value."""
    flat = {}
    for key, value in OmegaConf.to_container(node, resolve=False).items():
        if isinstance(value, dict):
            flat.update({f"{prefix}{key}.{k}": v for k, v in value.items() if k != "_target_"})
        elif key != "_target_":
            flat[f"{prefix}{key}"] = value
    return flat


def equal(shown: object, value: object) -> bool:
    """Equal as values: ``1e-06`` shown is the float 1e-06, an int shown for a float key too."""
    if isinstance(value, float) and isinstance(shown, int | float):
        return float(shown) == value
    if isinstance(value, list) and isinstance(shown, list) and len(value) == len(shown):
        return all(equal(s, v) for s, v in zip(shown, value, strict=True))
    return shown == value


def disagreements(shown: dict[str, object], expected: dict[str, object]) -> list[str]:
    assert set(shown) == set(expected), "help lists other keys than the composed configuration"
    return [
        f"{key}: help shows {shown[key]!r}, a run uses {expected[key]!r}"
        for key in expected
        if not equal(shown[key], expected[key])
    ]


def run_help(*arguments: str) -> str:
    result = call_main(entry.main, "hpo-run", [*arguments, "--help"])
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.fixture(scope="module")
def hpo_run_help() -> str:
    """``hpo-run --help solver model ...``: the top-level keys and every group's default."""
    return run_help(*GROUPS)


def test_help_shows_the_top_level_values_a_run_uses(hpo_run_help):
    cfg = run_config()
    expected = leaves(OmegaConf.masked_copy(cfg, [k for k in cfg if k not in GROUPS]))
    assert disagreements(shown_values(hpo_run_help), expected) == []


@pytest.mark.parametrize("group", GROUPS)
def test_help_shows_the_keys_of_each_groups_default_option(hpo_run_help, group):
    default = next(
        line.split("=", 1)[1].split(" ", 1)[0]
        for line in hpo_run_help.split("\n\n")
        if line.startswith(f"{group}=")
    )
    shown = shown_values(hpo_run_help, f"{group}={default} ")
    assert disagreements(shown, leaves(option_node(group, default))) == []
    defaults = OmegaConf.load(ROOT / "hpo_cli" / "conf" / "config.yaml").defaults
    assert {group: default} in OmegaConf.to_container(defaults)


def test_a_chosen_option_and_overrides_are_what_help_shows():
    text = run_help("solver=cg", "solver.max_iter=7", "eval_every=3")
    assert shown_values(text, "solver=cg ")["max_iter"] == 7
    assert shown_values(text)["eval_every"] == 3
    cg = shown_values(text, "solver=cg ")
    assert disagreements(cg, leaves(run_config("solver=cg", "solver.max_iter=7").solver)) == []


def test_a_group_key_has_its_constructors_description():
    text = run_help("solver=cg")
    assert "damping        [0.1] μ ≥ 0 added to the diagonal" in text  # conf/solver/cg.yaml's


def test_a_help_that_does_not_compose_is_one_line_and_exit_2():
    result = call_main(entry.main, "hpo-run", ["solver=newton", "--help"])
    assert result.returncode == 2 and "Could not find 'solver/newton'" in result.stderr


def test_hpo_hessian_help_shows_the_values_it_uses():
    result = call_main(hessian_cli.main, "hpo-hessian", ["--help", "model"])
    assert result.returncode == 0, result.stderr
    with initialize_config_module("hpo_cli.conf", version_base="1.3"):
        cfg = compose("hessian", [])
    groups = (*hessian_cli.HESSIAN_GROUPS, "experiment", "hessian_experiment")
    expected = leaves(OmegaConf.masked_copy(cfg, [k for k in cfg if k not in groups]))
    assert disagreements(shown_values(result.stdout), expected) == []
    assert disagreements(shown_values(result.stdout, "model=mlp "), leaves(cfg.model)) == []


def test_the_optimizer_schemas_defaults_are_torchs():
    """The hand-written optimiser schemas restate no default of their own: each is torch's."""
    for schemas in GROUP_SCHEMAS.values():
        for schema in schemas.values():
            target = getattr(schema, "_target_", "")
            if not target.startswith("torch.optim."):
                continue
            parameters = inspect.signature(getattr(torch.optim, target.split(".")[-1])).parameters
            for key, value in OmegaConf.to_container(OmegaConf.structured(schema)).items():
                if key != "_target_":
                    default = parameters[key].default
                    default = list(default) if isinstance(default, tuple) else default
                    assert value == default, (
                        f"{schema.__name__}.{key}: {value} != torch's {default}"
                    )


def test_the_configuration_reference_is_up_to_date():
    written = (ROOT / REFERENCE).read_text()
    assert written == reference_markdown(), f"{REFERENCE} is stale: run {REGENERATE}"


def test_the_reference_lists_what_a_resume_may_change():
    from hpo_cli.runner.cli.preflight import RESUME_MAY_CHANGE

    text = (ROOT / REFERENCE).read_text().split("## What a resume may change", 1)[1]
    assert all(f"- `{key}`" in text for key in RESUME_MAY_CHANGE)


@pytest.mark.parametrize(
    ("config_name", "schema"), [("config", RunConfig), ("hessian", hessian_cli.HessianConfig)]
)
def test_the_top_level_yaml_restates_no_schema_default(config_name, schema):
    """conf/config.yaml and conf/hessian.yaml choose groups; a top-level key's default is its
    schema field's, so a key they set must differ from it (else it is a second copy)."""
    content = OmegaConf.load(ROOT / "hpo_cli" / "conf" / f"{config_name}.yaml")
    defaults = OmegaConf.to_container(OmegaConf.structured(schema))
    copies = [
        key
        for key in content
        if key not in ("defaults", "hydra") and content[key] == defaults.get(key, "<none>")
    ]
    assert copies == [], f"conf/{config_name}.yaml restates the schema's defaults of {copies}"
