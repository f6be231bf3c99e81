"""The solo orderer's downstream signal for adaptive cutting (`runtime/roles/orderer/solo.py`).

A follower (a Deliver stream) has taken a block once it asks for the next one; the downstream is
idle when every follower has taken every committed block; the follower that takes the last one
nudges the driver (so a batch held back meanwhile is cut), and one that goes away stops counting.
"""

from __future__ import annotations

import asyncio
import types
from typing import Any

from dltmw.core.block import make_block
from dltmw.core.hashing import ZERO_HASH
from dltmw.runtime.roles.orderer.solo import OrdererChannel
from dltmw.v1 import block_pb2


class FakeLedger:
    def __init__(self, height: int) -> None:
        self.height = height

    async def block_data(self, start: int, stop: int) -> list[bytes]:
        return [
            make_block("ch", n, ZERO_HASH, [b"e"]).SerializeToString()
            for n in range(start, min(stop, self.height))
        ]


class FakeDriver:
    def __init__(self) -> None:
        self.nudges = 0

    def nudge(self) -> None:
        self.nudges += 1


def number(data: bytes) -> int:
    return block_pb2.Block.FromString(data).header.number


def channel(height: int) -> tuple[OrdererChannel, FakeDriver]:
    ctx = types.SimpleNamespace(node_id="orderer0")  # what a channel reads of its node
    orderer = OrdererChannel(ctx, None, FakeLedger(height))  # type: ignore[arg-type]
    driver = FakeDriver()
    orderer._driver = driver  # type: ignore[assignment]
    return orderer, driver


async def test_downstream_is_idle_only_when_every_follower_took_the_last_block() -> None:
    orderer, driver = channel(height=3)
    assert orderer.downstream_idle()  # no follower: nothing waits downstream
    a: Any = orderer.block_data_from(0, None)
    b: Any = orderer.block_data_from(2, None)
    assert number(await anext(a)) == 0
    assert not orderer.downstream_idle()  # a registered from block 0; b has not started
    assert number(await anext(b)) == 2
    assert not orderer.downstream_idle()  # handed, not yet taken: b has not asked again
    assert number(await anext(a)) == 1
    assert number(await anext(a)) == 2  # a took 0 and 1
    assert driver.nudges == 0
    waiting = asyncio.ensure_future(anext(b))  # b took 2 and waits for block 3
    await asyncio.sleep(0)
    assert not orderer.downstream_idle() and driver.nudges == 0  # a has not taken 2 yet
    waiting_a = asyncio.ensure_future(anext(a))  # a took 2: the last follower to take it
    await asyncio.sleep(0)
    assert orderer.downstream_idle() and driver.nudges == 1
    for task in (waiting, waiting_a):
        task.cancel()
    await asyncio.gather(waiting, waiting_a, return_exceptions=True)
    await a.aclose()
    await b.aclose()
    assert orderer.downstream_idle() and orderer._pulled == {}


class FakeCore:
    """What `_nudge` reads of the solo core: whether its cutter holds anything."""

    def __init__(self, holding: bool) -> None:
        self.holding = holding

    def quiescent(self) -> bool:
        return not self.holding


async def test_the_last_follower_nudges_only_when_the_core_holds_a_batch() -> None:
    """At one transaction per block the block took everything: the nudge after the last
    follower took it would be an empty driver step (a loop turn per block). Held back: the
    nudge comes as before. Red if `_nudge` wakes the driver whatever the core holds."""
    for holding, nudges in ((False, 0), (True, 1)):
        orderer, driver = channel(height=1)
        orderer._core = FakeCore(holding)  # type: ignore[assignment]
        a: Any = orderer.block_data_from(0, None)
        assert number(await anext(a)) == 0
        waiting = asyncio.ensure_future(anext(a))  # took 0, the last block: idle downstream
        await asyncio.sleep(0)
        assert orderer.downstream_idle() and driver.nudges == nudges, holding
        waiting.cancel()
        await asyncio.gather(waiting, return_exceptions=True)
        await a.aclose()
