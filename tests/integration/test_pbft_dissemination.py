"""PBFT-lite with dissemination on (`batch.pbft_dissemination`), four real orderer processes.

- Under a load of a few hundred transactions, then with the primary killed (-9) and restarted:
  every acknowledged transaction is committed exactly once on both peers, every block carries
  2f+1 = 3 orderer signatures, the replicas hold one chain, the restarted primary catches up.
- What PBFT-lite ordered is certificates, not envelopes: every decided batch in a replica's
  record store holds availability certificates with f+1 = 2 distinct acks over a batch the
  store also holds (kind "batch"), and no envelope.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

import pytest

from dltmw.client import GatewayClient
from dltmw.core.pbft.availability import parse_certificate
from dltmw.v1 import replica_pb2

from .operations_http import scrape, value
from .test_pbft_ordering import (
    ORDERERS,
    TOPOLOGY,
    VALID,
    _blocks,
    _same_chain,
    _valid_tx_ids,
    _wait,
)

pytestmark = pytest.mark.integration
TXS = 300
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
    client = await GatewayClient.connect(net, "user1.org1")
    committed: list[str] = []
    sem = asyncio.Semaphore(16)

    async def put(i: int) -> None:
        async with sem:
            try:
                done = await client.submit_transaction("trades", "kv", "put", f"k{i}", f"v{i}")
            except Exception:
                return
            if done.status.result == VALID:
                committed.append(done.tx_id)

    try:
        load = asyncio.gather(*(put(i) for i in range(TXS)))
        deadline = time.monotonic() + 120
        while len(committed) < 40 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert len(committed) >= 40, "no progress before the kill"
        sup.kill("orderer.a")
        killed_at = len(committed)
        try:
            await asyncio.wait_for(load, 180)
        except TimeoutError:
            pytest.fail(f"load did not finish after the kill: {len(committed)}/{TXS} committed")
        assert len(committed) >= killed_at + 100, "commits did not resume after the view change"
        survivors = ORDERERS[1:]
        await _wait(lambda: _same_chain(net, survivors), 60, "surviving replicas to agree")
        chain = _blocks(net, "orderer.b")
        assert all(len(b.metadata.signatures) >= 3 for b in chain[1:])
        for node in survivors:  # the operations endpoint reads the disseminating replica too
            samples = await asyncio.to_thread(scrape, sup.operations_address(node) or "")
            replica = {"replica": "orderer-trades"}
            assert value(samples, "dltmw_pbft_view", **replica) >= 1, node
            assert value(samples, "dltmw_pbft_checkpoint_lag", **replica) >= 0, node
        for peer in ("peer0.org1", "peer0.org2"):
            height = len(chain)
            await _wait(lambda p=peer, h=height: len(_blocks(net, p, "peer")) >= h, 60, peer)
            valid = _valid_tx_ids(net, peer)
            assert len(valid) == len(set(valid)), "a transaction was committed twice"
            assert set(committed) <= set(valid), "an acknowledged transaction was lost"
        sup.start("orderer.a")
        sup.wait_ready("orderer.a", timeout_s=60)
        await _wait(lambda: _same_chain(net, ORDERERS), 90, "restarted primary to catch up")
    finally:
        await client.close()
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
