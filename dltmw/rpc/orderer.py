"""OrdererService servicer: Broadcast admission and Deliver streaming (whole blocks, or headers
only for a peer's censorship monitor: `SeekInfo.headers_only`).

Broadcast checks each request's envelopes in chunks on a small thread pool (`cryptography`
releases the GIL, so the creator signatures use both cores and the event loop stays free), and
serves several requests of one stream at once (`pipelined`) so their envelopes share the orderer's
group commit; responses still come one per request, in request order. A member peer forwarding
its gateway's submissions to a solo orderer is not re-checked for creator signatures its gateway
and every committing peer verify (`rpc/forwarder.py`). It depends only on the
`Ordering` protocol declared here; the node passes in the channels it orders.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

from dltmw.aio.clock import utc_now
from dltmw.aio.coalesce import pipelined
from dltmw.aio.pool import capturing, map_chunked
from dltmw.core.channel import ChannelView
from dltmw.core.errors import ClientError, DltmwError, reason_value
from dltmw.core.identity import IdentityError
from dltmw.core.txcheck import CheckedEnvelope, check_envelope, parse
from dltmw.core.wire_field import length_delimited
from dltmw.rpc.forwarder import forwarded_channels, is_peer_node
from dltmw.rpc.guard import Ctx, admit_query, require, streaming
from dltmw.rpc.tls import caller_tls_cert
from dltmw.rpc.tracing import NO_TRACING, Tracer, now_ns
from dltmw.v1 import block_pb2, errors_pb2, orderer_service_pb2, orderer_service_pb2_grpc

R = errors_pb2
Result = orderer_service_pb2.BroadcastResult
STREAM_DEPTH = 16  # requests of one Broadcast stream in progress at once
# Deliver's initial metadata: the channel's height at the orderer when the stream opened.
HEIGHT_METADATA = "dltmw-height"
HEADERS_EVERY_S = 0.5  # a header-only follower's pace: well inside any censorship timeout
BLOCK_FIELD = orderer_service_pb2.DeliverResponse.DESCRIPTOR.fields_by_name["block"].number


class Ordering(Protocol):
    """What the orderer service needs of an ordered channel (`runtime/roles/orderer`)."""

    @property
    def view(self) -> ChannelView:
        """The channel's current configuration."""
        ...

    async def submit_many(self, envelopes: Sequence[bytes]) -> list[DltmwError | None]:
        """Queue admitted envelopes durably for ordering; per envelope None or its refusal."""
        ...

    def block_data_from(self, start: int, stop: int | None) -> AsyncIterator[bytes]:
        """Blocks from `start` (until `stop`, or following new ones), serialised as stored."""
        ...

    @property
    def height(self) -> int:
        """Blocks the channel holds here."""
        ...

    @property
    def checks_envelopes_again(self) -> bool:
        """Does this orderer's core check an envelope Broadcast admitted again (so Broadcast's
        signature check is worth remembering)? A creator-batch signature is remembered either
        way: the other envelopes of its batch ask again (`check_envelope`)."""
        ...


class OrdererServicer(orderer_service_pb2_grpc.OrdererServiceServicer):
    """Broadcast and Deliver for the channels this node orders."""

    def __init__(
        self,
        orderers: Mapping[str, Ordering],
        window_s: float,
        pool: ThreadPoolExecutor,
        tracer: Tracer = NO_TRACING,
    ) -> None:
        self._orderers = orderers
        self._window_s = window_s
        self._pool = pool  # the node's verify pool: one owner, shut down by Node.stop
        self._tracer = tracer  # an "order" span per accepted envelope, in its tx's trace

    def _views(self) -> dict[str, ChannelView]:
        return {cid: o.view for cid, o in self._orderers.items()}

    async def _handle(
        self, request: orderer_service_pb2.BroadcastRequest, peer_tls: bytes | None = None
    ) -> orderer_service_pb2.BroadcastResponse:
        """`peer_tls`: the caller's TLS certificate when it names a peer node (`forwarder`)."""
        envelopes = list(request.envelopes)
        views, now, window_s = self._views(), utc_now(), self._window_s
        start_ns = now_ns() if self._tracer.enabled else 0

        again = {cid for cid, o in self._orderers.items() if o.checks_envelopes_again}
        forwarded = forwarded_channels(peer_tls, views, views.keys() - again)

        def check(envelope: bytes) -> CheckedEnvelope:
            # a private transaction's agreements: checked by the gateway and at commit, not
            # here (`check_envelope`, `agreements`); a member peer's forwarded creator
            # signatures: by its gateway and at commit (`rpc/forwarder.py`)
            return check_envelope(
                envelope, views, now, window_s, again, agreements=False, forwarded=forwarded
            )

        verdicts = await map_chunked(self._pool, capturing(check, ClientError), envelopes)
        by_channel: dict[str, list[int]] = {}
        for i, v in enumerate(verdicts):
            if isinstance(v, CheckedEnvelope):
                by_channel.setdefault(v.header.channel_id, []).append(i)
        outcomes: dict[int, DltmwError | None] = {}
        for channel_id, indexes in by_channel.items():
            queued = await self._orderers[channel_id].submit_many([envelopes[i] for i in indexes])
            outcomes.update(zip(indexes, queued, strict=True))
        results = []
        for i, v in enumerate(verdicts):
            error = v if isinstance(v, ClientError) else outcomes[i]
            if error is not None:
                results.append(Result(reason=error.reason, message=error.message))  # type: ignore[arg-type]
            else:
                assert isinstance(v, CheckedEnvelope)
                results.append(Result(tx_id=v.header.tx_id, accepted=True))
        if self._tracer.enabled:
            accepted = [r.tx_id for r in results if r.accepted]
            self._tracer.record("order", accepted, start_ns, now_ns())
        return orderer_service_pb2.BroadcastResponse(results=results)

    @streaming
    async def Broadcast(
        self, request_iterator: AsyncIterator[orderer_service_pb2.BroadcastRequest], context: Ctx
    ) -> AsyncIterator[orderer_service_pb2.BroadcastResponse]:
        """Admit batches of envelopes; one response per request, results in order."""
        tls = caller_tls_cert(context)
        peer_tls = tls if is_peer_node(tls) else None  # its role, read once per stream

        async def handle(
            request: orderer_service_pb2.BroadcastRequest,
        ) -> orderer_service_pb2.BroadcastResponse:
            return await self._handle(request, peer_tls)

        async for response in pipelined(request_iterator, handle, STREAM_DEPTH):
            yield response

    @streaming
    async def Deliver(  # type: ignore[override]
        self, request: orderer_service_pb2.DeliverRequest, context: Ctx
    ) -> AsyncIterator[bytes]:
        """Stream blocks from start_block: each a serialised `DeliverResponse` framed around
        the block's stored bytes (`deliver_frame`; the boundary sends bytes as they are, and
        the generated base class types its responses as messages, hence the ignore)."""
        require(bool(request.seek_info), "seek_info")
        seek = parse(orderer_service_pb2.SeekInfo, request.seek_info, "seek_info")
        orderer = self._orderers.get(seek.channel_id)
        if orderer is None:
            raise ClientError(R.ERROR_REASON_CHANNEL_NOT_FOUND, f"no channel {seek.channel_id!r}")
        view = orderer.view
        signed = (request.seek_info, request.signature)
        try:
            admit_query(context, seek, *signed, view.membership, self._window_s)
        except ClientError as member_error:
            # Orderer organisations may read blocks too (other orderers catching up), under the
            # same rules: time window, signature, TLS certificate of the signer's organisation.
            try:
                admit_query(context, seek, *signed, view.orderer_membership, self._window_s)
            except ClientError:
                raise member_error from None
        stop = None if seek.follow else seek.stop_block
        # The height now, before any block: a follower learns how far behind it is at once (a
        # peer is not ready until it has committed this far, docs/operations.md).
        await context.send_initial_metadata(((HEIGHT_METADATA, str(orderer.height)),))
        if seek.headers_only:
            blocks = newest_headers(orderer, seek.start_block, stop)
        else:
            blocks = orderer.block_data_from(seek.start_block, stop)
        async for block_data in blocks:
            if orderer.view is not view:  # a config block changed who may read
                view = orderer.view
                still_reader(seek.requester, view)
            yield deliver_frame(block_data)


def deliver_frame(block_data: bytes) -> bytes:
    """A serialised `DeliverResponse` holding the block serialised as `block_data`: the block's
    stored bytes sent as they are, so the peer verifies exactly what the orderer stored, and
    a block is not parsed, copied into a response and serialised again for every follower
    (31 % of a busy orderer's GIL time, benchmarks/RESULTS.md, lane priv2)."""
    return length_delimited(BLOCK_FIELD, block_data)


async def newest_headers(orderer: Ordering, start: int, stop: int | None) -> AsyncIterator[bytes]:
    """Headers for a censorship monitor: the newest block's first (from `start` at the
    earliest), then, at most every `HEADERS_EVERY_S`, the newest one after the last sent. It
    needs only the newest header to see how far this orderer is; every header was a second
    follower of each block on every orderer (the block read and parsed again per peer)."""
    number = max(start, orderer.height - 1)
    while stop is None or number <= stop:
        async for data in orderer.block_data_from(number, number):
            yield header_of(block_pb2.Block.FromString(data)).SerializeToString()
        await asyncio.sleep(HEADERS_EVERY_S)
        number = max(number + 1, orderer.height - 1)


def header_of(block: block_pb2.Block) -> block_pb2.Block:
    """`block` without its data: the header and the orderer signatures over its hash (which
    the header alone determines), so a follower can verify it like the whole block."""
    out = block_pb2.Block()
    out.header.CopyFrom(block.header)
    out.metadata.signatures.extend(block.metadata.signatures)
    return out


def still_reader(requester: bytes, view: ChannelView) -> None:
    """A follower admitted under an older config must still be a member (or an orderer) under
    `view`: a removed organisation's peer or a revoked certificate reads no further block."""
    now = utc_now()
    try:
        view.membership.identify(requester, now)
    except IdentityError as member_error:
        try:
            view.orderer_membership.identify(requester, now)
        except IdentityError:
            raise ClientError(reason_value(member_error.reason), str(member_error)) from None
