"""Typed TOML files validated against pydantic (v2) models: the topology (`net/topology.py`).

Why pydantic here: the models double as the documentation (`docs/config.md` is generated from
their fields, types, defaults and descriptions: `dltmw/cli/config_doc.py`), error locations come
with every error, and it is the most widely kept validation library for Python. msgspec is
faster, but files are read once per process. Only `dltmw init` and the CLI read a topology; a
node process reads its `node.toml` with `net/tomltable.py` and never imports pydantic (its cost
there: `tomltable`'s docstring). The shared rules (unknown keys refused, every problem with its
key path) are `net/tomlfile.py`'s.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from dltmw.net.tomlfile import FileError, key_path, read_toml

M = TypeVar("M", bound=BaseModel)
UNKNOWN = frozenset({"extra_forbidden", "unexpected_keyword_argument"})


class Strict(BaseModel):
    """A section of a typed file: unknown keys refused, values never changed after loading."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def problems_of(error: ValidationError) -> list[str]:
    """One readable line per problem of a validation error."""
    lines = []
    for e in error.errors():
        where = key_path(tuple(e["loc"]))
        if e["type"] in UNKNOWN:
            lines.append(f"{where}: unknown key")
        else:
            lines.append(f"{where}: {e['msg'].removeprefix('Value error, ')}")
    return lines


def validate(path: Path, raw: dict[str, Any], model: type[M]) -> M:
    """`raw` (read from `path`) as `model`; FileError listing every problem."""
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise FileError(path, problems_of(exc)) from exc


def load(path: Path, model: type[M]) -> M:
    """Read and validate a TOML file."""
    return validate(path, read_toml(path), model)
