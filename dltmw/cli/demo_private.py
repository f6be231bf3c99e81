"""The demo's private trade: BrokerA and BrokerB trade on `trading`; the Exchange sees a hash.

BrokerA's trader sends the trade (a kv `put` of the trade ticket) privately to BrokerB through its
own node's privacy manager, then orders only the payload hash. The report shows, per member of
the channel, what it can see: both brokers decrypt the ticket and hold it in their private
state, their private-state hashes agree, and the Exchange — which orders, stores and validates
the very same block — holds only the hash: its Receive is refused and the ticket's bytes occur
nowhere in its node's files.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import grpc
from rich.console import Console
from rich.table import Table

from dltmw.client import GatewayClient
from dltmw.client.privacy import PrivacyClient
from dltmw.v1 import transaction_pb2

CHANNEL = "trading"


def _occurrences(root: Path, needle: bytes) -> int:
    return sum(p.read_bytes().count(needle) for p in root.rglob("*") if p.is_file())


async def private_trade(console: Console, network: Path) -> bool:
    """Run the private trade and print who sees what; returns True if privacy held."""
    ticket = f"BUY 1000 XYZ @ 12.50 BrokerA->BrokerB ref {os.urandom(8).hex()}".encode()
    parties = {
        "BrokerA": "trader.brokera",
        "BrokerB": "trader.brokerb",
        "Exchange": "admin.exchange",
    }
    pcs = {
        org: PrivacyClient(await GatewayClient.connect(network, c)) for org, c in parties.items()
    }
    try:
        done = await pcs["BrokerA"].submit_private(
            CHANNEL, ["BrokerB"], "kv", "put", "trade-1", ticket
        )
        table = Table(
            title=f"Private trade on `{CHANNEL}`: tx {done.tx_id[:16]}.. "
            f"in block {done.status.block_number}"
        )
        for col in ("member", "ledger holds", "Receive", "private state hash"):
            table.add_column(col)
        check = await pcs["BrokerA"].validate(CHANNEL, done.payload_hash)
        hashes = {p.node_id: p.state_hash.hex()[:16] for p in check.parties}
        hashes["peer.brokera"] = check.state_hash.hex()[:16]
        seen: dict[str, bool] = {}
        for org, pc in pcs.items():
            try:
                seen[org] = ticket in await pc.receive(CHANNEL, done.payload_hash)
                answer = "ticket decrypted" if seen[org] else "wrong plaintext"
            except grpc.aio.AioRpcError as exc:
                seen[org] = False
                answer = exc.code().name
            node = f"peer.{org.lower()}"
            table.add_row(
                org, f"hash {done.payload_hash.hex()[:16]}..", answer, hashes.get(node, "-")
            )
        console.print(table)
    finally:
        for pc in pcs.values():
            await pc.close()
    leaked = await asyncio.to_thread(_occurrences, network / "nodes" / "peer.exchange", ticket)
    ok = (
        done.status.result == transaction_pb2.TX_VALIDATION_CODE_VALID
        and seen == {"BrokerA": True, "BrokerB": True, "Exchange": False}
        and not check.mismatch
        and leaked == 0
    )
    console.print(
        f"ticket bytes in the Exchange node's files: {leaked}; private states agree: "
        f"{not check.mismatch} — "
        + ("[green]the Exchange saw only the hash[/]" if ok else "[red]privacy check failed[/]")
    )
    return ok
