"""Node-side event filters on real node processes, with resumes from persisted checkpoints.

The network runs as separate node processes (the supervisor, as in `test_bus.py`); the
subscribers attach remotely (`dltmw.connect`). Traffic mixes, within the same blocks, what a
filter must keep and what it must leave out: bus messages of topic `trades` and of topic
`quotes` (same contract, another event name), bank `payment` events and bank `opened` events
(same contract, another name), the bus's own topic creations. Three subscribers follow it:

- a bus subscriber process (`bus_subscriber.py`, topic `trades`, its records file its
  checkpoint), killed with -9 twice mid-stream and restarted;
- a `client.blocks` stream filtered to `EventFilter("bank", ("payment",))`, cut (closed) half
  way and reopened on a new connection from the position saved in a `FileCheckpointer`;
- a bus subscription of `quotes` with a `FileCheckpointer`, closed half way and reopened.

Each ends with exactly the matching events, in commit order, at the positions (block, tx
index, event index) the unfiltered stream gives them; nothing else reached the filtered block
stream. Red when the node-side filter is disabled (`rpc/events.py` `_wanted` returning True, or
`block_events` ignoring `query.filters`): the filtered stream then carries the `opened`
transactions and the bus messages.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import dltmw
from tests.integration.test_bus import (
    BUS_TOPOLOGY,
    Network,
    _finish,
    _lines,
    _start_subscriber,
    _wait_records,
)

Row = tuple[int, int, int, str]  # block, tx index, event index, tx id
PAYMENTS = dltmw.EventFilter("bank", ("payment",))
WAIT_S = 60.0  # bound of every wait on the network


async def _setup(net: Path, pairs: int) -> int:
    """Topics `trades` and `quotes`; bank accounts X{i} and Y{i} (their `opened` events).
    Returns the last block a commit went into."""
    async with dltmw.connect(net) as network:
        bus = network.bus("user1.org2", "trades")
        await bus.create_topic("trades")
        await bus.create_topic("quotes")
        client = bus.client
        opened = await asyncio.gather(
            *(
                client.submit("trades", "bank", "open", f"{side}{i}", "100")
                for i in range(pairs)
                for side in "XY"
            )
        )
        return max(c.block_number for c in opened)


async def _traffic(net: Path, start: int, count: int) -> int:
    """`count` rounds, 12 in flight, each a `trades` message m{i}, a `quotes` message q{i}
    and a bank payment X{i} -> Y{i} (every third round also opens an account Z{i}).
    Returns the last block a commit went into."""
    async with dltmw.connect(net) as network:
        bus = network.bus("user1.org2", "trades")
        gate = asyncio.Semaphore(12)

        async def one(i: int) -> int:
            async with gate:
                calls = [
                    bus.publish("trades", f"m{i}".encode(), {"i": str(i)}),
                    bus.publish("quotes", f"q{i}".encode()),
                    bus.client.submit("trades", "bank", "payment", f"X{i}", f"Y{i}", "1"),
                ]
                if i % 3 == 0:
                    calls.append(bus.client.submit("trades", "bank", "open", f"Z{i}", "1"))
                return max(c.block_number for c in await asyncio.gather(*calls))

        return max(await asyncio.gather(*(one(i) for i in range(start, start + count))))


async def _unfiltered(net: Path, height: int) -> dict[tuple[str, str], list[Row]]:
    """Every event of the channel up to block `height`, by (contract, name)."""
    out: dict[tuple[str, str], list[Row]] = {}
    async with dltmw.connect(net) as network:
        client = network.client("user1.org1")
        async with asyncio.timeout(WAIT_S):
            async for block in client.blocks("trades"):
                for tx in block.transactions:
                    assert tx.validation_code == "VALID", tx
                    for e, event in enumerate(tx.events):
                        key = (event.contract, event.name)
                        out.setdefault(key, []).append((block.number, tx.index, e, tx.tx_id))
                if block.number >= height:
                    return out
    raise AssertionError("the unfiltered stream ended early")


async def _payments(net: Path, checkpoints: dltmw.FileCheckpointer, upto: int) -> list[Row]:
    """Payment events from the filtered block stream, resuming after the checkpoint, until
    `upto` are in hand; checks that nothing but payment transactions arrives."""
    got: list[Row] = []
    async with dltmw.connect(net) as network:
        client = network.client("user1.org1")
        after = await checkpoints.load("payments")
        start = after.block if after is not None else 0
        async with asyncio.timeout(WAIT_S):
            async for block in client.blocks("trades", start, filters=[PAYMENTS]):
                for tx in block.transactions:
                    names = [(ev.contract, ev.name) for ev in tx.events]
                    assert ("bank", "payment") in names, f"filtered stream delivered {names}"
                    for e, event in enumerate(tx.events):
                        position = dltmw.Position(block.number, tx.index, e)
                        if after is not None and position <= after:
                            continue
                        if (event.contract, event.name) == ("bank", "payment"):
                            got.append((*position, tx.tx_id))
                            await checkpoints.save("payments", position)
                if len(got) >= upto:
                    break
    return got


async def _quotes(
    net: Path, checkpoints: dltmw.FileCheckpointer, upto: int
) -> list[tuple[Row, bytes]]:
    """`upto` messages of topic `quotes`, resuming after the subscription's checkpoint."""
    got: list[tuple[Row, bytes]] = []
    async with dltmw.connect(net) as network:
        bus = network.bus("user1.org1", "trades")
        async with asyncio.timeout(WAIT_S), bus.subscribe("quotes", "q", checkpoints) as sub:
            async for message in sub:
                got.append(((*message.position, message.tx_id), message.payload))
                if len(got) >= upto:
                    break
    return got


def test_filters_and_checkpoint_resumes_over_real_processes(
    network: Network, tmp_path: Path
) -> None:
    net, _sup = network(BUS_TOPOLOGY, batch_ms=10)
    records = tmp_path / "records.txt"
    checkpoints = dltmw.FileCheckpointer(tmp_path / "checkpoints")
    first, second = 45, 45
    total = first + second

    async def scenario() -> None:
        await _setup(net, total)
        height = await _traffic(net, 0, first)
        more = asyncio.ensure_future(_traffic(net, first, second))  # live, meanwhile
        for at_least in (10, 40):  # the subscriber process, killed -9 twice mid-stream
            proc = _start_subscriber(net, records, total)
            try:
                await _wait_records(records, at_least, proc)
            finally:
                proc.kill()
                proc.wait(10)
        # Cut and resume in this process too: the payments stream, then a topic subscription.
        payments = await _payments(net, checkpoints, 30)
        quotes = await _quotes(net, checkpoints, 30)
        height = max(height, await asyncio.wait_for(more, WAIT_S))
        proc = _start_subscriber(net, records, total)
        await asyncio.to_thread(_finish, proc)
        payments += await _payments(net, checkpoints, total - len(payments))
        quotes += await _quotes(net, checkpoints, total - len(quotes))

        events = await _unfiltered(net, height)
        trades = [tuple(row.split()[:4]) for row in _lines(records)]
        expected = events[("bus", "trades")]
        assert len(expected) == total
        assert [(int(b), int(t), int(e), tx) for b, t, e, tx in trades] == expected
        assert sorted(row.split()[4] for row in _lines(records)) == sorted(
            f"m{i}" for i in range(total)
        )
        assert payments == events[("bank", "payment")] and len(payments) == total
        assert [row for row, _ in quotes] == events[("bus", "quotes")]
        assert sorted(p for _, p in quotes) == sorted(f"q{i}".encode() for i in range(total))
        # What the filters left out was there, in the same blocks as what they kept.
        assert len(events[("bank", "opened")]) == 2 * total + total // 3
        others = {b for key, rows in events.items() if key != ("bus", "trades") for b, *_ in rows}
        assert {b for b, *_ in expected} & others, "no block mixed trades with other events"

    asyncio.run(scenario())
