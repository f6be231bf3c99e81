"""A stalled subscriber — it takes one message, then never reads again, its stream left open —
does not hold up publishers: every publish completes and another subscriber receives every
message, on real node processes (gRPC) and in-process (both transports). No timing is
asserted (the throughput ratio is measured by `dltmw bench --experiment bus`, in RESULTS).

What the node holds for the stalled stream stays bounded: in-process, its Events stream's
response pipe (`rpc/inproc.py` `Pipe`) never holds more than the window's 256 messages / 1 MiB,
however many blocks commit after the stall (more than 256 here: one publisher waits for each
commit, so each of its messages is a block of its own). Over gRPC that buffer is gRPC's own
per-stream flow-control window, which the test cannot count; the functional half holds there.

Red when broken: give `Pipe` an unbounded message window (WINDOW_MESSAGES = 10**9) — the
stalled stream's pipe then holds every block committed after the stall (> 256).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

import dltmw
from dltmw.rpc.inproc import WINDOW_BYTES, WINDOW_MESSAGES, Exchange
from dltmw.rpc.inproc_server import InprocServer
from dltmw.sdk.network import TransportName
from tests.integration.test_bus import BUS_TOPOLOGY, Network

PUBLISHED = 2 * 160  # two publishers, one after another each: more blocks than the window
BEFORE = b"before the stall"
BOUND_S = 120.0  # the test's own bound on every wait (a stuck publisher fails, never hangs)


async def _stall(bus: dltmw.Bus, topic: str) -> dltmw.Subscription:
    """A subscription that has taken one message and will never read again (stream open)."""
    stalled = bus.subscribe(topic)
    await asyncio.wait_for(anext(stalled), BOUND_S)
    return stalled


async def _publish_and_receive(publishers: list[dltmw.Bus], reader: dltmw.Bus, topic: str) -> None:
    """Every publisher publishes its share one after another; `reader` receives all of them."""
    expected: set[str] = set()
    received: set[str] = set()
    share = PUBLISHED // len(publishers)

    async def publish(bus: dltmw.Bus, who: int) -> None:
        for i in range(share):
            expected.add((await bus.publish(topic, f"{who}-{i}".encode())).tx_id)

    async def receive(subscription: dltmw.Subscription) -> None:
        async for message in subscription:
            if message.payload == BEFORE:
                continue  # the one published before the stall (the reader starts at block 0)
            received.add(message.tx_id)
            if len(received) == PUBLISHED:
                return

    async with reader.subscribe(topic) as subscription:
        receiving = asyncio.ensure_future(receive(subscription))
        await asyncio.wait_for(
            asyncio.gather(*(publish(bus, who) for who, bus in enumerate(publishers))), BOUND_S
        )
        await asyncio.wait_for(receiving, BOUND_S)
    assert len(expected) == PUBLISHED and received == expected


def _events_exchanges(net: dltmw.Network) -> list[Exchange]:
    servers = {id(n._server): n._server for n in net.nodes.values()}
    return [
        call
        for server in servers.values()
        if isinstance(server, InprocServer)
        for call in server.calls
        if call.path.endswith("/Events")
    ]


@pytest.mark.parametrize("transport", ["inproc", "grpc"])
def test_stalled_subscriber_in_process(tmp_path: Path, transport: TransportName) -> None:
    async def scenario() -> None:
        async with dltmw.open(tmp_path / "net", synchronous="NORMAL", transport=transport) as net:
            org1, org2 = net.bus("user1.org1"), net.bus("user1.org2")
            await org1.create_topic("trades")
            await org1.publish("trades", BEFORE)
            stalled = await _stall(net.bus("user1.org2"), "trades")
            if transport == "inproc":
                (before,) = _events_exchanges(net)  # the stalled one: the only stream open
            await _publish_and_receive([org1, org2], net.bus("user1.org1"), "trades")
            if transport == "inproc":
                messages, size = before.responses.buffered
                # Full (the bound is what held it), never beyond the window.
                assert messages == WINDOW_MESSAGES and size <= WINDOW_BYTES, (messages, size)
                assert before.ended is None  # still open: the node did not drop it either
            await stalled.close()

    asyncio.run(scenario())


def test_stalled_subscriber_on_real_processes(network: Network) -> None:
    net_dir, _sup = network(BUS_TOPOLOGY, batch_ms=10)

    async def scenario() -> None:
        async with dltmw.connect(net_dir) as net:
            org1, org2 = net.bus("user1.org1", "trades"), net.bus("user1.org2", "trades")
            await org1.create_topic("trades")
            await org1.publish("trades", BEFORE)
            stalled = await _stall(net.bus("user1.org1", "trades"), "trades")
            await _publish_and_receive([org1, org2], net.bus("user1.org2", "trades"), "trades")
            await stalled.close()

    asyncio.run(scenario())
