"""A client of one orderer's Broadcast stream that batches envelopes.

One gRPC message costs as much CPU as the signature checks of a whole transaction, so concurrent
submissions are gathered into one BroadcastRequest (up to `batch_max` envelopes, half a gRPC
message of bytes). The orderer answers every request, in order, with one result per envelope
(`InOrder` acks). The stream itself — queue, window, reconnect, close — is the node's one batched
stream client (`aio/batched_stream.py`). When the stream breaks, every waiting submitter gets
UNAVAILABLE (it may retry: a duplicate that reaches the ledger is marked DUPLICATE_TXID, never
applied twice).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from dltmw.aio.acks import InOrder
from dltmw.aio.batched_stream import BatchedStream, Bounds, Codec, StreamCall
from dltmw.core.errors import TransientError
from dltmw.runtime.context import NodeContext
from dltmw.v1 import errors_pb2, orderer_service_pb2, orderer_service_pb2_grpc

Result = orderer_service_pb2.BroadcastResult
Request = orderer_service_pb2.BroadcastRequest
Response = orderer_service_pb2.BroadcastResponse


class Broadcaster:
    """Batched, pipelined submission of envelopes to one orderer node."""

    def __init__(self, ctx: NodeContext, orderer_id: str, batch_max: int = 200) -> None:
        self._ctx = ctx
        self._orderer_id = orderer_id
        bounds = Bounds(
            queue_max=ctx.limits.queue_max,
            batch_items_max=batch_max,
            batch_bytes_max=ctx.limits.max_message_bytes // 2,
        )
        codec = Codec[bytes, Request](
            pack=lambda envelopes: Request(envelopes=envelopes),
            failure=self._failure,
            size_bytes=len,
        )
        self._stream: BatchedStream[bytes, Result, Request, Response]
        self._stream = BatchedStream(
            f"broadcast-{orderer_id}",
            self._open,
            codec,
            InOrder(_results),
            ctx.tasks,
            drop=lambda: ctx.forget(orderer_id),
            bounds=bounds,
        )

    def send(self, envelope: bytes) -> asyncio.Future[Result]:
        """Send one envelope; the future of the orderer's result (the gateway races orderers
        with it: `orderer_choice`). Raises TransientError(OVERLOADED) when the queue is full."""
        return self._stream.send(envelope)

    async def close(self) -> None:
        """Stop the stream."""
        await self._stream.close()

    async def _open(self) -> StreamCall[Request, Response]:
        channel = await self._ctx.channel_to(self._orderer_id)
        stub = orderer_service_pb2_grpc.OrdererServiceStub(channel)
        return stub.Broadcast()  # type: ignore[call-arg]  # aio: write() mode

    def _failure(self, _cause: BaseException | None) -> BaseException:
        return TransientError(
            errors_pb2.ERROR_REASON_PEER_UNAVAILABLE, f"orderer {self._orderer_id} unavailable"
        )


def _results(response: Response, _envelopes: Sequence[bytes]) -> list[Result]:
    return list(response.results)
