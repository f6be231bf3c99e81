"""PBFT-lite with a vote collector on (`batch.pbft_collector`), four real orderer processes.

- kill -9 the primary (the collector of view 0) under load: the backups change view (the new
  primary collects), commits resume, no acknowledged transaction is lost or doubled, every block
  carries 2f+1 = 3 orderer signatures (a backup gets the others' from the commit
  certificates), the restarted primary catches up (`test_pbft_ordering.kill_primary_under_load`);
- the same with dissemination on too;
- kill -9 a backup under load: the others go on, no acknowledged transaction is lost or
  doubled, and the restarted backup catches up to the same chain.
A backup's record store shows the collector at work: its prepared certificates hold prepares
of other backups, which with the collector reach a backup only inside the primary's
certificate.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from dltmw.v1 import replica_pb2

from .test_pbft_dissemination import _records
from .test_pbft_ordering import TOPOLOGY, kill_primary_under_load, kill_under_load

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
    await kill_under_load(net, sup, "orderer.c")
    assert _prepared_by_others(net, "orderer.b", 1) > 0
