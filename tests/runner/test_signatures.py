"""Schemas read from the constructors' source (:mod:`hpo_cli.runner.config.signatures`, no torch)
are the schemas the imported constructors give, for every hpo-cli YAML file; what the reader
cannot read is :class:`Unreadable`, and the schema then comes from the imported target."""

from __future__ import annotations

import dataclasses
import textwrap
from pathlib import Path

import pytest
import yaml
from hydra.utils import get_object

from hpo_cli.runner.config import schemas, signatures
from hpo_cli.runner.config.schemas import CONF_DIR, schema_for, solver_schema, target_schema

TARGETS = sorted(
    {
        (path.parent.name, node["_target_"])
        for path in CONF_DIR.glob("*/*.yaml")
        if "_target_" in (node := yaml.safe_load(path.read_text()) or {})
        and path.parent.name != "experiment"
    }
)


def described(schema: type) -> tuple[str, list[tuple[str, str, object]]]:
    """A schema's name and its fields: (name, type, default or the factory's value)."""
    fields = [
        (
            f.name,
            str(f.type),
            f.default if f.default is not dataclasses.MISSING else f.default_factory(),
        )
        for f in dataclasses.fields(schema)
    ]
    return schema.__name__, fields


def test_every_target_is_read():
    assert len(TARGETS) > 20


@pytest.mark.parametrize(("group", "target"), TARGETS)
def test_the_schema_read_from_source_is_the_imported_constructors(group, target):
    signatures.parameters(target)  # readable: no fallback to the import
    imported = get_object(target)
    expected = solver_schema(imported) if group == "solver" else schema_for(imported)
    assert described(target_schema(target, group)) == described(expected)


@pytest.fixture
def package(tmp_path, monkeypatch):
    """A package ``hpo_cli.mine`` under a root of its own, for the reader only."""
    root = tmp_path / "root"
    (root / "hpo_cli" / "mine").mkdir(parents=True)
    monkeypatch.setattr(signatures, "ROOT", root)
    signatures.module_tree.cache_clear()
    yield root / "hpo_cli" / "mine"
    signatures.module_tree.cache_clear()


def write(folder: Path, name: str, source: str) -> None:
    (folder / f"{name}.py").write_text(textwrap.dedent(source))


def read(target: str) -> list[tuple[str, object, object]]:
    return [(p.name, p.annotation, p.default) for p in signatures.parameters(target)]


def test_dataclass_fields_follow_their_dataclass_bases(package):
    write(
        package,
        "base",
        """
        from dataclasses import dataclass, field
        SCALE = 2.0

        @dataclass(frozen=True)
        class Base:
            scale: float = SCALE
            sizes: list[int] = field(default_factory=lambda: [1, 2])
        """,
    )
    write(
        package,
        "solver",
        """
        from dataclasses import dataclass, field
        from typing import ClassVar
        from .base import Base

        @dataclass(frozen=True)
        class Solver(Base):
            shared: ClassVar[int] = 3
            steps: int | None = None
            scale: float = 1.0
            hidden: int = field(default=0, init=False)
        """,
    )
    assert read("hpo_cli.mine.solver.Solver") == [
        ("scale", float, 1.0),
        ("sizes", list[int], [1, 2]),
        ("steps", int | None, None),
    ]


def test_init_parameters_and_keyword_only_ones(package):
    write(
        package,
        "model",
        """
        class Model(Module):
            def __init__(self, shape, outputs: int, width: int = 8, *, act: str = "relu"):
                pass

        class Wider(Model):
            pass
        """,
    )
    expected = [("width", int, 8), ("act", str, "relu")]
    assert read("hpo_cli.mine.model.Model") == expected
    assert read("hpo_cli.mine.model.Wider") == expected


@pytest.mark.parametrize(
    "source",
    [
        "def load(n: int = 2**10): ...",  # a computed default
        "def load(n: Size = 1): ...",  # a class of its own
        "from torch.nn import Linear as load",  # outside hpo-cli
        "class load(Module): ...",  # __init__ inherited from outside hpo-cli
    ],
)
def test_what_cannot_be_read_is_unreadable(package, source):
    write(package, "odd", source)
    with pytest.raises(signatures.Unreadable):
        signatures.parameters("hpo_cli.mine.odd.load")


def test_an_unreadable_target_is_imported(monkeypatch):
    """The fallback: the schema of the imported constructor."""

    def unreadable(target: str) -> list:
        raise signatures.Unreadable(target)

    monkeypatch.setattr(schemas.signatures, "parameters", unreadable)
    target = "hpo_cli.models.mlp.MLP"
    assert described(target_schema(target, "model")) == described(schema_for(get_object(target)))
