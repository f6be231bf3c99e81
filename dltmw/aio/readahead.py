"""Consume a stream in order while the next items are already read and their work started.

Why: a peer commits delivered blocks one at a time (the next block's MVCC reads what this one
wrote), but the CPU-heavy part of a block's check — orderer signatures, every transaction's
signatures and policy — does not depend on the previous block (unless that block changes the
config or the contract definitions, which the caller detects). Reading block N+1 off the stream
and starting its checks on the verify pool while block N commits (sqlite fsync, which releases
the GIL) overlaps the two instead of adding them up: pipelining.

`consume_ahead(source, start, consume, depth)`: a reader task takes items from `source`, calls
`start(item)` at once (it must not block: it hands work to a pool and returns) and queues the
item; the caller's task `consume`s the items in order. At most `depth` items wait in the queue
(plus one held by the reader), so read-ahead is bounded. Both tasks live in one TaskGroup: an
error of either stops both and is raised as itself (not an ExceptionGroup), so callers keep
their `except` clauses; cancellation propagates. A source that ends with a CancelledError
nobody asked for (grpc.aio's locally cancelled call, see `aio/tasks.py`) raises
`StrayCancellation`, which the task owner restarts like any transient failure.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

from dltmw.aio.tasks import StrayCancellation, was_asked_to_cancel

T = TypeVar("T")
_END = object()


async def consume_ahead(
    source: AsyncIterator[T],
    start: Callable[[T], None],
    consume: Callable[[T], Awaitable[None]],
    depth: int = 1,
) -> None:
    """Consume every item of `source` in order, reading and `start`ing up to `depth` + 1 ahead."""
    queue: asyncio.Queue[object] = asyncio.Queue(maxsize=max(1, depth))

    async def read() -> None:
        try:
            async for item in source:
                start(item)
                await queue.put(item)
        except asyncio.CancelledError as exc:
            if was_asked_to_cancel():
                raise
            # A grpc call cancelled under us (aio/tasks.py): a TaskGroup would take it for the
            # reader's own cancellation and leave the consumer waiting for ever.
            raise StrayCancellation("read-ahead: its source was cancelled under it") from exc
        await queue.put(_END)

    try:
        async with asyncio.TaskGroup() as group:
            group.create_task(read(), name="read-ahead")
            while (item := await queue.get()) is not _END:
                await consume(item)  # type: ignore[arg-type]
    except BaseExceptionGroup as failed:
        raise first_error(failed) from None


def first_error(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The first exception of a (nested) group that is not a cancellation, else the first."""
    leaves: list[BaseException] = []
    pending: list[BaseException] = [group]
    while pending:
        exc = pending.pop(0)
        if isinstance(exc, BaseExceptionGroup):
            pending[:0] = list(exc.exceptions)
        else:
            leaves.append(exc)
    real = [e for e in leaves if not isinstance(e, asyncio.CancelledError)]
    return (real or leaves)[0]
