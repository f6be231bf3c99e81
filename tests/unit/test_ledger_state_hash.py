"""The channel ledger stores a state hash with every block and can recompute it from its table.

On both backends (`ledger_backends.py`: real sqlite files in a temporary directory, a schema of
a real PostgreSQL server): the stored hash follows the state block by block, a row edited behind
the ledger's back makes the recomputed hash differ from the stored one, and (sqlite) old ledger
files are migrated on open.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest
from ledger_backends import LedgerSite

from dltmw.core.block import make_block
from dltmw.core.errors import InvariantViolation
from dltmw.core.rwset import StateWrite, Version
from dltmw.core.statehash import accumulate, chain_step
from dltmw.ledger.audit import read_audit
from dltmw.ledger.backend import Ledger
from dltmw.ledger.sqlite import ChannelLedger

CH = "trades"


def _table_hash(path: Path) -> bytes:
    with sqlite3.connect(path) as conn:
        rows = conn.execute("SELECT namespace, key, value, block_number, tx_index FROM state")
        return accumulate((r[0], r[1], bytes(r[2]), Version(r[3], r[4])) for r in rows).digest()


async def _commit(ledger: Ledger, writes: list[tuple[str, bytes | None]]) -> None:
    number = ledger.height
    block = make_block(CH, number, ledger.last_hash, [f"env{number}".encode()])
    state_writes = [StateWrite("kv", k, v, Version(number, i)) for i, (k, v) in enumerate(writes)]
    await ledger.commit_block(block, [f"tx{number}"], state_writes)


async def _ledger_with_history(site: LedgerSite) -> Ledger:
    ledger = await site.open()
    await _commit(ledger, [])  # genesis
    await _commit(ledger, [("a", b"1"), ("b", b"2"), ("c", b"3")])
    await _commit(ledger, [("a", b"10"), ("b", None)])
    return ledger


async def test_stored_hash_follows_the_state_block_by_block(site: LedgerSite) -> None:
    ledger = await site.open()
    try:
        for writes in ([], [("a", b"1"), ("b", b"2")], [("a", None)], [("c", b"x"), ("a", b"y")]):
            await _commit(ledger, writes)
            assert ledger.state_hash == site.table_hash()
            audit = site.audit([], 0, recompute=True)
            assert audit.stored_state_hash == audit.recomputed_state_hash == ledger.state_hash
            assert audit.height == ledger.height
    finally:
        await ledger.close()


async def test_a_delete_then_a_rewrite_in_one_block_leaves_the_rewrite(site: LedgerSite) -> None:
    ledger = await site.open()
    try:
        await _commit(ledger, [("a", b"1")])
        await _commit(ledger, [("a", None), ("a", b"2")])
        got = await ledger.read_snapshot(lambda r: r.get("kv", "a"))
        assert got == (b"2", Version(1, 1))
        assert ledger.state_hash == site.table_hash()
    finally:
        await ledger.close()


async def test_an_edited_row_makes_the_recomputed_hash_differ(site: LedgerSite) -> None:
    ledger = await _ledger_with_history(site)
    await ledger.close()
    site.execute("UPDATE state SET value=? WHERE key='a'", (b"999",))
    audit = site.audit([], 0, recompute=True)
    assert audit.recomputed_state_hash != audit.stored_state_hash
    # ... and stays different after later blocks (the edit is never absorbed)
    ledger = await site.open()
    try:
        await _commit(ledger, [("a", b"11"), ("d", b"4")])
    finally:
        await ledger.close()
    audit = site.audit([], 0, recompute=True)
    assert audit.recomputed_state_hash != audit.stored_state_hash


async def test_hash_survives_reopen_and_points_chain_the_stored_hashes(site: LedgerSite) -> None:
    ledger = await _ledger_with_history(site)
    stored = ledger.state_hash
    await ledger.close()
    ledger = await site.open()
    try:
        assert ledger.state_hash == stored
        assert not ledger.created and ledger.height == 3
    finally:
        await ledger.close()
    audit = site.audit([0, 1, 2, 7], 1, recompute=False)
    assert [p.block_number for p in audit.points] == [0, 1, 2]  # 7 is above the height
    assert audit.points[2].state_hash == stored
    assert audit.points[0].state_chain == b""  # below chain_from
    first = chain_step(bytes(32), audit.points[1].state_hash)
    assert audit.points[1].state_chain == first
    assert audit.points[2].state_chain == chain_step(first, stored)
    assert audit.recomputed_state_hash == b""


async def test_a_ledger_file_older_than_state_hashes_is_migrated(tmp_path: Path) -> None:
    path = tmp_path / "l.sqlite"  # (sqlite only: no PostgreSQL ledger predates state hashes)
    ledger = await _ledger_with_history(LedgerSite("sqlite", path))
    stored = ledger.state_hash
    await ledger.close()
    with sqlite3.connect(path) as conn:
        conn.execute("DROP TABLE state_hashes")
        conn.execute("DROP TABLE state_acc")
    ledger = await ChannelLedger.open(path)
    try:
        assert ledger.state_hash == stored
        await _commit(ledger, [("e", b"5")])
        assert ledger.state_hash == _table_hash(path)
    finally:
        await ledger.close()
    assert read_audit(path, [], 0, recompute=False).state_hashes_from == 2


async def test_a_removed_accumulator_is_an_edit_not_a_migration(site: LedgerSite) -> None:
    ledger = await _ledger_with_history(site)
    await ledger.close()
    site.execute("UPDATE state SET value=? WHERE key='a'", (b"999",))
    site.execute("DELETE FROM state_acc")
    threads = threading.active_count()
    with pytest.raises(InvariantViolation, match="accumulator missing"):
        await site.open()
    # the refused file's connection is closed: its thread would keep a refusing node alive
    assert threading.active_count() == threads
