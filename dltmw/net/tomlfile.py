"""Typed TOML files: read one, validate it against a pydantic model, say what is wrong and where.

Every file a person writes or edits — a topology (`net/topology.py`), a node's `node.toml`
(`runtime/config_file.py`) — is validated here, once, at the edge. The rules a reader must keep:

* Unknown keys are errors, never ignored: a misspelt key (`endorsment_policy`, `[limit]`) would
  otherwise fall back to its default without a word. Models derive from `Strict`.
* An error names the file, the key path (`channels[0].batch.timeout_ms`) and the problem, one
  line per problem, so `dltmw init` and a node's start-up can print it without a traceback.

Why pydantic (v2): the models double as the documentation (`docs/config.md` is generated from
their fields, types, defaults and descriptions: `dltmw/cli/config_doc.py`), error locations
come with every error, stdlib dataclasses used as section types (`Limits`, `Keepalive`) are
validated field by field with their own `__post_init__` checks, and it is the most widely kept
validation library for Python. msgspec is faster, but files are read once per process.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

M = TypeVar("M", bound=BaseModel)
UNKNOWN = frozenset({"extra_forbidden", "unexpected_keyword_argument"})


class Strict(BaseModel):
    """A section of a typed file: unknown keys refused, values never changed after loading."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class FileError(ValueError):
    """A file that cannot be read or does not match its model; the message says where and why."""

    def __init__(self, path: Path, problems: list[str]) -> None:
        super().__init__(f"{path}: " + "; ".join(problems))
        self.path = path
        self.problems = problems


def key_path(loc: tuple[int | str, ...]) -> str:
    """`("channels", 0, "batch")` -> `channels[0].batch`."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


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


def read_toml(path: Path) -> dict[str, Any]:
    """The parsed file; FileError when it is missing or not TOML."""
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except OSError as exc:
        raise FileError(path, [exc.strerror or str(exc)]) from exc
    except tomllib.TOMLDecodeError as exc:
        raise FileError(path, [f"not valid TOML: {exc}"]) from exc


def validate(path: Path, raw: dict[str, Any], model: type[M]) -> M:
    """`raw` (read from `path`) as `model`; FileError listing every problem."""
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise FileError(path, problems_of(exc)) from exc


def load(path: Path, model: type[M]) -> M:
    """Read and validate a TOML file."""
    return validate(path, read_toml(path), model)
