"""PBFT-lite honours the channel's `batch.reorder` (Fabric++, `core/reorder.py`).

Whoever fixes a batch's order applies the rule: the primary to each batch it proposes (its
pre-prepare's digest covers the order), and with dissemination the replica that forms a batch,
before signing it (the batch digest covers its ids in order; a slot assembles the batch in that
order). Four replica cores wired directly: a writer of `a` arrives before a reader of `a`; with
reordering every replica commits the same block with the reader first (it would be an MVCC
conflict the other way round), without it arrival order. Goes red with the `reorder` call
removed from `Replica.propose` (the envelope path) or from `Disseminator.cut` (dissemination):
the block then keeps arrival order. The simulator's `eov-pbft` runs with `reorder = true`
check that every replica and peer holds one chain (`tests/sim/test_pbft_reorder_sim.py`).
"""

from __future__ import annotations

import pytest
from pbft_messages import KEYS
from test_pbft_orderer_core import CONFIG, IDS, Group
from test_reorder import envelope, rw

from dltmw.core.block import block_hash
from dltmw.core.handlers.pbft_blocks import BlockAssembler
from dltmw.core.handlers.pbft_orderer import PbftOrdererCore
from dltmw.core.hashing import ZERO_HASH
from dltmw.core.pbft import ClientRequest, Replica
from dltmw.core.pbft.disseminating import DisseminatingReplica
from dltmw.core.pbft.dissemination import DisseminationConfig
from dltmw.core.reorder import reorder

WRITER = envelope(rw(writes=["a"]))
READER = envelope(rw(reads=["a"], writes=["b"]))


def _core(i: int, disseminating: bool, reordering: bool) -> PbftOrdererCore:
    """A replica core that admits any envelope (these are not the sim keys' requests)."""
    replica: Replica | DisseminatingReplica
    if disseminating:
        dis = DisseminationConfig(batch_count_max=CONFIG.batch_size_max, batch_wait_ticks=4)
        replica = DisseminatingReplica(CONFIG, i, KEYS.signer(i), KEYS.verify, dis)
        replica.cut_max = 1
    else:
        replica = Replica(CONFIG, i, KEYS.signer(i), KEYS.verify)
    replica.reorder = reordering  # what `PbftOrdererCore._cut_to` sets from the config
    assembler = BlockAssembler("ch", i, CONFIG.quorum, IDS, KEYS.verify)
    return PbftOrdererCore(replica, assembler, KEYS.signer(i), 1, ZERO_HASH)


def _blocks(disseminating: bool, reordering: bool) -> list[list[bytes]]:
    group = Group(disseminating=disseminating)
    group.cores = [_core(i, disseminating, reordering) for i in range(4)]
    for request in (WRITER, READER):  # both reach the primary: one full batch
        group.step(0, ClientRequest(request))
    group.settle()
    hashes = set()
    out = []
    for i in range(4):
        (block,) = group.committed[i]
        hashes.add(block_hash(block))
        out.append(list(block.data.envelopes))
    assert len(hashes) == 1  # one block on every replica
    return out


def test_the_workload_is_one_the_rule_reorders() -> None:
    assert reorder([WRITER, READER]) == [READER, WRITER]


@pytest.mark.parametrize("disseminating", [False, True], ids=["envelopes", "dissemination"])
def test_with_reorder_every_replica_commits_the_reader_before_the_writer(
    disseminating: bool,
) -> None:
    assert _blocks(disseminating, reordering=True) == [[READER, WRITER]] * 4


@pytest.mark.parametrize("disseminating", [False, True], ids=["envelopes", "dissemination"])
def test_without_reorder_blocks_keep_arrival_order(disseminating: bool) -> None:
    assert _blocks(disseminating, reordering=False) == [[WRITER, READER]] * 4
