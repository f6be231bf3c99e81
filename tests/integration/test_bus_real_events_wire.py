"""The Gateway's `Events` stream as a non-Python client uses it: generated stubs, a signed
`EventsQuery` with filters and a start block, nothing of the SDK.

Real node processes (the supervisor); the SDK only generates traffic. The raw client asks for
bus messages of topic `trades` from block 0, keeps as its checkpoint the last block it finished
(every block is reported, filtered or not, so the checkpoint advances past blocks with nothing
for it), disconnects half way, and reconnects with `start_block` = checkpoint + 1 while more is
published. Across the two streams it gets every block once, in order, and exactly the
`trades` events at the positions and block hashes of the unfiltered stream; a filter without a
contract is refused INVALID_ARGUMENT / INVALID_FIELD.

Red when the node-side filter is disabled (`rpc/events.py` `_wanted` returning True: other
topics' transactions arrive) and when the Events handler ignores `start_block` (the resumed
stream repeats block 0 on).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import pytest

import dltmw
from dltmw.client.files import ClientFiles
from dltmw.v1 import gateway_service_pb2 as G
from dltmw.v1 import gateway_service_pb2_grpc
from tests.integration.test_bus import BUS_TOPOLOGY, Network
from tests.integration.wire import channel_to, error_info

Row = tuple[int, int, int, str]  # block, tx index, event index, tx id
TRADES = G.EventFilter(contract="bus", names=["trades"])
WAIT_S = 60.0


async def _publish(net: Path, start: int, count: int, create: bool = False) -> int:
    """Messages m{i} to `trades` and q{i} to `quotes`, 16 in flight, plus a bank account per
    fourth; returns the last block a commit went into."""
    async with dltmw.connect(net) as network:
        bus = network.bus("user1.org2", "trades")
        if create:
            await bus.create_topic("trades")
            await bus.create_topic("quotes")
        gate = asyncio.Semaphore(16)

        async def one(i: int) -> int:
            async with gate:
                calls = [
                    bus.publish("trades", f"m{i}".encode()),
                    bus.publish("quotes", f"q{i}".encode()),
                ]
                if i % 4 == 0:
                    calls.append(bus.client.submit("trades", "bank", "open", f"A{i}", "1"))
                return max(c.block_number for c in await asyncio.gather(*calls))

        return max(await asyncio.gather(*(one(i) for i in range(start, start + count))))


def _request(files: ClientFiles, start: int, filters: list[G.EventFilter]) -> G.EventsRequest:
    query = G.EventsQuery(
        channel_id="trades",
        start_block=start,
        requester=files.signer.identity_bytes,
        filters=filters,
    )
    query.timestamp.GetCurrentTime()
    raw = query.SerializeToString()
    return G.EventsRequest(query=raw, signature=files.signer.sign(raw))


async def _stream(
    net: Path, start: int, upto: int, filters: list[G.EventFilter]
) -> list[G.EventsResponse]:
    """Blocks `start`..`upto` from peer0.org1's Events stream, on a connection of their own,
    closed at the end (the client going away)."""
    files = ClientFiles.load(net, "user1.org1")
    channel = channel_to(net, "peer0.org1", files.tls, own_connection=True)
    try:
        stub = gateway_service_pb2_grpc.GatewayServiceStub(channel)
        call = stub.Events(_request(files, start, filters))
        got: list[G.EventsResponse] = []
        async with asyncio.timeout(WAIT_S):
            while not got or got[-1].block_number < upto:
                response = await call.read()
                assert response is not grpc.aio.EOF, "the stream ended"
                got.append(response)
        call.cancel()
        return got
    finally:
        await channel.close()


def _trades(responses: list[G.EventsResponse]) -> list[Row]:
    return [
        (r.block_number, tx.tx_index, e, tx.tx_id)
        for r in responses
        for tx in r.transactions
        for e, ev in enumerate(tx.events)
        if (ev.contract, ev.name) == ("bus", "trades")
    ]


def test_raw_events_client_filters_and_resumes_from_its_checkpoint(
    network: Network, tmp_path: Path
) -> None:
    net, _sup = network(BUS_TOPOLOGY, batch_ms=10)
    checkpoint = tmp_path / "checkpoint"  # the last block the raw client finished

    async def scenario() -> None:
        first = await _publish(net, 0, 40, create=True)
        before = await _stream(net, 0, first, [TRADES])
        checkpoint.write_text(str(before[-1].block_number))
        later = asyncio.ensure_future(_publish(net, 40, 40))
        await asyncio.sleep(0.2)  # some of it committed while the client is away
        resume = int(checkpoint.read_text()) + 1
        last = await asyncio.wait_for(later, WAIT_S)
        after = await _stream(net, resume, last, [TRADES])
        filtered = before + after
        unfiltered = await _stream(net, 0, last, [])

        # Every block once, in order, with the hash the unfiltered stream gives it.
        assert [r.block_number for r in filtered] == list(range(last + 1))
        assert [r.block_hash for r in filtered] == [r.block_hash for r in unfiltered]
        assert all(r.filtered for r in filtered) and not any(r.filtered for r in unfiltered)
        # Only transactions with a trades message came; exactly those, at ledger positions.
        for r in filtered:
            for tx in r.transactions:
                names = [(ev.contract, ev.name) for ev in tx.events]
                assert ("bus", "trades") in names, f"block {r.block_number}: {names}"
        expected = _trades(unfiltered)
        assert len(expected) == 80 and _trades(filtered) == expected
        assert len({row[3] for row in expected}) == 80
        left_out = sum(len(r.transactions) for r in unfiltered) - len(expected)
        assert left_out >= 80 + 20, "the unfiltered stream lacks the other transactions"

        # A filter without a contract: refused with its reason, on the raw wire too.
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await _stream(net, 0, 0, [G.EventFilter(names=["trades"])])
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert error_info(refused.value)[0] == "INVALID_FIELD"

    asyncio.run(scenario())
