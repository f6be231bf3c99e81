"""A client of the orderer's Broadcast stream that batches envelopes.

One gRPC message costs as much CPU as the signature checks of a whole transaction, so concurrent
submissions are gathered into one BroadcastRequest (up to `batch_max` envelopes). Responses come
back in request order on the same stream, so a FIFO of waiting futures pairs them up. When the
stream breaks, every waiting submitter gets UNAVAILABLE (it may retry: a duplicate that reaches
the ledger is marked DUPLICATE_TXID, never applied twice) and the next submission reconnects.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque

import grpc

from dltmw.aio.coalesce import next_or_none
from dltmw.aio.tasks import cancel_and_wait
from dltmw.core.errors import TransientError
from dltmw.runtime.context import NodeContext
from dltmw.runtime.faults import STREAM_FAILURES
from dltmw.v1 import errors_pb2, orderer_service_pb2, orderer_service_pb2_grpc

logger = logging.getLogger(__name__)
Result = orderer_service_pb2.BroadcastResult


class Broadcaster:
    """Batched, pipelined submission of envelopes to one orderer node."""

    def __init__(self, ctx: NodeContext, orderer_id: str, batch_max: int = 200) -> None:
        self._ctx = ctx
        self._orderer_id = orderer_id
        self._batch_max = batch_max
        self._queue: asyncio.Queue[tuple[bytes, asyncio.Future[Result]]] = asyncio.Queue(
            maxsize=ctx.limits.queue_max
        )
        self._task: asyncio.Task[None] | None = None

    async def submit(self, envelope: bytes) -> Result:
        """Send one envelope; returns the orderer's result for it."""
        if self._task is None or self._task.done():
            self._task = self._ctx.tasks.spawn(f"broadcast-{self._orderer_id}", self._run())
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        try:
            self._queue.put_nowait((envelope, future))
        except asyncio.QueueFull as exc:
            raise TransientError(errors_pb2.ERROR_REASON_OVERLOADED, "submit queue full") from exc
        return await future

    async def close(self) -> None:
        """Stop the stream task."""
        await cancel_and_wait(self._task)
        self._task = None

    async def _run(self) -> None:
        waiting: deque[list[asyncio.Future[Result]]] = deque()
        try:
            channel = await self._ctx.channel_to(self._orderer_id)
            stub = orderer_service_pb2_grpc.OrdererServiceStub(channel)
            call = stub.Broadcast()  # type: ignore[call-arg]  # aio: no iterator = write() mode
            reader = asyncio.create_task(self._read(call, waiting))
            try:
                while (first := await next_or_none(self._queue, reader)) is not None:
                    batch = [first]
                    while len(batch) < self._batch_max and not self._queue.empty():
                        batch.append(self._queue.get_nowait())
                    waiting.append([f for _, f in batch])
                    await call.write(
                        orderer_service_pb2.BroadcastRequest(envelopes=[e for e, _ in batch])
                    )
            finally:
                reader.cancel()
                await asyncio.gather(reader, return_exceptions=True)
        except STREAM_FAILURES as exc:
            logger.warning("broadcast stream to %s failed: %s", self._orderer_id, exc)
            await self._ctx.forget(self._orderer_id)
        finally:
            self._fail_all(waiting)

    async def _read(
        self,
        call: grpc.aio.StreamStreamCall[
            orderer_service_pb2.BroadcastRequest, orderer_service_pb2.BroadcastResponse
        ],
        waiting: deque[list[asyncio.Future[Result]]],
    ) -> None:
        async for response in call:
            futures = waiting.popleft()
            for future, result in zip(futures, response.results, strict=False):
                if not future.done():
                    future.set_result(result)

    def _fail_all(self, waiting: deque[list[asyncio.Future[Result]]]) -> None:
        error = TransientError(
            errors_pb2.ERROR_REASON_PEER_UNAVAILABLE, f"orderer {self._orderer_id} unavailable"
        )
        pending = [f for batch in waiting for f in batch]
        while not self._queue.empty():
            pending.append(self._queue.get_nowait()[1])
        for future in pending:
            if not future.done():
                future.set_exception(error)
