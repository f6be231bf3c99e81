"""The batched stream writer's queue (dltmw.aio.item_queue): the next item or the reader's end,
waited for on one future — no task per idle wait, no callback left on the reader, the bound and
the FIFO order of asyncio.Queue, nothing taken by a cancelled wait. No test waits on the clock:
progress is awaited in bounded loop turns."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from dltmw.aio.batched_stream import Bounds
from dltmw.aio.item_queue import ItemQueue
from dltmw.core.errors import TransientError
from tests.unit.test_batched_stream import TURNS, FakeCall, Peer, status, stream, until


async def turns(n: int = 5) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


async def test_an_item_put_while_the_consumer_waits_wakes_it_in_fifo_order() -> None:
    queue: ItemQueue[int] = ItemQueue()
    reader = asyncio.ensure_future(asyncio.Event().wait())
    waiting = asyncio.ensure_future(queue.next_or_none(reader))
    await turns()
    assert not waiting.done()
    queue.put_nowait(1)
    queue.put_nowait(2)
    assert await asyncio.wait_for(waiting, 5) == 1
    assert await queue.next_or_none(reader) == 2
    reader.cancel()


async def test_the_reader_ending_with_nothing_queued_gives_none_and_a_queued_item_comes_first() -> (
    None
):
    queue: ItemQueue[int] = ItemQueue()
    ended = asyncio.Event()
    reader = asyncio.ensure_future(ended.wait())
    queue.put_nowait(7)
    assert await queue.next_or_none(reader) == 7
    waiting = asyncio.ensure_future(queue.next_or_none(reader))
    await turns()
    assert not waiting.done()
    ended.set()
    assert await asyncio.wait_for(waiting, 5) is None
    queue.put_nowait(8)  # a queued item is given even after the reader ended
    assert await queue.next_or_none(reader) == 8
    assert await queue.next_or_none(reader) is None


async def test_an_idle_wait_starts_no_task() -> None:
    # The mechanism: the writer waits on one future the put resolves, where it had a task
    # doing queue.get() raced against the reader by asyncio.wait.
    queue: ItemQueue[int] = ItemQueue()
    reader = asyncio.ensure_future(asyncio.Event().wait())
    await turns()
    before = asyncio.all_tasks()
    waiting = asyncio.ensure_future(queue.next_or_none(reader))
    await turns()
    assert asyncio.all_tasks() - before == {waiting}
    queue.put_nowait(3)
    assert await waiting == 3
    reader.cancel()


async def test_many_idle_waits_leave_no_callback_on_a_long_lived_reader() -> None:
    queue: ItemQueue[int] = ItemQueue()
    reader = asyncio.ensure_future(asyncio.Event().wait())
    await turns()
    callbacks = len(reader._callbacks or [])  # type: ignore[attr-defined]
    for i in range(100):
        waiting = asyncio.ensure_future(queue.next_or_none(reader))
        await turns(2)
        queue.put_nowait(i)
        assert await waiting == i
    assert len(reader._callbacks or []) == callbacks  # type: ignore[attr-defined]
    reader.cancel()


async def test_a_cancelled_wait_takes_nothing_and_frees_the_queue_for_the_next_consumer() -> None:
    queue: ItemQueue[int] = ItemQueue()
    waiting = asyncio.ensure_future(queue.get())
    await turns()
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    queue.put_nowait(5)
    assert await asyncio.wait_for(queue.get(), 5) == 5


async def test_a_second_concurrent_consumer_is_refused() -> None:
    queue: ItemQueue[int] = ItemQueue()
    first = asyncio.ensure_future(queue.get())
    await turns()
    with pytest.raises(RuntimeError, match="one at a time"):
        await queue.get()
    queue.put_nowait(1)
    assert await first == 1


def test_the_bound_refuses_beyond_maxsize_as_asyncio_queue_does() -> None:
    queue: ItemQueue[int] = ItemQueue(2)
    queue.put_nowait(1)
    queue.put_nowait(2)
    assert queue.full() and queue.qsize() == 2
    with pytest.raises(asyncio.QueueFull):
        queue.put_nowait(3)
    assert queue.get_nowait() == 1 and not queue.full()
    assert queue.get_nowait() == 2 and queue.empty()
    with pytest.raises(asyncio.QueueEmpty):
        queue.get_nowait()
    unbounded: ItemQueue[int] = ItemQueue()
    for i in range(10_000):
        unbounded.put_nowait(i)
    assert not unbounded.full()


async def test_an_idle_stream_writer_fails_waiting_callers_as_soon_as_the_stream_breaks() -> None:
    # The writer is idle (everything sent) while a caller waits for its answer; the stream's
    # response side ending must end the session at once, failing that caller, as before.
    call = FakeCall()
    s = stream(Peer(call), bounds=Bounds(window_max=8))
    waiting = asyncio.ensure_future(s.call(1))
    await until(lambda: call.written == [[1]])
    await turns()
    assert not waiting.done()
    call.answer(status(grpc.StatusCode.UNAVAILABLE))
    await until(waiting.done)
    with pytest.raises(TransientError, match="UNAVAILABLE"):
        await waiting
    await s.close()


async def test_an_idle_stream_writer_sends_a_later_item_on_the_same_stream() -> None:
    call = FakeCall()
    peer = Peer(call)
    s = stream(peer)
    first = asyncio.ensure_future(s.call(1))
    await until(lambda: call.written == [[1]])
    call.answer([1])
    assert await first == 1
    for _ in range(TURNS):
        await asyncio.sleep(0)  # the writer is idle now
    second = asyncio.ensure_future(s.call(2))
    await until(lambda: call.written == [[1], [2]])
    call.answer([2])
    assert await second == 2
    assert len(peer.opened) == 1  # the idle writer woke on the same stream, no redial
    await s.close()


async def test_an_idle_writer_sends_what_callers_queue_in_the_next_turns_in_one_message() -> None:
    # Waking the idle writer without a task must not shrink batches: items that concurrent
    # callers queue in the loop turns after the first leave with it, as they did when the wake
    # went through a getter task and asyncio.wait (IDLE_SETTLE_TURNS).
    call = FakeCall()
    s = stream(Peer(call))
    warm = asyncio.ensure_future(s.call(0))
    await until(lambda: call.written == [[0]])
    call.answer([0])
    assert await warm == 0
    await turns(TURNS)  # the writer is idle
    first = asyncio.ensure_future(s.call(1))
    await asyncio.sleep(0)  # another caller, a loop turn later
    second = asyncio.ensure_future(s.call(2))
    await until(lambda: len(call.written) >= 2)
    assert call.written[1] == [1, 2]
    call.answer([1, 2])
    assert (await first, await second) == (1, 2)
    await s.close()
