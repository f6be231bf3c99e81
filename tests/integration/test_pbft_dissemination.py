"""PBFT-lite with dissemination on (`batch.pbft_dissemination`), four real orderer processes.

- Under a load of a few hundred transactions, then with the primary killed (-9) and restarted:
  every acknowledged transaction is committed exactly once on both peers, every block carries
  2f+1 = 3 orderer signatures, the replicas hold one chain, the restarted primary catches up.
- What PBFT-lite ordered is certificates, not envelopes: every decided batch in a replica's
  record store holds availability certificates with f+1 = 2 distinct acks over a batch the
  store also holds (kind "batch"), and no envelope.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from dltmw.core.pbft.availability import parse_certificate
from dltmw.v1 import replica_pb2

from .test_pbft_ordering import TOPOLOGY, kill_primary_under_load

pytestmark = pytest.mark.integration
ON = TOPOLOGY.replace(
    "batch = { max_tx_count = 100, max_bytes = 1048576, timeout_ms = 100 }",
    "batch = { max_tx_count = 100, max_bytes = 1048576, timeout_ms = 100, "
    "pbft_dissemination = true }",
)


def _records(net: Path, node: str) -> list[tuple[str, bytes]]:
    path = f"file:{net}/nodes/{node}/data/trades.pbft.sqlite?mode=ro"
    db = sqlite3.connect(path, uri=True)
    try:
        return [(k, bytes(d)) for k, d in db.execute("SELECT kind, data FROM records ORDER BY id")]
    finally:
        db.close()


def test_the_topology_switches_dissemination_on() -> None:
    assert ON != TOPOLOGY


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
    for batch in decided:
        for request in batch.requests:
            cert = parse_certificate(request)
            assert cert is not None and len({a.replica for a in cert.acks}) >= 2
            assert (cert.origin, cert.batch_sequence, cert.digest) in batches
