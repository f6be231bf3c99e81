"""The channel ledger on sqlite: one database file per node and channel.

Theory of operation. A block and every effect of it — the block bytes with this peer's
validation codes, the tx index, the world-state writes, and (on an orderer) the removal of the
queue entries it consumed — are written in ONE sqlite transaction, in WAL mode with
`synchronous=FULL` by default. A crash therefore leaves either all of a block or none of it, and
the ledger never needs repair: on open it checks the chain's tail and resumes at its height; the
whole chain is checked in the background after start (`chain_check.py`).

The file is opened and used through `sqlite_file.SqliteFile` (the storage seam of every store):
a block's commit, with all its statements, is ONE hop to the writer's thread (each hop is a
thread round trip of ~0.1 ms, so nothing per-transaction is awaited), and its rows go in a few
multi-row INSERTs (`row_batches.py`: 2 statements per table for 40 rows, not 40). Contract
simulation needs many small synchronous reads; it runs inside `read_snapshot`, on a dedicated
reader thread with its own sqlite3 connection, inside one read transaction, so a simulation sees
one consistent committed state (WAL snapshot isolation) while commits proceed. Point reads of
the tx index (duplicate checks, commit status) take the same path, many ids per hop
(`tx_records`) — except a few (`INLINE_READS_MAX` point lookups, no range): those run in place
on the event loop's thread (`SqliteFile.snapshot_here`), which at low load takes a hop's ~0.3-1
ms of latency off a lone transaction's path several times (its duplicate checks, each peer's
commit reads).

State hash (tamper evidence, `core/statehash.py`). Every committed block stores the hash of the
world state it leaves (`state_hashes`), computed in the same transaction from the previous
accumulator (`state_acc`, one row) and the old entries of the keys the block writes, read inside
that transaction: O(writes of the block). `dltmw audit` recomputes it from the state table
(`ledger/audit.py`) and compares it with the stored one and with other peers'. A ledger file made
before state hashes existed gets its accumulator computed from its table on first open (and a
stored hash from that height on only; the heights below have none, and audit compares from the
first height every peer has one). Orderer ledgers store the hash of their (empty) state too: the
rows cost 40 bytes per block and keep one code path.
"""

from __future__ import annotations

import asyncio
import functools
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TypeVar

from dltmw.core.block import TxRecord
from dltmw.core.errors import InvariantViolation
from dltmw.core.handlers.base import PendingEnvelope
from dltmw.core.hashing import ZERO_HASH
from dltmw.core.identity_table import TableEntry
from dltmw.core.rwset import StateEntry, StateWrite, Version
from dltmw.core.statehash import KeyRef, StateAccumulator, accumulate, advance
from dltmw.ledger.audit import LedgerAudit, read_audit
from dltmw.ledger.backend import KeyVersions, RangeVersions, StateReader, versions_of
from dltmw.ledger.chain_check import (
    CHECK_CHUNK_BLOCKS,
    CHECK_CHUNK_BYTES,
    check_rows,
    tail_start,
)
from dltmw.ledger.ledger_base import LedgerBase, commit_reader
from dltmw.ledger.page_cache import READER_CACHE_KIB, bound_cache
from dltmw.ledger.retry import DEFAULT_RETRY, RetryPolicy, write_sync
from dltmw.ledger.row_batches import in_lists, insert_rows
from dltmw.ledger.sqlite_file import SqliteFile
from dltmw.v1 import block_pb2

T = TypeVar("T")

SCHEMA = """
CREATE TABLE IF NOT EXISTS blocks (
    number INTEGER PRIMARY KEY, hash BLOB NOT NULL, data BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS txs (
    tx_id TEXT PRIMARY KEY, block_number INTEGER NOT NULL, tx_index INTEGER NOT NULL,
    code INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS state (
    namespace TEXT NOT NULL, key TEXT NOT NULL, value BLOB NOT NULL,
    block_number INTEGER NOT NULL, tx_index INTEGER NOT NULL,
    PRIMARY KEY (namespace, key)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS pending (seq INTEGER PRIMARY KEY, envelope BLOB NOT NULL);
-- Client certificates referable on the channel (core/identity_table.py), each with the block
-- that carried it in full: written in that block's transaction.
CREATE TABLE IF NOT EXISTS identities (
    org_id TEXT NOT NULL, certificate_ref BLOB NOT NULL, certificate_der BLOB NOT NULL,
    first_block INTEGER NOT NULL, PRIMARY KEY (org_id, certificate_ref)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS state_hashes (
    block_number INTEGER PRIMARY KEY, state_hash BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS state_acc (
    id INTEGER PRIMARY KEY CHECK (id = 0), block_number INTEGER NOT NULL, acc BLOB NOT NULL,
    state_hash BLOB NOT NULL);
-- One statement per block stores both (each statement is a ~0.1 ms thread hop): writing the
-- accumulator row appends its hash to the per-block history.
CREATE TRIGGER IF NOT EXISTS state_hash_history AFTER INSERT ON state_acc BEGIN
    INSERT OR REPLACE INTO state_hashes VALUES (NEW.block_number, NEW.state_hash);
END;
"""
# Keys per old-entry SELECT: well under SQLITE_MAX_VARIABLE_NUMBER.
OLD_ENTRIES_CHUNK = 8000
# A page of blocks newest first (the explorer): a range walk of the rowid (`number` is the
# INTEGER PRIMARY KEY) backwards from `before`, so its cost is the page, not the ledger
# (tests/unit/test_explorer.py checks the plan).
BLOCKS_BEFORE_SQL = "SELECT data FROM blocks WHERE number<? ORDER BY number DESC LIMIT ?"
# Point lookups (an indexed row each, ~6 µs) that run in place rather than on the reader thread.
INLINE_READS_MAX = 16


class SnapshotReader:
    """Synchronous reads inside one read transaction (used by contract simulation)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def last_block_number(self) -> int:
        """Number of the last block in this snapshot (-1 before block 0): blocks and their
        state change in one write transaction, so this names exactly the state read here."""
        row = self._conn.execute("SELECT MAX(number) FROM blocks").fetchone()
        return -1 if row is None or row[0] is None else int(row[0])

    def get(self, namespace: str, key: str) -> tuple[bytes, Version] | None:
        """Committed value and version of a key."""
        row = self._conn.execute(
            "SELECT value, block_number, tx_index FROM state WHERE namespace=? AND key=?",
            (namespace, key),
        ).fetchone()
        return None if row is None else (bytes(row[0]), Version(row[1], row[2]))

    def tx_record(self, tx_id: str) -> TxRecord | None:
        """Where `tx_id` committed (its first occurrence), or None."""
        row = self._conn.execute(
            "SELECT block_number, tx_index, code FROM txs WHERE tx_id=?", (tx_id,)
        ).fetchone()
        return None if row is None else TxRecord(row[0], row[1], row[2])

    def tx_records_found(self, tx_ids: Sequence[str]) -> dict[str, TxRecord]:
        """`tx_record` of each of `tx_ids` that committed: one `IN (...)` query per list of
        `row_batches.in_lists` (one per 64 ids, a few prepared texts): ~0.6 µs per id
        against ~1.3 for a point read per id (its own execute, bind and step)."""
        found: dict[str, TxRecord] = {}
        for ids in in_lists(tx_ids):
            rows = self._conn.execute(_tx_records_sql(len(ids)), ids)
            found.update((r[0], TxRecord(r[1], r[2], r[3])) for r in rows)
        return found

    def range(self, namespace: str, start: str, end: str, limit: int) -> list[StateEntry]:
        """Keys in [start, end) (end "" = unbounded), in key order."""
        sql = "SELECT key, value, block_number, tx_index FROM state WHERE namespace=? AND key>=?"
        args: list[object] = [namespace, start]
        if end:
            sql += " AND key<?"
            args.append(end)
        rows = self._conn.execute(sql + " ORDER BY key LIMIT ?", (*args, limit)).fetchall()
        return [StateEntry(r[0], bytes(r[1]), Version(r[2], r[3])) for r in rows]


class ChannelLedger(LedgerBase):
    """Blocks, tx index, world state and orderer queue of one channel on one node."""

    def __init__(self, file: SqliteFile) -> None:
        super().__init__()
        self.path = file.path
        self._file = file
        self._audit_lock = asyncio.Lock()

    @property
    def name(self) -> str:
        """The file, for messages (`backend.Ledger`)."""
        return str(self.path)

    @classmethod
    async def open(
        cls, path: Path, *, synchronous: str = "FULL", retry: RetryPolicy = DEFAULT_RETRY
    ) -> ChannelLedger:
        """Open (creating if needed) and verify the hash chain; raises InvariantViolation.
        Writes are retried on transient faults per `retry` (`ledger/retry.py`)."""
        file = SqliteFile(
            path, SCHEMA, synchronous=synchronous, retry=retry, name="ledger", reader=True
        )
        ledger = cls(file)
        # The chain check and the state hash load run as the file's setup, on its worker: a
        # refused file leaves no connection and no thread behind.
        await file.open(ledger._check_and_load)
        ledger.created = file.created
        return ledger

    async def close(self) -> None:
        """Close both connections (idempotent)."""
        await self._file.close()

    def _check_and_load(self, conn: sqlite3.Connection) -> None:
        """The open check: the chain's tail only, O(1) rows (`chain_check.py`); the whole chain
        is checked after start by `verify_stored_chain`."""
        row = conn.execute("SELECT MAX(number) FROM blocks").fetchone()
        if row is not None and row[0] is not None:
            first = tail_start(int(row[0]))
            previous = ZERO_HASH
            if first > 0:
                before = conn.execute("SELECT hash FROM blocks WHERE number=?", (first - 1,))
                found = before.fetchone()
                if found is None:
                    raise InvariantViolation(
                        f"{self.path}: hash chain broken: no block {first - 1}"
                    )
                previous = bytes(found[0])
            rows = conn.execute(
                "SELECT number, hash, data FROM blocks WHERE number>=? ORDER BY number", (first,)
            )
            self._verify_chain(rows, first, previous)
        self._load_state_hash(conn)
        rows = conn.execute(
            "SELECT org_id, certificate_ref, certificate_der, first_block FROM identities"
        )
        self.identities.add(TableEntry(r[0], bytes(r[1]), bytes(r[2]), r[3]) for r in rows)

    async def verify_stored_chain(self) -> None:
        """Check the whole stored chain from block 0 up to the height at open; InvariantViolation
        on a break (`chain_check.py`: the node runs it in the background after start, a break is
        fatal). Each chunk runs on a worker thread with its own short-lived read-only connection
        (as `audit` does), so neither the writer's thread (commits, the orderer's queue) nor the
        reader's (simulation) waits behind it, and a stop cancels it between chunks."""
        stop = self.height
        number, previous = 0, ZERO_HASH
        while number < stop:
            reached, previous = await asyncio.to_thread(
                check_chunk, self.path, number, stop, previous
            )
            if reached <= number:
                raise InvariantViolation(f"{self.path}: hash chain broken: no block {number}")
            number = reached

    def _load_state_hash(self, conn: sqlite3.Connection) -> None:
        """The accumulator of the last block; computed from the table for a pre-hash file."""
        row = conn.execute("SELECT block_number, acc FROM state_acc").fetchone()
        if row is not None:
            self._load_accumulator(row[0], bytes(row[1]))
        elif self.height > 0:
            self._migrate_state_hash(conn)
            self.state_hash = self._acc.digest()

    def _migrate_state_hash(self, conn: sqlite3.Connection) -> None:
        """A ledger file older than state hashes: start the accumulator from its table. Only
        when it has no stored state hash at all — a file that has some but lost the accumulator
        row was edited, and recomputing would hide the edit."""
        row = conn.execute("SELECT COUNT(*) FROM state_hashes").fetchone()
        if row is not None and row[0]:
            raise InvariantViolation(f"{self.path}: state accumulator missing (file edited?)")
        rows = conn.execute("SELECT namespace, key, value, block_number, tx_index FROM state")
        self._acc = accumulate((r[0], r[1], bytes(r[2]), Version(r[3], r[4])) for r in rows)
        number, acc = self.height - 1, self._acc
        write_sync(
            conn,
            "ledger.migrate_state_hash",
            lambda c: _store_state_hash(c, number, acc),
            self._file.retry,
        )

    def _old_entries(
        self, conn: sqlite3.Connection, refs: Sequence[KeyRef]
    ) -> dict[KeyRef, tuple[bytes, Version]]:
        """The current entries of `refs` (inside the caller's write transaction). One query per
        namespace and chunk, `key IN (...)`: a primary-key lookup per key (a row-value
        `(namespace, key) IN (VALUES ...)` is planned as a scan of the whole table)."""
        by_namespace: dict[str, list[str]] = {}
        for namespace, key in refs:
            by_namespace.setdefault(namespace, []).append(key)
        found: dict[KeyRef, tuple[bytes, Version]] = {}
        for namespace, keys in by_namespace.items():
            for i in range(0, len(keys), OLD_ENTRIES_CHUNK):
                chunk = keys[i : i + OLD_ENTRIES_CHUNK]
                rows = conn.execute(
                    "SELECT key, value, block_number, tx_index FROM state"
                    f" WHERE namespace=? AND key IN ({','.join('?' * len(chunk))})",
                    [namespace, *chunk],
                )
                for r in rows:
                    found[(namespace, r[0])] = (bytes(r[1]), Version(r[2], r[3]))
        return found

    async def commit_block(
        self,
        block: block_pb2.Block,
        tx_ids: Sequence[str],
        writes: Iterable[StateWrite] = (),
        consumed_seq: int = 0,
        identities: Sequence[TableEntry] = (),
    ) -> None:
        """Append `block` (its metadata already holds this node's codes) and all its effects,
        with the hash of the state it leaves and the identity-table entries it adds, in one
        transaction (one hop to the file)."""
        identity_rows = self._identity_rows(identities)
        prepared = self._prepare(block, tx_ids, writes)
        number, final = prepared.number, prepared.final
        upserts = [
            (w.namespace, w.key, w.value, w.version.block_number, w.version.tx_index)
            for w in final.values()
            if w.value is not None
        ]
        deletes = [(w.namespace, w.key) for w in final.values() if w.value is None]

        def write(conn: sqlite3.Connection) -> StateAccumulator:
            old = self._old_entries(conn, list(final)) if final else {}
            acc = advance(self._acc, old, final)
            conn.execute(
                "INSERT INTO blocks(number, hash, data) VALUES (?,?,?)",
                (number, prepared.digest, prepared.data),
            )
            insert_rows(conn, "INSERT OR IGNORE INTO txs", prepared.tx_rows)
            insert_rows(conn, "INSERT OR REPLACE INTO state", upserts)
            if deletes:
                conn.executemany("DELETE FROM state WHERE namespace=? AND key=?", deletes)
            _store_state_hash(conn, number, acc)
            if consumed_seq:
                conn.execute("DELETE FROM pending WHERE seq<=?", (consumed_seq,))
            if identity_rows:
                insert_rows(conn, "INSERT OR IGNORE INTO identities", identity_rows)
            return acc

        acc = await self._file.write("ledger.commit_block", write)
        self._committed(prepared, acc, identities)

    async def enqueue(self, pending: Sequence[PendingEnvelope]) -> None:
        """Durably queue admitted envelopes (orderer) in one transaction."""
        if not pending:
            return
        rows = [(p.seq, p.envelope) for p in pending]

        def write(conn: sqlite3.Connection) -> None:
            insert_rows(conn, "INSERT INTO pending(seq, envelope)", rows)

        await self._file.write("ledger.enqueue", write)

    async def pending(self) -> list[PendingEnvelope]:
        """Queued envelopes not yet in a block, in order."""

        def read(conn: sqlite3.Connection) -> list[PendingEnvelope]:
            rows = conn.execute("SELECT seq, envelope FROM pending ORDER BY seq")
            return [PendingEnvelope(seq, bytes(env)) for seq, env in rows]

        return await self._file.read(read)

    async def _stored_data(self, start: int, stop: int) -> list[bytes]:
        def read(conn: sqlite3.Connection) -> list[bytes]:
            rows = conn.execute(
                "SELECT data FROM blocks WHERE number>=? AND number<? ORDER BY number",
                (start, stop),
            )
            return [bytes(r[0]) for r in rows]

        return await self._file.read(read)

    async def blocks_before(self, before: int, limit: int) -> list[block_pb2.Block]:
        """Up to `limit` blocks numbered below `before`, newest first (`BLOCKS_BEFORE_SQL`)."""

        def read(conn: sqlite3.Connection) -> list[block_pb2.Block]:
            rows = conn.execute(BLOCKS_BEFORE_SQL, (before, limit))
            return [block_pb2.Block.FromString(r[0]) for r in rows]

        return await self._file.read(read)

    async def tx_record(self, tx_id: str) -> TxRecord | None:
        """Where `tx_id` committed (its first occurrence), or None."""
        return await self._file.read(lambda conn: SnapshotReader(conn).tx_record(tx_id))

    async def tx_records(self, tx_ids: Sequence[str]) -> list[TxRecord | None]:
        """`tx_record` of many ids in ONE reader-thread hop (point reads: ~6 µs each), or in
        place for a few (module docstring)."""
        ids = list(tx_ids)

        def read(reader: StateReader) -> list[TxRecord | None]:
            found = reader.tx_records_found(ids)
            return [found.get(t) for t in ids]

        return await self.read_small(len(ids), read)

    async def versions(self, keys: Iterable[tuple[str, str]]) -> KeyVersions:
        """Committed versions of the given keys that exist: in place for a few (the gateway's
        staleness check of a lone transaction, `gateway/staleness.py`: a hop on every
        transaction's way to the orderer), on the reader thread for more."""
        refs = list(keys)
        return await self.read_small(len(refs), lambda r: versions_of(r, refs))

    async def commit_reads(
        self,
        keys: Iterable[tuple[str, str]],
        ranges: Iterable[tuple[str, str, str]],
        tx_ids: Iterable[str],
    ) -> tuple[KeyVersions, RangeVersions, set[str]]:
        """`versions`, `ranges` and `existing_tx_ids` in ONE reader-thread hop and one read
        transaction (what a peer's commit of one block reads; three hops before); in place when
        it is a few point lookups and no range (a small block at low load)."""
        lookups, read = commit_reader(keys, ranges, tx_ids)
        if lookups < 0:
            return await self.read_snapshot(read)
        return await self.read_small(lookups, read)

    async def audit(self, numbers: Sequence[int], chain_from: int, recompute: bool) -> LedgerAudit:
        """`ledger/audit.py` `read_audit` on a worker thread, one audit at a time per ledger
        (a recomputation scans the whole state table)."""
        async with self._audit_lock:
            return await asyncio.to_thread(
                read_audit, self.path, list(numbers), chain_from, recompute
            )

    async def read_snapshot(self, fn: Callable[[StateReader], T]) -> T:
        """Run `fn` on the reader thread inside one read transaction."""
        return await self._file.snapshot(lambda conn: fn(SnapshotReader(conn)))

    async def read_small(self, lookups: int, fn: Callable[[StateReader], T]) -> T:
        """`read_snapshot(fn)`, in place when `fn` is at most `INLINE_READS_MAX` point
        lookups (module docstring): its own read transaction on its own connection, so one
        committed state, as on the reader thread."""
        if lookups > INLINE_READS_MAX:
            return await self.read_snapshot(fn)
        return await self._file.snapshot_here(lambda conn: fn(SnapshotReader(conn)))


def check_chunk(path: Path, first: int, stop: int, previous: bytes) -> tuple[int, bytes]:
    """`check_rows` over blocks first.. (below `stop`, at most `CHECK_CHUNK_BLOCKS` or about
    `CHECK_CHUNK_BYTES`), on a read-only connection of its own; (next number, last hash)."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None)
    try:
        bound_cache(conn, READER_CACHE_KIB)
        rows = conn.execute(
            "SELECT number, hash, data FROM blocks WHERE number>=? AND number<? ORDER BY number",
            (first, min(stop, first + CHECK_CHUNK_BLOCKS)),
        )
        return check_rows(str(path), _bytes_bounded(rows), first, previous)
    finally:
        conn.close()


def _bytes_bounded(
    rows: Iterable[tuple[int, bytes, bytes]],
) -> Iterable[tuple[int, bytes, bytes]]:
    """`rows` until about `CHECK_CHUNK_BYTES` of block data were given (at least one row)."""
    given = 0
    for row in rows:
        yield row
        given += len(row[2])
        if given >= CHECK_CHUNK_BYTES:
            return


@functools.lru_cache(maxsize=16)
def _tx_records_sql(count: int) -> str:
    marks = ",".join("?" * count)
    return f"SELECT tx_id, block_number, tx_index, code FROM txs WHERE tx_id IN ({marks})"


def _store_state_hash(conn: sqlite3.Connection, number: int, acc: StateAccumulator) -> None:
    """The accumulator, and (by the schema's trigger) the hash of block `number`."""
    conn.execute(
        "INSERT OR REPLACE INTO state_acc VALUES (0,?,?,?)", (number, acc.to_bytes(), acc.digest())
    )
