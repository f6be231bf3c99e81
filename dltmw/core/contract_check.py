"""The install-time static check of a contract package: what its modules may import and use.

A contract must compute the same result on every endorser, from its inputs and the world state
alone. The check refuses, before anything of the package runs, every construct that would let it
see something else: an import outside `ALLOWED_MODULES` (time, random, os, socket, ...), the
builtins that do I/O or reach the interpreter (open, eval, exec, compile, __import__, globals,
print, ...), `hash`/`id` and sets (iteration order of a set of strings depends on the process's
hash seed), dunder names and attributes (`__class__`, `__globals__`: the ways out of the
namespace), private attributes of anything but `self`/`cls` (`collections._sys`), frame and code
attributes (`gi_frame.f_back.f_globals`), `getattr`-family calls with a computed or dunder name,
`str.format` fields that walk attributes (`"{0.gi_frame}".format(g)`),
and `global`/`nonlocal` (state carried across invocations differs between endorsers).

Every finding is reported, not only the first, as "what (kind at file:line)", so a refusal reads
as a to-do list. The loader (`contract_sdk/loader.py`) adds a second line of defence at run time
(restricted builtins, filtered module proxies). Together they make accidental nondeterminism
impossible and deliberate escape hard; they are not a sandbox against a hostile author (a
package is installed by a node's admin and approved per org, as Fabric's chaincode is trusted
code run by its peers).
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

SDK_MODULE = "dltmw.contract_sdk"
ALLOWED_MODULES = frozenset(
    {"__future__", "abc", "base64", "binascii", "bisect", "collections", "collections.abc"}
    | {"dataclasses", "decimal", "enum", "fractions", "functools", "hashlib", "heapq"}
    | {"itertools", "json", "math", "operator", "re", "string", "struct", "typing"}
    | {SDK_MODULE}
)
FORBIDDEN_NAMES = frozenset(
    {"open", "eval", "exec", "compile", "__import__", "globals", "locals", "vars", "dir"}
    | {"breakpoint", "input", "print", "exit", "quit", "help", "memoryview", "hash", "id"}
    | {"set", "frozenset", "copyright", "credits", "license"}
)
ATTRIBUTE_FUNCTIONS = frozenset({"getattr", "setattr", "delattr", "hasattr"})
FORBIDDEN_ATTRIBUTES = frozenset(
    {"gi_frame", "gi_code", "gi_yieldfrom", "cr_frame", "cr_code", "cr_await", "ag_frame"}
    | {"ag_code", "f_back", "f_globals", "f_locals", "f_builtins", "f_code", "tb_frame"}
    | {"tb_next", "with_traceback", "format_map"}
)
SELF_NAMES = frozenset({"self", "cls"})
FORMAT_FIELD = re.compile(r"\{([^{}:!]*)")  # the field name of each replacement field


@dataclass(frozen=True, order=True)
class Finding:
    """One construct the check refuses."""

    file: str
    line: int
    what: str
    kind: str

    def __str__(self) -> str:
        return f"{self.what} ({self.kind} at {self.file}:{self.line})"


def allowed_module(name: str) -> bool:
    """Whether a package may import the absolute module `name`."""
    return name in ALLOWED_MODULES or name.startswith(SDK_MODULE + ".")


def _dunder(name: str) -> bool:
    return name.startswith("__") and name.endswith("__") and len(name) > 4


class _Checker(ast.NodeVisitor):
    def __init__(self, file: str, local_modules: frozenset[str]) -> None:
        self.file = file
        self.local = local_modules
        self.found: list[Finding] = []

    def add(self, node: ast.AST, what: str, kind: str) -> None:
        self.found.append(Finding(self.file, getattr(node, "lineno", 0), what, kind))

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            if not allowed_module(alias.name):
                self.add(node, alias.name, "import")
            self._identifier(node, alias.asname)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        module = node.module or ""
        if node.level > 1:
            self.add(node, "." * node.level + module, "import beyond the package")
        elif node.level == 1:
            wanted = [module] if module else [a.name for a in node.names]
            for name in wanted:
                if name not in self.local:
                    self.add(node, f".{name}", "import not in the package")
        elif not allowed_module(module):
            self.add(node, module, "import")
        for alias in node.names:
            if alias.name == "*" or alias.name.startswith("_"):
                self.add(node, f"{module}.{alias.name}", "import of a private or star name")
            self._identifier(node, alias.asname)

    def _identifier(self, node: ast.AST, name: str | None) -> None:
        if name and (_dunder(name) or name.startswith("__dltmw")):
            self.add(node, name, "name")

    def visit_Name(self, node: ast.Name) -> None:
        if node.id in FORBIDDEN_NAMES or _dunder(node.id) or node.id.startswith("__dltmw"):
            self.add(node, node.id, "name")

    def visit_Attribute(self, node: ast.Attribute) -> None:
        attr = node.attr
        on_self = isinstance(node.value, ast.Name) and node.value.id in SELF_NAMES
        if attr in FORBIDDEN_ATTRIBUTES or (_dunder(attr) and attr != "__init__"):
            self.add(node, attr, "attribute")
        elif attr.startswith("_") and not on_self and not _dunder(attr):
            self.add(node, attr, "private attribute")
        self.generic_visit(node)

    def visit_Call(self, node: ast.Call) -> None:
        func = node.func
        if (
            isinstance(func, ast.Attribute)
            and func.attr == "format"
            and isinstance(func.value, ast.Constant)
            and isinstance(func.value.value, str)
            and any(("." in f or "[" in f) for f in FORMAT_FIELD.findall(func.value.value))
        ):  # "{0.gi_frame.f_globals}".format(g) walks attributes the check refuses by name
            self.add(node, "format field with attribute or index access", "format string")
        if isinstance(func, ast.Name) and func.id in ATTRIBUTE_FUNCTIONS:
            name = node.args[1] if len(node.args) > 1 else None
            literal = isinstance(name, ast.Constant) and isinstance(name.value, str)
            if not literal or name.value.startswith("_"):  # type: ignore[union-attr]
                self.add(node, func.id, "call with a computed or private name")
        self.generic_visit(node)

    def _def(self, node: ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) -> None:
        if node.name.startswith("__dltmw"):
            self.add(node, node.name, "name")
        self.generic_visit(node)

    visit_FunctionDef = visit_AsyncFunctionDef = visit_ClassDef = _def

    def visit_arg(self, node: ast.arg) -> None:
        self._identifier(node, node.arg)

    def visit_Set(self, node: ast.Set) -> None:
        self.add(node, "set display", "unordered iteration")
        self.generic_visit(node)

    def visit_SetComp(self, node: ast.SetComp) -> None:
        self.add(node, "set comprehension", "unordered iteration")
        self.generic_visit(node)

    def visit_Global(self, node: ast.Global) -> None:
        self.add(node, "global", "state across invocations")

    def visit_Nonlocal(self, node: ast.Nonlocal) -> None:
        self.add(node, "nonlocal", "state across invocations")


def check_module(file: str, source: str, local_modules: frozenset[str]) -> list[Finding]:
    """Findings in one module (`file` is its path in the package, e.g. "contract.py")."""
    try:
        tree = ast.parse(source, file)
    except SyntaxError as exc:
        return [Finding(file, exc.lineno or 0, f"syntax error: {exc.msg}", "parse")]
    checker = _Checker(file, local_modules)
    checker.visit(tree)
    return checker.found


def check_sources(files: Mapping[str, str]) -> list[Finding]:
    """Findings in every module of a package ({"contract.py": source, ...}), in file order."""
    local = frozenset(name.removesuffix(".py") for name in files)
    return sorted(f for name in sorted(files) for f in check_module(name, files[name], local))


def describe(findings: Iterator[Finding] | list[Finding]) -> str:
    """One line listing every finding."""
    return "; ".join(str(f) for f in findings)
