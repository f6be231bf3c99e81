"""A peer's followers take the blocks just committed from memory (`blockfeed.RecentBlocks`).

What must hold: `follow(recent=...)` yields, in order and each once, every block from `start`;
a block `recent` holds is the committed object itself (no ledger read, no parse), any other is
read from the ledger; `RecentBlocks` keeps only the last `size`; the commit decision hands the
committed block on in its reply (`Committed.block`), which is what the peer remembers.
"""

from __future__ import annotations

import asyncio
import types
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import cast

import pytest
from ledger_parties import CHANNEL, endorser_tx, kv_rwset, make_parties, signed_block

from dltmw.aio.tasks import TaskOwner
from dltmw.core.block import make_block
from dltmw.core.committer import CommitCore, Delivered
from dltmw.core.hashing import ZERO_HASH
from dltmw.ledger.sqlite import ChannelLedger
from dltmw.rpc.tracing import NO_TRACING
from dltmw.runtime.blockfeed import BlockSignal, RecentBlocks, follow
from dltmw.runtime.context import NodeContext
from dltmw.runtime.metrics import NodeMetrics
from dltmw.runtime.roles.peer.channel import PeerChannel
from dltmw.v1 import block_pb2, transaction_pb2

CH = "recent"
PARTIES = make_parties()
VALID = transaction_pb2.TX_VALIDATION_CODE_VALID


async def _ledger(path: Path, count: int) -> tuple[ChannelLedger, list[block_pb2.Block]]:
    ledger = await ChannelLedger.open(path, synchronous="NORMAL")
    blocks = []
    for number in range(count):
        block = make_block(CH, number, ledger.last_hash, [number.to_bytes(4, "big")])
        await ledger.commit_block(block, ())
        blocks.append(block)
    return ledger, blocks


async def test_held_blocks_come_from_memory_and_the_others_from_the_ledger(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ledger, blocks = await _ledger(tmp_path / "l.sqlite", 10)
    recent = RecentBlocks(size=3)
    for block in blocks:
        recent.remember(block)
    reads: list[tuple[int, int]] = []
    stored = ledger.block_data

    async def counted(start: int, stop: int) -> list[bytes]:
        reads.append((start, stop))
        return await stored(start, stop)

    monkeypatch.setattr(ledger, "block_data", counted)
    try:
        got = [b async for b in follow(ledger, BlockSignal(), 2, 9, recent=recent)]
    finally:
        await ledger.close()
    assert [b.header.number for b in got] == list(range(2, 10))
    assert all(got[n - 2] is blocks[n] for n in (7, 8, 9))  # the committed objects themselves
    assert all(got[n - 2] is not blocks[n] and got[n - 2] == blocks[n] for n in range(2, 7))
    assert reads and all(stop <= 7 for _, stop in reads)  # never read what memory holds


async def test_a_follower_at_the_head_gets_each_new_block_from_memory(tmp_path: Path) -> None:
    ledger, blocks = await _ledger(tmp_path / "l.sqlite", 2)
    recent, new_block = RecentBlocks(), BlockSignal()
    feed = follow(ledger, new_block, 2, 4, recent=recent)
    got: list[block_pb2.Block] = []

    async def read() -> None:
        got.extend([b async for b in feed])

    reader = asyncio.ensure_future(read())
    try:
        for number in range(2, 5):
            block = make_block(CH, number, ledger.last_hash, [b"n%d" % number])
            await ledger.commit_block(block, ())
            recent.remember(block)
            blocks.append(block)
            new_block.committed()
        await asyncio.wait_for(reader, 5.0)
    finally:
        reader.cancel()
        await ledger.close()
    assert [b.header.number for b in got] == [2, 3, 4]
    assert all(a is b for a, b in zip(got, blocks[2:], strict=True))


def test_recent_blocks_keeps_only_the_last_size() -> None:
    recent = RecentBlocks(size=2)
    for number in range(5):
        recent.remember(make_block(CH, number, ZERO_HASH, []))
    assert [recent.get(n) is not None for n in range(5)] == [False, False, False, True, True]
    assert recent.oldest() == 3
    assert RecentBlocks().oldest() is None


def test_the_commit_reply_carries_the_committed_block() -> None:
    core = CommitCore(CH, 1, ZERO_HASH)
    block = make_block(CH, 1, ZERO_HASH, [])
    core.step(Delivered(block, 7, "", ()))
    ((token, committed),) = core.ready().replies
    assert token == 7
    assert not isinstance(committed, Exception) and committed.block is block


async def test_a_peer_hands_its_followers_the_block_it_committed(tmp_path: Path) -> None:
    """The wiring: `PeerChannel` remembers each committed block (with its codes) and its
    `committed_blocks` (the private executor's and Events' feed) hands that object on."""
    ledger = await ChannelLedger.open(tmp_path / "p.sqlite", synchronous="NORMAL")
    pool = ThreadPoolExecutor(max_workers=2)
    ctx = cast(
        NodeContext,
        types.SimpleNamespace(
            node_id="peer0.org1", tasks=TaskOwner(), metrics=NodeMetrics(), tracer=NO_TRACING
        ),
    )
    peer = PeerChannel(ctx, PARTIES.view, ledger, pool)
    feed = peer.committed_blocks(1)
    try:
        genesis = make_block(CHANNEL, 0, ZERO_HASH, [b"config"])
        genesis.metadata.validation_codes.append(VALID)
        await ledger.commit_block(genesis, [""])
        await peer.committer.start()
        tx = endorser_tx(PARTIES, kv_rwset(writes=[("k", b"v")], reads=[("k", None)]))
        block = signed_block(PARTIES, 1, ledger.last_hash, [tx])
        await peer.commit(block)
        followed = await asyncio.wait_for(anext(feed), 5.0)
        assert followed is block
        assert list(followed.metadata.validation_codes) == [VALID]
        assert followed == await ledger.block(1)
    finally:
        await feed.aclose()
        await peer.stop()
        await ledger.close()
        pool.shutdown()
