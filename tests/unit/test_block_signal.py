"""`blockfeed.BlockSignal`: followers wait for a height without a lock (issue 14, branch bus10).

A follower (the orderer's Deliver, a peer's Events and private executor) waits at the head for
each new block. The signal replaced an `asyncio.Condition` whose lock rounds cost a lone bus
message ~100 Python calls; these tests pin what the condition gave: every waiter is woken by a
commit (`committed()`, no lock), a waiter whose height is not reached waits on, and a cancelled
waiter (a closed stream) leaves nothing behind. Loop turns, not time: each check lets the loop
run a few turns (`_turns`).
"""

from __future__ import annotations

import asyncio

from dltmw.runtime.blockfeed import BlockSignal

TURNS = 5  # more than a woken waiter needs to run to its return


async def _turns() -> None:
    for _ in range(TURNS):
        await asyncio.sleep(0)


class Height:
    """A ledger's height as the feed reads it."""

    def __init__(self) -> None:
        self.height = 1

    def holds(self, number: int) -> bool:
        return self.height > number


async def test_a_commit_wakes_the_waiters_whose_block_is_there_and_only_them() -> None:
    signal, ledger = BlockSignal(), Height()
    next_block = asyncio.ensure_future(signal.wait_until(lambda: ledger.holds(1)))
    later_block = asyncio.ensure_future(signal.wait_until(lambda: ledger.holds(2)))
    try:
        await _turns()
        assert not next_block.done() and not later_block.done()
        assert signal.waiting == 2
        ledger.height = 2
        signal.committed()
        await _turns()
        assert next_block.done() and not later_block.done()
        assert signal.waiting == 1  # the later one waits again, for the next commit
        ledger.height = 3
        signal.committed()
        await _turns()
        assert later_block.done() and signal.waiting == 0
    finally:
        next_block.cancel()
        later_block.cancel()


async def test_a_waiter_whose_height_is_there_returns_without_waiting() -> None:
    signal, ledger = BlockSignal(), Height()
    await signal.wait_until(lambda: ledger.holds(0))
    assert signal.waiting == 0


async def test_a_cancelled_waiter_leaves_nothing_behind_and_the_others_still_wake() -> None:
    signal, ledger = BlockSignal(), Height()
    closed = asyncio.ensure_future(signal.wait_until(lambda: ledger.holds(1)))
    open_ = asyncio.ensure_future(signal.wait_until(lambda: ledger.holds(1)))
    try:
        await _turns()
        closed.cancel()
        await _turns()
        assert closed.cancelled()
        assert signal.waiting == 1
        ledger.height = 2
        signal.committed()
        await _turns()
        assert open_.done() and open_.exception() is None
    finally:
        open_.cancel()
