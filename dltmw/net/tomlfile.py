"""Typed TOML files: read one, say what is wrong and where.

Every file a person writes or edits — a topology (`net/topology.py`, validated against pydantic
models: `net/tomlmodel.py`), a node's `node.toml` (`runtime/config_file.py`, frozen dataclasses:
`net/tomltable.py`) — is validated once, at the edge. The rules a reader must keep:

* Unknown keys are errors, never ignored: a misspelt key (`endorsment_policy`, `[limit]`) would
  otherwise fall back to its default without a word.
* An error names the file, the key path (`channels[0].batch.timeout_ms`) and the problem, one
  line per problem, so `dltmw init` and a node's start-up can print it without a traceback.

This module holds what both kinds share and imports neither pydantic nor anything heavy: a node
process imports it (`tests/integration/test_node_imports.py`).
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any


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


def read_toml(path: Path) -> dict[str, Any]:
    """The parsed file; FileError when it is missing or not TOML."""
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except OSError as exc:
        raise FileError(path, [exc.strerror or str(exc)]) from exc
    except tomllib.TOMLDecodeError as exc:
        raise FileError(path, [f"not valid TOML: {exc}"]) from exc
