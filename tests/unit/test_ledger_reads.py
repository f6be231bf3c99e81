"""The channel ledger's reads on the commit and deliver path (real sqlite files, and the first
two tests also on a real PostgreSQL server: `ledger_backends.py`).

The newest blocks are served from memory (no reader-thread hop per block per follower), as fresh
copies equal to the stored ones; a peer's commit reads versions, ranges and known tx_ids in one
hop, with the same answers as the three separate reads; a few point reads (a lone
transaction's duplicate checks and commit reads) run in place on the loop's thread with the
same answers, seeing every block committed before them, and larger ones still hop.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from ledger_backends import LedgerSite

from dltmw.core.block import make_block
from dltmw.core.rwset import StateWrite, Version
from dltmw.ledger.backend import Ledger
from dltmw.ledger.ledger_base import IDS_PER_LOOKUP, RECENT_BLOCKS
from dltmw.ledger.sqlite import INLINE_READS_MAX, ChannelLedger

CH = "trades"


async def _commit(ledger: Ledger, key: str) -> None:
    number = ledger.height
    block = make_block(CH, number, ledger.last_hash, [f"env{number}".encode()])
    block.metadata.validation_codes.append(1)
    write = StateWrite("kv", key, f"v{number}".encode(), Version(number, 0))
    await ledger.commit_block(block, [f"tx{number}"], [write])


async def test_newest_blocks_come_from_memory_as_fresh_copies_of_the_stored_ones(
    site: LedgerSite, monkeypatch: pytest.MonkeyPatch
) -> None:
    ledger = await site.open()
    # the store's block read: the sqlite file's worker, the PostgreSQL reader's snapshot
    store, read = (ledger._file, "read") if site.backend == "sqlite" else (ledger._db, "snapshot")  # type: ignore[attr-defined]
    try:
        for i in range(RECENT_BLOCKS + 4):
            await _commit(ledger, f"k{i}")
        height = ledger.height
        stored = await ledger.blocks(0, height)  # the oldest are not in memory: the file
        assert [b.header.number for b in stored] == list(range(height))

        def no_file(*_: object) -> None:
            raise AssertionError("read the file for a block committed just now")

        monkeypatch.setattr(store, read, no_file)
        newest = await ledger.blocks(height - RECENT_BLOCKS, height + 5)  # stop beyond height
        assert newest == stored[-RECENT_BLOCKS:]
        newest[0].header.number = 999  # the caller's copy: the next read is unaffected
        assert (await ledger.blocks(height - RECENT_BLOCKS, height))[0] == stored[-RECENT_BLOCKS]
        assert await ledger.blocks(height, height + 1) == []
        monkeypatch.undo()
        assert await ledger.blocks(0, 2) == stored[:2]  # older ones: the file, as before
    finally:
        await ledger.close()


async def test_commit_reads_equal_the_separate_reads(site: LedgerSite) -> None:
    ledger = await site.open()
    try:
        for key in ("a", "b", "c"):
            await _commit(ledger, key)
        keys = [("kv", "a"), ("kv", "c"), ("kv", "missing")]
        ranges = [("kv", "a", "c"), ("kv", "x", "z")]
        tx_ids = ["tx0", "tx2", "tx9", ""]
        versions, in_ranges, known = await ledger.commit_reads(keys, ranges, tx_ids)
        assert versions == await ledger.versions(keys)
        assert versions == {("kv", "a"): Version(0, 0), ("kv", "c"): Version(2, 0)}
        assert in_ranges == await ledger.ranges(ranges)
        assert in_ranges[("kv", "a", "c")] == [("a", Version(0, 0)), ("b", Version(1, 0))]
        assert known == await ledger.existing_tx_ids(tx_ids) == {"tx0", "tx2"}
    finally:
        await ledger.close()


def counted_hops(ledger: ChannelLedger, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """One "reader" per read that hops to the reader thread from now on."""
    hops: list[str] = []
    real_snapshot = ledger._file.snapshot

    async def counted(fn: object) -> object:
        hops.append("reader")
        return await real_snapshot(fn)  # type: ignore[arg-type]

    monkeypatch.setattr(ledger._file, "snapshot", counted)
    return hops


async def test_a_few_point_reads_run_in_place_and_see_the_latest_commit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ledger = await ChannelLedger.open(tmp_path / "l.sqlite")
    try:
        await _commit(ledger, "a")
        hops = counted_hops(ledger, monkeypatch)
        assert await ledger.existing_tx_ids(["tx0", "tx1"]) == {"tx0"}
        await _commit(ledger, "b")  # committed by the writer: the next read in place sees it
        versions, in_ranges, known = await ledger.commit_reads([("kv", "b")], [], ["tx1"])
        assert (versions, in_ranges, known) == ({("kv", "b"): Version(1, 0)}, {}, {"tx1"})
        # the gateway's staleness check of a lone transaction (gateway/staleness.py)
        assert await ledger.versions([("kv", "a"), ("kv", "x")]) == {("kv", "a"): Version(0, 0)}
        assert hops == []  # none of these hopped to the reader thread
        many = [f"tx{i}" for i in range(INLINE_READS_MAX + 1)]
        assert await ledger.existing_tx_ids(many) == {"tx0", "tx1"}
        await ledger.commit_reads([], [("kv", "a", "z")], [])  # a range: unbounded, hops
        keys = [("kv", f"k{i}") for i in range(INLINE_READS_MAX + 1)]
        assert await ledger.versions(keys) == {}
        assert hops == ["reader", "reader", "reader"]
    finally:
        await ledger.close()


async def test_a_mid_size_block_of_blind_writes_reads_its_duplicates_in_place(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A block's tx ids are looked up in IN lists, a few per point read's cost
    (`ledger_base.tx_ids_cost`): a block of 17 blind writes (1,300 tx/s on a quiet host) reads
    its duplicates in place, no reader-thread hop per block; the bound is unchanged in point
    lookups (one more id, or one key read too many, hops). Red when each id counts as a lookup."""
    ledger = await ChannelLedger.open(tmp_path / "l.sqlite")
    try:
        await _commit(ledger, "a")
        hops = counted_hops(ledger, monkeypatch)
        most = IDS_PER_LOOKUP * INLINE_READS_MAX
        ids = ["tx0"] + [f"new{i}" for i in range(16)]  # 17: one committed, 16 not
        assert await ledger.commit_reads([], [], ids) == ({}, {}, {"tx0"})
        assert await ledger.commit_reads([], [], [f"n{i}" for i in range(most)]) == ({}, {}, set())
        assert hops == []
        await ledger.commit_reads([], [], [f"n{i}" for i in range(most + 1)])
        assert hops == ["reader"]
        keys = [("kv", "a")]  # a key read costs a point lookup of its own
        got = await ledger.commit_reads(keys, [], [f"n{i}" for i in range(most - 1)])
        assert got == ({("kv", "a"): Version(0, 0)}, {}, set()) and hops == ["reader"] * 2
    finally:
        await ledger.close()
