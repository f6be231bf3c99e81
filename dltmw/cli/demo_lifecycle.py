"""The demo's contract lifecycle: a user-written contract deployed on `trading` while it runs.

examples/contracts/assets (not a built-in) is packaged, installed on the peer of every member
of `trading` (admin-signed), approved by each member organisation's admin, committed once the
approvals are a MAJORITY, and invoked by a broker's trader. Before the commit the peers refuse
it (CONTRACT_NOT_COMMITTED). The same steps, as commands, are the tutorial of docs/contracts.md.
"""

from __future__ import annotations

import json
from pathlib import Path

import grpc
from rich.console import Console

from dltmw.aio.rpc_errors import reason_of
from dltmw.client import GatewayClient
from dltmw.client.contracts import NodeAdmin
from dltmw.client.lifecycle import definition_for, submit_definition
from dltmw.contract_sdk.package import package_dir
from dltmw.core.contract_package import package_id
from dltmw.v1 import transaction_pb2

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "contracts" / "assets"
CHANNEL = "trading"
MEMBERS = {"Exchange": "peer.exchange", "BrokerA": "peer.brokera", "BrokerB": "peer.brokerb"}
VALID = transaction_pb2.TX_VALIDATION_CODE_VALID


async def deploy_contract(console: Console, network: Path) -> bool:
    """Install, approve (each member), commit and invoke `assets`; True if every step held."""
    data = package_dir(EXAMPLE)
    pid = package_id(data)
    console.print(f"[bold]contract lifecycle[/] on `{CHANNEL}`: assets 1.0, package {pid[:16]}…")
    for peer in MEMBERS.values():
        await NodeAdmin(network, peer).install(data)
    console.print(f"  installed on {', '.join(MEMBERS.values())}")
    async with await GatewayClient.connect(network, "trader.brokera") as trader:
        try:
            await trader.submit_transaction(CHANNEL, "assets", "create", "demo-1", "100")
            return False  # not committed yet: it must be refused
        except grpc.aio.AioRpcError as exc:
            refused = reason_of(exc)
        console.print(f"  before the commit, invoking it is refused: {refused}")
        definition = definition_for(network, CHANNEL, "assets", "1.0", 1, pid)
        codes = []
        for org in MEMBERS:
            admin = f"admin.{org.lower()}"
            done = await submit_definition(network, admin, CHANNEL, "approve", definition)
            codes.append(done.status.result)
        done = await submit_definition(network, "admin.exchange", CHANNEL, "commit", definition)
        codes.append(done.status.result)
        console.print(
            f"  approved by {', '.join(MEMBERS)}; committed in block {done.status.block_number}"
        )
        # The commit was acknowledged by the admin's gateway peer; another member's peer may
        # commit that block a moment later, so the trader builds on it (read your writes).
        trader.observe_block(CHANNEL, done.status.block_number)
        created = await trader.submit_transaction(CHANNEL, "assets", "create", "demo-1", "100")
        read = await trader.evaluate(CHANNEL, "assets", "read", "demo-1")
    asset = json.loads(read.payload)
    console.print(f"  BrokerA created {asset}")
    return (
        refused == "CONTRACT_NOT_COMMITTED"
        and all(code == VALID for code in codes)
        and created.status.result == VALID
        and asset == {"asset_id": "demo-1", "owner_org": "BrokerA", "value": "100"}
    )
