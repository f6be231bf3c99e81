"""node.toml's tables without pydantic (`net/tomltable.py`): strict types, unknown keys refused
with their path, every problem listed, bounds held also by tables built in code."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pytest

from dltmw.net import tomltable
from dltmw.net.tomlfile import FileError
from dltmw.net.tomltable import check_bounds, key
from dltmw.runtime.config_file import JetStreamTable, NotaryTable, ValidationTable


@dataclass(frozen=True)
class Inner:
    """A nested table."""

    size: int = key(1, ge=1, description="a size")


@dataclass(frozen=True)
class Outer:
    """A file of a few key types."""

    name: str = key(min_length=1, description="required")
    ratio: float = key(0.5, gt=0, le=1)
    mode: Literal["a", "b"] = key("a")
    tags: list[str] = key(default_factory=list)
    on: bool = key(False)
    path: str | None = key(None)
    inner: Inner = key(default_factory=Inner)

    def __post_init__(self) -> None:
        check_bounds(self)
        if self.mode == "b" and not self.tags:
            raise ValueError("mode b needs tags")


def _problems(raw: dict[str, object]) -> list[str]:
    with pytest.raises(FileError) as refused:
        tomltable.build(raw, Outer)
    return refused.value.problems


def test_a_good_table_gets_its_values_and_defaults() -> None:
    built = tomltable.build({"name": "n", "ratio": 1, "tags": ["x"], "inner": {"size": 3}}, Outer)
    assert built == Outer(name="n", ratio=1.0, tags=["x"], inner=Inner(3))
    assert isinstance(built.ratio, float)  # an integer is accepted where a float is declared
    assert tomltable.build({"name": "n"}, Outer).inner == Inner(1)


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        ({"name": "n", "nmae": "x"}, "nmae: unknown key"),
        ({"name": "n", "inner": {"sise": 2}}, "inner.sise: unknown key"),
        ({}, "name: required key missing"),
        ({"name": ""}, "name: must have at least 1"),
        ({"name": "n", "ratio": 0}, "ratio: must be > 0"),
        ({"name": "n", "ratio": 2.5}, "ratio: must be <= 1"),
        ({"name": "n", "ratio": "0.5"}, "ratio: must be of type float"),
        ({"name": "n", "inner": {"size": True}}, "inner.size: must be of type int"),
        ({"name": "n", "inner": {"size": 0}}, "inner.size: must be >= 1"),
        ({"name": "n", "on": 1}, "on: must be of type bool"),
        ({"name": "n", "mode": "c"}, "mode: must be one of ['a', 'b']"),
        ({"name": "n", "tags": "x"}, "tags: must be an array"),
        ({"name": "n", "tags": [1]}, "tags[0]: must be of type str"),
        ({"name": "n", "path": 7}, "path: must be of type str"),
        ({"name": "n", "inner": 4}, "inner: must be a table"),
        ({"name": "n", "mode": "b"}, "(top level): mode b needs tags"),
    ],
    ids=[
        "unknown-key",
        "unknown-nested-key",
        "missing-required",
        "too-short",
        "gt",
        "le",
        "string-for-float",
        "bool-for-int",
        "ge-nested",
        "int-for-bool",
        "not-a-literal",
        "not-an-array",
        "bad-item",
        "bad-optional",
        "not-a-table",
        "table-rule",
    ],
)
def test_a_bad_table_is_refused_with_its_key_path(raw: dict[str, object], problem: str) -> None:
    assert any(p.startswith(problem) for p in _problems(raw)), _problems(raw)


def test_every_problem_is_listed_at_once() -> None:
    problems = _problems({"nmae": "x", "ratio": 0, "inner": {"size": 0}})
    assert len(problems) == 4, problems  # unknown, missing, two bounds


def test_a_file_is_read_and_its_path_named(tmp_path: Path) -> None:
    path = tmp_path / "t.toml"
    path.write_text('name = "n"\n[inner]\nsize = 2\n')
    assert tomltable.load(path, Outer).inner.size == 2
    path.write_text('name = "n"\nratio = -1\n')
    with pytest.raises(FileError, match=r"t\.toml: ratio: must be > 0"):
        tomltable.load(path, Outer)


@pytest.mark.parametrize(
    "build",
    [
        lambda: NotaryTable(switch_interval_ms=0),
        lambda: NotaryTable(gc_young_threshold=10),
        lambda: ValidationTable(verify_threads=-1),
        lambda: JetStreamTable(replicas=9),
    ],
    ids=["notary-switch-interval", "notary-young-threshold", "verify-threads", "replicas"],
)
def test_node_tables_built_in_code_keep_their_bounds(build) -> None:
    with pytest.raises(ValueError, match="must be"):
        build()
