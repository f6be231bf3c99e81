"""Pushing payload batches to another node's privacy manager over one long-lived stream.

A Push stream carries signed PushBatch messages, one per stream message (each is signed on its
own); the receiver answers each, in order, once it stored it durably (`InOrder` acks), so many
batches are in flight on one stream. The stream itself — queue, window, reconnect, close — is the
node's one batched stream client (`aio/batched_stream.py`). When the stream breaks, every waiting
batch fails and the sender's Send fails (nothing was ordered): with PeerError when the receiver
refused a batch (which ends the stream with that batch's status), else with TransientError (the
caller may push again). Stopping is not a failure of the peer: waiters get SHUTTING_DOWN.
"""

from __future__ import annotations

from collections.abc import Sequence

import grpc

from dltmw.aio.acks import InOrder
from dltmw.aio.batched_stream import BatchedStream, Bounds, Codec, StreamCall
from dltmw.aio.rpc_errors import Verdict, classify, reason_of
from dltmw.core.errors import PeerError, TransientError
from dltmw.runtime.context import NodeContext
from dltmw.v1 import errors_pb2, privacy_manager_service_pb2, privacy_manager_service_pb2_grpc

P = privacy_manager_service_pb2
R = errors_pb2
PUSH_TIMEOUT_S = 30.0


class Pusher:
    """Pipelined PushRequests to one node."""

    def __init__(self, ctx: NodeContext, node_id: str) -> None:
        self._ctx = ctx
        self._node_id = node_id
        self._link: grpc.aio.Channel | None = None  # the channel the current stream rides on
        codec = Codec[P.PushRequest, P.PushRequest](pack=_only, failure=self._failure)
        self._stream: BatchedStream[P.PushRequest, P.PushResponse, P.PushRequest, P.PushResponse]
        self._stream = BatchedStream(
            f"push-{node_id}",
            self._open,
            codec,
            InOrder(_answer),
            ctx.tasks,
            drop=self._drop,
            bounds=Bounds(queue_max=ctx.limits.queue_max, batch_items_max=1),
        )

    async def push(self, request: P.PushRequest) -> P.PushResponse:
        """Push one signed batch; returns its acknowledgement (the number stored, the
        agreements asked on it), or raises."""
        return await self._stream.call(request, PUSH_TIMEOUT_S, self._late)

    async def close(self) -> None:
        """Stop the stream (idempotent)."""
        await self._stream.close()

    async def _open(self) -> StreamCall[P.PushRequest, P.PushResponse]:
        self._link = await self._ctx.channel_to(self._node_id)
        stub = privacy_manager_service_pb2_grpc.PrivacyManagerServiceStub(self._link)
        return stub.Push()  # type: ignore[call-arg]  # aio: write() mode

    async def _drop(self) -> None:
        """The stream broke on a bad connection: drop the cached channel it rode on, and only
        that one (a newer one, dialled by another caller, carries their calls: `links.py`)."""
        link, self._link = self._link, None
        if link is not None:
            await self._ctx.forget(self._node_id, link)

    def _late(self) -> BaseException:
        return TransientError(
            R.ERROR_REASON_PEER_UNAVAILABLE,
            f"privacy manager of {self._node_id} did not acknowledge in {PUSH_TIMEOUT_S}s",
        )

    def _failure(self, cause: BaseException | None) -> BaseException:
        if cause is None:
            return TransientError(R.ERROR_REASON_SHUTTING_DOWN, "privacy manager stopping")
        reason = reason_of(cause)
        if reason is not None and classify(cause) is not Verdict.RETRY:
            return PeerError(
                R.ERROR_REASON_PEER_UNAVAILABLE,
                f"privacy manager of {self._node_id} refused the payloads: {reason}",
            )
        return TransientError(
            R.ERROR_REASON_PEER_UNAVAILABLE, f"privacy manager of {self._node_id} unavailable"
        )


def _only(requests: Sequence[P.PushRequest]) -> P.PushRequest:
    (request,) = requests  # one signed batch per stream message (batch_items_max=1)
    return request


def _answer(response: P.PushResponse, _requests: Sequence[P.PushRequest]) -> list[P.PushResponse]:
    return [response]
