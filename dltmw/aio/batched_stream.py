"""ONE batched bidirectional stream client: many callers, few messages, one reconnect policy.

Why. A gRPC message costs about as much CPU as a transaction's signature checks
(`reference/limits.md`), so everything on the hot path between nodes travels many items per
message on one long-lived stream: envelopes to the orderer (gateway's `Broadcaster`), payload
batches to another privacy manager (`Pusher`), proposals to a remote endorser
(`EndorserStream`), and an SDK's transactions to its gateway (`client/pipeline.py`). Each of
those is a thin user of this class: it says how items become a stream message (`Codec`), how
responses pair with items (`aio/acks.py`), and how to open the stream.

How. `call(item)` queues the item (at most `Bounds.queue_max`; beyond that the caller gets
`TransientError(OVERLOADED)` at once and `overloaded` counts it) and waits for its result. One
task, started on the first call under the given `TaskOwner` (the node's `ctx.tasks`; the SDK's
own), dials and then writes: whatever is queued at that moment, up to `batch_items_max` units and
`batch_bytes_max` bytes, leaves as ONE message, so batches grow with the load and a lone caller
waits for nothing. At most `window_max` messages (or waiting items, for `ByKey`) are in flight;
beyond that items wait in the queue, so a stalled peer turns into overload, never into growth.
A reader task pairs responses with waiting callers.

When the stream breaks (a status from the other side, a broken connection, a response that
breaks the protocol) or cannot be opened, every item sent or queued fails with the user's
`failure(cause)` — callers may retry — and the classification of `aio/rpc_errors.py` decides
whether the cached connection is dropped (`reconnects`). The next stream is dialled only when
there is something to send, and never sooner than `Reconnect.delay_s(failures)` after a failure:
capped exponential backoff with jitter, reset by a stream that got an answer. So a peer that is
down, refuses us, or answers garbage is redialled at most once per backoff, never in a hot loop.

Pacing (optional, `Pacing`: Nagle's rule, self-clocked). A stream whose answers come soon for
some items (`clocks(item)`: the SDK's endorse items) and late for others (a submission, answered
at its commit) can let those answers clock its messages: after a message carrying clocking items,
a message of clocking items alone is held until one of them is answered, `enough` items wait
(Nagle's full segment; at most a full message), or `hold_s` passed since that message — then
everything queued meanwhile leaves as ONE message. An item that does not clock the stream is
never held (and takes the held ones with it), and a lone item with nothing unanswered goes at
once, so a lone caller waits for nothing. Why: an open loop of spread-out callers (one SDK client
at 1,300 tx/s) otherwise sends one item per message — 86 % of a transaction's gRPC message ends
were the SDK's requests (benchmarks/RESULTS.md, lane lat59) — and its gateway's endorse
`Coalescer` holds the items that arrive during a batch in progress anyway (`ENDORSE_HOLD_S`):
holding them here instead saves the messages, the per-request work and (creator batches) the
signatures.

`close()` cancels the task (the connection is kept: stopping is not the peer's fault) and fails
everything still waiting with `failure(None)`; a later `call` starts again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

import grpc

from dltmw.aio.acks import Acks, Waiter
from dltmw.aio.deadlines import FifoDeadlines
from dltmw.aio.rpc_errors import reconnects
from dltmw.aio.tasks import TaskOwner, backoff_s, cancel_and_wait
from dltmw.aio.throttle import LogThrottle
from dltmw.core.errors import DltmwError, TransientError
from dltmw.v1 import errors_pb2

logger = logging.getLogger(__name__)
Item = TypeVar("Item")
Result = TypeVar("Result")
Req = TypeVar("Req")
Req_contra = TypeVar("Req_contra", contravariant=True)
Resp = TypeVar("Resp")
Resp_co = TypeVar("Resp_co", covariant=True)

IDLE_TURNS = 2  # loop turns an idle writer lets pass once woken (`BatchedStream._next`)

# What ends a stream as the other node's doing (or the connection's). Anything else is a bug
# in this node and propagates (the task owner makes it fatal).
REMOTE_FAILURES = (
    grpc.aio.AioRpcError,
    grpc.aio.UsageError,
    DltmwError,
    ConnectionError,
    TimeoutError,
    OSError,
)


class StreamCall(Protocol[Req_contra, Resp_co]):
    """The part of a grpc.aio stream-stream call (write mode) a BatchedStream uses."""

    async def write(self, request: Req_contra) -> None:
        """Send one message."""

    def __aiter__(self) -> AsyncIterator[Resp_co]:
        """The responses, until the call ends (raises its status if it failed)."""
        ...

    def cancel(self) -> bool:
        """End the call from this side."""
        ...


def _one(_item: object) -> int:
    return 1


def _nothing(_item: object) -> int:
    return 0


@dataclass(frozen=True)
class Codec(Generic[Item, Req]):
    """How items become stream messages, and what callers get when the stream fails.

    `units` and `size_bytes` measure an item for the batch bounds (by default: one unit, no byte
    bound). `failure(cause)` is the exception every waiting caller gets when the stream broke
    with `cause`, or when it was closed (`cause` None).
    """

    pack: Callable[[Sequence[Item]], Req]
    failure: Callable[[BaseException | None], BaseException]
    units: Callable[[Item], int] = _one
    size_bytes: Callable[[Item], int] = _nothing


@dataclass(frozen=True)
class Bounds:
    """Every bound of a BatchedStream (module docstring)."""

    queue_max: int = 10_000  # items waiting to be sent
    batch_items_max: int = 256  # units per stream message
    batch_bytes_max: int = 2 * 1024 * 1024  # bytes per stream message (at least one item)
    window_max: int = 64  # messages (InOrder) or waiting items (ByKey) in flight


@dataclass(frozen=True)
class Pacing:
    """Nagle's rule on a stream (module docstring): `clocks(item)` says whether an item's answer
    comes soon enough to clock the stream; `hold_s` bounds how long an unanswered one holds the
    next message (one stuck on a slow peer no longer holds anyone)."""

    clocks: Callable[[Any], bool]
    hold_s: float = 0.05
    enough: int = 8  # items worth a message of their own: never held (Nagle's full segment)


@dataclass(frozen=True)
class Reconnect:
    """When to dial again after a failed stream: capped exponential backoff with full jitter
    (`aio/tasks.backoff_s`). The one reconnect policy of every outbound link of a node."""

    first_s: float = 0.05
    max_s: float = 2.0

    def delay_s(self, failures: int) -> float:
        """The wait before dialling again after `failures` failed streams in a row."""
        return backoff_s(failures, self.first_s, self.max_s)


class BatchedStream(Generic[Item, Result, Req, Resp]):
    """Batched, pipelined calls on one stream to one other node (module docstring)."""

    def __init__(
        self,
        name: str,
        open_call: Callable[[], Awaitable[StreamCall[Req, Resp]]],
        codec: Codec[Item, Req],
        acks: Acks[Item, Result, Resp],
        owner: TaskOwner,
        *,
        drop: Callable[[], Awaitable[None]] | None = None,
        bounds: Bounds = Bounds(),
        reconnect: Reconnect = Reconnect(),
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        pacing: Pacing | None = None,
    ) -> None:
        self.name = name
        self._pacing = pacing
        self._clocking = 0  # clocking items sent and not yet settled (`Pacing`)
        self._clocked_at = 0.0  # loop time of the last message with a clocking item
        self._clock_heard = True  # a clocking item settled since that message (`_held`)
        self._unheld = 0  # queued items that do not clock the stream (never held)
        self._unhold: asyncio.Future[None] | None = None  # the held writer's wake-up
        self._open = open_call
        self._codec = codec
        self._acks = acks
        self._owner = owner
        self._drop = drop  # forget the cached connection (re-resolve the address next time)
        self._bounds = bounds
        self._reconnect = reconnect
        self._sleep = sleep
        self._queue: asyncio.Queue[Waiter[Item, Result]] = asyncio.Queue(bounds.queue_max)
        self._holding: Waiter[Item, Result] | None = None  # taken from the queue, not sent yet
        self._idle: asyncio.Future[None] | None = None  # the idle writer's wake-up (`_next`)
        self._acked = asyncio.Event()
        self._answered = 0
        self._task: asyncio.Task[None] | None = None
        self._throttle = LogThrottle()
        self._deadlines = FifoDeadlines()
        self.overloaded = 0  # calls refused because the queue was full
        self.dials = 0  # streams opened (or tried)

    async def call(
        self,
        item: Item,
        timeout_s: float | None = None,
        on_timeout: Callable[[], BaseException] | None = None,
    ) -> Result:
        """Send `item` in the next message; returns its result or raises its exception (or
        `on_timeout()` once `timeout_s` passed)."""
        waiter = self._queued(item)
        future = waiter.future
        # The deadline is an entry in a FIFO with one timer per timeout value
        # (`aio/deadlines.py`), not `asyncio.wait_for`, another coroutine layer or a timer
        # handle per item: this runs once per item, and each of those costs per item.
        if timeout_s is not None:
            self._deadlines.add(future, timeout_s, on_timeout or _timed_out)
        try:
            return await future
        except BaseException:  # (an answered item was forgotten by the pairing already)
            self._acks.discard(waiter)
            raise

    def send(self, item: Item) -> asyncio.Future[Result]:
        """Queue `item` for the next message; the future of its result, for a caller that waits
        for several at once (the gateway racing orderers). No deadline; a caller that stops
        waiting just drops the future, so this is for pairings whose `discard` does nothing
        (`InOrder`). Raises TransientError(OVERLOADED) when the queue is full."""
        return self._queued(item).future

    def _queued(self, item: Item) -> Waiter[Item, Result]:
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        waiter = Waiter(item, future)
        try:
            self._queue.put_nowait(waiter)
        except asyncio.QueueFull:
            self.overloaded += 1
            raise TransientError(
                errors_pb2.ERROR_REASON_OVERLOADED, f"{self.name}: queue full"
            ) from None
        self._wake()
        pacing = self._pacing
        if pacing is not None and (not pacing.clocks(item) or self._full()):
            self._unheld += not pacing.clocks(item)
            self._release()
        if self._task is None or self._task.done():
            self._task = self._owner.spawn(self.name, self._run())
        return waiter

    async def close(self) -> None:
        """Stop the stream; everything still waiting fails with `failure(None)` (idempotent)."""
        task, self._task = self._task, None
        await cancel_and_wait(task)
        self._fail_everything(self._codec.failure(None))
        self._deadlines.close()

    @property
    def running(self) -> bool:
        """Is the stream's task alive?"""
        return self._task is not None and not self._task.done()

    async def _run(self) -> None:
        failures = 0
        while True:
            self._holding = await self._queue.get()  # dial only when there is work
            try:
                cause = await self._session()
            except Exception as exc:  # a bug here: nobody may wait forever, then it is fatal
                self._fail_everything(self._codec.failure(exc))
                raise
            if cause is None:
                failures = 0
                continue
            failures = 1 if self._answered else failures + 1
            self._fail_everything(self._codec.failure(cause))
            delay = self._reconnect.delay_s(failures)
            self._warn(cause, failures, delay)
            if self._drop is not None and reconnects(cause):
                await self._drop()
            await self._sleep(delay)

    async def _session(self) -> BaseException | None:
        """One stream, until it breaks; returns why (None: the other side ended it cleanly
        with nothing waiting)."""
        self._answered = 0
        self.dials += 1
        reader: asyncio.Task[None] | None = None
        call: StreamCall[Req, Resp] | None = None
        cause: BaseException | None = None
        opening = True
        try:
            call = await self._open()
            reader = asyncio.create_task(self._read(call), name=f"{self.name}-reader")
            while await self._window_open(reader):
                first = self._holding
                if first is None:
                    first = await self._next(reader)
                    if first is None:
                        break  # the reader ended: the stream is over
                if self._pacing is not None:
                    self._holding = first
                    await self._held(reader)
                    if reader.done():
                        break  # the stream ended while held: nothing more is written on it
                self._holding = None
                batch = self._take(first)
                self._acks.sent(batch)
                if self._pacing is not None:
                    self._clock(batch)
                message = self._codec.pack([w.item for w in batch])
                if opening:  # the first write may wait for the call's start: race the reader
                    opening = False
                    if not await first_write(call, message, reader):
                        break  # the call ended before it started: the reader holds why
                else:
                    await call.write(message)
        except REMOTE_FAILURES as exc:
            cause = exc
        except asyncio.InvalidStateError:
            pass  # written after the call ended: the reader holds the status
        finally:
            if reader is not None:
                reader.cancel()
                await asyncio.gather(reader, return_exceptions=True)
            if call is not None:
                call.cancel()
        return self._cause(reader, cause)

    def _cause(
        self, reader: asyncio.Task[None] | None, cause: BaseException | None
    ) -> BaseException | None:
        """The stream's own end status (the reader's) if it has one, else the writer's."""
        if reader is not None and reader.done() and not reader.cancelled():
            ended = reader.exception()
            if ended is not None:
                if not isinstance(ended, REMOTE_FAILURES):
                    raise ended  # a bug in a pairing: let the task owner see it
                return ended
        if cause is None and (self._holding is not None or self._acks.outstanding):
            cause = TransientError(
                errors_pb2.ERROR_REASON_PEER_UNAVAILABLE, f"{self.name}: the stream ended"
            )
        return cause

    async def _read(self, call: StreamCall[Req, Resp]) -> None:
        try:
            async for response in call:
                self._answered += self._acks.received(response)
                self._acked.set()
        finally:
            self._wake()  # an idle writer must notice the stream's end at once (`_next`)
            self._release()  # and a held one

    def _wake(self) -> None:
        idle = self._idle
        if idle is not None and not idle.done():
            idle.set_result(None)

    def _release(self) -> None:
        unhold = self._unhold
        if unhold is not None and not unhold.done():
            unhold.set_result(None)

    async def _held(self, reader: asyncio.Task[None]) -> None:
        """Nagle's rule (`Pacing`): wait while clocking items are unanswered and none has been
        answered since the last message that carried one (sent less than `hold_s` ago), and
        everything queued (a message's worth at most) clocks the stream."""
        assert self._pacing is not None
        loop = asyncio.get_running_loop()
        while (
            self._clocking
            and not self._clock_heard
            and not self._unheld
            and not self._full()
            and not reader.done()
        ):
            left = self._clocked_at + self._pacing.hold_s - loop.time()
            if left <= 0:
                return
            self._unhold = unhold = loop.create_future()
            timer = loop.call_later(left, self._release)
            try:
                await unhold
            finally:
                timer.cancel()
                self._unhold = None

    def _full(self) -> bool:
        """Items worth a message wait (`Pacing.enough`, at most a message's worth; counted as
        one unit each: a bound on holding, not the batch's)."""
        assert self._pacing is not None
        waiting = self._queue.qsize() + (self._holding is not None)
        return waiting >= min(self._pacing.enough, self._bounds.batch_items_max)

    def _clock(self, batch: Sequence[Waiter[Item, Result]]) -> None:
        """Count the batch's clocking items in flight until each settles (`Pacing`)."""
        assert self._pacing is not None
        clocks = self._pacing.clocks
        clocking = 0
        for waiter in batch:
            if clocks(waiter.item):
                clocking += 1
                waiter.future.add_done_callback(self._clock_settled)
            else:
                self._unheld -= 1
        if clocking:
            self._clocking += clocking
            self._clocked_at = asyncio.get_running_loop().time()
            self._clock_heard = False

    def _clock_settled(self, _future: asyncio.Future[Any]) -> None:
        """An answer (or a give-up) to a clocking item: the held message may leave (Nagle's
        acknowledgement: any answer, not all of them)."""
        self._clocking -= 1
        self._clock_heard = True
        self._release()

    async def _next(self, reader: asyncio.Task[None]) -> Waiter[Item, Result] | None:
        """The next queued item, or None as soon as the reader (the stream's response side)
        ended: a writer that only waited on its queue would notice a broken stream at its next
        write only, leaving everyone who waits for responses hanging meanwhile.

        Woken by `_queued` or the reader's end through one future, not a getter task raced by
        `asyncio.wait` (a task, two futures and their callbacks per idle wait, four per lone bus
        message: branch bus10). Once woken it still lets `IDLE_TURNS` loop turns pass before it
        takes its batch, as that race did: items that concurrent callers queue meanwhile leave
        in the same message (woken at once, the gateway's broadcaster sent 1.4-1.9 envelopes
        per message instead of 2.0 under load: branch bus8, benchmarks/RESULTS.md)."""
        if not self._queue.empty():
            return self._queue.get_nowait()
        while self._queue.empty() and not reader.done():
            self._idle = asyncio.get_running_loop().create_future()
            try:
                await self._idle
            finally:
                self._idle = None
            for _ in range(IDLE_TURNS):
                await asyncio.sleep(0)
        if reader.done():
            return None  # (what was queued meanwhile waits for the next stream)
        return self._queue.get_nowait()

    async def _window_open(self, reader: asyncio.Task[None]) -> bool:
        """Wait until fewer than `window_max` are in flight; False if the reader ended."""
        while self._acks.outstanding >= self._bounds.window_max and not reader.done():
            self._acked.clear()
            acked = asyncio.ensure_future(self._acked.wait())
            try:
                await asyncio.wait({acked, reader}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                acked.cancel()
        return not reader.done()

    def _take(self, first: Waiter[Item, Result]) -> list[Waiter[Item, Result]]:
        """`first` and whatever queued items fit beside it in one message; the first that does
        not fit is held for the next."""
        units_of, bytes_of = self._codec.units, self._codec.size_bytes
        units_max, bytes_max = self._bounds.batch_items_max, self._bounds.batch_bytes_max
        queue = self._queue
        batch = [first]
        units, size = units_of(first.item), bytes_of(first.item)
        while not queue.empty():
            waiter = queue.get_nowait()
            units += units_of(waiter.item)
            size += bytes_of(waiter.item)
            if units > units_max or size > bytes_max:
                self._holding = waiter
                break
            batch.append(waiter)
        return batch

    def _fail_everything(self, error: BaseException) -> None:
        futures = self._acks.drain()
        if self._holding is not None:
            futures.append(self._holding.future)
            self._holding = None
        while not self._queue.empty():
            futures.append(self._queue.get_nowait().future)
        self._unheld = 0
        for future in futures:
            fail(future, error)

    def _warn(self, cause: BaseException, failures: int, delay_s: float) -> None:
        suppressed = self._throttle.admit(self.name)
        if suppressed is not None:
            more = f" ({suppressed} similar warnings suppressed)" if suppressed else ""
            logger.warning(
                "stream %s failed (%s); next dial in %.2f s at the earliest (failure %d)%s",
                self.name,
                _describe(cause),
                delay_s,
                failures,
                more,
            )


async def first_write(
    call: StreamCall[Req, Resp], message: Req, reader: asyncio.Task[None]
) -> bool:
    """Write a call's first message unless the call ends first; False if it ended.

    grpc.aio's `write` first waits for the call to have sent its initial metadata. A call
    cancelled before that (its channel closed under it: `NodeContext.forget` by another user of
    the shared channel, after a peer restarted) never sends it, and that wait never ends: the
    stream stood still for good, every caller's item waiting behind it (seen as a gateway that
    stopped submitting after an orderer's kill -9). The reader ends with the call, so the first
    write is raced against it; later writes follow a started call and end with it."""
    write = asyncio.ensure_future(call.write(message))
    try:
        await asyncio.wait({write, reader}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        if not write.done():
            write.cancel()
            await asyncio.gather(write, return_exceptions=True)
    if write.cancelled():
        return False
    write.result()  # a failed write raises as before
    return True


def fail(future: asyncio.Future[Any], error: BaseException) -> None:
    """Fail `future` unless it is settled, marking the exception retrieved: a caller may never
    look (the SDK's commit-status future of a submission whose stream broke is failed together
    with the submission, and the caller hears of it through that one only), and asyncio would
    otherwise log "Future exception was never retrieved" for a failure already reported."""
    if not future.done():
        future.set_exception(error)
        future.exception()


def _timed_out() -> BaseException:
    return TransientError(errors_pb2.ERROR_REASON_PEER_UNAVAILABLE, "no answer in time")


def _describe(cause: BaseException) -> str:
    if isinstance(cause, grpc.aio.AioRpcError):
        return f"{cause.code().name}: {cause.details()}"
    return repr(cause)
