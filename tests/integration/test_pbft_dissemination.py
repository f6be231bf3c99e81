"""PBFT-lite with dissemination on (`batch.pbft_dissemination`), four real orderer processes.

- Under a load of a few hundred transactions, then with the primary killed (-9) and restarted:
  every acknowledged transaction is committed exactly once on both peers, every block carries
  2f+1 = 3 orderer signatures, the replicas hold one chain, the restarted primary catches up.
- What PBFT-lite ordered is certificates, not envelopes: every decided batch in a replica's
  record store holds availability certificates with f+1 = 2 distinct acks over a batch the
  store also holds (kind "batch"), and no envelope; the primary's own batches are carried
  (its ack only, `batch.pbft_carried_batches`, on for new channels).
- A channel made without `pbft_carried_batches` (as before the flag: a rolling upgrade keeps
  it off until every replica runs a release that reads it) orders by the ack path alone: every
  certificate has f+1 acks, none is carried.
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from dltmw.client import GatewayClient
from dltmw.core.pbft.availability import parse_certificate
from dltmw.v1 import replica_pb2

from .forged_envelopes import forged_envelope_from_a_member_peer
from .test_pbft_ordering import BATCH, BFT_FOUR, TOPOLOGY, VALID, kill_primary_under_load

pytestmark = pytest.mark.integration
ON = BFT_FOUR.replace(BATCH, BATCH[:-2] + ", pbft_dissemination = true }")  # init's default
UNCARRIED = ON.replace(
    "pbft_dissemination = true }", "pbft_dissemination = true, pbft_carried_batches = false }"
)


def _records(net: Path, node: str) -> list[tuple[str, bytes]]:
    path = f"file:{net}/nodes/{node}/data/trades.pbft.sqlite?mode=ro"
    db = sqlite3.connect(path, uri=True)
    try:
        return [(k, bytes(d)) for k, d in db.execute("SELECT kind, data FROM records ORDER BY id")]
    finally:
        db.close()


def test_the_topology_switches_dissemination_on() -> None:
    assert ON not in (TOPOLOGY, BFT_FOUR)
    assert UNCARRIED != ON


async def test_dissemination_orders_certificates_under_load_and_a_killed_primary(network) -> None:
    net, sup = network(ON)
    await kill_primary_under_load(net, sup)
    records = _records(net, "orderer.c")
    batches = set()
    for kind, data in records:
        if kind == "batch":
            envelope = replica_pb2.SignedReplicaMessage.FromString(data)
            message = replica_pb2.ReplicaMessage.FromString(envelope.payload)
            batches.add((envelope.replica, message.batch.batch_sequence, message.batch.digest))
    decided = [replica_pb2.DecidedBatch.FromString(d) for k, d in records if k == "decided"]
    assert decided and batches
    carried = 0
    for batch in decided:
        for request in batch.requests:
            cert = parse_certificate(request)
            assert cert is not None
            ackers = {a.replica for a in cert.acks}
            if cert.carried:  # the primary's own batch: its ack, the slot's prepares (ordering.md)
                carried += 1
                assert ackers == {cert.origin}
            else:
                assert len(ackers) >= 2
            assert (cert.origin, cert.batch_sequence, cert.digest) in batches
    assert carried


async def test_a_member_peer_s_forged_envelope_is_ordered_invalid_with_dissemination(
    network,
) -> None:
    """With dissemination no replica judges an envelope again after the one Broadcast reached,
    so, as on a solo channel (`rpc/forwarder.py`), a member peer's forwarded creator signature
    is not verified again there: from a peer node's TLS identity an envelope whose signature does
    not verify is ordered and recorded BAD_CREATOR_SIGNATURE by every peer, and the real envelope
    with the same tx_id then commits VALID; from a client's TLS identity it is still refused."""
    net, _sup = network(ON)
    c, _tx_id = await forged_envelope_from_a_member_peer(net, "orderer.a", timeout_s=30)
    await c.close()


async def test_a_channel_made_without_carried_batches_orders_by_the_ack_path(network) -> None:
    net, _sup = network(UNCARRIED)
    client = await GatewayClient.connect(net, "user1.org1")
    sem = asyncio.Semaphore(8)

    async def put(i: int) -> int:
        async with sem:
            done = await client.submit_transaction("trades", "kv", "put", f"u{i}", f"v{i}")
            return done.status.result

    try:
        results = await asyncio.wait_for(asyncio.gather(*(put(i) for i in range(40))), 120)
    finally:
        await client.close()
    assert results == [VALID] * 40
    certificates = 0
    for kind, data in _records(net, "orderer.c"):
        if kind != "decided":
            continue
        for request in replica_pb2.DecidedBatch.FromString(data).requests:
            cert = parse_certificate(request)
            assert cert is not None and not cert.carried
            assert len({a.replica for a in cert.acks}) >= 2  # f+1 at n = 4
            certificates += 1
    assert certificates
