"""The built-in channel contracts are deployed as packages: `dltmw init` installs each one's
package on every peer and block 0 names its id; `by_name = true` keeps the legacy empty id."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from dltmw.contract_sdk import loader
from dltmw.contracts import BUILTIN, builtin_package, builtin_package_id, generated_module
from dltmw.core.builtin_packages import BUILTIN_PACKAGE_IDS
from dltmw.core.genesis import read_genesis
from dltmw.pki.network import init_network
from dltmw.v1 import block_pb2

TOPOLOGY = """
name = "pkg"
[[orgs]]
id = "Org1"
[[nodes]]
id = "orderer0"
org = "Org1"
roles = ["orderer"]
[[nodes]]
id = "peer0"
org = "Org1"
roles = ["peer"]
[[channels]]
id = "ch"
members = ["Org1"]
orderers = ["orderer0"]
contracts = [{ name = "kv" }, { name = "bank", by_name = true }, { name = "xfer" }]
"""


def test_the_generated_ids_are_the_builtin_packages() -> None:
    generated = Path(__file__).resolve().parents[2] / "dltmw/core/builtin_packages.py"
    assert generated.read_text() == generated_module(), "python -m dltmw.contracts --write"
    assert {n: builtin_package_id(n) for n in BUILTIN} == BUILTIN_PACKAGE_IDS


def test_init_installs_the_builtins_and_block_0_names_their_ids(tmp_path: Path) -> None:
    (tmp_path / "t.toml").write_text(TOPOLOGY)
    init_network(tmp_path / "t.toml", tmp_path / "net")
    installed = tmp_path / "net/nodes/peer0/data/contracts"
    assert sorted(p.name for p in installed.iterdir()) == sorted(
        f"{builtin_package_id(n)}.zip" for n in BUILTIN
    )
    for name in BUILTIN:
        assert (installed / f"{builtin_package_id(name)}.zip").read_bytes() == builtin_package(name)
    assert not (tmp_path / "net/nodes/orderer0/data").exists()  # orderers run no contracts
    block = block_pb2.Block.FromString((tmp_path / "net/channels/ch.block").read_bytes())
    deployed = {c.name: c.package_id for c in read_genesis(block).config.contracts}
    assert deployed == {
        "kv": builtin_package_id("kv"),
        "bank": "",
        "xfer": builtin_package_id("xfer"),
    }


def test_a_package_is_parsed_and_compiled_under_the_process_wide_ast_lock(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two threads converting ASTs at once can fail in CPython 3.11 (loader.AST_LOCK): every
    parse (the static check) and every compile of an instrumented module happens under it."""
    seen: list[bool] = []
    check, instrument = loader.check_sources, loader.instrument

    def checked(files: Any) -> Any:
        seen.append(loader.AST_LOCK.locked())
        return check(files)

    def instrumented(source: str, filename: str) -> Any:
        seen.append(loader.AST_LOCK.locked())
        return instrument(source, filename)

    monkeypatch.setattr(loader, "check_sources", checked)
    monkeypatch.setattr(loader, "instrument", instrumented)
    loader.load_package(builtin_package("bank"))
    assert len(seen) >= 2 and all(seen)
    assert not loader.AST_LOCK.locked()
