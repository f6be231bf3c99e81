"""Outbound traffic from one orderer replica to one peer replica.

Messages queue in a bounded queue (a full queue drops the message and counts it: PBFT-lite
retransmits what matters); one task drains it into batches and sends each batch with one unary
`ReplicaService.Exchange` call under a deadline. A failed call drops the batch. What else
happens is decided as for every call to another node (`aio/rpc_errors.py`): a refusal of the
batch (FAIL) is logged and the link goes on; any other failure waits the one reconnect backoff
(`aio/batched_stream.Reconnect`, capped exponential with jitter, reset by a call that went
through) before the next call, and forgets the cached connection first when the failure says it
is bad (the peer may have restarted on a new port).

Not a `BatchedStream`: nothing waits for an answer here (PBFT-lite messages are fire and forget,
and a lost one is retransmitted by the protocol), so there are no acks to pair, no overload to
report to a caller (a full queue drops), and one unary call per batch is simpler than a stream.
"""

from __future__ import annotations

import asyncio
import logging

import grpc

from dltmw.aio.batched_stream import Reconnect
from dltmw.aio.rpc_errors import Verdict, classify, reconnects
from dltmw.aio.tasks import cancel_and_wait
from dltmw.core.errors import DltmwError
from dltmw.runtime.context import NodeContext
from dltmw.v1 import replica_pb2, replica_pb2_grpc

logger = logging.getLogger(__name__)

QUEUE_MAX = 4096
BATCH_MAX = 256
ENVELOPE_BYTES = 64 * 1024  # room left in a call for the request's own framing
CALL_TIMEOUT_S = 5.0
RECONNECT = Reconnect(first_s=0.2, max_s=2.0)  # the first wait is the former fixed 0.2 s

Outbound = replica_pb2.SignedReplicaMessage | replica_pb2.BlockSignature


class ReplicaLink:
    """Sends to one peer replica, in order, in batches."""

    def __init__(self, ctx: NodeContext, channel_id: str, node_id: str) -> None:
        self.ctx = ctx
        self.channel_id = channel_id
        self.node_id = node_id
        self._queue: asyncio.Queue[Outbound] = asyncio.Queue(maxsize=QUEUE_MAX)
        self._task: asyncio.Task[None] | None = None
        self._held: Outbound | None = None  # did not fit the previous batch
        self.dropped = 0

    def start(self) -> None:
        """Start the sender task."""
        name = f"replica-link-{self.channel_id}-{self.node_id}"
        self._task = self.ctx.tasks.forever(name, self._run)

    async def stop(self) -> None:
        """Stop the sender task (queued messages are dropped)."""
        await cancel_and_wait(self._task)
        self._task = None

    def send(self, message: Outbound) -> None:
        """Queue one message (dropped and counted when the queue is full)."""
        try:
            self._queue.put_nowait(message)
        except asyncio.QueueFull:
            self.dropped += 1

    async def _run(self) -> None:
        failures = 0
        while True:
            request = self._request(await self._take())
            try:
                channel = await self.ctx.channel_to(self.node_id)
                stub = replica_pb2_grpc.ReplicaServiceStub(channel)
                await stub.Exchange(request, timeout=CALL_TIMEOUT_S)
                failures = 0
            except (grpc.aio.AioRpcError, DltmwError) as exc:
                task = asyncio.current_task()
                if task is not None and task.cancelling():  # our own cancellation, surfaced
                    raise asyncio.CancelledError from exc  # by grpc as CANCELLED: stop
                if classify(exc) is Verdict.FAIL:
                    why = exc.details() if isinstance(exc, grpc.aio.AioRpcError) else exc
                    logger.info("replica %s refused a batch: %s", self.node_id, why)
                    continue
                failures += 1
                if reconnects(exc):
                    await self.ctx.forget(self.node_id)
                await asyncio.sleep(RECONNECT.delay_s(failures))

    async def _take(self) -> list[Outbound]:
        """The next batch: at most BATCH_MAX messages and, unless one message alone is larger,
        at most the receiver's message limit — certificates make PBFT-lite messages large (a
        new-view carries 2f+1 view changes with their prepared batches), and a call over the
        limit is refused whole, again at every retransmission."""
        first, self._held = self._held, None
        if first is None:
            first = await self._queue.get()
        batch, size = [first], first.ByteSize()
        budget = self.ctx.limits.max_message_bytes - ENVELOPE_BYTES
        while len(batch) < BATCH_MAX and not self._queue.empty():
            message = self._queue.get_nowait()
            size += message.ByteSize()
            if size > budget:
                self._held = message
                break
            batch.append(message)
        return batch

    def _request(self, batch: list[Outbound]) -> replica_pb2.ExchangeRequest:
        request = replica_pb2.ExchangeRequest(channel_id=self.channel_id)
        for message in batch:
            if isinstance(message, replica_pb2.BlockSignature):
                request.block_signatures.append(message)
            else:
                request.messages.append(message)
        return request
