"""Purge in the private store: removing payloads so that their bytes are physically gone.

Three rules make a purge verifiable on disk, not only in queries:

* `PRAGMA secure_delete=ON` on the store's connection (`setup`, at every open): sqlite
  overwrites deleted cells and freed pages with zeros instead of leaving them in free space.
  It is on for every delete of the store, not only purges: a value overwritten earlier would
  otherwise still sit in a page's free space when the purge comes.
* The WAL: a deleted row's old page images stay in `-wal` until a checkpoint copies the new
  images into the main file; `checkpoint` (run after the block that purged commits,
  `wal_checkpoint(TRUNCATE)`) does that and empties `-wal`. `-shm` holds only the WAL index.
* A record per purged payload (`purged`: hash, the purge's tx_id and block), so that neither
  Push, a deferred copy nor Recover stores it again (`not_purged`), and `dltmw audit` reports
  the transaction as PURGED instead of missing, and `Receive` answers PAYLOAD_PURGED with that
  record (`purge_record`) instead of "not held". The `ptxs` record (status and private-state
  hash) and the stored private-state hashes stay: the hash chain stays verifiable.

The table is this module's (created by `setup`, `CREATE ... IF NOT EXISTS`, so a store written
before purge existed gets it on its next open); `private_store.py` calls in at open, on
store and defer, and in the executor's block transaction.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from dltmw.ledger.private_sql import Db, text

PURGE_SCHEMA = """
CREATE TABLE IF NOT EXISTS purged (
    hash BLOB PRIMARY KEY, tx_id TEXT NOT NULL, block_number INTEGER NOT NULL) WITHOUT ROWID;
"""
T = TypeVar("T")


def setup(conn: sqlite3.Connection) -> None:
    """At every open of a private store: zeroing deletes, and the purge record table."""
    conn.execute("PRAGMA secure_delete=ON")
    conn.executescript(PURGE_SCHEMA)


@dataclass(frozen=True)
class PurgeRecord:
    """Why a payload is gone here: the purge transaction that removed it, and its block."""

    tx_id: str
    block_number: int


def purge_record(conn: Db, digest: bytes) -> PurgeRecord | None:
    """The `purged` row of `digest`, if a purge removed it here: what `Receive` answers for a
    payload it no longer holds (PAYLOAD_PURGED), so a reader tells "gone for good" from "not
    delivered yet"."""
    row = conn.execute("SELECT tx_id, block_number FROM purged WHERE hash=?", (digest,)).fetchone()
    return None if row is None else PurgeRecord(text(row[0]), int(row[1]))


def purged_among(conn: Db, hashes: Iterable[bytes]) -> set[bytes]:
    """Those of `hashes` that were purged here (one statement per `IN_CHUNK` hashes: each
    statement is a round trip on PostgreSQL)."""
    return {bytes(r[0]) for r in rows_in(conn, "SELECT hash FROM purged WHERE hash IN", hashes)}


IN_CHUNK = 256  # hashes per `IN (...)` statement (far below either database's parameter limit)


def rows_in(conn: Db, select: str, hashes: Iterable[bytes]) -> list[Any]:
    """The rows of `select` (ending in `... IN`) for the distinct `hashes`, chunked."""
    wanted = sorted(set(hashes))
    rows: list[Any] = []
    for i in range(0, len(wanted), IN_CHUNK):
        chunk = wanted[i : i + IN_CHUNK]
        rows += conn.execute(f"{select} ({','.join('?' * len(chunk))})", chunk).fetchall()
    return rows


def not_purged(conn: Db, items: Sequence[T], hash_of: str) -> list[T]:
    """`items` without those whose attribute `hash_of` names a purged payload."""
    gone = purged_among(conn, (getattr(item, hash_of) for item in items))
    return [item for item in items if getattr(item, hash_of) not in gone]


def remove_payloads(conn: Db, hashes: Sequence[bytes], tx_id: str, block_number: int) -> None:
    """Inside the block's store transaction: delete the payloads, their recipient index and any
    deferred copy, and record them as purged (idempotent: a replayed block changes nothing)."""
    for digest in hashes:
        conn.execute("DELETE FROM payloads WHERE hash=?", (digest,))
        conn.execute("DELETE FROM payload_recipients WHERE hash=?", (digest,))
        conn.execute("DELETE FROM deferred WHERE hash=?", (digest,))
        conn.execute("INSERT OR IGNORE INTO purged VALUES (?,?,?)", (digest, tx_id, block_number))


def checkpoint(conn: Db) -> bool:
    """Outside any transaction: copy the WAL into the main file and truncate it. False when a
    reader kept sqlite from finishing (the caller tries again)."""
    row = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    return row is not None and int(row[0]) == 0
