"""Pushing payload batches to another node's privacy manager over one long-lived stream.

A Push stream carries signed PushBatch messages; the receiver answers each batch, in order, once
it stored it durably. As with the orderer's Broadcast (`broadcaster.py`), a FIFO of futures pairs
answers with batches, so many batches are in flight on one stream. When the stream breaks —
including when the receiver refuses a batch, which ends the stream with that batch's status —
every waiting batch fails (the sender's Send then fails; nothing was ordered) and the next push
opens a new stream.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque

import grpc

from dltmw.aio.tasks import cancel_and_wait
from dltmw.core.errors import PeerError, TransientError
from dltmw.rpc.status import reason_of
from dltmw.runtime.context import NodeContext
from dltmw.runtime.faults import STREAM_FAILURES
from dltmw.v1 import errors_pb2, privacy_manager_service_pb2, privacy_manager_service_pb2_grpc

logger = logging.getLogger(__name__)
P = privacy_manager_service_pb2
R = errors_pb2
PUSH_TIMEOUT_S = 30.0


class Pusher:
    """Pipelined PushRequests to one node."""

    def __init__(self, ctx: NodeContext, node_id: str) -> None:
        self._ctx = ctx
        self._node_id = node_id
        self._queue: asyncio.Queue[tuple[P.PushRequest, asyncio.Future[int]]] = asyncio.Queue(
            maxsize=ctx.limits.queue_max
        )
        self._task: asyncio.Task[None] | None = None

    async def push(self, request: P.PushRequest) -> int:
        """Push one signed batch; returns the number stored, or raises."""
        if self._task is None or self._task.done():
            self._task = self._ctx.tasks.spawn(f"push-{self._node_id}", self._run())
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        try:
            self._queue.put_nowait((request, future))
        except asyncio.QueueFull as exc:
            raise TransientError(R.ERROR_REASON_OVERLOADED, "push queue full") from exc
        try:
            return await asyncio.wait_for(future, PUSH_TIMEOUT_S)
        except TimeoutError as exc:
            raise TransientError(
                R.ERROR_REASON_PEER_UNAVAILABLE,
                f"privacy manager of {self._node_id} did not acknowledge in {PUSH_TIMEOUT_S}s",
            ) from exc

    async def close(self) -> None:
        """Stop the stream task (idempotent)."""
        await cancel_and_wait(self._task)
        self._task = None

    async def _run(self) -> None:
        waiting: deque[asyncio.Future[int]] = deque()
        # Stopping (cancelled) is not a failure of the peer: its channel is not forgotten (that
        # waits on the context's lock, which a reconnecting role may hold for seconds).
        error: Exception = TransientError(R.ERROR_REASON_SHUTTING_DOWN, "privacy manager stopping")
        broken = False
        try:
            channel = await self._ctx.channel_to(self._node_id)
            stub = privacy_manager_service_pb2_grpc.PrivacyManagerServiceStub(channel)
            call = stub.Push()  # type: ignore[call-arg]  # aio: no iterator = write() mode
            reader = asyncio.create_task(self._read(call, waiting))
            try:
                while True:
                    getter = asyncio.ensure_future(self._queue.get())
                    await asyncio.wait({getter, reader}, return_when=asyncio.FIRST_COMPLETED)
                    if not getter.done():  # the stream ended: fail what waits at once
                        getter.cancel()
                        break
                    request, future = getter.result()
                    waiting.append(future)
                    await call.write(request)
            finally:
                reader.cancel()
                await asyncio.gather(reader, return_exceptions=True)
                if reader.done() and not reader.cancelled():
                    broken = True
                    error = self._error(reader.exception())
        except STREAM_FAILURES as exc:
            broken = True
            error = self._error(exc)
        finally:
            self._fail_all(waiting, error)
        if broken and isinstance(error, TransientError):
            await self._ctx.forget(self._node_id)

    def _error(self, exc: BaseException | None) -> Exception:
        if isinstance(exc, grpc.aio.AioRpcError):
            logger.warning("push stream to %s failed: %s", self._node_id, exc.code().name)
            reason = reason_of(exc)
            if reason is not None and exc.code() != grpc.StatusCode.UNAVAILABLE:
                return PeerError(
                    R.ERROR_REASON_PEER_UNAVAILABLE,
                    f"privacy manager of {self._node_id} refused the payloads: {reason}",
                )
        return TransientError(
            R.ERROR_REASON_PEER_UNAVAILABLE, f"privacy manager of {self._node_id} unavailable"
        )

    async def _read(
        self,
        call: grpc.aio.StreamStreamCall[P.PushRequest, P.PushResponse],
        waiting: deque[asyncio.Future[int]],
    ) -> None:
        async for response in call:
            future = waiting.popleft()
            if not future.done():
                future.set_result(response.stored)

    def _fail_all(self, waiting: deque[asyncio.Future[int]], error: Exception) -> None:
        pending = list(waiting)
        while not self._queue.empty():
            pending.append(self._queue.get_nowait()[1])
        for future in pending:
            if not future.done():
                future.set_exception(error)
