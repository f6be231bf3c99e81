"""The privacy manager's channel to another node is shared: a failed call drops it only when the
connection is bad, and only the instance that failed (`runtime/roles/privacy/links.py`).

A real grpc.aio server on 127.0.0.1 stands in for the recipient's privacy manager: its Push holds
each batch until the test lets it go, its AgreeBatch answers INTERNAL (a BLAME_PEER answer). The
sender's side is the real `Pusher` and `Agreements._ask_batch` on a real `NodeContext` whose
cached channel to the recipient is a plain insecure channel (no TLS: below the I/O boundary of
what is tested here).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import grpc

from dltmw.aio.tasks import TaskOwner
from dltmw.core.errors import DltmwError
from dltmw.runtime.config_file import Limits
from dltmw.runtime.context import NodeContext
from dltmw.runtime.roles.privacy.agreement import Agreements
from dltmw.runtime.roles.privacy.pusher import Pusher
from dltmw.v1 import errors_pb2
from dltmw.v1 import privacy_manager_service_pb2 as P
from dltmw.v1 import privacy_manager_service_pb2_grpc as svc
from dltmw.v1 import private_agreement_pb2 as A

NODE = "peer0.org2"


class Recipient(svc.PrivacyManagerServiceServicer):
    """Push: acknowledges each batch once `release` is set. AgreeBatch: INTERNAL."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.pushed = asyncio.Event()

    async def Push(
        self, request_iterator: AsyncIterator[P.PushRequest], context: Any
    ) -> AsyncIterator[P.PushResponse]:
        async for _request in request_iterator:
            self.pushed.set()
            await self.release.wait()
            yield P.PushResponse(stored=1)

    async def AgreeBatch(self, request: A.AgreeBatchRequest, context: Any) -> None:
        await context.abort(grpc.StatusCode.INTERNAL, "a fault of the recipient")


def _ctx() -> NodeContext:
    signer = SimpleNamespace(identity_bytes=b"me", sign=lambda data: b"sig")
    return NodeContext(
        node_id="peer0.org1",
        org_id="Org1",
        signer=signer,  # type: ignore[arg-type]
        tls=None,  # type: ignore[arg-type]
        addresses=None,  # type: ignore[arg-type]
        limits=Limits(),
        tasks=TaskOwner(),
    )


async def test_an_answer_blaming_the_peer_does_not_close_the_channel_a_push_rides_on() -> None:
    """review of priv14: an AgreeBatch answered INTERNAL (BLAME_PEER) closed the shared cached
    channel (`ctx.forget`), cancelling the push in flight on it to the same node: that Send went
    to queued delivery with ERROR lines although the node was up. Red with the old rule
    (`reconnects(exc)` → forget): the push fails with PEER_UNAVAILABLE."""
    recipient = Recipient()
    server = grpc.aio.server()
    svc.add_PrivacyManagerServiceServicer_to_server(recipient, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    ctx = _ctx()
    link = ctx._channels[NODE] = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    pusher = Pusher(ctx, NODE)
    try:
        push = asyncio.ensure_future(pusher.push(P.PushRequest(batch=b"b", signature=b"s")))
        await asyncio.wait_for(recipient.pushed.wait(), 10)  # on the wire, not acknowledged
        agreements = Agreements(ctx, None)  # type: ignore[arg-type]
        out = await agreements._ask_batch("deals", NODE, [A.AgreeQuery(tx_id="t")])
        assert isinstance(out[0], DltmwError)  # the blamed answer fails its item
        assert out[0].reason == errors_pb2.ERROR_REASON_PRIVATE_AGREEMENT_TIMEOUT
        assert ctx._channels.get(NODE) is link  # kept: the connection answered
        recipient.release.set()
        response = await asyncio.wait_for(push, 10)
        assert response.stored == 1  # the concurrent push succeeded
    finally:
        await pusher.close()
        await ctx.close()
        await server.stop(None)
        await ctx.tasks.stop()


async def test_forget_drops_only_the_channel_instance_that_failed() -> None:
    """Two callers fail on the same dead channel; the first drops it and dials anew, the second
    must not close the new one (every call on it would be cancelled). Red when `forget` ignores
    `failed`: the new channel is dropped."""
    ctx = _ctx()
    old = grpc.aio.insecure_channel("127.0.0.1:1")
    new = ctx._channels[NODE] = grpc.aio.insecure_channel("127.0.0.1:1")
    try:
        await ctx.forget(NODE, old)  # stale: the cached one is another
        assert ctx._channels.get(NODE) is new
        await ctx.forget(NODE, new)
        assert NODE not in ctx._channels
        ctx._channels[NODE] = new
        await ctx.forget(NODE)  # without an instance: as before, whatever is cached
        assert NODE not in ctx._channels
    finally:
        await old.close(None)
        await new.close(None)
