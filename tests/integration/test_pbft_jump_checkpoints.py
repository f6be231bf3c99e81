"""A PBFT-lite replica that caught up by fetched blocks counts in the checkpoint quorum again,
with dissemination on (four real orderer processes).

With dissemination the replicas order batch certificates and chain their checkpoint digests
over them, while a block shows envelopes: a replica that jumped over fetched blocks chained
other digests (`core/pbft/jump.py`) and, before `Checkpoints.adopt_proven`, never had a stable
checkpoint again and never voted one its peers' way. With one other replica gone, the three
left could then not prove any checkpoint: the low watermark stayed, and once the log window
(2 x 16 sequences) was used up they ordered nothing more.
"""

from __future__ import annotations

import pytest

from dltmw.client import GatewayClient

from .test_pbft_dissemination import ON
from .test_pbft_ordering import ORDERERS, _blocks, _same_chain, _wait, behind_the_retention, putter

pytestmark = pytest.mark.integration
WINDOW = 2 * 16  # sequences a replica orders above its low watermark (`replica_config`)


async def test_a_replica_that_jumped_counts_in_the_checkpoint_quorum_again(
    network, monkeypatch: pytest.MonkeyPatch
) -> None:
    """orderer.d is down while the others decide more than they retain (decided_retain = 8,
    two transactions per batch); restarted, it catches up by blocks. Then orderer.b is killed
    and the three left order more sequences than the log window: only if orderer.d's
    checkpoint votes match the others' again. Red without `Checkpoints.adopt_proven`."""
    monkeypatch.setenv("DLTMW_PBFT_DECIDED_RETAIN", "8")
    net, sup = network(ON.replace("max_tx_count = 100", "max_tx_count = 2"))
    client = await GatewayClient.connect(net, "user1.org1")
    put_all = putter(client)
    try:
        await behind_the_retention(net, sup, put_all)
        await put_all("after", 40)  # a checkpoint above its jump, proven by the others
        await _wait(lambda: _same_chain(net, ORDERERS), 60, "all four after the catch-up")
        sup.kill("orderer.b")
        start = len(_blocks(net, "orderer.a"))
        await put_all("quorum", 4 * WINDOW, timeout_s=120)  # >= 2 * WINDOW sequences
        left = ["orderer.a", "orderer.c", "orderer.d"]
        await _wait(lambda: _same_chain(net, left), 60, "the three left to agree")
        assert len(_blocks(net, "orderer.d")) - start >= WINDOW + 16
    finally:
        await client.close()
