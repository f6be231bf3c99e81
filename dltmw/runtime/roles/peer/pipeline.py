"""Pipelined commit of delivered blocks: block N+1's checks run while block N commits.

Why: the CPU-heavy part of a block's check — orderer signatures, every transaction's signatures
and policy — does not depend on the previous block (unless that block changes the config or the
contract definitions: `CommitExecutor.check_ahead` detects it and the load checks again), while
MVCC must follow the previous block's writes. So the deliver loop queues the next block for
commit (`Committer.enqueue`, which starts its checks on the verify pool) BEFORE it waits for the
one in front, and the commit of N (sqlite fsync, which releases the GIL) overlaps the checks of
N+1 instead of adding to them. At most `depth` blocks wait behind the one committing.

Errors are those of the one-at-a-time loop, raised at the same place: a refused block
(PeerError) or a failed commit raises from its `wait()`, a broken stream from the iteration.
Either way the blocks already queued are given a bounded time to finish (unless the task is
being stopped), so the next Deliver stream starts from a ledger height that includes them.
"""

from __future__ import annotations

import asyncio
from asyncio import FIRST_COMPLETED
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Protocol

from dltmw.aio.tasks import was_asked_to_cancel
from dltmw.v1 import block_pb2

DEPTH = 1  # blocks queued (their checks started) behind the one committing
SETTLE_S = 30.0  # how long a broken stream waits for the blocks it queued


class Pending(Protocol):
    """A block queued for commit (`committer.PendingCommit`)."""

    @property
    def done(self) -> asyncio.Future[None]: ...

    async def wait(self) -> None: ...

    def discard(self) -> None: ...


async def commit_pipelined(
    blocks: AsyncIterator[block_pb2.Block],
    enqueue: Callable[[block_pb2.Block], Awaitable[Pending]],
    height: Callable[[], int],
    depth: int = DEPTH,
) -> None:
    """Commit every block of `blocks` in order, at most `depth` queued behind the committing
    one; blocks below `height()` or already queued are skipped (a resend after reconnect).

    While blocks are queued the loop waits for whichever comes first, the next block or the
    oldest queued one's outcome, so a refusal is raised as soon as it is known (the orderer is
    left at once), not when the stream happens to deliver again."""
    window: deque[Pending] = deque()  # queued, oldest first
    following = 0  # the number after the last block queued
    reading: asyncio.Future[block_pb2.Block] | None = None
    try:
        while True:
            if reading is None:
                reading = asyncio.ensure_future(anext(blocks))
            if window:
                either: set[asyncio.Future[Any]] = {reading, window[0].done}
                await asyncio.wait(either, return_when=FIRST_COMPLETED)
                if window[0].done.done():
                    await window.popleft().wait()  # a refusal raises here, as before
                    continue
            try:
                block = await reading
            except StopAsyncIteration:
                break
            finally:
                reading = None
            number = block.header.number
            if number < max(height(), following):
                continue
            window.append(await enqueue(block))
            following = number + 1
            while len(window) > depth:
                await window.popleft().wait()
        while window:
            await window.popleft().wait()
    finally:
        if reading is not None:
            reading.cancel()
            await asyncio.wait({reading})
            if not reading.cancelled():
                reading.exception()  # the stream's error, if any, is superseded
        await settle(window)


async def settle(window: deque[Pending]) -> None:
    """Let the queued blocks finish (bounded) unless the task is stopping; then let go of them."""
    if window and not was_asked_to_cancel():
        await asyncio.wait([p.done for p in window], timeout=SETTLE_S)
    for pending in window:
        pending.discard()
