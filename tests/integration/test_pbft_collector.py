"""PBFT-lite with a vote collector on (`batch.pbft_collector`), four real orderer processes.

- kill -9 the primary (the collector of view 0) under load: the backups change view (the new
  primary collects), commits resume, no acknowledged transaction is lost or doubled, every block
  carries 2f+1 = 3 orderer signatures (a backup gets the others' from the commit
  certificates), the restarted primary catches up (`test_pbft_ordering.kill_primary_under_load`);
- the same with dissemination on too;
- kill -9 a backup under load: the others go on without a view change, and the restarted backup
  catches up to the same chain.
A backup's record store shows the collector at work: its prepared certificates hold prepares
of other backups, which with the collector reach a backup only inside the primary's
certificate.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from dltmw.client import GatewayClient
from dltmw.v1 import replica_pb2

from .test_pbft_dissemination import _records
from .test_pbft_ordering import (
    ORDERERS,
    TOPOLOGY,
    TXS,
    VALID,
    _blocks,
    _same_chain,
    _valid_tx_ids,
    _wait,
    kill_primary_under_load,
)

pytestmark = pytest.mark.integration
BATCH = "batch = { max_tx_count = 100, max_bytes = 1048576, timeout_ms = 100 }"
ON = TOPOLOGY.replace(BATCH, BATCH[:-2] + ", pbft_collector = true }")
BOTH = TOPOLOGY.replace(BATCH, BATCH[:-2] + ", pbft_collector = true, pbft_dissemination = true }")


def test_the_topologies_switch_the_collector_on() -> None:
    assert ON not in (TOPOLOGY, BOTH)


def _prepared_by_others(net: Path, node: str, me: int) -> int:
    """Prepared certificates in `node`'s store holding a prepare of another backup."""
    count = 0
    for kind, data in _records(net, node):
        if kind == "prepared":
            cert = replica_pb2.PreparedCertificate.FromString(data)
            count += any(p.replica != me for p in cert.prepares)
    return count


async def test_collector_under_load_and_a_killed_primary(network) -> None:
    net, sup = network(ON)
    await kill_primary_under_load(net, sup)
    assert _prepared_by_others(net, "orderer.c", 2) > 0


async def test_collector_with_dissemination_and_a_killed_primary(network) -> None:
    net, sup = network(BOTH)
    await kill_primary_under_load(net, sup)


async def test_collector_with_a_killed_backup(network) -> None:
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
        sup.kill("orderer.c")
        killed_at = len(committed)
        try:
            await asyncio.wait_for(load, 180)
        except TimeoutError:
            pytest.fail(f"load did not finish after the kill: {len(committed)}/{TXS} committed")
        assert len(committed) >= killed_at + 100, "commits stopped with a backup down"
        others = ["orderer.a", "orderer.b", "orderer.d"]
        await _wait(lambda: _same_chain(net, others), 60, "the other replicas to agree")
        chain = _blocks(net, "orderer.b")
        assert all(len(b.metadata.signatures) >= 3 for b in chain[1:])
        for peer in ("peer0.org1", "peer0.org2"):
            height = len(chain)
            await _wait(lambda p=peer, h=height: len(_blocks(net, p, "peer")) >= h, 60, peer)
            valid = _valid_tx_ids(net, peer)
            assert len(valid) == len(set(valid)), "a transaction was committed twice"
            assert set(committed) <= set(valid), "an acknowledged transaction was lost"
        sup.start("orderer.c")
        sup.wait_ready("orderer.c", timeout_s=60)
        await _wait(lambda: _same_chain(net, ORDERERS), 90, "restarted backup to catch up")
    finally:
        await client.close()
    assert _prepared_by_others(net, "orderer.b", 1) > 0
