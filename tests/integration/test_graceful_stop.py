"""Stopping a node ends its subscriptions at once, with a reason the subscriber can act on.

A Deliver/Events stream never ends by itself while its caller lives, so grpc's graceful stop
used to wait out its whole grace period for it (an orderer stopped while its peers ran took
5.4 s instead of 0.3 s). Now the stream ends with UNAVAILABLE / SHUTTING_DOWN and the stop goes
on; a subscription asked for during the stop is refused the same way. In-process nodes
(`dltmw.open`), real gRPC with mutual TLS or the in-process transport (each test runs over
both).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import pytest

import dltmw
from dltmw.aio.rpc_errors import reason_of
from dltmw.client import GatewayClient
from dltmw.sdk.network import TransportName

GRACE_S = 120.0  # far longer than the test's own bound: only ending the stream lets stop return


@pytest.fixture(params=["grpc", "inproc"])
def transport(request: pytest.FixtureRequest) -> TransportName:
    """Every test here runs over both transports of `dltmw.open`."""
    return request.param  # type: ignore[no-any-return]


def test_stopping_a_node_ends_its_open_subscriptions_with_shutting_down(
    tmp_path: Path, transport: TransportName
) -> None:
    async def scenario() -> None:
        async with dltmw.open(tmp_path / "net", synchronous="NORMAL", transport=transport) as net:
            gateway = await GatewayClient.connect(net.directory, "user1.org1", "peer0.org1")
            try:
                events = gateway.events("main", 0)
                first = await asyncio.wait_for(anext(events), 30)  # the stream is open
                assert first.block_number == 0
                node = net.nodes["peer0.org1"]
                stop = asyncio.ensure_future(node.stop(grace_s=GRACE_S))
                try:
                    async for _ in events:  # (blocks may still come before the end)
                        pass
                    raise AssertionError("the stream ended without a status")
                except grpc.aio.AioRpcError as exc:
                    assert exc.code() == grpc.StatusCode.UNAVAILABLE, exc
                    assert reason_of(exc) == "SHUTTING_DOWN", exc
                await asyncio.wait_for(stop, GRACE_S / 4)
            finally:
                await gateway.close()

    asyncio.run(scenario())


def test_stopping_a_node_ends_an_idle_push_stream_from_a_live_sender(
    tmp_path: Path, transport: TransportName
) -> None:
    """Push is bidirectional and stays open while its sender is idle: the stop ends it where it
    waits for the next batch (after answering any in flight) instead of waiting the grace. Red
    with Push pipelined and the boundary letting the reader's cancellation through (fresh
    clone of cf3df06)."""

    async def scenario() -> None:
        async with dltmw.open(tmp_path / "net", synchronous="NORMAL", transport=transport) as net:
            bus = net.bus("user1.org1")
            await bus.create_topic("otc")
            await bus.create_private_topic("otc", ["Org1", "Org2"])
            await bus.publish_private("otc", b"block trade", ["Org1", "Org2"])  # Push to org2
            stop = net.nodes["peer0.org2"].stop(grace_s=GRACE_S)  # peer0.org1 keeps running
            await asyncio.wait_for(stop, GRACE_S / 4)

    asyncio.run(scenario())
