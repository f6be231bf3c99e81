"""Layers: which package of dltmw may import which — checked for every module, every import.

The table is the architecture (docs/architecture.md): imports point down only, so a change that
makes a servicer depend on a concrete role, the SDK on the node runtime, or a store on a role
fails here rather than in review. The walk reads every import in the AST (module level, inside
functions and under `if TYPE_CHECKING:` alike). Module-level import cycles are refused too.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

import dltmw

ROOT = Path(dltmw.__file__).parent

# package -> the dltmw packages it may import (besides itself). `v1` is the generated wire code.
LAYERS: dict[str, frozenset[str]] = {
    "v1": frozenset(),
    "core": frozenset({"v1"}),
    # the contract SDK: what user contracts import, plus the package loader (pure but for
    # importlib), the packager (reads a directory) and the test helper; nodes use it to run them
    "contract_sdk": frozenset({"core", "v1"}),
    "contracts": frozenset({"core", "contract_sdk", "v1"}),
    "aio": frozenset({"core", "v1"}),
    "ledger": frozenset({"core", "aio", "v1"}),
    "net": frozenset({"core", "aio", "v1"}),
    "rpc": frozenset({"core", "aio", "net", "v1"}),
    "runtime": frozenset(
        {"core", "contract_sdk", "contracts", "aio", "ledger", "net", "rpc", "v1"}
    ),
    # the simulator hosts whole networks: nodes (runtime), their material (pki), clients (client)
    "sim": frozenset(
        {"core", "contracts", "aio", "ledger", "net", "rpc", "runtime", "pki", "client", "v1"}
    ),
    "client": frozenset({"core", "aio", "net", "rpc", "v1"}),
    # the embedding SDK: typed clients over `client`, and whole networks in the caller's process
    # (`pki` makes their material, `runtime` runs their nodes); `contracts` for the bus's limits
    "sdk": frozenset({"core", "contracts", "aio", "net", "rpc", "client", "pki", "runtime", "v1"}),
    # `contracts`: init installs the built-in contracts' packages and names them in block 0
    "pki": frozenset({"core", "contracts", "net", "v1"}),
    "ops": frozenset({"runtime", "core", "net", "v1"}),
    # `ledger`: the large-ledger generator writes an orderer's blocks through the ledger's own
    # commit (bench/bigledger.py), byte for byte what the orderer writes
    "bench": frozenset(
        {"core", "contracts", "aio", "net", "rpc", "client", "pki", "ops", "runtime", "sdk", "v1"}
        | {"ledger"}
    ),
    "cli": frozenset(
        {"core", "contract_sdk", "contracts", "aio", "net", "rpc", "client", "pki", "ops"}
        | {"runtime", "bench", "ledger", "sim", "v1"}
    ),
    "": frozenset({"sdk", "client", "core", "v1"}),  # dltmw/__init__.py: the embedding API
    "__main__": frozenset({"cli"}),  # `python -m dltmw`: the command line
}


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT.parent).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    """Absolute dltmw module names imported by the module at `path`."""
    return imports_of(
        path.read_text(encoding="utf-8"), _module_name(path), path.name == "__init__.py"
    )


def imports_of(source: str, module: str, is_package: bool = False) -> set[str]:
    """Absolute dltmw module names imported by `source`, the text of `module` (relative imports
    resolved; for `from m import n` both m and m.n, since n may be a module)."""
    package = module if is_package else module.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.startswith("dltmw"))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = parts[: len(parts) - node.level + 1]
                mod = ".".join([*base, node.module] if node.module else base)
            else:
                mod = node.module or ""
            if mod.startswith("dltmw"):
                out.add(mod)
                out.update(f"{mod}.{a.name}" for a in node.names)
    return out


def _package(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


MODULES = {
    _module_name(p): p
    for p in sorted(ROOT.rglob("*.py"))
    if "v1" not in p.relative_to(ROOT).parts[:1]
}


def violations() -> set[tuple[str, str]]:
    """(module, imported package) pairs that the table does not allow."""
    found: set[tuple[str, str]] = set()
    for module, path in MODULES.items():
        mine = _package(module)
        for imported in _imports(path):
            theirs = _package(imported)
            if theirs and theirs != mine and theirs not in LAYERS[mine]:
                found.add((module, theirs))
    return found


def test_every_package_has_a_row() -> None:
    packages = {_package(m) for m in MODULES}
    assert packages <= set(LAYERS), f"packages without a row: {packages - set(LAYERS)}"


def test_imports_point_down_only() -> None:
    found = sorted(violations())
    assert not found, "imports against the layer table:\n" + "\n".join(
        f"{m} -> {p}" for m, p in found
    )


def _cycles() -> list[list[str]]:
    """Strongly connected components (size > 1) of the module import graph (Tarjan)."""
    graph: dict[str, set[str]] = defaultdict(set)
    for module, path in MODULES.items():
        graph[module] = {m for m in _imports(path) if m in MODULES and m != module}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_import_cycles() -> None:
    assert _cycles() == []


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        (
            "from dltmw.runtime.node import Node\n",
            {"dltmw.runtime.node", "dltmw.runtime.node.Node"},
        ),
        ("def f():\n    import dltmw.client\n", {"dltmw.client"}),
        (
            "if TYPE_CHECKING:\n    from dltmw.ledger import sqlite\n",
            {"dltmw.ledger", "dltmw.ledger.sqlite"},
        ),
        ("from ..core import errors\n", {"dltmw.core", "dltmw.core.errors"}),
        ("from . import status\n", {"dltmw.rpc", "dltmw.rpc.status"}),
        ("import json\nfrom grpc import aio\n", set()),
    ],
    ids=[
        "from-import",
        "import-inside-a-function",
        "import-under-type-checking",
        "relative-import-from-parent",
        "relative-import-from-own-package",
        "ignores-other-packages",
    ],
)
def test_import_reader(source: str, expected: set[str]) -> None:
    assert imports_of(source, "dltmw.rpc.x") == expected
