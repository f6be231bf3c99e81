"""dltmw is a good citizen inside other programs: version ranges, not exact pins, for what it
needs at run time (an exact grpcio pin would clash with a host application's own grpcio); the
tested versions live in `constraints.txt` for `make venv`; a version attribute; a licence."""

from __future__ import annotations

import re
import tomllib
from importlib.metadata import version
from pathlib import Path

import dltmw

ROOT = Path(__file__).resolve().parents[2]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def test_runtime_dependencies_are_ranges_and_the_tested_pins_are_constraints() -> None:
    pinned = [d for d in PROJECT["dependencies"] if "==" in d]
    assert pinned == [], f"exact pins in [project].dependencies: {pinned}"
    constraints = {
        m.group(1): m.group(2)
        for line in (ROOT / "constraints.txt").read_text().splitlines()
        if (m := re.fullmatch(r"([A-Za-z0-9_.-]+)==(\S+)", line.strip()))
    }
    assert constraints["grpcio"] == version("grpcio")  # the venv runs what it pins


def test_version_licence_and_type_marker() -> None:
    assert dltmw.__version__ == version("dltmw") == PROJECT["version"]
    assert PROJECT["license"] == "Apache-2.0"
    assert "Apache License" in (ROOT / "LICENSE").read_text()[:200]
    assert (ROOT / "dltmw" / "py.typed").exists()
