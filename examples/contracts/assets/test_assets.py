"""Tests of the assets contract, run against an in-memory state (pytest test_assets.py)."""

from __future__ import annotations

import json
from pathlib import Path

from dltmw.contract_sdk.loader import load_package
from dltmw.contract_sdk.package import package_dir
from dltmw.contract_sdk.testing import ContractTester
from dltmw.core.contract import TxInfo

HERE = Path(__file__).parent


def make_bench(org: str = "Org1") -> ContractTester:
    # Load the package exactly as a peer would: checked, metered, isolated.
    contract = load_package(package_dir(HERE)).contract
    return ContractTester(contract, tx=TxInfo("0" * 64, org, b"", "alice", 1_700_000_000))


def test_create_read_and_total() -> None:
    bench = make_bench()
    created = bench.submit("create", "car-1", "25000.00")
    assert created.ok and created.events[0][0] == "created"
    assert bench.submit("create", "car-2", "5000").ok
    assert json.loads(bench.evaluate("read", "car-1").payload) == {
        "asset_id": "car-1",
        "owner_org": "Org1",
        "value": "25000.00",
    }
    assert bench.evaluate("total", "Org1").payload == b"30000.00"


def test_only_the_owner_transfers() -> None:
    bench = make_bench()
    bench.submit("create", "car-1", "1")
    assert bench.submit("transfer", "car-1", "Org2").ok
    refused = bench.submit("transfer", "car-1", "Org3")  # Org1 no longer owns it
    assert (refused.status, refused.message) == (403, "only Org2 may transfer car-1")


def test_bad_arguments_are_refused_with_their_names() -> None:
    bench = make_bench()
    assert bench.submit("create", "car-1", "lots").message == (
        "argument 2 (value) is not a decimal number: 'lots'"
    )
    assert bench.submit("create", "").message == "argument 1 (asset id) must be 1..64 characters"
    assert bench.submit("create", "car-1", "1").ok
    assert bench.submit("create", "car-1", "1").status == 409
