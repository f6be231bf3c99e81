"""The private store of one channel on one node: encrypted payloads and the private state.

It is a SEPARATE sqlite file (`<channel>.private.sqlite`) from the public ledger, so the public
ledger never holds private data and losing the private store is losing exactly this file (the
node can then rebuild it with Recover: payloads from other recipients, state by re-execution).

Tables: `payloads` (hash -> serialised EncryptedPayload, stored encrypted even at recipients),
`payload_recipients` (recipient key -> hash, for Resend), `pstate` (the private world state,
plaintext: only recipients ever write it), `ptxs` (one row per private transaction of the
ledger: status, private-state hash), `meta` (`cursor`: every block below it has been executed).

All access runs on one dedicated thread with one sqlite3 connection (WAL, synchronous=FULL by
default); each public method is one thread round trip and at most one transaction. A block's
private effects (state writes, ptx rows, the cursor) are one transaction, so a crash re-executes
either all of a block or none of it.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from dltmw.core.rwset import StateEntry, StateWrite, Version
from dltmw.ledger.durability import durable_pragmas
from dltmw.ledger.retry import DEFAULT_RETRY, RetryPolicy, write_sync

T = TypeVar("T")
RESEND_CHUNK = 256

SCHEMA = """
CREATE TABLE IF NOT EXISTS payloads (hash BLOB PRIMARY KEY, data BLOB NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS payload_recipients (
    recipient BLOB NOT NULL, hash BLOB NOT NULL, PRIMARY KEY (recipient, hash)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS pstate (
    namespace TEXT NOT NULL, key TEXT NOT NULL, value BLOB NOT NULL,
    block_number INTEGER NOT NULL, tx_index INTEGER NOT NULL,
    PRIMARY KEY (namespace, key)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS ptxs (
    payload_hash BLOB PRIMARY KEY, tx_id TEXT NOT NULL, block_number INTEGER NOT NULL,
    tx_index INTEGER NOT NULL, status INTEGER NOT NULL, state_hash BLOB NOT NULL)
    WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
"""


@dataclass(frozen=True)
class PrivateTxRecord:
    """What the executor recorded for one private transaction."""

    tx_id: str
    block_number: int
    tx_index: int
    status: int
    state_hash: bytes


@dataclass(frozen=True)
class NewPayload:
    """A payload to store: its hash, serialised bytes and recipient keys. `replace` overwrites a
    held copy (a copy with more recipient boxes, see AddRecipients); otherwise a held copy stays."""

    payload_hash: bytes
    data: bytes
    recipients: tuple[bytes, ...]
    replace: bool = False


class PrivateTxn:
    """Synchronous access inside one store transaction (used by the private executor)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def get(self, namespace: str, key: str) -> tuple[bytes, Version] | None:
        """Private value and version of a key (including this transaction's writes)."""
        row = self._conn.execute(
            "SELECT value, block_number, tx_index FROM pstate WHERE namespace=? AND key=?",
            (namespace, key),
        ).fetchone()
        return None if row is None else (bytes(row[0]), Version(row[1], row[2]))

    def range(self, namespace: str, start: str, end: str, limit: int) -> list[StateEntry]:
        """Private keys in [start, end) (end "" = unbounded), in key order."""
        sql = "SELECT key, value, block_number, tx_index FROM pstate WHERE namespace=? AND key>=?"
        args: list[object] = [namespace, start]
        if end:
            sql += " AND key<?"
            args.append(end)
        rows = self._conn.execute(sql + " ORDER BY key LIMIT ?", (*args, limit)).fetchall()
        return [StateEntry(r[0], bytes(r[1]), Version(r[2], r[3])) for r in rows]

    def payload(self, payload_hash: bytes) -> bytes | None:
        """Stored payload bytes, or None."""
        row = self._conn.execute(
            "SELECT data FROM payloads WHERE hash=?", (payload_hash,)
        ).fetchone()
        return None if row is None else bytes(row[0])

    def apply(self, writes: Iterable[StateWrite]) -> None:
        """Apply private state writes."""
        for w in writes:
            if w.value is None:
                self._conn.execute(
                    "DELETE FROM pstate WHERE namespace=? AND key=?", (w.namespace, w.key)
                )
            else:
                self._conn.execute(
                    "INSERT OR REPLACE INTO pstate VALUES (?,?,?,?,?)",
                    (w.namespace, w.key, w.value, w.version.block_number, w.version.tx_index),
                )

    def record(self, payload_hash: bytes, record: PrivateTxRecord) -> None:
        """Record the executor's verdict on one private transaction."""
        self._conn.execute(
            "INSERT OR REPLACE INTO ptxs VALUES (?,?,?,?,?,?)",
            (
                payload_hash,
                record.tx_id,
                record.block_number,
                record.tx_index,
                record.status,
                record.state_hash,
            ),
        )

    def set_cursor(self, next_block: int) -> None:
        """Every block below `next_block` has been executed."""
        self._conn.execute("INSERT OR REPLACE INTO meta VALUES ('cursor', ?)", (next_block,))


class PrivateStore:
    """Payloads and private state of one channel on one node."""

    def __init__(self, path: Path, synchronous: str, retry: RetryPolicy = DEFAULT_RETRY) -> None:
        self.path = path
        self._synchronous = synchronous
        self._retry = retry
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="private-store")
        self._conn: sqlite3.Connection | None = None
        self.created = False  # True when this open created the file (fresh or lost store)

    @classmethod
    async def open(
        cls, path: Path, *, synchronous: str = "FULL", retry: RetryPolicy = DEFAULT_RETRY
    ) -> PrivateStore:
        """Open (creating if needed); writes are retried on transient faults per `retry`."""
        durable_pragmas(synchronous)  # ValueError for an unknown mode, before touching the file
        store = cls(path, synchronous, retry)
        await store._call(store._open)
        return store

    def _open(self) -> None:
        self.created = not self.path.exists()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        for pragma in durable_pragmas(self._synchronous):
            conn.execute(pragma)
        conn.executescript(SCHEMA)
        self._conn = conn

    async def close(self) -> None:
        """Close the connection (idempotent)."""
        await self._call(self._close)
        self._pool.shutdown(wait=True)

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    async def _call(self, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn)

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise RuntimeError("private store is closed")
        return self._conn

    def _in_txn(self, fn: Callable[[PrivateTxn], T], name: str) -> T:
        return write_sync(self._db(), name, lambda conn: fn(PrivateTxn(conn)), self._retry)

    async def transaction(self, fn: Callable[[PrivateTxn], T], name: str = "privacy.execute") -> T:
        """Run `fn` inside one store transaction on the store thread (all or nothing); a
        transient fault rolls it back and runs `fn` again, so `fn` must only touch `txn`."""
        return await self._call(lambda: self._in_txn(fn, name))

    async def store_payloads(self, payloads: Sequence[NewPayload]) -> int:
        """Store payloads in one transaction; returns how many were new."""

        def run(txn: PrivateTxn) -> int:
            conn = self._db()
            new = 0
            for verb, replace in (("INSERT OR IGNORE", False), ("INSERT OR REPLACE", True)):
                rows = [(p.payload_hash, p.data) for p in payloads if p.replace is replace]
                if rows:  # executemany sums rowcount: ignored duplicates count 0
                    new += conn.executemany(f"{verb} INTO payloads VALUES (?,?)", rows).rowcount
            conn.executemany(
                "INSERT OR IGNORE INTO payload_recipients VALUES (?,?)",
                sorted((r, p.payload_hash) for p in payloads for r in p.recipients),
            )
            return new

        return await self.transaction(run, "privacy.store")

    async def payload(self, payload_hash: bytes) -> bytes | None:
        """Stored payload bytes, or None."""
        return await self._call(lambda: PrivateTxn(self._db()).payload(payload_hash))

    async def held(self, hashes: Sequence[bytes]) -> dict[bytes, bytes]:
        """The stored bytes of those of `hashes` that are held (one round trip)."""

        def run() -> dict[bytes, bytes]:
            out: dict[bytes, bytes] = {}
            for digest in set(hashes):
                row = (
                    self._db()
                    .execute("SELECT data FROM payloads WHERE hash=?", (digest,))
                    .fetchone()
                )
                if row is not None:
                    out[digest] = bytes(row[0])
            return out

        return await self._call(run)

    async def payloads_for(self, recipient: bytes, after: bytes, limit: int) -> list[bytes]:
        """Up to `limit` stored payloads addressed to `recipient` with hash > `after`, by hash."""

        def run() -> list[bytes]:
            rows = self._db().execute(
                "SELECT p.data FROM payload_recipients r JOIN payloads p ON p.hash = r.hash"
                " WHERE r.recipient=? AND r.hash>? ORDER BY r.hash LIMIT ?",
                (recipient, after, limit),
            )
            return [bytes(r[0]) for r in rows]

        return await self._call(run)

    async def ptx(self, payload_hash: bytes) -> PrivateTxRecord | None:
        """The executor's record of the private transaction carrying `payload_hash`."""

        def run() -> PrivateTxRecord | None:
            row = (
                self._db()
                .execute(
                    "SELECT tx_id, block_number, tx_index, status, state_hash FROM ptxs"
                    " WHERE payload_hash=?",
                    (payload_hash,),
                )
                .fetchone()
            )
            if row is None:
                return None
            return PrivateTxRecord(
                str(row[0]), int(row[1]), int(row[2]), int(row[3]), bytes(row[4])
            )

        return await self._call(run)

    async def cursor(self) -> int:
        """Next block the executor has to look at."""

        def run() -> int:
            row = self._db().execute("SELECT value FROM meta WHERE name='cursor'").fetchone()
            return 0 if row is None else int(row[0])

        return await self._call(run)

    async def count_status(self, statuses: Iterable[int]) -> int:
        """Number of private transactions recorded with one of `statuses`."""
        wanted = sorted(set(statuses))
        marks = ",".join("?" * len(wanted))
        return await self._call(
            lambda: int(
                self._db()
                .execute(f"SELECT COUNT(*) FROM ptxs WHERE status IN ({marks})", wanted)
                .fetchone()[0]
            )
        )

    async def reset_private_state(self) -> None:
        """Forget the private state and every execution record (payloads stay): re-derive."""

        def run(txn: PrivateTxn) -> None:
            conn = self._db()
            conn.execute("DELETE FROM pstate")
            conn.execute("DELETE FROM ptxs")
            txn.set_cursor(0)

        await self.transaction(run, "privacy.reset")

    async def private_state(self, namespace: str) -> dict[str, bytes]:
        """Every private key of a namespace (tests, demo)."""

        def run() -> dict[str, bytes]:
            rows = self._db().execute(
                "SELECT key, value FROM pstate WHERE namespace=? ORDER BY key", (namespace,)
            )
            return {r[0]: bytes(r[1]) for r in rows}

        return await self._call(run)
