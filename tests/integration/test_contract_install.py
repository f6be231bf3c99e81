"""A user-written contract (examples/contracts/assets, not a built-in) is packaged, installed on
real peer processes through the admin-signed AdminService.InstallContract, and invoked through
the gateway; before it is installed everywhere the peers refuse to endorse it with their own
reason, and bad packages and non-admins are refused with nothing stored.
"""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

import grpc
import pytest

from dltmw.client import GatewayClient
from dltmw.client.contracts import NodeAdmin
from dltmw.contract_sdk.package import package_dir
from dltmw.contracts import BUILTIN, builtin_package_id
from dltmw.core.contract_package import Manifest, package_id, write_package
from dltmw.rpc.status import reason_of

from .cli import dltmw as _dltmw
from .conftest import TWO_ORG

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "contracts" / "assets"
PACKAGE = package_dir(EXAMPLE)


def topology() -> str:
    contracts = (
        'contracts = [{ name = "kv", endorsement_policy = "OR(Org1.peer, Org2.peer)" }, '
        f'{{ name = "assets", package_id = "{package_id(PACKAGE)}" }}]'
    )
    replaced, count = re.subn(r"^contracts = \[.*?\]$", contracts, TWO_ORG, flags=re.S | re.M)
    assert count == 1
    return replaced


async def _refused(call: object) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call  # type: ignore[misc]
    return err.value


async def test_a_user_contract_is_installed_and_invoked_through_the_gateway(network) -> None:
    net, sup = network(topology(), batch_ms=50)
    client = await GatewayClient.connect(net, "user1.org1")
    try:
        # Not installed anywhere yet: endorsement is refused with the specific reason.
        err = await _refused(client.submit_transaction("trades", "assets", "create", "a1", "7"))
        assert err.code() == grpc.StatusCode.FAILED_PRECONDITION, err.details()
        assert reason_of(err) == "PACKAGE_NOT_INSTALLED"

        # Refused packages store nothing: a static-check failure and bytes that are no package.
        impure = write_package(
            Manifest("assets", "1.0", "contract:C"), {"contract.py": "import socket\n"}
        )
        for bad, check in ((impure, "socket (import at contract.py:1)"), (b"junk", "")):
            err = await _refused(NodeAdmin(net, "peer0.org1").install(bad))
            assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert reason_of(err) == "PACKAGE_INVALID" and check in err.details()
        installed = await NodeAdmin(net, "peer0.org1").installed()  # init's built-ins only
        assert sorted(c.package_id for c in installed) == sorted(map(builtin_package_id, BUILTIN))
        # Only an admin installs.
        err = await _refused(NodeAdmin(net, "peer0.org1", "user1.org1").install(PACKAGE))
        assert err.code() == grpc.StatusCode.PERMISSION_DENIED

        reply = await NodeAdmin(net, "peer0.org1").install(PACKAGE)
        assert reply.contract.package_id == package_id(PACKAGE)
        assert not reply.already_installed
        # As a user does it: package with the command, install with the command.
        made = _dltmw("contract", "package", str(EXAMPLE), "-o", str(net / "assets.zip"))
        assert made.startswith(package_id(PACKAGE))
        said = _dltmw("contract", "install", str(net), "peer0.org2", str(net / "assets.zip"))
        assert said.startswith(f"{package_id(PACKAGE)} installed on peer0.org2")
        assert "create (transaction)" in _dltmw("contract", "list", str(net), "peer0.org2")
        again = await NodeAdmin(net, "peer0.org1").install(PACKAGE)
        assert again.already_installed
        [listed] = [c for c in await NodeAdmin(net, "peer0.org2").installed() if c.name == "assets"]
        assert (listed.name, listed.version) == ("assets", "1.0")
        assert "create (transaction)" in listed.functions

        done = await client.submit_transaction("trades", "assets", "create", "a1", "7.50")
        assert done.status.result == 1  # committed VALID, endorsed by both orgs' peers
        read = await client.evaluate("trades", "assets", "read", "a1")
        assert json.loads(read.payload) == {"asset_id": "a1", "owner_org": "Org1", "value": "7.50"}
        err = await _refused(client.evaluate("trades", "assets", "create", "a2", "lots"))
        assert err.code() == grpc.StatusCode.ABORTED and reason_of(err) == "CONTRACT_FAILED"
        assert "argument 2 (value) is not a decimal number" in err.details()

        # Installed durably: a restarted peer runs the package from its disk.
        stored = sup.data_dir("peer0.org2") / "contracts" / f"{package_id(PACKAGE)}.zip"
        assert stored.read_bytes() == PACKAGE
        assert sup.stop("peer0.org2") == 0
        sup.start("peer0.org2")
        sup.wait_ready("peer0.org2")
        done = await _submit_within(client, 30.0, "create", "a2", "1")
        assert done.status.result == 1
    finally:
        await client.close()


async def _submit_within(client: GatewayClient, timeout_s: float, *call: str) -> Any:
    """Submit until the restarted endorser is reachable again (bounded by a deadline)."""
    async with asyncio.timeout(timeout_s):
        while True:
            try:
                return await client.submit_transaction("trades", "assets", *call)
            except grpc.aio.AioRpcError as exc:
                if exc.code() != grpc.StatusCode.UNAVAILABLE and reason_of(exc) not in (
                    "ENDORSEMENT_POLICY_UNSATISFIABLE",
                    "PEER_UNAVAILABLE",
                ):
                    raise
                await asyncio.sleep(0.2)
