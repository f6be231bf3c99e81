"""A node's side of `dltmw audit`: its audit view of one channel (AdminService.Audit).

The view is read, not kept: the public part from one read snapshot of the channel's ledger file
(`ledger/audit.py`, on a worker thread), the private part from one call on the private store's
thread (`PrivateStore.audit`). A node that is both peer and orderer of a channel reports its
peer ledger (which has the world state; block hashes are the same on both by the hash chain).

Who may ask (`membership`): admins of the node's own organisation, and admins of the channel's
member organisations (an auditing organisation can check every node of a channel it belongs to,
from its own host). The view holds only hashes, heights and private-transaction statuses —
nothing readable about any state or payload.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from dltmw.core.errors import ClientError
from dltmw.core.identity import Membership
from dltmw.ledger.audit import POINTS_MAX
from dltmw.v1 import admin_service_pb2, errors_pb2

if TYPE_CHECKING:  # the roles are the node's; a node without them need not load their code
    from dltmw.runtime.roles.orderer.solo import OrdererChannel
    from dltmw.runtime.roles.peer.channel import PeerChannel
    from dltmw.runtime.roles.privacy.manager import PrivacyManager

A = admin_service_pb2
R = errors_pb2
PRIVATE_PAGE = 2048  # private-tx records per reply (~110 bytes each: far below 4 MiB)


class Auditor:
    """Builds AuditResponses from the node's live channels (dicts shared with the node)."""

    def __init__(
        self,
        node_id: str,
        peers: Mapping[str, PeerChannel],
        orderers: Mapping[str, OrdererChannel],
        privacy: PrivacyManager | None,
    ) -> None:
        self._node_id = node_id
        self._peers = peers
        self._orderers = orderers
        self._privacy = privacy

    def membership(self, channel_id: str) -> Membership | None:
        """The channel's member organisations (None if the node does not serve it)."""
        peer = self._peers.get(channel_id)
        if peer is not None:
            return peer.view.membership
        orderer = self._orderers.get(channel_id)
        return None if orderer is None else orderer.view.membership

    async def report(self, query: A.AuditQuery) -> A.AuditResponse:
        """The audit view of `query.channel_id`; ClientError when not served or too many asked."""
        cid = query.channel_id
        peer, orderer = self._peers.get(cid), self._orderers.get(cid)
        role = peer or orderer
        if role is None:
            raise ClientError(R.ERROR_REASON_CHANNEL_NOT_FOUND, f"channel {cid!r} is not served")
        if len(query.block_numbers) > POINTS_MAX:
            raise ClientError(
                R.ERROR_REASON_INVALID_FIELD, f"at most {POINTS_MAX} block_numbers per query"
            )
        seen = await role.ledger.audit(
            query.block_numbers, query.state_chain_from, query.recompute and peer is not None
        )
        out = A.AuditResponse(
            node_id=self._node_id,
            channel_id=cid,
            roles=[r for r, d in (("peer", peer), ("orderer", orderer)) if d is not None],
            height=seen.height,
            has_state=peer is not None,
            state_hashes_from=seen.state_hashes_from,
            stored_state_hash=seen.stored_state_hash,
            recomputed_state_hash=seen.recomputed_state_hash,
        )
        for p in seen.points:
            out.points.add(
                block_number=p.block_number,
                block_hash=p.block_hash,
                state_hash=p.state_hash,
                state_chain=p.state_chain,
            )
        await self._add_private(out, query)
        return out

    async def _add_private(self, out: A.AuditResponse, query: A.AuditQuery) -> None:
        channel = None if self._privacy is None else self._privacy.channels.get(out.channel_id)
        if channel is None:
            return
        seen = await channel.store.audit(query.private_after, PRIVATE_PAGE)
        out.has_private = True
        out.private_height = seen.cursor
        out.private_stored_state_hash = seen.stored_state_hash
        out.private_recomputed_state_hash = seen.recomputed_state_hash
        out.private_next = seen.next_after
        for digest, record in seen.txs:
            out.private_txs.add(
                payload_hash=digest,
                block_number=record.block_number,
                tx_index=record.tx_index,
                status=record.status,
                state_hash=record.state_hash,
                purged=digest in seen.purged,
            )
