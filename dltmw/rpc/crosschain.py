"""CrossChainService servicer: thin — routing, the caller's membership, error mapping.

Only members of a channel (their TLS certificate issued by a member organisation) may fetch its
proofs and config blocks: a proof carries a whole envelope of the channel. What is served is
built by the peer (`runtime/roles/peer/proofs.py`) through the `Proving` protocol declared here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from dltmw.core.channel import ChannelView
from dltmw.core.errors import ClientError
from dltmw.rpc.guard import Ctx, check_tls_org, require, unary
from dltmw.v1 import block_pb2, crosschain_pb2, crosschain_pb2_grpc, errors_pb2

X = crosschain_pb2


class Proving(Protocol):
    """What the service needs of the peer of a channel."""

    @property
    def view(self) -> ChannelView:
        """The channel's current configuration."""
        ...

    async def reach(self, block_number: int, timeout_s: float) -> None:
        """Return once `block_number` is committed here, else raise HEIGHT_NOT_REACHED."""
        ...

    async def commit_proof(self, tx_id: str) -> X.CommitProof:
        """The proof of a committed transaction with this peer's attestation, or
        PROOF_UNAVAILABLE."""
        ...

    async def config_blocks(self, from_block: int) -> tuple[list[block_pb2.Block], int, int]:
        """(config blocks from `from_block` on, scanned_to, height)."""
        ...


class CrossChainServicer(crosschain_pb2_grpc.CrossChainServiceServicer):
    """GetCommitProof and GetConfigBlocks on the peers of this node."""

    def __init__(self, peers: Mapping[str, Proving], height_wait_s: float) -> None:
        self._peers = peers
        self._height_wait_s = height_wait_s

    def _peer(self, channel_id: str, context: Ctx) -> Proving:
        require(bool(channel_id), "channel_id")
        peer = self._peers.get(channel_id)
        if peer is None:
            raise ClientError(
                errors_pb2.ERROR_REASON_CHANNEL_NOT_FOUND, f"no channel {channel_id!r} here"
            )
        check_tls_org(context, peer.view.membership, None)
        return peer

    @unary
    async def GetCommitProof(
        self, request: X.GetCommitProofRequest, context: Ctx
    ) -> X.GetCommitProofResponse:
        """A proof of one committed transaction."""
        peer = self._peer(request.channel_id, context)
        require(bool(request.tx_id), "tx_id")
        await peer.reach(request.min_block_number, self._height_wait_s)
        return X.GetCommitProofResponse(proof=await peer.commit_proof(request.tx_id))

    @unary
    async def GetConfigBlocks(
        self, request: X.GetConfigBlocksRequest, context: Ctx
    ) -> X.GetConfigBlocksResponse:
        """Config blocks from a height on (bounded scan)."""
        peer = self._peer(request.channel_id, context)
        blocks, scanned_to, height = await peer.config_blocks(request.from_block)
        return X.GetConfigBlocksResponse(blocks=blocks, scanned_to=scanned_to, height=height)
