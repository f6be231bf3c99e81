"""EndorserService servicer: thin — routing, TLS check, error mapping."""

from __future__ import annotations

from collections.abc import Mapping

from dltmw.core.errors import ClientError
from dltmw.rpc.guard import Ctx, check_tls_org, proposal_channel, require, unary
from dltmw.runtime.peer import PeerChannel
from dltmw.v1 import endorser_service_pb2, endorser_service_pb2_grpc, errors_pb2


class EndorserServicer(endorser_service_pb2_grpc.EndorserServiceServicer):
    """ProcessProposal on the peers of this node."""

    def __init__(self, peers: Mapping[str, PeerChannel]) -> None:
        self._peers = peers

    @unary
    async def ProcessProposal(
        self, request: endorser_service_pb2.ProcessProposalRequest, context: Ctx
    ) -> endorser_service_pb2.ProcessProposalResponse:
        """Admit, simulate and endorse."""
        require(request.HasField("signed_proposal"), "signed_proposal")
        channel_id = proposal_channel(request.signed_proposal)
        peer = self._peers.get(channel_id)
        if peer is None:
            raise ClientError(
                errors_pb2.ERROR_REASON_CHANNEL_NOT_FOUND, f"no channel {channel_id!r} here"
            )
        check_tls_org(context, peer.view.membership, None)
        response = await peer.endorse(request.signed_proposal)
        return endorser_service_pb2.ProcessProposalResponse(proposal_response=response)
