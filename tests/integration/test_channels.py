"""Two channels on the same nodes commit independently; a node outside a channel is refused."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from dltmw.client import GatewayClient
from dltmw.rpc.status import reason_of
from dltmw.v1 import gateway_service_pb2 as G

from .conftest import TWO_ORG

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
