"""A user's own config directory (``hydra.searchpath``), for the tests of outside models, data
and experiments (tests/runner/test_own_problem.py, tests/data/test_streaming.py,
tests/test_examples.py)."""

from __future__ import annotations

import textwrap
from pathlib import Path

from hydra import compose, initialize_config_module

from hpo_cli.runner.config.schemas import register_configs


def conf_dir(root: Path, files: dict[str, str]) -> Path:
    """A user's config directory: ``files`` maps 'group/name.yaml' to its text."""
    for name, text in files.items():
        path = root / "conf" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return root / "conf"


def compose_with(conf: Path, *overrides: str):
    register_configs()
    with initialize_config_module("hpo_cli.conf", version_base="1.3"):
        return compose("config", overrides=[f"hydra.searchpath=[file://{conf}]", *overrides])
