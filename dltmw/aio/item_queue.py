"""A bounded FIFO whose one consumer waits for "the next item, or the end of a task" without a
task of its own.

Why. A batched stream's writer (`aio/batched_stream.py`) has, whenever it sent everything
queued, to wait for whichever comes first: the next item, or the end of the stream's response
side (a broken stream must fail the callers waiting for responses at once, not at the next
write). Over an `asyncio.Queue` that wait was `asyncio.wait({task(queue.get()), reader})`: a task,
a waiter future, done-callbacks on both and two more loop turns every time a stream went idle —
four times per lone bus message (the SDK's Transact stream for the endorsement and the
submission, the gateway's broadcaster and its remote-endorser stream; benchmarks/RESULTS.md,
branch bus8). Here the producer's `put_nowait` resolves the one future the consumer waits on,
and the reader's end resolves the same future through a done-callback: one future per idle
wait, no task. The writer then lets `settle_turns` loop turns pass (`BatchedStream`: 2, the turns
the getter task and `asyncio.wait` took) before it takes its batch: items that concurrent callers
queue in those turns leave in the same message, as before. Waking at once instead shrank the
gateway's broadcaster messages from 2.0 to 1.4-1.9 envelopes under 4 publishers, and with them
the blocks: throughput 20-33 % lower (benchmarks/RESULTS.md, branch bus8).

Rules. One consumer at a time (`get` / `next_or_none` from one task — a stream's writer; a
second concurrent waiter is a bug and raises). `put_nowait`, `get_nowait`, `empty`, `qsize`,
`full` behave as asyncio.Queue's (QueueFull beyond `maxsize`, 0 = unbounded). A consumer
cancelled while it waits takes nothing from the queue: an item put meanwhile stays queued.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class ItemQueue(Generic[T]):
    """FIFO of at most `maxsize` items (0: unbounded) with one waiting consumer."""

    def __init__(self, maxsize: int = 0) -> None:
        self._items: deque[T] = deque()
        self._maxsize = maxsize
        self._wake: asyncio.Future[None] | None = None  # the consumer's, while it waits

    def qsize(self) -> int:
        """Items queued."""
        return len(self._items)

    def empty(self) -> bool:
        """Nothing queued?"""
        return not self._items

    def full(self) -> bool:
        """`maxsize` items queued (never, unbounded)?"""
        return 0 < self._maxsize <= len(self._items)

    def put_nowait(self, item: T) -> None:
        """Queue `item` and wake the waiting consumer; QueueFull when `full()`."""
        if self.full():
            raise asyncio.QueueFull
        self._items.append(item)
        wake = self._wake
        if wake is not None and not wake.done():
            wake.set_result(None)

    def get_nowait(self) -> T:
        """The oldest item; QueueEmpty when there is none."""
        if not self._items:
            raise asyncio.QueueEmpty
        return self._items.popleft()

    async def get(self) -> T:
        """The oldest item, waiting for one."""
        while not self._items:
            await self._wait(None)
        return self._items.popleft()

    async def next_or_none(self, reader: asyncio.Future[Any], settle_turns: int = 0) -> T | None:
        """The oldest item, waiting for one; None as soon as `reader` is done with nothing
        queued (an item queued before is still given first). If it had to wait, it lets
        `settle_turns` loop turns pass after the wake-up before it returns, so that what other
        callers queue in those turns is there for the consumer's batch (module docstring)."""
        if self._items:
            return self._items.popleft()
        while not self._items:
            if reader.done():
                return None
            await self._wait(reader)
        for _ in range(settle_turns):
            await asyncio.sleep(0)
        return self._items.popleft()

    async def _wait(self, reader: asyncio.Future[Any] | None) -> None:
        """Until an item is put or `reader` ends (either may have happened when this returns)."""
        if self._wake is not None:
            raise RuntimeError("ItemQueue: a second consumer waits (one at a time)")
        wake: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def ended(_: asyncio.Future[Any]) -> None:
            if not wake.done():
                wake.set_result(None)

        self._wake = wake
        if reader is not None:
            reader.add_done_callback(ended)
        try:
            await wake
        finally:
            self._wake = None
            if reader is not None:
                reader.remove_done_callback(ended)
