"""PBFT-lite's vote collector (`batch.pbft_collector`, on for new channels), four real orderer
processes. `test_pbft_ordering.py` and `test_pbft_dissemination.py` run with it on (the
topology's default: their kill -9 of the primary, the collector of view 0, makes the new
primary collect; a backup gets the others' block signatures from the commit certificates).
Here:

- kill -9 a backup under load: the others go on, nothing acknowledged is lost or doubled, and
  the restarted backup catches up to the same chain;
- all-to-all (`pbft_collector = false`, channels made before the collector) still does the
  primary kill.
Who sends what to whom is checked by `tests/unit/test_pbft_collector.py` (and measured by the
bench: benchmarks/RESULTS.md, branch pbft6).
"""

from __future__ import annotations

import pytest

from .test_pbft_ordering import ENVELOPES_BATCH, TOPOLOGY, kill_primary_under_load, kill_under_load

pytestmark = pytest.mark.integration
OFF = TOPOLOGY.replace(ENVELOPES_BATCH, ENVELOPES_BATCH[:-2] + ", pbft_collector = false }")


def test_the_topology_switches_the_collector_off() -> None:
    assert OFF != TOPOLOGY


async def test_collector_with_a_killed_backup(network) -> None:
    net, sup = network(TOPOLOGY)
    await kill_under_load(net, sup, "orderer.c")


async def test_all_to_all_with_a_killed_primary(network) -> None:
    net, sup = network(OFF)
    await kill_primary_under_load(net, sup)
