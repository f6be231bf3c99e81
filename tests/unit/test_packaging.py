"""dltmw is a good citizen inside other programs: version ranges, not exact pins, for what it
needs at run time (an exact grpcio pin would clash with a host application's own grpcio); the
tested versions live in `constraints.txt` for `make venv`; a version attribute; a licence."""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
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


def _tracked_copy(dest: Path) -> Path:
    """The project's tracked files as they are in the working tree (what a `git archive` of
    a commit of them holds), copied to `dest`."""
    listed = subprocess.run(
        ["git", "-C", str(ROOT), "ls-files", "-z"], check=True, capture_output=True
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        source = ROOT / name
        if source.is_file():  # a tracked file deleted in the working tree is left out
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)
    return dest


def test_the_wheel_builds_with_the_standard_tool_and_holds_what_a_user_needs(
    tmp_path: Path,
) -> None:
    """`pip wheel` (the standard build front end; `build` is not in the venv) over a copy of
    the tracked tree, no network: the wheel has the type marker, the licence file and metadata
    saying Apache-2.0, and every run-time dependency as a range. Red if a run-time dependency
    is pinned exactly (`grpcio==1.85.1`) or `dltmw/py.typed` is missing."""
    source = _tracked_copy(tmp_path / "src")
    out = tmp_path / "wheels"
    subprocess.run(
        [
            *(sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation"),
            *("--no-index", "-w", str(out), str(source)),
        ],
        check=True,
        capture_output=True,
        timeout=600,
    )
    (wheel,) = out.glob("dltmw-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        info = f"dltmw-{PROJECT['version']}.dist-info"
        metadata = archive.read(f"{info}/METADATA").decode()
        assert "dltmw/py.typed" in names
        assert f"{info}/licenses/LICENSE" in names
        assert "Apache License" in archive.read(f"{info}/licenses/LICENSE").decode()[:200]
    headers = [line.split(": ", 1) for line in metadata.splitlines() if ": " in line]
    fields: dict[str, list[str]] = {}
    for key, value in headers:
        fields.setdefault(key, []).append(value)
    assert fields["License-Expression"] == ["Apache-2.0"]
    assert fields["Version"] == [PROJECT["version"]]
    runtime = [r for r in fields["Requires-Dist"] if "extra ==" not in r]
    wanted = {re.split(r"[<>=!~\[ ]", d, maxsplit=1)[0].lower() for d in PROJECT["dependencies"]}
    assert {re.split(r"[<>=!~\[ ;]", r, maxsplit=1)[0].lower() for r in runtime} == wanted
    for requirement in runtime:
        assert "==" not in requirement and "<" in requirement, requirement


def test_every_client_type_is_an_async_context_manager(tmp_path: Path) -> None:
    """`async with` works on every client type a program uses, NodeAdmin included."""
    from dltmw.client.contracts import NodeAdmin
    from dltmw.client.gateway import GatewayClient
    from dltmw.client.privacy import PrivacyClient
    from dltmw.pki.network import init_network
    from dltmw.sdk.network import DEFAULT_TOPOLOGY

    for kind in (dltmw.Client, dltmw.Network, dltmw.Vault, GatewayClient, PrivacyClient):
        assert hasattr(kind, "__aenter__") and hasattr(kind, "__aexit__"), kind
    topology = tmp_path / "topology.toml"
    topology.write_text(DEFAULT_TOPOLOGY)
    init_network(topology, tmp_path / "net")

    async def use() -> None:
        async with NodeAdmin(tmp_path / "net", "peer0.org1") as admin:
            assert admin.node_id == "peer0.org1"

    asyncio.run(use())
