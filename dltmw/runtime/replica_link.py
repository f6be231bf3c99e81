"""Outbound traffic from one orderer replica to one peer replica.

Messages queue in a bounded queue (a full queue drops the message and counts it: PBFT-lite
retransmits what matters); one task drains it into batches and writes each batch on one
long-lived `ReplicaService.ExchangeStream` call, which answers the batches in order — the first
at once, then one answer per `answer_every()` batches (an answer is a stream message too). A unary
call per batch (`Exchange`, what this link did before and still does to a node that lacks the
stream) costs each side several times the CPU of a stream message, and PBFT-lite sends many
small batches: at n = 13 a replica exchanged ~50 calls per slot, and the orderers' CPU per
transaction was mostly gRPC call set-up.

At most `WINDOW` batches are unanswered at a time; waiting longer than `CALL_TIMEOUT_S` for
room counts as a failed call. A batch the receiver refuses is answered with the reason: logged,
and the link goes on. What else happens is decided as for every call to another node
(`aio/rpc_errors.py`): any failure of the stream waits the one reconnect backoff
(`aio/batched_stream.Reconnect`, capped exponential with jitter, reset once a batch got through)
before the next stream, and forgets the cached connection first when the failure says it is bad
(the peer may have restarted on a new port). A receiver answering UNIMPLEMENTED is an older
node: this link then sends one unary `Exchange` per batch until the connection is forgotten.

Messages travel serialised (`replica_frame`): a message broadcast to every peer is serialised
once for all links (the sender frames it before it queues it on each link), and a link writes
its requests as bytes assembled from them, with no per-link copy of the messages.

Not a `BatchedStream`: nothing waits for an answer here (PBFT-lite messages are fire and forget,
and a lost one is retransmitted by the protocol), so there are no callers' futures to pair with
acks and no overload to report to a caller (a full queue drops).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable

import grpc

from dltmw.aio.batched_stream import Reconnect, first_write
from dltmw.aio.rpc_errors import Verdict, classify, reconnects
from dltmw.aio.tasks import cancel_and_wait
from dltmw.core.errors import DltmwError, TransientError
from dltmw.runtime.context import NodeContext
from dltmw.runtime.metrics import reason_name
from dltmw.runtime.replica_frame import Framed, Outbound, exchange_request, frame, stream_request
from dltmw.v1 import errors_pb2, replica_pb2

logger = logging.getLogger(__name__)

QUEUE_MAX = 4096
BATCH_MAX = 256
ENVELOPE_BYTES = 64 * 1024  # room left in a call for the request's own framing
# A batch's bytes, below the receiver's message limit: what a link sends after its peer
# stalled comes in batches of this size, each read and parsed whole by the peer: at 4 MiB a
# backup paused for 10 s held ~13 MB of its three streams' requests at its peak (memray,
# benchmarks/RESULTS.md 2026-12-05 rss58); the window's unanswered batches (WINDOW) are
# bounded by it here too.
REQUEST_BYTES_MAX = 1024 * 1024
CALL_TIMEOUT_S = 5.0  # for a unary call's answer, or for room in the stream's window
WINDOW = 8  # batches written on a stream and not yet answered
R = errors_pb2
RECONNECT = Reconnect(first_s=0.2, max_s=2.0)  # the first wait is the former fixed 0.2 s
# The service's methods, called with requests serialised here (`replica_frame`).
EXCHANGE = "/dltmw.v1.ReplicaService/Exchange"
EXCHANGE_STREAM = "/dltmw.v1.ReplicaService/ExchangeStream"


class ReplicaLink:
    """Sends to one peer replica, in order, in batches."""

    def __init__(
        self,
        ctx: NodeContext,
        channel_id: str,
        node_id: str,
        refused: Callable[[int], None] | None = None,
    ) -> None:
        """`refused`: told the reason of each batch the peer refuses on a stream (the PBFT
        orderer hears of a peer that checks our signature against another replica list)."""
        self._refused = refused
        self.ctx = ctx
        self.channel_id = channel_id
        self.node_id = node_id
        # None in the queue is no message: the stream's reader waking an idle `_take` (`_next`)
        self._queue: asyncio.Queue[Framed | None] = asyncio.Queue(maxsize=QUEUE_MAX)
        self._task: asyncio.Task[None] | None = None
        self._held: Framed | None = None  # did not fit the previous batch
        self.dropped = 0
        self._unary_only = False  # the receiver answered UNIMPLEMENTED to ExchangeStream
        self._delivered = False  # a batch got through on the current stream or call
        # Batches written on a stream the receiver turned down as UNIMPLEMENTED (so it read
        # none of them): sent again, first, as unary calls.
        self._resend: list[bytes] = []  # serialised ExchangeRequests
        self._window = _Window()

    def start(self) -> None:
        """Start the sender task."""
        name = f"replica-link-{self.channel_id}-{self.node_id}"
        self._task = self.ctx.tasks.forever(name, self._run)

    async def stop(self) -> None:
        """Stop the sender task (queued messages are dropped)."""
        await cancel_and_wait(self._task)
        self._task = None

    def send(self, message: Outbound | Framed) -> None:
        """Queue one message (dropped and counted when the queue is full); a message sent to
        several links is best framed once by the caller (`replica_frame.frame`)."""
        item = message if isinstance(message, Framed) else frame(message)
        try:
            self._queue.put_nowait(item)
        except asyncio.QueueFull:
            self.dropped += 1

    async def _run(self) -> None:
        failures = 0
        while True:
            self._delivered = False
            try:
                if self._unary_only:
                    if self._resend:
                        await self._call(self._resend.pop(0))
                    else:
                        await self._call(self._request(await self._take_some()))
                else:
                    await self._stream()
            except (grpc.aio.AioRpcError, DltmwError, TimeoutError) as exc:
                task = asyncio.current_task()
                if task is not None and task.cancelling():  # our own cancellation, surfaced
                    raise asyncio.CancelledError from exc  # by grpc as CANCELLED: stop
                if self._delivered:
                    failures = 0
                if _unimplemented(exc) and not self._unary_only:
                    logger.info("replica %s has no ExchangeStream: unary calls", self.node_id)
                    self._unary_only = True
                    self._resend = list(self._window.unanswered)
                    continue
                if classify(exc) is Verdict.FAIL:
                    why = exc.details() if isinstance(exc, grpc.aio.AioRpcError) else exc
                    logger.info("replica %s refused: %s", self.node_id, why)
                    continue
                failures += 1
                if reconnects(exc) and not isinstance(exc, TimeoutError):  # slow is not broken
                    self._unary_only = False  # a restarted peer may be a newer node
                    await self.ctx.forget(self.node_id)
                await asyncio.sleep(RECONNECT.delay_s(failures))
            else:
                failures = 0

    async def _call(self, request: bytes) -> None:
        """One batch (a serialised ExchangeRequest) as one unary call (a receiver without
        ExchangeStream)."""
        channel = await self.ctx.channel_to(self.node_id)
        exchange = channel.unary_unary(
            EXCHANGE,
            request_serializer=None,  # serialised already
            response_deserializer=replica_pb2.ExchangeResponse.FromString,
        )
        await exchange(request, timeout=CALL_TIMEOUT_S)

    async def _stream(self) -> None:
        """Write batches on one stream until it fails (raises why; never returns)."""
        first = await self._take_some()  # a stream opens with something to write (`_next`)
        channel = await self.ctx.channel_to(self.node_id)
        open_stream = channel.stream_stream(
            EXCHANGE_STREAM,
            request_serializer=None,  # serialised already
            response_deserializer=replica_pb2.ExchangeStreamResponse.FromString,
        )
        call: ExchangeCall = open_stream()  # type: ignore[call-arg]  # aio: write() mode
        self._window = window = _Window()
        reader = asyncio.ensure_future(self._read(call, window))
        try:
            request = self._request(first)
            window.sent(request)
            opening = stream_request(request, answer_every())
            if not await first_write(call, opening, reader):
                await reader  # the call ended before it started: raises its status
            while True:
                request = self._request(await self._next(reader))
                if window.full():  # a timer only for a wait (else one made and cancelled per write)
                    async with asyncio.timeout(CALL_TIMEOUT_S):
                        await window.room(reader)
                window.sent(request)
                await call.write(stream_request(request))
        except asyncio.InvalidStateError:  # written after the call ended: the reader holds why
            await reader
            raise TransientError(R.ERROR_REASON_PEER_UNAVAILABLE, "the stream ended") from None
        finally:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
            call.cancel()

    async def _next(self, reader: asyncio.Task[None]) -> list[Framed]:
        """The next batch to write, or the stream's end if it comes first.

        A stream that broke while the link was idle (a partition, the peer's restart) is noticed
        by its reader, not by a write: waiting for the next message alone would write it to the
        dead call, lose it, and only then dial again, a retransmission period (0.5 s) or more
        after the network mended, every time (found by the whole-network simulator: a primary
        cut off for a second stayed unheard by the others for two). The reader, ending, wakes
        an idle take with a None (`_wake`): no task and no `asyncio.wait` per idle wait (a
        first version raced a take task against the reader: 6 % of a backup's GIL time)."""
        while True:
            if reader.done():
                await reader  # raises why the stream ended
                raise TransientError(R.ERROR_REASON_PEER_UNAVAILABLE, "the stream ended")
            batch = await self._take()
            if batch:
                return batch

    async def _take_some(self) -> list[Framed]:
        """`_take`, skipping wake-ups meant for a stream that has ended."""
        while not (batch := await self._take()):
            pass
        return batch

    def _wake(self) -> None:
        """The stream ended: wake a `_take` waiting on an empty queue (None is no message)."""
        if self._queue.empty():
            self._queue.put_nowait(None)

    async def _read(self, call: ExchangeCall, window: _Window) -> None:
        """Take the receiver's answers; ends with the call (raising its status if it failed)."""
        try:
            await self._answers(call, window)
        finally:
            self._wake()

    async def _answers(self, call: ExchangeCall, window: _Window) -> None:
        async for response in call:
            window.answered(max(response.answers, 1))  # 0: an older receiver, one each
            if response.refused:
                if self._refused is not None:
                    self._refused(response.refused)
                logger.info(
                    "replica %s refused a batch: %s: %s",
                    self.node_id,
                    reason_name(response.refused),
                    response.refused_detail,
                )
            if not response.refused or response.answers > 1:  # it answers accepted ones too
                self._delivered = True
        raise TransientError(R.ERROR_REASON_PEER_UNAVAILABLE, f"{self.node_id} ended the stream")

    async def _take(self) -> list[Framed]:
        """The next batch: at most BATCH_MAX messages and, unless one message alone is larger,
        at most the receiver's message limit — certificates make PBFT-lite messages large (a
        new-view carries 2f+1 view changes with their prepared batches), and a call over the
        limit is refused whole, again at every retransmission. Empty: woken (`_wake`)."""
        first, self._held = self._held, None
        if first is None:
            first = await self._queue.get()
            if first is None:
                return []
        batch, size = [first], len(first.data)
        budget = min(self.ctx.limits.max_message_bytes - ENVELOPE_BYTES, REQUEST_BYTES_MAX)
        while len(batch) < BATCH_MAX and not self._queue.empty():
            message = self._queue.get_nowait()
            if message is None:
                continue
            size += len(message.data)
            if size > budget:
                self._held = message
                break
            batch.append(message)
        return batch

    def _request(self, batch: list[Framed]) -> bytes:
        """The serialised ExchangeRequest carrying `batch`."""
        return exchange_request(self.channel_id, batch)


# Written as serialised ExchangeStreamRequests (`replica_frame.stream_request`).
ExchangeCall = grpc.aio.StreamStreamCall[bytes, replica_pb2.ExchangeStreamResponse]


class _Window:
    """Batches (serialised ExchangeRequests) written on the stream and not yet answered, at
    most WINDOW."""

    def __init__(self) -> None:
        self.unanswered: deque[bytes] = deque()
        self._answer = asyncio.Event()

    def sent(self, request: bytes) -> None:
        self.unanswered.append(request)

    def answered(self, count: int) -> None:
        for _ in range(min(count, len(self.unanswered))):
            self.unanswered.popleft()
        self._answer.set()

    def full(self) -> bool:
        """Are WINDOW batches unanswered?"""
        return len(self.unanswered) >= WINDOW

    async def room(self, reader: asyncio.Task[None]) -> None:
        """Wait until fewer than WINDOW are unanswered; raise the stream's end if it ends."""
        while self.full():
            self._answer.clear()
            answer = asyncio.ensure_future(self._answer.wait())
            try:
                await asyncio.wait({answer, reader}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                answer.cancel()
            if reader.done():
                await reader  # raises why the stream ended
                raise TransientError(R.ERROR_REASON_PEER_UNAVAILABLE, "the stream ended")


def answer_every() -> int:
    """Batches per answer asked of the receiver (`rpc/replica.Answers`): half the window, so an
    answer is due well before the window is full and the stream never waits on itself."""
    return max(WINDOW // 2, 1)


def _unimplemented(exc: BaseException) -> bool:
    return isinstance(exc, grpc.aio.AioRpcError) and exc.code() == grpc.StatusCode.UNIMPLEMENTED
