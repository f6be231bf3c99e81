"""The installed-package store: a refused package stores nothing, an installed one survives a new
process (a new store on the same directory), and a file whose bytes no longer match its id is
never run."""

from __future__ import annotations

from pathlib import Path

import pytest

from dltmw.contracts import builtin_package
from dltmw.core.contract_package import Manifest, PackageError, package_id, write_package
from dltmw.runtime.contract_store import ContractStore

KV = builtin_package("kv")


def test_refused_packages_store_nothing(tmp_path: Path) -> None:
    store = ContractStore(tmp_path / "contracts")
    impure = write_package(Manifest("c", "1", "contract:C"), {"contract.py": "import os\n"})
    for bad in (impure, b"junk", KV[:-1]):
        with pytest.raises(PackageError):
            store.install(bad)
    assert store.ids() == []
    assert not (tmp_path / "contracts").exists() or not any((tmp_path / "contracts").iterdir())


def test_installed_package_survives_a_new_store_and_installing_again_is_a_no_op(
    tmp_path: Path,
) -> None:
    store = ContractStore(tmp_path)
    loaded, before = store.install(KV)
    assert (loaded.package_id, before) == (package_id(KV), False)
    assert store.install(KV)[1] is True
    reopened = ContractStore(tmp_path)
    assert reopened.ids() == [package_id(KV)]
    [described] = reopened.installed()
    assert (described.name, described.version) == ("kv", "1.0")
    assert "get (query)" in described.functions
    assert reopened.contract(package_id(KV)) is not None
    assert reopened.contract("0" * 64) is None


def test_a_corrupted_package_file_is_not_run(tmp_path: Path) -> None:
    ContractStore(tmp_path).install(KV)
    path = tmp_path / f"{package_id(KV)}.zip"
    path.write_bytes(builtin_package("bank"))  # a valid package, but not the one named
    assert ContractStore(tmp_path).contract(package_id(KV)) is None
