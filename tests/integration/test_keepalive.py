"""Keepalive agreed between clients and servers (finding F5): an idle link whose client pings as
often as the server permits stays up; one that pings faster than the server permits is dropped
(GOAWAY too_many_pings), which shows that the pings happen and that the policy is the server's.

On the old main, servers kept grpc's default policy (at most one ping per 5 minutes without data,
none without a call) while clients pinged every 20 s: every idle link was dropped. Short
intervals here (the node's `[keepalive]` table) keep the test fast.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import pytest

from dltmw.client.files import ClientFiles
from dltmw.v1 import gateway_service_pb2 as G
from dltmw.v1 import gateway_service_pb2_grpc
from integration.test_input_bounds import TWO_ORG
from integration.wire import channel_to, edit_node_toml, started_network

pytestmark = pytest.mark.integration
# grpc's client pings at most about once a second however short its keepalive_time_ms (measured
# here), so: both clients ping every second; peer0.org1 permits that, peer0.org2 permits one
# ping per 3 s (a client pinging faster than its server agreed to).
CLIENT_MS = 1000
AGREED = {"time_ms": 1000, "timeout_ms": 5000, "min_recv_ping_interval_ms": 1000}
STRICTER = {"time_ms": 3000, "timeout_ms": 5000, "min_recv_ping_interval_ms": 3000}
WINDOW_S = 6.0  # ~6 pings: the stricter server counts 3 strikes (it tolerates 2)


async def _idle_events_stream(
    net: Path, node_id: str, keepalive_ms: int
) -> tuple[grpc.aio.Channel, asyncio.Task]:
    """A connection to a peer holding one Events stream that receives nothing after block 0."""
    files = ClientFiles.load(net, "user1.org1")
    channel = channel_to(net, node_id, files.tls, keepalive_ms=keepalive_ms)
    query = G.EventsQuery(channel_id="trades", requester=files.signer.identity_bytes)
    query.timestamp.GetCurrentTime()
    raw = query.SerializeToString()
    stub = gateway_service_pb2_grpc.GatewayServiceStub(channel)
    call = stub.Events(G.EventsRequest(query=raw, signature=files.signer.sign(raw)))
    first = await call.read()  # block 0: the stream is open; nothing follows on an idle channel
    assert first.block_number == 0

    async def rest() -> None:
        while await call.read() is not grpc.aio.EOF:
            pass

    return channel, asyncio.create_task(rest())


async def test_idle_links_with_agreed_keepalive_stay_up(tmp_path) -> None:
    def configure(net: Path) -> None:
        edit_node_toml(net, "peer0.org1", {"keepalive": AGREED})
        edit_node_toml(net, "peer0.org2", {"keepalive": STRICTER})

    with started_network(tmp_path, TWO_ORG, configure) as (net, _):
        agreeing, kept = await _idle_events_stream(net, "peer0.org1", CLIENT_MS)
        pushy, dropped = await _idle_events_stream(net, "peer0.org2", CLIENT_MS)
        deadline = asyncio.get_running_loop().time() + WINDOW_S
        try:
            # The link that pings faster than its server permits is closed within the window ...
            with pytest.raises(grpc.aio.AioRpcError) as goaway:
                await asyncio.wait_for(dropped, WINDOW_S)
            assert goaway.value.code() == grpc.StatusCode.UNAVAILABLE
            assert (goaway.value.details() or "").lower() == "too many pings"
            # ... while the agreeing client's stream is still open after the whole window.
            left_s = max(0.0, deadline - asyncio.get_running_loop().time())
            done, _ = await asyncio.wait({kept}, timeout=left_s)
            assert not done, kept.exception() if done else None
            assert agreeing.get_state() == grpc.ChannelConnectivity.READY
        finally:
            kept.cancel()
            dropped.cancel()
            await asyncio.gather(kept, dropped, return_exceptions=True)
            await agreeing.close()
            await pushy.close()
