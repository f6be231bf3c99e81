"""SDK for a notary cluster: ask members until f+1 of them agree, verify every signature.

How the members are asked, and what counts as an answer, is `rpc/cluster_verdict.py` (shared
with vault nodes); this client brings its own connections to the members (`NotaryClient`, one
per member, closed with the client) and rotates the first member asked, so load spreads. By
default the first member asked orders the request and the f others attest it (`attest`), so the
cluster orders each notarisation once. Concurrent calls to one member travel together
(`batched`, `client/notary_batches.py`): one NotariseStream message per batch of what waits,
instead of one unary call per request — the members' cost per notarisation is then a fraction
of the unary path's (benchmarks/RESULTS.md, 2026-12-03).
"""

from __future__ import annotations

import itertools

from dltmw.aio.coalesce import Coalescer
from dltmw.client.notary_batches import Asked, notary_batches
from dltmw.client.utxo import NotaryClient, PartyFiles
from dltmw.core.notary_cluster import Verdict
from dltmw.rpc.cluster_verdict import Cluster, ClusterUnavailable, gather_verdict
from dltmw.v1 import notarisation_pb2

__all__ = ["ClusterNotaryClient", "ClusterUnavailable"]

Answer = notarisation_pb2.NotarisationResponse | notarisation_pb2.NotarisationResult


class ClusterNotaryClient:
    """Notarises through the members of one notary cluster."""

    def __init__(
        self,
        party: PartyFiles,
        cluster_id: str,
        relay: bool = False,
        attest: bool = True,
        batched: bool = True,
    ) -> None:
        self.cluster = Cluster.of(party.netmap, cluster_id)
        self.party = party
        self.cluster_id = cluster_id
        self.members: tuple[str, ...] = self.cluster.members
        self.f = self.cluster.f
        self.relay = relay
        self.attest = attest
        self.batched = batched
        self._clients: dict[str, NotaryClient] = {}
        self._batches: dict[tuple[str, bool], Coalescer[Asked, notarisation_pb2.NotarisationResult]]
        self._batches = {}
        self._next = itertools.count()

    async def close(self) -> None:
        """Stop the batches and close every member connection (they are this client's own)."""
        batches, self._batches = self._batches, {}
        for coalescer in batches.values():
            await coalescer.close()
        clients, self._clients = self._clients, {}
        for client in clients.values():
            await client.close()

    async def __aenter__(self) -> ClusterNotaryClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _client(self, member: str) -> NotaryClient:
        client = self._clients.get(member)
        if client is None:
            client = await NotaryClient.connect(self.party, member)
            self._clients[member] = client
        return client

    async def _call(
        self, member: str, request: notarisation_pb2.NotarisationRequest, attest: bool
    ) -> Answer:
        client = await self._client(member)
        if not self.batched:
            return await client.notarise(request, ordered_elsewhere=attest)
        batches = self._batches.get((member, attest))
        if batches is None:  # the requests come signed one by one: no batch signature
            batches = self._batches[(member, attest)] = notary_batches(
                client, ordered_elsewhere=attest
            )
        return await batches.call(("", request))

    async def notarise(self, request: notarisation_pb2.NotarisationRequest) -> Verdict:
        """The cluster's verdict on one signed request (ClusterUnavailable if none)."""
        start = next(self._next) % len(self.members)
        return await gather_verdict(
            self.cluster, self._call, request, start, self.relay, attest=self.attest
        )
