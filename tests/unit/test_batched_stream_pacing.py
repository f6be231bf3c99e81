"""Nagle's rule on the batched stream (`aio/batched_stream.Pacing`): items whose answers come soon
(here: non-negative ints; the SDK's endorse items) clock the stream, so what callers queue while
one is unanswered leaves as one message when an answer comes; an item that does not clock it
(negative: a submission answered at its commit) is never held, nor is a full message, and a
stream that ends frees a held writer. No test waits on the clock: `hold_s` is far beyond any
test's run (or 0), and progress is awaited in bounded loop turns."""

from __future__ import annotations

import asyncio

from dltmw.aio.batched_stream import BatchedStream, Bounds, Pacing
from dltmw.core.errors import TransientError
from tests.unit.test_batched_stream import END, TURNS, FakeCall, Gate, Peer, stream, until

FOREVER_S = 3600.0


def clocks(item: int) -> bool:
    return item >= 0


def paced(
    peer: Peer,
    hold_s: float = FOREVER_S,
    bounds: Bounds | None = None,
    gate: Gate | None = None,
    enough: int = 8,
) -> BatchedStream[int, int, list[int], list[int]]:
    return stream(peer, gate, bounds, pacing=Pacing(clocks, hold_s, enough))


async def turns() -> None:
    for _ in range(TURNS):  # the writer has every chance to send: it must not
        await asyncio.sleep(0)


async def test_a_lone_item_goes_at_once_and_items_behind_an_unanswered_one_leave_together() -> None:
    call = FakeCall()
    s = paced(Peer(call))
    first = asyncio.ensure_future(s.call(1))
    await until(lambda: call.written == [[1]])  # nothing unanswered: no wait at all
    second = asyncio.ensure_future(s.call(2))
    await turns()
    third = asyncio.ensure_future(s.call(3))
    await turns()
    assert call.written == [[1]]  # held: 1 is unanswered
    call.answer([10])
    await until(lambda: len(call.written) == 2)
    assert call.written[1] == [2, 3]  # the answer clocks the next message: both in one
    call.answer([20, 30])
    assert (await first, await second, await third) == (10, 20, 30)
    await s.close()


async def test_an_item_that_does_not_clock_the_stream_is_never_held_and_takes_the_held() -> None:
    call = FakeCall()
    s = paced(Peer(call))
    first = asyncio.ensure_future(s.call(1))
    await until(lambda: call.written == [[1]])
    held = asyncio.ensure_future(s.call(2))
    await turns()
    assert call.written == [[1]]
    late = asyncio.ensure_future(s.call(-1))  # e.g. a submission: answered at its commit
    await until(lambda: len(call.written) == 2)
    assert call.written[1] == [2, -1]
    call.answer([10])
    call.answer([20, -10])
    assert (await first, await held, await late) == (10, 20, -10)
    await s.close()


async def test_a_full_message_is_not_held() -> None:
    call = FakeCall()
    s = paced(Peer(call), bounds=Bounds(batch_items_max=2))
    first = asyncio.ensure_future(s.call(1))
    await until(lambda: call.written == [[1]])
    more = [asyncio.ensure_future(s.call(i)) for i in (2, 3)]
    await until(lambda: len(call.written) == 2)
    assert call.written[1] == [2, 3]  # sent with 1 still unanswered: the message was full
    call.answer([10])
    call.answer([20, 30])
    assert (await first, *await asyncio.gather(*more)) == (10, 20, 30)
    await s.close()


async def test_enough_items_for_a_message_of_their_own_are_not_held() -> None:
    # Nagle's full segment: at saturation a closed loop's callers queue in bursts (one per block's
    # commit statuses); holding a burst for the previous answer only delays it.
    call = FakeCall()
    s = paced(Peer(call), enough=3)
    first = asyncio.ensure_future(s.call(1))
    await until(lambda: call.written == [[1]])
    more = [asyncio.ensure_future(s.call(i)) for i in (2, 3)]
    await turns()
    assert call.written == [[1]]  # two wait: fewer than enough
    more.append(asyncio.ensure_future(s.call(4)))
    await until(lambda: len(call.written) == 2)
    assert call.written[1] == [2, 3, 4]  # sent with 1 still unanswered
    call.answer([10])
    call.answer([20, 30, 40])
    assert (await first, *await asyncio.gather(*more)) == (10, 20, 30, 40)
    await s.close()


async def test_an_unanswered_item_older_than_hold_s_holds_nobody() -> None:
    call = FakeCall()
    s = paced(Peer(call), hold_s=0.0)
    first = asyncio.ensure_future(s.call(1))
    await until(lambda: call.written == [[1]])
    second = asyncio.ensure_future(s.call(2))
    await until(lambda: call.written == [[1], [2]])  # 1 is unanswered, but past its hold
    call.answer([10])
    call.answer([20])
    assert (await first, await second) == (10, 20)
    await s.close()


async def test_a_stream_that_ends_frees_the_held_writer_and_nothing_is_written_on_it() -> None:
    old, new = FakeCall(), FakeCall()
    peer = Peer(old, new)
    gate = Gate()
    s = paced(peer, gate=gate)
    first = asyncio.ensure_future(s.call(1))
    await until(lambda: old.written == [[1]])
    held = asyncio.ensure_future(s.call(2))
    await turns()
    assert old.written == [[1]]
    old.answer(END)  # the other side ends the stream with 1 unanswered and 2 held
    await until(lambda: first.done() and held.done())  # no caller hangs
    outcomes = await asyncio.gather(first, held, return_exceptions=True)
    assert all(isinstance(o, TransientError) for o in outcomes), outcomes
    assert old.written == [[1]]
    after = asyncio.ensure_future(s.call(3))  # the next call dials again, nothing held
    await until(lambda: len(gate.delays) == 1)
    gate.release()  # (the backoff after a failed stream)
    await until(lambda: new.written == [[3]])
    new.answer([30])
    assert await after == 30
    await s.close()
