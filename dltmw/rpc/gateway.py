"""GatewayService servicer: the client-facing API.

It depends only on the `GatewayRole` and `LocalPeer` protocols (`rpc/transact.py`); the node
passes in its gateway role and the peers of its channels.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping

from dltmw.core.contract import refusal_error
from dltmw.core.errors import ClientError
from dltmw.core.txcheck import parse
from dltmw.rpc.events import block_events, check_filters
from dltmw.rpc.guard import (
    Ctx,
    admit_query,
    check_tls_org,
    envelope_channel,
    proposal_channel,
    require,
    streaming,
    unary,
)
from dltmw.rpc.transact import GatewayRole, LocalPeer, TransactSession, creator_org
from dltmw.v1 import (
    config_pb2,
    errors_pb2,
    gateway_service_pb2,
    gateway_service_pb2_grpc,
)

R = errors_pb2
G = gateway_service_pb2


class GatewayServicer(gateway_service_pb2_grpc.GatewayServiceServicer):
    """Evaluate, Endorse, Submit, CommitStatus, Events."""

    def __init__(
        self,
        gateway: GatewayRole,
        peers: Mapping[str, LocalPeer],
        window_s: float,
        wait_s: float,
        height_wait_s: float,
        node_id: str = "",
    ) -> None:
        self._gateway = gateway
        self._node_id = node_id  # to find this node's privacy key in a channel's config
        self._peers = peers
        self._window_s = window_s
        self._wait_s = wait_s
        self._height_wait_s = height_wait_s

    def _peer(self, channel_id: str) -> LocalPeer:
        peer = self._peers.get(channel_id)
        if peer is None:
            raise ClientError(R.ERROR_REASON_CHANNEL_NOT_FOUND, f"no channel {channel_id!r} here")
        return peer

    @unary
    async def Evaluate(self, request: G.EvaluateRequest, context: Ctx) -> G.EvaluateResponse:
        """Simulate on the local peer."""
        require(request.HasField("signed_proposal"), "signed_proposal")
        peer = self._peer(proposal_channel(request.signed_proposal))
        checked = await peer.admit(request.signed_proposal)
        check_tls_org(context, peer.view.membership, checked.creator.org_id)
        await peer.reach(request.min_block_number, self._height_wait_s)
        payload = await peer.simulate(checked)
        if payload.response.status != 200:
            raise refusal_error(payload.response)
        return G.EvaluateResponse(result=payload.response)

    @unary
    async def Endorse(self, request: G.EndorseRequest, context: Ctx) -> G.EndorseResponse:
        """Gather endorsements per the policy."""
        require(request.HasField("signed_proposal"), "signed_proposal")
        peer = self._peer(proposal_channel(request.signed_proposal))
        check_tls_org(context, peer.view.membership, creator_org(request.signed_proposal))
        result = await self._gateway.endorse(
            peer.view.channel_id,
            request.signed_proposal,
            list(request.endorsing_organizations),
            request.min_block_number,
        )
        return G.EndorseResponse(prepared_payload=result.prepared_payload, result=result.result)

    @unary
    async def Submit(self, request: G.SubmitRequest, context: Ctx) -> G.SubmitResponse:
        """Check and forward to the orderer."""
        require(request.HasField("envelope"), "envelope")
        channel_id, _ = envelope_channel(request.envelope)
        peer = self._peer(channel_id)
        raw = request.envelope.SerializeToString()
        checked = await self._gateway.check_envelope(channel_id, raw)
        check_tls_org(context, peer.view.membership, checked.creator_org)
        await self._gateway.submit(channel_id, raw, checked.header.tx_id)
        return G.SubmitResponse(tx_id=checked.header.tx_id)

    @unary
    async def CommitStatus(
        self, request: G.CommitStatusRequest, context: Ctx
    ) -> G.CommitStatusResponse:
        """Wait for the local peer to commit the transaction."""
        require(bool(request.query), "query")
        query = parse(G.CommitStatusQuery, request.query, "query")
        require(bool(query.tx_id), "query.tx_id")
        peer = self._peer(query.channel_id)
        admit_query(
            context, query, request.query, request.signature, peer.view.membership, self._window_s
        )
        record = await peer.wait_for_tx(query.tx_id, self._wait_s)
        return G.CommitStatusResponse(
            result=record.code,  # type: ignore[arg-type]
            block_number=record.block_number,
            tx_index=record.tx_index,
        )

    @streaming
    async def Transact(
        self, request_iterator: AsyncIterator[G.TransactRequest], context: Ctx
    ) -> AsyncIterator[G.TransactResponse]:
        """Endorse / Submit / CommitStatus items, many per message (see rpc/transact.py)."""
        session = TransactSession(self._gateway, self._peers, context, self._wait_s)
        async for response in session.serve(request_iterator):
            yield response

    @streaming
    async def Events(
        self, request: G.EventsRequest, context: Ctx
    ) -> AsyncIterator[G.EventsResponse]:
        """Stream committed blocks' transactions from start_block."""
        require(bool(request.query), "query")
        query = parse(G.EventsQuery, request.query, "query")
        peer = self._peer(query.channel_id)
        who = admit_query(
            context, query, request.query, request.signature, peer.view.membership, self._window_s
        )
        check_filters(query.filters)
        # Payloads owed to this node are reported as owed to its own organisation's clients:
        # the only ones its privacy manager gives them to (rpc/privacy.py).
        me = (n for n in peer.view.config.peers if n.node_id == self._node_id)
        node = next(me, config_pb2.NodeConfig())
        owed_key = node.privacy_public_key if node.org_id == who.org_id else b""
        async for block in peer.committed_blocks(query.start_block):
            yield block_events(block, query, owed_key)
