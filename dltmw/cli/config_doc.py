"""`docs/config.md`, generated from the models of the files people write: the topology
(`net/topology.py`) and `node.toml` (`runtime/config_file.py`).

`python -m dltmw.cli.config_doc` rewrites the page; `--check` fails when the committed page differs
(a unit test runs the check), so the page cannot drift from what the loader accepts.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import types
import typing
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from dltmw.net.tomltable import spec_of
from dltmw.net.topology import TopologyFile
from dltmw.runtime.config_file import NodeFile

PAGE = Path(__file__).resolve().parents[2] / "docs" / "config.md"
HEADER = """# Configuration files

Generated from the models by `python -m dltmw.cli.config_doc` — do not edit by hand (a test
checks that this page is current). Both files are TOML. Unknown tables and keys are errors that
name their path (e.g. `channels[0].endorsment_policy: unknown key`): a misspelt key never falls
back to its default. `dltmw init` validates the topology before it writes anything; a node
validates its `node.toml` at start and exits with status 2 on a problem.
"""


@dataclasses.dataclass(frozen=True)
class Row:
    """One key of a table."""

    key: str
    type: str
    default: str
    description: str


def _type_name(tp: Any) -> str:
    """A short, readable name of a field's type (Markdown-safe)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Annotated:
        return _type_name(args[0])
    if origin is typing.Literal:
        return " \\| ".join(f"`{a!r}`" for a in args)
    if origin is list:
        return f"list of {_type_name(args[0])}"
    if origin in (typing.Union, types.UnionType):
        named = [_type_name(a) for a in args if a is not type(None)]
        return " \\| ".join(named) + (" (optional)" if type(None) in args else "")
    return tp.__name__ if isinstance(tp, type) else str(tp)


def _default(info: FieldInfo) -> str:
    if info.default_factory is not None:
        value: Any = info.default_factory()  # type: ignore[call-arg]
    elif info.default is PydanticUndefined:
        return "required"
    else:
        value = info.default
    if isinstance(value, BaseModel) or dataclasses.is_dataclass(value):
        return "(table)"
    if isinstance(value, list) and value and isinstance(value[0], BaseModel):
        return "`" + repr([v.model_dump(exclude_defaults=True) for v in value]) + "`"
    return f"`{value!r}`" if value is not None else "none"


def _fields(model: Any) -> dict[str, FieldInfo]:
    """Field infos of a pydantic model (the topology) or of a table (`net/tomltable.py`)."""
    if isinstance(model, type) and issubclass(model, BaseModel):
        return dict(model.model_fields)
    hints = typing.get_type_hints(model)
    out = {}
    for f in dataclasses.fields(model):
        description = spec_of(f).description or None
        if f.default_factory is not dataclasses.MISSING:
            info = FieldInfo(
                annotation=hints[f.name], default_factory=f.default_factory, description=description
            )
        else:
            default = PydanticUndefined if f.default is dataclasses.MISSING else f.default
            info = FieldInfo(annotation=hints[f.name], default=default, description=description)
        out[f.name] = info
    return out


def _table_type(info: FieldInfo) -> Any | None:
    """The model a field holds (itself or as list items), if it is a table."""
    tp = info.annotation
    if typing.get_origin(tp) is list:
        tp = typing.get_args(tp)[0]
    is_model = isinstance(tp, type) and issubclass(tp, BaseModel)
    return tp if is_model or dataclasses.is_dataclass(tp) else None


def _section(title: str, model: Any, out: list[str]) -> None:
    doc = " ".join((model.__doc__ or "").split("\n\n")[0].split())  # its first paragraph
    rows, nested = [], []
    for name, info in _fields(model).items():
        table = _table_type(info)
        if table is not None:
            nested.append((name, info, table))
            continue
        rows.append(Row(name, _type_name(info.annotation), _default(info), info.description or ""))
    out += [f"### `{title}`", "", doc, ""]
    if rows:
        out += ["| key | type | default | meaning |", "|---|---|---|---|"]
        out += [f"| `{r.key}` | {r.type} | {r.default} | {r.description} |" for r in rows]
        out.append("")
    for name, info, table in nested:
        many = typing.get_origin(info.annotation) is list
        sub = f"[[{name}]]" if many and title == "(top level)" else f"{title}.{name}"
        if title == "(top level)" and not many:
            sub = f"[{name}]"
        if info.description:
            out += [f"*{sub}*: {info.description}", ""]
        _section(sub, table, out)


def render() -> str:
    """The whole page."""
    out = [HEADER, "## Topology (`services/networks/*.toml`, input of `dltmw init`)", ""]
    _section("(top level)", TopologyFile, out)
    out += ["## node.toml (`nodes/<id>/node.toml`, written by `dltmw init`)", ""]
    _section("(top level)", NodeFile, out)
    return "\n".join(out).rstrip() + "\n"


def main() -> int:
    """Write the page, or with --check compare it."""
    parser = argparse.ArgumentParser(prog="python -m dltmw.cli.config_doc")
    parser.add_argument("--check", action="store_true", help="fail if docs/config.md is stale")
    ns = parser.parse_args()
    page = render()
    if ns.check:
        if not PAGE.exists() or PAGE.read_text() != page:
            print(f"{PAGE} is stale: run `python -m dltmw.cli.config_doc`", file=sys.stderr)
            return 1
        return 0
    PAGE.write_text(page)
    return 0


if __name__ == "__main__":
    sys.exit(main())
