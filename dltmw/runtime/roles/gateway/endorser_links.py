"""A gateway's client of one remote endorser: proposals batched on one ProcessProposals stream.

One gRPC message costs as much CPU as the signature checks of a whole transaction, so the
proposal batches that concurrent callers send to the same remote peer are gathered into one
ProcessProposalsRequest (up to about `batch_max` proposals). Responses come back one per
request, in request order, on the same stream, so a FIFO of waiting batches pairs them up. When
the stream breaks, every waiting proposal gets UNAVAILABLE (PEER_UNAVAILABLE) and the next call
reconnects. A refusal of one proposal comes back as a TransientError naming the remote's status,
exactly as a failed unary ProcessProposal did before (the gateway counts that endorser as failed
for that proposal).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Sequence

import grpc

from dltmw.aio.coalesce import bounded, next_or_none
from dltmw.aio.tasks import cancel_and_wait
from dltmw.core.errors import TransientError
from dltmw.rpc.status import CODE_OF_REASON
from dltmw.runtime.context import NodeContext
from dltmw.runtime.faults import STREAM_FAILURES
from dltmw.v1 import (
    batch_pb2,
    endorser_service_pb2,
    endorser_service_pb2_grpc,
    errors_pb2,
    proposal_pb2,
)

logger = logging.getLogger(__name__)
E = endorser_service_pb2
Response = proposal_pb2.ProposalResponse
Waiter = asyncio.Future[list[Response | BaseException]]


class EndorserStream:
    """Batched, pipelined ProcessProposals to one remote endorser."""

    def __init__(self, ctx: NodeContext, node_id: str, batch_max: int = 256) -> None:
        self._ctx = ctx
        self._node_id = node_id
        self._batch_max = batch_max
        self._queue: asyncio.Queue[tuple[list[proposal_pb2.SignedProposal], Waiter]]
        self._queue = asyncio.Queue(maxsize=ctx.limits.queue_max)
        self._task: asyncio.Task[None] | None = None

    async def process_many(
        self, signed: Sequence[proposal_pb2.SignedProposal], timeout_s: float
    ) -> list[Response | BaseException]:
        """The remote's answer to each proposal, in order: its ProposalResponse, or a
        TransientError when it refused that proposal or could not be reached in time."""
        if self._task is None or self._task.done():
            self._task = self._ctx.tasks.spawn(f"endorse-{self._node_id}", self._run())
        future: Waiter = asyncio.get_running_loop().create_future()
        try:
            self._queue.put_nowait((list(signed), future))
        except asyncio.QueueFull:
            busy = TransientError(errors_pb2.ERROR_REASON_OVERLOADED, "endorse queue full")
            return [busy] * len(signed)

        def late() -> TransientError:
            return TransientError(
                errors_pb2.ERROR_REASON_PEER_UNAVAILABLE,
                f"{self._node_id}: no endorsement within {timeout_s}s",
            )

        try:
            return await bounded(future, timeout_s, late)
        except TransientError as exc:
            return [exc] * len(signed)

    async def close(self) -> None:
        """Stop the stream task."""
        await cancel_and_wait(self._task)
        self._task = None

    async def _run(self) -> None:
        waiting: deque[list[tuple[int, Waiter]]] = deque()
        try:
            channel = await self._ctx.channel_to(self._node_id)
            stub = endorser_service_pb2_grpc.EndorserServiceStub(channel)
            call = stub.ProcessProposals()  # type: ignore[call-arg]  # aio: write() mode
            reader = asyncio.create_task(self._read(call, waiting))
            try:
                while (first := await next_or_none(self._queue, reader)) is not None:
                    batch = [first]
                    size = len(batch[0][0])
                    while size < self._batch_max and not self._queue.empty():
                        batch.append(self._queue.get_nowait())
                        size += len(batch[-1][0])
                    waiting.append([(len(s), f) for s, f in batch])
                    proposals = [p for s, _ in batch for p in s]
                    await call.write(E.ProcessProposalsRequest(signed_proposals=proposals))
            finally:
                reader.cancel()
                await asyncio.gather(reader, return_exceptions=True)
        except STREAM_FAILURES as exc:
            logger.warning("endorse stream to %s failed: %s", self._node_id, exc)
            if not isinstance(exc, grpc.aio.AioRpcError) or exc.code() in (
                grpc.StatusCode.UNAVAILABLE,
                grpc.StatusCode.UNKNOWN,
            ):
                await self._ctx.forget(self._node_id)
        finally:
            self._fail_all(waiting)

    async def _read(
        self,
        call: grpc.aio.StreamStreamCall[E.ProcessProposalsRequest, E.ProcessProposalsResponse],
        waiting: deque[list[tuple[int, Waiter]]],
    ) -> None:
        async for response in call:
            outcomes = list(response.outcomes)
            position = 0
            for count, future in waiting.popleft():
                answers: list[Response | BaseException] = []
                for outcome in outcomes[position : position + count]:
                    if outcome.HasField("proposal_response"):
                        answers.append(outcome.proposal_response)
                    else:
                        answers.append(self._refused(outcome.error))
                answers += [self._refused(None)] * (count - len(answers))
                position += count
                if not future.done():
                    future.set_result(answers)

    def _refused(self, error: batch_pb2.ItemError | None) -> TransientError:
        code = CODE_OF_REASON.get(error.reason, grpc.StatusCode.UNKNOWN) if error else None
        name = code.name if code is not None else "UNKNOWN"
        message = error.message if error else "no outcome for this proposal"
        return TransientError(
            errors_pb2.ERROR_REASON_PEER_UNAVAILABLE, f"{self._node_id}: {name}: {message}"
        )

    def _fail_all(self, waiting: deque[list[tuple[int, Waiter]]]) -> None:
        error = TransientError(
            errors_pb2.ERROR_REASON_PEER_UNAVAILABLE, f"endorser {self._node_id} unavailable"
        )
        pending = [(n, f) for batch in waiting for n, f in batch]
        while not self._queue.empty():
            signed, future = self._queue.get_nowait()
            pending.append((len(signed), future))
        for count, future in pending:
            if not future.done():
                future.set_result([error] * count)
