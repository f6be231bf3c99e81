"""Typed tables of a TOML file a node reads at start (`node.toml`), without pydantic.

A table is a frozen stdlib dataclass; each key is a field whose type says what the file may hold
and whose `key(...)` metadata gives its description (`docs/config.md` is generated from it) and
its bounds. `load(path, Table)` reads the file and builds the table, nested tables included, with
the rules of every typed file of dltmw (`net/tomlfile.py`): an unknown key is refused with its
path, never ignored; every problem is reported, one line each, `key.path: what is wrong`.

Why not pydantic, which validates the topology (`net/tomlmodel.py`): a node process would
import it only to read this one file, once. Importing pydantic and building the schemas of
node.toml's tables cost every node ~9 MB of resident memory for its whole life (of a peer's
~80 MB idle; issue 18 asks ≤ 100 MB at the peak, benchmarks/RESULTS.md 2026-12-02 "node
processes without pydantic"). The types node.toml uses are few and plain, so the check below
covers them all and refuses any other type at the first load (a schema error, not user input).

The rules of a type, deliberately strict (a file is written by `dltmw init` or a person; a
quoted number is more likely a mistake than an intent): `str`, `bool`, `int` (not a bool) take
only their own TOML type; `float` also takes an integer; `Literal[...]` one of its values;
`list[T]` an array of T; `T | None` a T (TOML has no null, None is only a default); a dataclass a
table. Bounds (`ge`, `gt`, `le`, `min_length`, `max_length`) are checked at load with the key's
path, and again when a table is built in code (`check_bounds` from its `__post_init__`); rules
that span keys are the dataclass's own `__post_init__` (a ValueError, reported at the table).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from dltmw.net.tomlfile import FileError, key_path, read_toml

T = TypeVar("T")
SPEC = "dltmw.key"  # the dataclass field metadata entry holding a key's Spec


@dataclass(frozen=True)
class Spec:
    """What a key means (for docs/config.md) and the bounds of its value."""

    description: str = ""
    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    min_length: int | None = None
    max_length: int | None = None

    def problem(self, value: Any) -> str | None:
        """Why `value` is out of bounds, or None."""
        if isinstance(value, int | float) and not isinstance(value, bool):
            if self.ge is not None and value < self.ge:
                return f"must be >= {self.ge}"
            if self.gt is not None and value <= self.gt:
                return f"must be > {self.gt}"
            if self.le is not None and value > self.le:
                return f"must be <= {self.le}"
        if isinstance(value, str | list):
            if self.min_length is not None and len(value) < self.min_length:
                return f"must have at least {self.min_length} item(s) or character(s)"
            if self.max_length is not None and len(value) > self.max_length:
                return f"must have at most {self.max_length} item(s) or character(s)"
        return None


def key(
    default: Any = dataclasses.MISSING,
    *,
    default_factory: Callable[[], Any] | None = None,
    description: str = "",
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    min_length: int | None = None,
    max_length: int | None = None,
) -> Any:
    """A key of a table: a dataclass field with its Spec (no default: the key is required)."""
    spec = Spec(description, ge, gt, le, min_length, max_length)
    if default_factory is not None:
        return dataclasses.field(default_factory=default_factory, metadata={SPEC: spec})
    return dataclasses.field(default=default, metadata={SPEC: spec})


def spec_of(field: dataclasses.Field[Any]) -> Spec:
    """The Spec of a table's field (an empty one for a plain dataclass field)."""
    spec = field.metadata.get(SPEC)
    return spec if isinstance(spec, Spec) else Spec()


def check_bounds(table: Any) -> None:
    """ValueError naming the first key of `table` (built in code) out of its bounds."""
    for f in dataclasses.fields(table):
        problem = spec_of(f).problem(getattr(table, f.name))
        if problem is not None:
            raise ValueError(f"{f.name} {problem}")


def load(path: Path, table: type[T]) -> T:
    """Read `path` and build `table` from it; FileError listing every problem."""
    problems: list[str] = []
    built = _table(read_toml(path), table, (), problems)
    if problems:
        raise FileError(path, problems)
    return typing.cast(T, built)


def build(raw: dict[str, Any], table: type[T], where: Path = Path("(in memory)")) -> T:
    """`table` from an already parsed document (tests, generated files)."""
    problems: list[str] = []
    built = _table(raw, table, (), problems)
    if problems:
        raise FileError(where, problems)
    return typing.cast(T, built)


def _table(raw: Any, table: type[Any], loc: tuple[int | str, ...], problems: list[str]) -> Any:
    """An instance of the dataclass `table`, or None after adding its problems."""
    if not isinstance(raw, dict):
        problems.append(f"{key_path(loc)}: must be a table")
        return None
    hints = typing.get_type_hints(table)
    fields = {f.name: f for f in dataclasses.fields(table) if f.init}
    before = len(problems)
    problems += [f"{key_path((*loc, k))}: unknown key" for k in raw if k not in fields]
    values: dict[str, Any] = {}
    for name, f in fields.items():
        if name not in raw:
            missing = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
            if missing:
                problems.append(f"{key_path((*loc, name))}: required key missing")
            continue
        value = _value(raw[name], hints[name], (*loc, name), problems)
        problem = spec_of(f).problem(value)
        if problem is not None:
            problems.append(f"{key_path((*loc, name))}: {problem}")
        values[name] = value
    if len(problems) > before:
        return None
    try:
        return table(**values)
    except ValueError as exc:  # the table's own rules (__post_init__)
        problems.append(f"{key_path(loc)}: {exc}")
        return None


def _value(raw: Any, tp: Any, loc: tuple[int | str, ...], problems: list[str]) -> Any:
    """`raw` checked against the type `tp` (module docstring); adds a problem when it fails."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        arms = [a for a in args if a is not type(None)]
        if len(arms) != 1:
            raise TypeError(f"{key_path(loc)}: unsupported type {tp!r} in a table")
        return _value(raw, arms[0], loc, problems)
    if origin is typing.Literal:
        if raw in args and type(raw) in {type(a) for a in args}:
            return raw
        problems.append(f"{key_path(loc)}: must be one of {list(args)!r}, not {raw!r}")
        return None
    if origin is list:
        if not isinstance(raw, list):
            problems.append(f"{key_path(loc)}: must be an array")
            return None
        return [_value(item, args[0], (*loc, i), problems) for i, item in enumerate(raw)]
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        return _table(raw, tp, loc, problems)
    return _scalar(raw, tp, loc, problems)


def _scalar(raw: Any, tp: Any, loc: tuple[int | str, ...], problems: list[str]) -> Any:
    """A str, bool, int or float key's value (an integer is accepted as a float)."""
    if tp is float and isinstance(raw, int) and not isinstance(raw, bool):
        return float(raw)
    if tp in (str, bool, int, float):
        if isinstance(raw, tp) and (tp is bool or not isinstance(raw, bool)):
            return raw
        problems.append(f"{key_path(loc)}: must be of type {tp.__name__}, not {raw!r}")
        return None
    raise TypeError(f"{key_path(loc)}: unsupported type {tp!r} in a table")
