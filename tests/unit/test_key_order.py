"""`aio/key_order.KeyOrder`: turns on a shared key run in arrival order, turns on disjoint keys at
once, and a turn cancelled while waiting still holds back the turns after it.

Why: a pipelined handler that stores several requests at once must not reorder two requests
on the same key (the recipient's Push: tests/unit/test_private_push_pipeline.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from dltmw.aio.key_order import KeyOrder

LATE_S = 10.0  # a deadline for what must happen, never a measured duration


async def test_turns_on_a_shared_key_run_in_arrival_order_disjoint_ones_at_once() -> None:
    order = KeyOrder()
    log: list[str] = []
    gate = asyncio.Event()

    async def work(name: str, keys: Sequence[str], wait: bool = False) -> None:
        async with order.turn(keys):
            log.append(f"{name} in")
            if wait:
                await gate.wait()
            log.append(f"{name} out")

    first = asyncio.ensure_future(work("a", ["x", "y"], wait=True))
    await asyncio.sleep(0)
    second = asyncio.ensure_future(work("b", ["y"]))  # shares y with a: after a
    third = asyncio.ensure_future(work("c", ["z"]))  # shares nothing: at once
    await asyncio.wait_for(third, LATE_S)
    assert log == ["a in", "c in", "c out"]
    gate.set()
    await asyncio.wait_for(asyncio.gather(first, second), LATE_S)
    assert log == ["a in", "c in", "c out", "a out", "b in", "b out"]
    assert len(order) == 0  # nothing kept once every turn left


async def test_a_turn_cancelled_while_waiting_still_holds_back_the_turns_after_it() -> None:
    order = KeyOrder()
    log: list[str] = []
    gate = asyncio.Event()

    async def work(name: str, wait: bool = False) -> None:
        async with order.turn(["k"]):
            log.append(f"{name} in")
            if wait:
                await gate.wait()

    first = asyncio.ensure_future(work("a", wait=True))
    await asyncio.sleep(0)
    second = asyncio.ensure_future(work("b"))
    await asyncio.sleep(0)
    third = asyncio.ensure_future(work("c"))
    await asyncio.sleep(0)
    second.cancel()
    with pytest.raises(asyncio.CancelledError):
        await second
    for _ in range(5):
        await asyncio.sleep(0)
    assert log == ["a in"]  # c waits for a, though b (between them) was cancelled
    gate.set()
    await asyncio.wait_for(asyncio.gather(first, third), LATE_S)
    assert log == ["a in", "c in"]
    assert not first.cancelled()  # the earlier turn itself was never cancelled
    assert len(order) == 0
