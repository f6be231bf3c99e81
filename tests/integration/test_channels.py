"""Two channels on the same nodes commit independently; a node outside a channel is refused."""

from __future__ import annotations

import asyncio
import sqlite3

import grpc
import pytest

from dltmw.client import GatewayClient
from dltmw.rpc.status import reason_of
from dltmw.v1 import gateway_service_pb2 as G

from .conftest import TWO_ORG
from .ledgers import height, ledger_path

pytestmark = pytest.mark.integration

THIRD_CHANNEL = """
[[channels]]
id = "solo1"
members = ["Org1"]
orderers = ["orderer0"]
endorsement_policy = "Org1.peer"
contracts = [{ name = "kv" }]
batch = { max_tx_count = 10, max_bytes = 1048576, timeout_ms = 50 }
"""


async def test_two_channels_commit_independently(network) -> None:
    net, _ = network(TWO_ORG + THIRD_CHANNEL, batch_ms=50)
    c = await GatewayClient.connect(net, "user1.org1")
    outsider = await GatewayClient.connect(net, "user1.org2")
    try:
        a, b = await asyncio.gather(
            asyncio.gather(
                *(c.submit_transaction("trades", "kv", "put", f"t{i}", "x") for i in range(20))
            ),
            asyncio.gather(
                *(c.submit_transaction("solo1", "kv", "put", f"s{i}", "y") for i in range(20))
            ),
        )
        assert all(d.status.result == 1 for d in a + b)
        # Each channel has its own chain: keys of one are not in the other.
        assert (await c.evaluate("solo1", "kv", "get", "s3")).payload == b"y"
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await c.evaluate("trades", "kv", "get", "s3")
        # the contract says: key not found (its 404: NOT_FOUND)
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        # peer0.org2 does not serve solo1: its gateway refuses the channel.
        signed, _ = outsider.proposal("solo1", "kv", "get", ["s3"])
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await outsider.stub.Evaluate(G.EvaluateRequest(signed_proposal=signed))
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert reason_of(err.value) == "CHANNEL_NOT_FOUND"
        # An Org2 client is not a member of solo1, even through Org1's gateway.
        org2_via_org1 = await GatewayClient.connect(net, "user1.org2", gateway="peer0.org1")
        try:
            signed, _ = org2_via_org1.proposal("solo1", "kv", "get", ["s3"])
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await org2_via_org1.stub.Evaluate(G.EvaluateRequest(signed_proposal=signed))
            assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
            assert reason_of(err.value) == "NOT_A_MEMBER"
        finally:
            await org2_via_org1.close()
    finally:
        await c.close()
        await outsider.close()


async def test_a_stuck_channel_store_does_not_hold_another_channels_commits(network) -> None:
    """Channels commit in parallel: each has its own ledger file and writer thread on a peer
    (`{channel}.peer.sqlite`), its own Deliver stream and committer. While another process holds
    the write lock of solo1's ledger on peer0.org1 (its commit retries SQLITE_BUSY within the
    storage budget, `ledger/retry.py`), a transaction of `trades` — committed by the same peer —
    commits VALID, and solo1's commits as soon as the lock is released.

    Red if the peer's channels share one commit path (checked by making `Committer` take one
    process-wide lock around `commit_block`: trades' commit then waits for solo1's and the
    bounded wait below times out)."""
    net, _ = network(TWO_ORG + THIRD_CHANNEL, batch_ms=50)
    c = await GatewayClient.connect(net, "user1.org1")
    try:
        # both channels have committed once, so their files exist and nothing is first-time
        await c.submit_transaction("trades", "kv", "put", "warm", "1")
        await c.submit_transaction("solo1", "kv", "put", "warm", "1")
        path = net / "nodes" / "peer0.org1" / "data" / "solo1.peer.sqlite"
        holder = sqlite3.connect(path, timeout=10, isolation_level=None)
        try:
            holder.execute("BEGIN EXCLUSIVE")  # WAL: writers wait, readers go on
            ordered = height(ledger_path(net, "orderer0", "solo1", "orderer"))
            peer_height = height(path)
            stuck = asyncio.create_task(c.submit_transaction("solo1", "kv", "put", "k", "held"))
            for _ in range(200):  # bounded: 10 s for solo1's block to be cut
                if height(ledger_path(net, "orderer0", "solo1", "orderer")) > ordered:
                    break
                await asyncio.sleep(0.05)
            else:
                raise AssertionError("solo1's block was never cut")
            # solo1's block is on its way to peer0.org1, whose commit waits on the lock;
            # trades' commit on the same peer must not wait for it
            done = await asyncio.wait_for(
                c.submit_transaction("trades", "kv", "put", "k", "free"), timeout=20
            )
            assert done.status.result == 1  # VALID
            assert not stuck.done(), "solo1 committed while its ledger was locked"
            assert height(path) == peer_height
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        held = await asyncio.wait_for(stuck, timeout=30)
        assert held.status.result == 1
        assert (await c.evaluate("solo1", "kv", "get", "k")).payload == b"held"
        assert (await c.evaluate("trades", "kv", "get", "k")).payload == b"free"
    finally:
        await c.close()
