"""The one batched stream client (dltmw.aio.batched_stream), against an in-memory stream: ordered
acks, the in-flight window, typed overload, reconnect with backoff, no hot redial of a peer that
refuses us, and a close that leaves nothing behind. No test waits on the clock: progress is
awaited in bounded loop turns, and the backoff's sleep is a test double the test releases."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import grpc
import pytest

from dltmw.aio.acks import ByKey, InOrder
from dltmw.aio.batched_stream import BatchedStream, Bounds, Codec, Reconnect
from dltmw.aio.tasks import TaskOwner
from dltmw.core.errors import TransientError
from dltmw.v1 import errors_pb2

R = errors_pb2
END = object()
TURNS = 200  # loop turns a condition may take to become true (no timing involved)


async def until(condition: Callable[[], bool]) -> None:
    for _ in range(TURNS):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition not reached within the bounded number of loop turns")


def status(code: grpc.StatusCode) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), code.name, None)


class FakeCall:
    """One in-memory stream: records what was written; the test answers."""

    def __init__(self, refuse_with: BaseException | None = None) -> None:
        self.written: list[list[int]] = []
        self.cancelled = False
        self._out: asyncio.Queue[object] = asyncio.Queue()
        self._refuse_with = refuse_with

    async def write(self, request: list[int]) -> None:
        if self.cancelled:
            raise asyncio.InvalidStateError("done")
        self.written.append(request)
        if self._refuse_with is not None:  # the peer ends the stream with this status
            self._out.put_nowait(self._refuse_with)

    def answer(self, response: object) -> None:
        self._out.put_nowait(response)

    def __aiter__(self) -> AsyncIterator[Any]:
        return self._responses()

    async def _responses(self) -> AsyncIterator[Any]:
        while True:
            item = await self._out.get()
            if item is END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    def cancel(self) -> bool:
        self.cancelled = True
        self._out.put_nowait(END)
        return True


class Peer:
    """Opens FakeCalls (or fails to), and records what the stream did to the connection."""

    def __init__(self, *calls: FakeCall | BaseException) -> None:
        self.script = list(calls)
        self.opened: list[FakeCall] = []
        self.dropped = 0

    async def open(self) -> FakeCall:
        step = self.script.pop(0) if self.script else FakeCall()
        if isinstance(step, BaseException):
            raise step
        self.opened.append(step)
        return step

    async def drop(self) -> None:
        self.dropped += 1


class Gate:
    """The backoff sleep, held until the test releases it; records every delay asked for."""

    def __init__(self) -> None:
        self.delays: list[float] = []
        self._release = asyncio.Event()

    async def sleep(self, delay_s: float) -> None:
        self.delays.append(delay_s)
        await self._release.wait()
        self._release.clear()

    def release(self) -> None:
        self._release.set()


def failure(cause: BaseException | None) -> BaseException:
    if cause is None:
        return TransientError(R.ERROR_REASON_SHUTTING_DOWN, "closed")
    return TransientError(R.ERROR_REASON_PEER_UNAVAILABLE, f"broken: {cause!r}")


def doubled(response: list[int], items: Sequence[int]) -> list[int]:
    return list(response)


CODEC = Codec[int, list[int]](pack=list, failure=failure)


def stream(
    peer: Peer, gate: Gate | None = None, bounds: Bounds | None = None, **kw: Any
) -> BatchedStream[int, int, list[int], list[int]]:
    return BatchedStream(
        "test",
        peer.open,
        CODEC,
        InOrder(doubled),
        TaskOwner(),
        drop=peer.drop,
        bounds=bounds or Bounds(),
        reconnect=Reconnect(first_s=1.0, max_s=8.0),
        sleep=(gate or Gate()).sleep,
        **kw,
    )


async def test_items_are_batched_and_each_caller_gets_its_own_answer_in_order() -> None:
    call = FakeCall()
    s = stream(Peer(call), bounds=Bounds(window_max=1))
    first = asyncio.ensure_future(s.call(1))
    await until(lambda: len(call.written) == 1)
    later = [asyncio.ensure_future(s.call(i)) for i in (2, 3, 4)]  # queue while 1 is in flight
    await until(lambda: s._queue.qsize() == 3)
    call.answer([10])
    await until(lambda: len(call.written) == 2)
    assert call.written == [[1], [2, 3, 4]]  # what queued meanwhile left as one message
    call.answer([20, 30, 40])
    assert await first == 10
    assert await asyncio.gather(*later) == [20, 30, 40]
    await s.close()


async def test_two_messages_in_flight_are_answered_in_the_order_they_were_sent() -> None:
    call = FakeCall()
    s = stream(Peer(call), bounds=Bounds(batch_items_max=1))
    calls = [asyncio.ensure_future(s.call(i)) for i in (1, 2)]
    await until(lambda: len(call.written) == 2)
    call.answer([100])
    call.answer([200])
    assert await asyncio.gather(*calls) == [100, 200]
    await s.close()


async def test_the_window_bounds_messages_in_flight() -> None:
    call = FakeCall()
    s = stream(Peer(call), bounds=Bounds(batch_items_max=1, window_max=2))
    calls = [asyncio.ensure_future(s.call(i)) for i in range(6)]
    await until(lambda: len(call.written) == 2)
    for _ in range(TURNS):  # the writer has every chance to send more: it must not
        await asyncio.sleep(0)
    assert call.written == [[0], [1]]
    call.answer([0])
    await until(lambda: len(call.written) == 3)
    assert call.written[2] == [2]
    await s.close()
    assert await calls[0] == 0
    closed = await asyncio.gather(*calls[1:], return_exceptions=True)
    assert all(isinstance(c, TransientError) for c in closed), closed


async def test_a_full_queue_is_a_typed_overload_that_is_counted() -> None:
    call = FakeCall()
    s = stream(Peer(call), bounds=Bounds(queue_max=2, batch_items_max=1, window_max=1))
    sent = asyncio.ensure_future(s.call(1))
    await until(lambda: len(call.written) == 1)
    queued = [asyncio.ensure_future(s.call(i)) for i in (2, 3)]
    await until(s._queue.full)
    with pytest.raises(TransientError) as refused:
        await s.call(4)
    assert refused.value.reason == R.ERROR_REASON_OVERLOADED
    assert s.overloaded == 1
    await s.close()
    closed = await asyncio.gather(sent, *queued, return_exceptions=True)
    assert [c.reason for c in closed] == [R.ERROR_REASON_SHUTTING_DOWN] * 3  # type: ignore[union-attr]


async def test_unavailable_drops_the_connection_and_redials_after_a_backoff() -> None:
    broken = FakeCall(refuse_with=status(grpc.StatusCode.UNAVAILABLE))
    healthy = FakeCall()
    peer, gate = Peer(broken, healthy), Gate()
    s = stream(peer, gate)
    with pytest.raises(TransientError, match="UNAVAILABLE"):
        await s.call(1)
    await until(lambda: gate.delays != [])
    assert peer.dropped == 1  # UNAVAILABLE: the node may have moved: re-resolve
    assert 0.5 <= gate.delays[0] <= 1.0  # backoff after the first failure: [first/2, first]
    waiting = asyncio.ensure_future(s.call(2))
    for _ in range(TURNS):
        await asyncio.sleep(0)
    assert len(peer.opened) == 1  # no redial before the backoff ran out
    gate.release()
    await until(lambda: len(healthy.written) == 1)
    healthy.answer([2])
    assert await waiting == 2
    assert s.dials == 2
    await s.close()


async def test_a_peer_that_refuses_us_is_not_redialled_in_a_hot_loop() -> None:
    refusals = [FakeCall(refuse_with=status(grpc.StatusCode.PERMISSION_DENIED)) for _ in range(4)]
    peer, gate = Peer(*refusals), Gate()
    s = stream(peer, gate)
    for attempt in range(1, 4):
        caller = asyncio.ensure_future(s.call(attempt))
        with pytest.raises(TransientError, match="PERMISSION_DENIED"):
            await caller
        await until(lambda n=attempt: len(gate.delays) == n)  # type: ignore[misc]
        more = asyncio.ensure_future(s.call(99))
        for _ in range(TURNS):
            await asyncio.sleep(0)
        assert len(peer.opened) == attempt  # the next caller waits for the backoff
        more.cancel()
        gate.release()
        await until(lambda n=attempt: len(peer.opened) == n + 1)  # type: ignore[misc]
    caps = [1.0, 2.0, 4.0]
    assert all(c / 2 <= d <= c for d, c in zip(gate.delays, caps, strict=True))  # growing
    assert peer.dropped == 0  # a refusal says nothing bad about the connection
    await s.close()


async def test_a_peer_breaking_the_protocol_is_blamed_dropped_and_backed_off() -> None:
    call = FakeCall()
    peer, gate = Peer(call), Gate()
    s = stream(peer, gate)
    caller = asyncio.ensure_future(s.call(1))
    await until(lambda: len(call.written) == 1)
    call.answer([1, 2])  # two results for one item
    with pytest.raises(TransientError, match="PeerError"):
        await caller
    await until(lambda: gate.delays != [])
    assert peer.dropped == 1
    await s.close()


async def test_answers_by_key_arrive_in_any_order_and_a_second_answer_can_be_awaited() -> None:
    call = FakeCall()

    def split(response: list[tuple[str, int]]) -> list[tuple[Any, int]]:
        return [(key, value) for key, value in response]

    acks: ByKey[str, int, list[tuple[str, int]]] = ByKey(lambda item: item, split)
    s: BatchedStream[str, int, list[str], list[tuple[str, int]]] = BatchedStream(
        "keyed",
        Peer(call).open,  # type: ignore[arg-type]
        Codec[str, list[str]](pack=list, failure=failure),
        acks,
        TaskOwner(),
    )
    second = acks.expect("a+")
    calls = [asyncio.ensure_future(s.call(k)) for k in ("a", "b")]
    await until(lambda: call.written == [["a", "b"]])  # type: ignore[comparison-overlap]
    call.answer([("b", 2), ("x", 0), ("a", 1)])
    assert await asyncio.gather(*calls) == [1, 2]
    assert acks.outstanding == 0
    call.answer([("a+", 11)])
    assert await second == 11
    await s.close()


async def test_close_fails_every_waiter_and_leaves_no_task_nor_unretrieved_error() -> None:
    loop = asyncio.get_running_loop()
    reported: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, context: reported.append(context))
    before = asyncio.all_tasks()
    call = FakeCall()

    def split(response: list[tuple[str, int]]) -> list[tuple[Any, int]]:
        return list(response)

    acks: ByKey[str, int, list[tuple[str, int]]] = ByKey(lambda item: item, split)
    s: BatchedStream[str, int, list[str], list[tuple[str, int]]] = BatchedStream(
        "closing",
        Peer(call).open,  # type: ignore[arg-type]
        Codec[str, list[str]](pack=list, failure=failure),
        acks,
        TaskOwner(),
        bounds=Bounds(batch_items_max=1, window_max=1),
    )
    acks.expect("never-awaited")  # nobody looks at it: failing it must not be reported
    calls = [asyncio.ensure_future(s.call(k)) for k in ("a", "b", "c")]
    await until(lambda: len(call.written) == 1)
    assert s.running
    await s.close()
    assert not s.running and call.cancelled
    for c in calls:
        with pytest.raises(TransientError, match="closed"):
            await c
    await until(lambda: not (asyncio.all_tasks() - before - {asyncio.current_task()}))
    del calls
    gc.collect()
    await asyncio.sleep(0)
    assert not [r for r in reported if "never retrieved" in str(r)], reported


async def test_a_message_holds_no_more_than_its_byte_bound() -> None:
    call = FakeCall()
    codec = Codec[int, list[int]](pack=list, failure=failure, size_bytes=lambda item: item)
    s: BatchedStream[int, int, list[int], list[int]] = BatchedStream(
        "bytes",
        Peer(call).open,
        codec,
        InOrder(doubled),
        TaskOwner(),
        bounds=Bounds(batch_bytes_max=10, window_max=1),
    )
    first = asyncio.ensure_future(s.call(1))
    await until(lambda: len(call.written) == 1)
    rest = [asyncio.ensure_future(s.call(n)) for n in (4, 5, 2, 9)]
    await until(lambda: s._queue.qsize() == 4)
    call.answer([1])
    await until(lambda: len(call.written) == 2)
    call.answer([4, 5])
    await until(lambda: len(call.written) == 3)
    assert call.written == [[1], [4, 5], [2]]  # 4+5+2 > 10: the 2 waits for the next message
    await s.close()
    await asyncio.gather(first, *rest, return_exceptions=True)


class UnstartedCall(FakeCall):
    """A call cancelled before it started (its channel closed under it): grpc.aio's `write`
    waits for the initial metadata that is never sent, and reading ends with the local
    cancellation (asyncio.CancelledError, as grpc.aio raises it)."""

    async def write(self, request: list[int]) -> None:
        await asyncio.Event().wait()  # never set: the metadata is never sent

    async def _responses(self) -> AsyncIterator[Any]:
        raise asyncio.CancelledError
        yield  # an async generator


async def test_a_call_cancelled_before_it_started_ends_the_stream_instead_of_hanging() -> None:
    """Seen on real processes: after an orderer's kill -9 a gateway's Broadcast stream stood
    still for good (every Submit timed out for minutes) — its new call's first write waited for
    a start that never came. Now the caller is failed (it may retry) and the next stream works."""
    unstarted, healthy = UnstartedCall(), FakeCall()
    peer, gate = Peer(unstarted, healthy), Gate()
    s = stream(peer, gate)
    with pytest.raises(TransientError, match="PEER_UNAVAILABLE"):
        await asyncio.wait_for(s.call(1), 5)  # bounded: without the fix it never returns
    await until(lambda: gate.delays != [])
    assert peer.dropped == 1  # the connection is re-resolved
    gate.release()
    waiting = asyncio.ensure_future(s.call(2))
    await until(lambda: len(healthy.written) == 1)
    healthy.answer([2])
    assert await waiting == 2
    await s.close()


async def test_an_idle_writer_sends_what_callers_queue_in_the_next_turns_in_one_message() -> None:
    # The idle writer's wake-up (a getter task raced by asyncio.wait) lets two loop turns pass
    # before it takes its batch, so items that concurrent callers queue meanwhile leave with the
    # first. A wake-up on the next turn (tried: branch bus8) sent the gateway's broadcaster 1.4-1.9
    # envelopes per message instead of 2.0 under 4 publishers: smaller blocks, throughput 20-33 %
    # lower (benchmarks/RESULTS.md).
    call = FakeCall()
    s = stream(Peer(call))
    warm = asyncio.ensure_future(s.call(0))
    await until(lambda: call.written == [[0]])
    call.answer([0])
    assert await warm == 0
    for _ in range(TURNS):
        await asyncio.sleep(0)  # the writer is idle
    first = asyncio.ensure_future(s.call(1))
    await asyncio.sleep(0)  # another caller, a loop turn later
    second = asyncio.ensure_future(s.call(2))
    await until(lambda: len(call.written) >= 2)
    assert call.written[1] == [1, 2]
    call.answer([1, 2])
    assert (await first, await second) == (1, 2)
    await s.close()


@pytest.mark.parametrize(
    "call_at_the_end", [False, True], ids=["end-while-idle", "end-in-the-turn-of-a-new-call"]
)
async def test_an_idle_writer_notices_the_stream_end_at_once_and_the_next_call_dials_again(
    call_at_the_end: bool,
) -> None:
    # The idle writer waits on one future that a queued item OR the reader's end resolves
    # (`BatchedStream._next`, branch bus10). Were the reader's end not to wake it, the next
    # item would be written on the ended stream and its caller would wait for ever; an item
    # queued as the stream ends waits for the next stream, it is not written on the ended one.
    old, new = FakeCall(), FakeCall()
    peer = Peer(old, new)
    s = stream(peer)
    warm = asyncio.ensure_future(s.call(0))
    await until(lambda: old.written == [[0]])
    old.answer([0])
    assert await warm == 0
    for _ in range(TURNS // 10):
        await asyncio.sleep(0)  # the writer is idle
    old.answer(END)  # the other side ends the stream cleanly, nothing waiting
    if call_at_the_end:
        after = asyncio.ensure_future(s.call(1))
    else:
        await until(lambda: s._idle is None)  # the writer woke and left the ended stream
        after = asyncio.ensure_future(s.call(1))
    await until(lambda: new.written == [[1]])
    assert old.written == [[0]]
    new.answer([1])
    assert await after == 1
    assert s.dials == 2 and peer.dropped == 0  # a clean end is not the peer's fault
    await s.close()
