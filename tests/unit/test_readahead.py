"""Read-ahead consumption (dltmw.aio.readahead): order kept, the next item's work started while
the current one is consumed (the peer's block pipelining), errors raised as themselves."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from dltmw.aio.readahead import consume_ahead
from dltmw.aio.tasks import StrayCancellation

PIPELINE_WAIT_S = 5.0  # a bound, not a timing: the pipelined run never waits for it


async def items(n: int, fail_at: int | None = None) -> AsyncIterator[int]:
    for i in range(n):
        if i == fail_at:
            raise ConnectionError(f"stream broke at {i}")
        yield i


def test_items_are_consumed_in_order_each_started_first() -> None:
    log: list[str] = []

    async def consume(i: int) -> None:
        log.append(f"consume {i}")
        await asyncio.sleep(0)

    asyncio.run(consume_ahead(items(5), lambda i: log.append(f"start {i}"), consume, depth=1))
    consumed = [e for e in log if e.startswith("consume")]
    assert consumed == [f"consume {i}" for i in range(5)]
    for i in range(5):
        assert log.index(f"start {i}") < log.index(f"consume {i}")
    assert max(int(e.split()[1]) for e in log[: log.index("consume 0") + 1]) <= 2  # bounded


def test_the_next_item_is_started_while_the_current_one_is_consumed() -> None:
    """Item 0's consumption waits until item 1 has been started: a serial loop (read, start,
    consume, then read the next) never starts item 1 during it and fails at the bound."""
    started = {i: asyncio.Event() for i in range(3)}

    async def consume(i: int) -> None:
        if i + 1 in started:
            await asyncio.wait_for(started[i + 1].wait(), PIPELINE_WAIT_S)

    async def run() -> None:
        await consume_ahead(items(3), lambda i: started[i].set(), consume, depth=1)

    asyncio.run(run())


def test_a_consumer_error_is_raised_as_itself_and_stops_the_reader() -> None:
    seen: list[int] = []

    async def consume(i: int) -> None:
        if i == 1:
            raise LookupError("block 1 refused")

    with pytest.raises(LookupError, match="block 1 refused"):
        asyncio.run(consume_ahead(items(100), seen.append, consume, depth=1))
    assert len(seen) <= 4  # the reader stopped within its bound


def test_a_source_error_is_raised_as_itself() -> None:
    async def consume(i: int) -> None:
        await asyncio.sleep(0)

    with pytest.raises(ConnectionError, match="stream broke at 2"):
        asyncio.run(consume_ahead(items(5, fail_at=2), lambda i: None, consume))


def test_a_source_cancelled_under_the_reader_is_a_stray_cancellation_not_a_hang() -> None:
    """grpc.aio ends a call closed by another user of its channel with CancelledError: the
    consumer must hear of it (before, the TaskGroup took it for the reader's own cancellation
    and the consumer waited for ever — the bound turns that hang into a failure)."""

    async def cancelled_stream() -> AsyncIterator[int]:
        yield 0
        raise asyncio.CancelledError()

    async def consume(i: int) -> None:
        await asyncio.sleep(0)

    async def run() -> None:
        await asyncio.wait_for(
            consume_ahead(cancelled_stream(), lambda i: None, consume), PIPELINE_WAIT_S
        )

    with pytest.raises(StrayCancellation):
        asyncio.run(run())
