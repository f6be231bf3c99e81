"""The private store keeps a hash of its private state per block and can recompute it.

A real sqlite file and a real PostgreSQL schema (`psite`): writes through a store transaction
update the stored hash (only blocks that change the private state get a row), an edited `pstate`
row makes the recomputed hash differ, re-derivation (reset) starts again from the empty state,
and the audit pages private txs.
"""

from __future__ import annotations

import sqlite3

import pytest
from private_backends import PrivateSite

from dltmw.core.errors import InvariantViolation
from dltmw.core.rwset import StateWrite, Version
from dltmw.core.statehash import StateAccumulator
from dltmw.ledger import failpoints
from dltmw.ledger.private_store import PrivateTxn, PrivateTxRecord
from dltmw.ledger.retry import RetryPolicy

EMPTY = StateAccumulator().digest()


def _block(number: int, writes: list[tuple[str, bytes | None]], ptx: bool = True):  # type: ignore[no-untyped-def]
    def run(txn: PrivateTxn) -> None:
        txn.apply(StateWrite("bank", k, v, Version(number, i)) for i, (k, v) in enumerate(writes))
        if ptx:
            digest = number.to_bytes(32, "big")
            txn.record(digest, PrivateTxRecord(f"t{number}", number, 0, 1, b"h" * 32))
        txn.set_cursor(number + 1)

    return run


async def test_hash_follows_writes_and_detects_an_edited_row(psite: PrivateSite) -> None:
    store = await psite.open()
    try:
        audit = await store.audit(b"", 10)
        assert audit.stored_state_hash == audit.recomputed_state_hash == EMPTY
        await store.transaction(_block(2, [("a", b"1"), ("b", b"2")]))
        await store.transaction(_block(3, [("a", None), ("a", b"3")]))
        await store.transaction(_block(4, [], ptx=False))  # no change: no row for block 4
        audit = await store.audit(b"", 10)
        assert audit.cursor == 5
        assert audit.stored_state_hash == audit.recomputed_state_hash != EMPTY
        rows = psite.query("SELECT block_number FROM pstate_hashes ORDER BY 1")
        assert rows == [(2,), (3,)]
        psite.query("UPDATE pstate SET value=? WHERE key=?", (b"9", "a"))
        audit = await store.audit(b"", 10)
        assert audit.recomputed_state_hash != audit.stored_state_hash
    finally:
        await store.close()


async def test_reset_starts_from_the_empty_state_and_audit_pages(psite: PrivateSite) -> None:
    store = await psite.open()
    try:
        for n in range(1, 6):
            await store.transaction(_block(n, [(f"k{n}", b"v")]))
        first = await store.audit(b"", 2)
        assert len(first.txs) == 2 and first.next_after == first.txs[-1][0]
        rest = await store.audit(first.next_after, 10)
        assert len(rest.txs) == 3 and rest.next_after == b""
        await store.reset_private_state()
        audit = await store.audit(b"", 10)
        assert audit.stored_state_hash == audit.recomputed_state_hash == EMPTY
        assert audit.txs == ()
        await store.transaction(_block(1, [("k1", b"v")]))
        audit = await store.audit(b"", 10)
        assert audit.stored_state_hash == audit.recomputed_state_hash != EMPTY
    finally:
        await store.close()


async def test_a_removed_accumulator_row_is_refused_on_open(psite: PrivateSite) -> None:
    store = await psite.open()
    await store.transaction(_block(1, [("a", b"1")]))
    await store.close()
    psite.query("DELETE FROM pstate_acc")
    with pytest.raises(InvariantViolation, match="accumulator missing"):
        await psite.open()


async def test_a_failed_private_block_leaves_nothing_and_a_transient_fault_commits_once(
    psite: PrivateSite, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A block's private effects are one transaction on both backends: a fault before COMMIT
    (failpoint `privacy.execute`) leaves none of them; a transient one is retried and the block
    commits exactly once."""
    store = await psite.open(retry=RetryPolicy(first_s=0.01, max_s=0.05, budget_s=20.0))
    try:
        await store.transaction(_block(1, [("a", b"1")]))
        before = await store.audit(b"", 10)
        monkeypatch.setattr(failpoints, "_ARMED", failpoints.parse("privacy.execute=corrupt"))
        with pytest.raises(sqlite3.DatabaseError):
            await store.transaction(_block(2, [("a", b"2"), ("b", b"2")]))
        monkeypatch.setattr(failpoints, "_ARMED", {})
        assert await store.audit(b"", 10) == before  # cursor, hashes, records: as before
        assert await store.private_state("bank") == {"a": b"1"}
        assert psite.query("SELECT block_number FROM pstate_hashes") == [(1,)]
        monkeypatch.setattr(failpoints, "_ARMED", failpoints.parse("privacy.execute=locked*2"))
        await store.transaction(_block(2, [("a", b"2"), ("b", b"2")]))
        monkeypatch.setattr(failpoints, "_ARMED", {})
        after = await store.audit(b"", 10)
        assert after.cursor == 3 and len(after.txs) == 2
        assert after.stored_state_hash == after.recomputed_state_hash != before.stored_state_hash
        assert await store.private_state("bank") == {"a": b"2", "b": b"2"}
        assert psite.query("SELECT block_number FROM pstate_hashes ORDER BY 1") == [(1,), (2,)]
    finally:
        await store.close()
