"""A PBFT-lite orderer's records live in its ledger's file, written with the block (tier 1).

`RecordStore.use_ledger` moves the store into the orderer ledger's sqlite file so that a step's
records share the transaction of the block the step commits (`ChannelLedger.commit_block(also=
store.with_block(records))`): a failed block transaction leaves neither, a committed one both.
A store file made before is moved over once, in order, and a crash between the copy and the
delete copies nothing twice.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from dltmw.core.block import make_block
from dltmw.core.pbft import ViewRecord
from dltmw.ledger.pbft_store import RecordStore
from dltmw.ledger.sqlite import ChannelLedger


def _block(ledger: ChannelLedger) -> object:
    block = make_block("ch", ledger.height, ledger.last_hash, [f"e{ledger.height}".encode()])
    block.metadata.validation_codes.append(1)
    return block


async def test_records_written_with_a_block_are_lost_or_kept_with_it(tmp_path: Path) -> None:
    ledger = await ChannelLedger.open(tmp_path / "ch.orderer.sqlite")
    store = await RecordStore.open(tmp_path / "ch.pbft.sqlite")
    await store.use_ledger(ledger.sqlite_file)
    try:
        writes = store.with_block([ViewRecord(1, False)])

        def failing(conn: sqlite3.Connection) -> None:
            writes(conn)
            raise sqlite3.IntegrityError("injected: the block's transaction fails")

        with pytest.raises(sqlite3.IntegrityError):
            await ledger.commit_block(_block(ledger), [], also=failing)
        assert ledger.height == 0
        assert await store.load_all() == []  # rolled back with the block
        await ledger.commit_block(_block(ledger), [], also=store.with_block([ViewRecord(2, True)]))
        assert ledger.height == 1
        assert await store.load_all() == [ViewRecord(2, True)]
    finally:
        await store.close()
        await ledger.close()


async def test_an_older_store_file_is_moved_into_the_ledger_once_in_order(tmp_path: Path) -> None:
    old = [ViewRecord(1, True), ViewRecord(1, False), ViewRecord(2, True)]
    store = await RecordStore.open(tmp_path / "ch.pbft.sqlite")
    await store.append(old)
    await store.reset(7)
    await store.append(old)
    rows = sqlite3.connect(tmp_path / "ch.pbft.sqlite").execute("SELECT * FROM records").fetchall()
    await store.close()
    ledger = await ChannelLedger.open(tmp_path / "ch.orderer.sqlite")
    try:
        moved = await RecordStore.open(tmp_path / "ch.pbft.sqlite")
        await moved.use_ledger(ledger.sqlite_file)
        assert await moved.load_all() == old
        assert await moved.epoch() == 7
        await moved.append([ViewRecord(3, False)])
        await moved.close()
        # A crash between the copy and the delete: the old rows are still in the old file.
        conn = sqlite3.connect(tmp_path / "ch.pbft.sqlite")
        conn.executemany("INSERT INTO records VALUES (?,?,?,?,?)", rows)
        conn.commit()
        conn.close()
        again = await RecordStore.open(tmp_path / "ch.pbft.sqlite")
        await again.use_ledger(ledger.sqlite_file)
        assert await again.load_all() == [*old, ViewRecord(3, False)]  # nothing twice
        await again.close()
        left = sqlite3.connect(tmp_path / "ch.pbft.sqlite").execute("SELECT COUNT(*) FROM records")
        assert left.fetchone()[0] == 0
    finally:
        await ledger.close()
