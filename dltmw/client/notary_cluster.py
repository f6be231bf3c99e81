"""SDK for a notary cluster: ask members until f+1 of them agree, verify every signature.

How the members are asked, and what counts as an answer, is `rpc/cluster_verdict.py` (shared
with vault nodes); this client brings its own connections to the members (`NotaryClient`, one
per member, closed with the client) and rotates the first member asked, so load spreads. By
default the first member asked orders the request and the f others attest it (`attest`), so the
cluster orders each notarisation once.
"""

from __future__ import annotations

import itertools

from dltmw.client.utxo import NotaryClient, PartyFiles
from dltmw.core.notary_cluster import Verdict
from dltmw.rpc.cluster_verdict import Cluster, ClusterUnavailable, gather_verdict
from dltmw.v1 import notarisation_pb2

__all__ = ["ClusterNotaryClient", "ClusterUnavailable"]


class ClusterNotaryClient:
    """Notarises through the members of one notary cluster."""

    def __init__(
        self, party: PartyFiles, cluster_id: str, relay: bool = False, attest: bool = True
    ) -> None:
        self.cluster = Cluster.of(party.netmap, cluster_id)
        self.party = party
        self.cluster_id = cluster_id
        self.members: tuple[str, ...] = self.cluster.members
        self.f = self.cluster.f
        self.relay = relay
        self.attest = attest
        self._clients: dict[str, NotaryClient] = {}
        self._next = itertools.count()

    async def close(self) -> None:
        """Close every member connection (they are this client's own)."""
        clients, self._clients = self._clients, {}
        for client in clients.values():
            await client.close()

    async def __aenter__(self) -> ClusterNotaryClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _call(
        self, member: str, request: notarisation_pb2.NotarisationRequest, attest: bool
    ) -> notarisation_pb2.NotarisationResponse:
        client = self._clients.get(member)
        if client is None:
            client = await NotaryClient.connect(self.party, member)
            self._clients[member] = client
        return await client.notarise(request, ordered_elsewhere=attest)

    async def notarise(self, request: notarisation_pb2.NotarisationRequest) -> Verdict:
        """The cluster's verdict on one signed request (ClusterUnavailable if none)."""
        start = next(self._next) % len(self.members)
        return await gather_verdict(
            self.cluster, self._call, request, start, self.relay, attest=self.attest
        )
