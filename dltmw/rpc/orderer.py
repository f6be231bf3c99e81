"""OrdererService servicer: Broadcast admission and Deliver streaming."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping

from dltmw.core.channel import ChannelView
from dltmw.core.errors import ClientError, DltmwError
from dltmw.core.txcheck import check_envelope, parse
from dltmw.rpc.guard import Ctx, admit_query, require, streaming
from dltmw.runtime.context import utc_now
from dltmw.runtime.orderer import OrdererChannel
from dltmw.v1 import errors_pb2, orderer_service_pb2, orderer_service_pb2_grpc

R = errors_pb2
Result = orderer_service_pb2.BroadcastResult


class OrdererServicer(orderer_service_pb2_grpc.OrdererServiceServicer):
    """Broadcast and Deliver for the channels this node orders."""

    def __init__(self, orderers: Mapping[str, OrdererChannel], window_s: float) -> None:
        self._orderers = orderers
        self._window_s = window_s

    def _views(self) -> dict[str, ChannelView]:
        return {cid: o.view for cid, o in self._orderers.items()}

    async def _admit(self, envelope: bytes) -> Result:
        try:
            checked = check_envelope(envelope, self._views(), utc_now(), self._window_s)
            await self._orderers[checked.header.channel_id].submit(envelope)
        except DltmwError as exc:
            return Result(reason=exc.reason, message=exc.message)  # type: ignore[arg-type]
        return Result(tx_id=checked.header.tx_id, accepted=True)

    @streaming
    async def Broadcast(
        self, request_iterator: AsyncIterator[orderer_service_pb2.BroadcastRequest], context: Ctx
    ) -> AsyncIterator[orderer_service_pb2.BroadcastResponse]:
        """Admit batches of envelopes; one response per request, results in order."""
        async for request in request_iterator:
            results = await asyncio.gather(*(self._admit(e) for e in request.envelopes))
            yield orderer_service_pb2.BroadcastResponse(results=results)

    @streaming
    async def Deliver(
        self, request: orderer_service_pb2.DeliverRequest, context: Ctx
    ) -> AsyncIterator[orderer_service_pb2.DeliverResponse]:
        """Stream blocks from start_block."""
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
        async for block in orderer.blocks_from(seek.start_block, stop):
            yield orderer_service_pb2.DeliverResponse(block=block)
