"""Layering: the pure core (dltmw/core) never imports I/O, clocks or randomness.

Every module under dltmw/core must be a deterministic, sans-I/O library, so the simulator and
every node compute the same results. The check walks the AST of each file, so imports inside
functions and `if TYPE_CHECKING:` blocks are caught too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import dltmw.core

# threading is allowed: identity and envelope memo caches shared by verify-pool threads take a
# lock (pure in effect). Everything below reads a clock, randomness, files, sockets or logs.
FORBIDDEN = frozenset(
    {"asyncio", "grpc", "aiosqlite", "sqlite3", "time", "random", "os", "socket", "secrets"}
    | {"subprocess", "logging", "tempfile", "shutil"}
)
CORE = Path(dltmw.core.__file__).parent
CORE_FILES = sorted(CORE.rglob("*.py"))


def forbidden_imports(source: str, filename: str = "<string>") -> list[str]:
    """Forbidden modules imported by `source`, as "line: module"."""
    found: list[str] = []
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        found.extend(f"{node.lineno}: {n}" for n in names if n.split(".")[0] in FORBIDDEN)
    return found


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("import os\nfrom asyncio import sleep\n", ["1: os", "2: asyncio"]),
        ("import os.path\n", ["1: os.path"]),
        ("import json, time as t\n", ["1: time"]),
        ("from grpc.aio import server\n", ["1: grpc.aio"]),
        ("def f():\n    import random\n", ["2: random"]),
        ("import hashlib\nfrom dataclasses import dataclass\nimport osmosis\n", []),
        ("from . import os\nfrom .time import x\n", []),
    ],
    ids=[
        "flags-import-and-from-import",
        "flags-submodule-import",
        "flags-one-of-several-aliased-imports",
        "flags-from-submodule-import",
        "flags-import-inside-a-function",
        "allows-hashlib-dataclasses-and-lookalike-names",
        "allows-relative-imports-of-local-modules",
    ],
)
def test_detector(source: str, expected: list[str]) -> None:
    assert forbidden_imports(source) == expected


def test_core_package_is_found() -> None:
    names = {p.name for p in CORE_FILES}
    assert {"validation.py", "cutter.py", "block.py", "solo.py"} <= names
    assert {"effects.py", "committer.py", "pbft_orderer.py", "pbft_blocks.py", "blocks.py"} <= names


@pytest.mark.parametrize("path", CORE_FILES, ids=[str(p.relative_to(CORE)) for p in CORE_FILES])
def test_core_module_imports_no_io(path: Path) -> None:
    assert forbidden_imports(path.read_text(encoding="utf-8"), str(path)) == []
