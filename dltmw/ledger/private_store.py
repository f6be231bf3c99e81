"""The private store of one channel on one node: encrypted payloads and the private state.

It is a SEPARATE sqlite file (`<channel>.private.sqlite`) from the public ledger, so the public
ledger never holds private data and losing the private store is losing exactly this file (the
node can then rebuild it with Recover: payloads from other recipients, state by re-execution).
With `state = "postgresql"` it is a separate schema of the peer's database instead
(`private_pg.py`, `node/channel/private`); the code below is the same on both, written in
sqlite's SQL against `private_sql.Db` (the PostgreSQL adapter translates), and `StoreFile` is
where the tables live. What differs is only opening and the physical side of a purge.

Tables: `payloads` (hash -> serialised EncryptedPayload, stored encrypted even at recipients),
`payload_recipients` (recipient key -> hash, for Resend), `pstate` (the private world state,
plaintext: only recipients ever write it), `ptxs` (one row per private transaction of the
ledger: status, private-state hash), `meta` (`cursor`: every block below it has been executed;
`incomplete`: present while a store that replaced a lost one has not recovered its payloads),
`deferred` (payloads a recovery was offered for transactions not on this node's ledger yet: not
payloads of this node until such a transaction commits — the private executor's lookup
(`PrivateTxn.payload`) then moves one into `payloads`, inside the block's transaction).

All access runs on one dedicated thread with one connection (sqlite: WAL, synchronous=FULL by
default; PostgreSQL: the writer of `pg_database.PgSchema`); each public method is one thread
round trip and at most one transaction. A block's
private effects (state writes, ptx rows, the cursor) are one transaction, so a crash re-executes
either all of a block or none of it.

Private state hash (tamper evidence, as for the public state: `core/statehash.py`). Writes keep
a multiset accumulator of `pstate` up to date (`pstate_acc`, one row) and every block that
changed the private state stores its hash (`pstate_hashes`), in the block's transaction, O(its
writes). `audit` recomputes the hash from the table. Private states legitimately differ between
nodes (each holds only the payloads it is a recipient of), so nodes are compared per private
transaction (`ptxs.state_hash`), and each node's table against its own stored hash.
Encryption at rest (`at_rest.py`, `values`): each value of pstate, payloads and deferred is
sealed into SQL and opened out of it; hashes and accumulators stay over plaintext.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

from dltmw.aio.coalesce import Coalescer
from dltmw.aio.tasks import TaskOwner
from dltmw.core.errors import DltmwError, InvariantViolation
from dltmw.core.rwset import StateEntry, StateWrite, Version
from dltmw.core.statehash import KeyRef, StateAccumulator, accumulate, advance, final_writes
from dltmw.ledger import failpoints, private_outbox, private_purge
from dltmw.ledger.at_rest import PLAIN, ValueCodec, state_id
from dltmw.ledger.private_outbox import Delivery, Owed
from dltmw.ledger.private_outbox import Row as OutboxRow
from dltmw.ledger.private_sql import Db, text
from dltmw.ledger.retry import DEFAULT_RETRY, RetryPolicy
from dltmw.ledger.row_batches import in_lists, insert_rows
from dltmw.ledger.sqlite_file import SqliteFile

T = TypeVar("T")
RESEND_CHUNK = 256
# Concurrent transactions committed together (`PrivateStore.transaction`): at most this many
# per sqlite transaction, so one commit's work (and a retried group's) stays bounded.
GROUP_MAX = 64
# A group's write is named after its items' ("privacy.store+privacy.execute": messages name
# them all), a name no failpoint is armed at: each item hits its own, once, in its savepoint.
GROUP_SEPARATOR = "+"

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
CREATE TABLE IF NOT EXISTS pstate_hashes (
    block_number INTEGER PRIMARY KEY, state_hash BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS pstate_acc (id INTEGER PRIMARY KEY CHECK (id = 0), acc BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS deferred (
    hash BLOB PRIMARY KEY, data BLOB NOT NULL, recipients BLOB NOT NULL) WITHOUT ROWID;
"""
AUDIT_PAGE_MAX = 4096


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

    def __init__(self, conn: Db, values: ValueCodec = PLAIN) -> None:
        self._conn = conn
        self._values = values
        self._acc: StateAccumulator | None = None  # loaded at the first write
        self._changed = False

    @property
    def db(self) -> Db:
        """The connection this transaction runs on."""
        return self._conn

    def get(self, namespace: str, key: str) -> tuple[bytes, Version] | None:
        """Private value and version of a key (including this transaction's writes)."""
        row = self._conn.execute(
            "SELECT value, block_number, tx_index FROM pstate WHERE namespace=? AND key=?",
            (namespace, key),
        ).fetchone()
        return (
            None if row is None else (self.state_value(namespace, key, row[0]), Version(*row[1:]))
        )

    def state_value(self, namespace: str, key: str, stored: bytes) -> bytes:
        """A stored private-state value, opened (decrypted when encryption at rest is on)."""
        return self._values.open("pstate", state_id(namespace, key), bytes(stored))

    def range(self, namespace: str, start: str, end: str, limit: int) -> list[StateEntry]:
        """Private keys in [start, end) (end "" = unbounded), in key order."""
        sql = "SELECT key, value, block_number, tx_index FROM pstate WHERE namespace=? AND key>=?"
        args: list[object] = [namespace, start]
        if end:
            sql += " AND key<?"
            args.append(end)
        rows = self._conn.execute(sql + " ORDER BY key LIMIT ?", (*args, limit)).fetchall()
        entries = [(text(r[0]), r[1], Version(*r[2:])) for r in rows]
        return [StateEntry(k, self.state_value(namespace, k, v), ver) for k, v, ver in entries]

    def held(self, hashes: Sequence[bytes]) -> dict[bytes, bytes]:
        """The stored bytes of those of `hashes` that are held (stored payloads, read only)."""
        rows = private_purge.rows_in(
            self._conn, "SELECT hash, data FROM payloads WHERE hash IN", hashes
        )
        found = ((bytes(r[0]), bytes(r[1])) for r in rows)
        return {digest: self._values.open("payloads", digest, data) for digest, data in found}

    def payload(self, payload_hash: bytes) -> bytes | None:
        """The payload of a private transaction on the ledger, or None. A deferred copy (see the
        module docstring) becomes a stored payload here: its transaction has committed."""
        row = self._conn.execute(
            "SELECT data FROM payloads WHERE hash=?", (payload_hash,)
        ).fetchone()
        if row is not None:
            return self._values.open("payloads", payload_hash, bytes(row[0]))
        row = self._conn.execute(
            "SELECT data, recipients FROM deferred WHERE hash=?", (payload_hash,)
        ).fetchone()
        if row is None:
            return None
        data = self._values.open("deferred", payload_hash, bytes(row[0]))
        keys = bytes(row[1])
        sealed = self._values.seal("payloads", payload_hash, data)
        self._conn.execute("INSERT OR IGNORE INTO payloads VALUES (?,?)", (payload_hash, sealed))
        self._conn.executemany(
            "INSERT OR IGNORE INTO payload_recipients VALUES (?,?)",
            [(keys[i : i + 32], payload_hash) for i in range(0, len(keys), 32)],
        )
        self._conn.execute("DELETE FROM deferred WHERE hash=?", (payload_hash,))
        return data

    def executed(self, payload_hash: bytes) -> bool:
        """Has the executor recorded a verdict (any status) on the private transaction carrying
        `payload_hash`? (`ptx` reads the record itself, with a hop of its own.)"""
        row = self._conn.execute("SELECT 1 FROM ptxs WHERE payload_hash=?", (payload_hash,))
        return row.fetchone() is not None

    def apply(self, writes: Iterable[StateWrite]) -> None:
        """Apply private state writes, in order (and update the state accumulator with them).

        In a few statements, not three per write: the entries before (one `key IN (...)` read
        per namespace and 64 keys), then the last write to each key (`final_writes`: multi-row
        upserts, `row_batches.insert_rows`, and the deletes). The result is the per-write
        one's: a key written twice keeps its last value, and the accumulator, a sum of entry
        terms, gains the last write's and loses the entry before (`statehash.advance`: the
        intermediate terms cancel). A block of private puts cost its executor's writer ~3
        statements per transaction (a read, an upsert, the record: `record_many`), the
        public commit ~0.4 since branch kvstore (branch priv59)."""
        final = final_writes(writes)
        if not final:
            return
        if self._acc is None:
            row = self._conn.execute("SELECT acc FROM pstate_acc").fetchone()
            self._acc = (
                StateAccumulator() if row is None else StateAccumulator.from_bytes(bytes(row[0]))
            )
        self._acc = advance(self._acc, self._entries(list(final)), final)
        self._changed = True
        upserts = [
            (
                w.namespace,
                w.key,
                self._values.seal("pstate", state_id(w.namespace, w.key), w.value),
                w.version.block_number,
                w.version.tx_index,
            )
            for w in final.values()
            if w.value is not None
        ]
        insert_rows(self._conn, "INSERT OR REPLACE INTO pstate", upserts)
        deletes = [(w.namespace, w.key) for w in final.values() if w.value is None]
        if deletes:
            self._conn.executemany("DELETE FROM pstate WHERE namespace=? AND key=?", deletes)

    def _entries(self, refs: Sequence[KeyRef]) -> dict[KeyRef, tuple[bytes, Version]]:
        """The current entries (opened value, version) of those of `refs` that exist: one
        primary-key `IN` read per namespace and chunk (`row_batches.in_lists`)."""
        by_namespace: dict[str, list[str]] = {}
        for namespace, key in refs:
            by_namespace.setdefault(namespace, []).append(key)
        found: dict[KeyRef, tuple[bytes, Version]] = {}
        for namespace, keys in by_namespace.items():
            for chunk in in_lists(keys):
                rows = self._conn.execute(
                    "SELECT key, value, block_number, tx_index FROM pstate"
                    f" WHERE namespace=? AND key IN ({','.join('?' * len(chunk))})",
                    [namespace, *chunk],
                )
                for r in rows:
                    key = text(r[0])
                    value = self.state_value(namespace, key, r[1])
                    found[(namespace, key)] = (value, Version(r[2], r[3]))
        return found

    def record(self, payload_hash: bytes, record: PrivateTxRecord) -> None:
        """Record the executor's verdict on one private transaction."""
        self.record_many([(payload_hash, record)])

    def record_many(self, records: Sequence[tuple[bytes, PrivateTxRecord]]) -> None:
        """Record the executor's verdicts on several private transactions in a few multi-row
        statements (a payload recorded twice keeps its last record, as one by one)."""
        last = {digest: r for digest, r in records}
        rows = [
            (digest, r.tx_id, r.block_number, r.tx_index, r.status, r.state_hash)
            for digest, r in last.items()
        ]
        insert_rows(self._conn, "INSERT OR REPLACE INTO ptxs", rows)

    def remove_payloads(self, hashes: Sequence[bytes], tx_id: str, block_number: int) -> None:
        """A purge's payloads (`private_purge.remove_payloads`), in this transaction."""
        private_purge.remove_payloads(self._conn, hashes, tx_id, block_number)
        private_outbox.forget_payloads(self._conn, hashes)

    def set_cursor(self, next_block: int) -> None:
        """Every block below `next_block` has been executed; if this transaction changed the
        private state, its hash is stored as that of block next_block-1."""
        if self._changed and self._acc is not None:
            self._conn.execute(
                "INSERT OR REPLACE INTO pstate_hashes VALUES (?,?)",
                (next_block - 1, self._acc.digest()),
            )
            self._conn.execute(
                "INSERT OR REPLACE INTO pstate_acc VALUES (0,?)", (self._acc.to_bytes(),)
            )
            self._changed = False
        self._conn.execute("INSERT OR REPLACE INTO meta VALUES ('cursor', ?)", (next_block,))


@dataclass(frozen=True)
class _Item:
    """One transaction asked of the store: its failpoint name and its body."""

    name: str
    fn: Callable[[PrivateTxn], Any]


class StoreFile(Protocol):
    """Where a private store's tables live: a sqlite file (`sqlite_file.SqliteFile`) or a
    PostgreSQL schema (`private_pg.PgPrivateSchema`). One worker thread owns the connection;
    `read` and `write` are one hop to it, `write` one transaction retried on transient faults."""

    @property
    def created(self) -> bool:
        """True when opening created the store."""
        ...

    @property
    def executor(self) -> Executor:
        """The worker that owns the connection."""
        ...

    @property
    def connection(self) -> Db:
        """The connection: ONLY for code running on the worker."""
        ...

    async def read(self, fn: Callable[[Db], T]) -> T:
        """`fn(connection)` on the worker, outside a transaction."""
        ...

    async def snapshot(self, fn: Callable[[Db], T]) -> T:
        """`fn(reader)` inside one read transaction on a second, read-only connection and
        worker: one committed state, never queued behind the writer's transactions."""
        ...

    async def write(self, name: str, body: Callable[[Db], T]) -> T:
        """`body(connection)` as ONE transaction on the worker."""
        ...

    async def close(self) -> None:
        """Close the connection and stop the worker (idempotent)."""
        ...


class PrivateStore:
    """Payloads and private state of one channel on one node, in a sqlite file (`open`) or a
    PostgreSQL schema (`private_pg.open_pg_private_store`): the same code over `StoreFile`."""

    def __init__(
        self,
        file: StoreFile,
        name: str,
        values: ValueCodec = PLAIN,
        owner: TaskOwner | None = None,
    ) -> None:
        """`owner`: the node's, which supervises the group-commit task (`aio/coalesce.py`)."""
        self._file = file
        self.name = name  # where it is, for messages
        self.values = values
        # Group commit (`transaction`): concurrent writers share one COMMIT (one fsync).
        self._group: Coalescer[_Item, Any] = Coalescer(
            self._commit_group, batch_max=GROUP_MAX, name="private-store", owner=owner
        )

    @property
    def created(self) -> bool:
        """True when this open created the store (fresh or lost store)."""
        return self._file.created

    @classmethod
    async def open(
        cls,
        path: Path,
        *,
        synchronous: str = "FULL",
        retry: RetryPolicy = DEFAULT_RETRY,
        lost_if_created: bool = False,
        values: ValueCodec = PLAIN,
        owner: TaskOwner | None = None,
    ) -> PrivateStore:
        """Open the sqlite file (creating if needed); writes are retried on transient faults
        per `retry`. `lost_if_created`: a store created now replaces a lost one (the node ran
        before), so it is marked `incomplete` in the same step that creates it — a crash before
        its recovery ends cannot make the next start forget that it must recover."""
        # ValueError for an unknown mode, before touching the file
        file = SqliteFile(
            path, SCHEMA, synchronous=synchronous, retry=retry, name="private-store", reader=True
        )
        store = cls(file, str(path), values, owner)

        def setup(conn: sqlite3.Connection) -> None:
            private_purge.setup(conn)
            private_outbox.setup(conn)
            store.setup(conn, lost_if_created)

        await file.open(setup)
        return store

    def setup(self, conn: Db, lost_if_created: bool) -> None:
        """At every open, after the tables exist: the state hash's migration, and the mark of a
        store that replaces a lost one (`open`)."""
        _migrate_state_hash(conn, self.name, self.values)
        if self.created and lost_if_created:
            conn.execute("INSERT OR REPLACE INTO meta VALUES ('incomplete', 1)")

    async def incomplete(self) -> bool:
        """Does this store still miss payloads of a lost predecessor (recovery not finished)?"""
        return await self._file.read(
            lambda conn: (
                conn.execute("SELECT 1 FROM meta WHERE name='incomplete'").fetchone() is not None
            )
        )

    async def mark_complete(self) -> None:
        """Recovery finished: nothing of a lost predecessor is missing any more."""

        def run(txn: PrivateTxn) -> None:
            txn.db.execute("DELETE FROM meta WHERE name='incomplete'")

        await self.transaction(run, "privacy.store")

    async def close(self) -> None:
        """Close the connection (idempotent); transactions still queued get CancelledError."""
        await self._group.close()
        await self._file.close()

    @property
    def executor(self) -> Executor:
        """The store thread (the private executor's driver steps its core there)."""
        return self._file.executor

    def view(self) -> PrivateTxn:
        """Reads of held payloads and the committed private state; use on the store thread."""
        return PrivateTxn(self._file.connection, self.values)

    async def read(self, fn: Callable[[PrivateTxn], T]) -> T:
        """Run `fn` on a view of the committed store, on the store thread (privacy groups)."""
        return await self._file.read(lambda conn: fn(PrivateTxn(conn, self.values)))

    async def snapshot(self, fn: Callable[[PrivateTxn], T]) -> T:
        """Run `fn` on a view of ONE committed state of the store (a read transaction) on the
        store's reader thread, read-only. Why: the writer thread is busy with group commits
        (their fsyncs) most of the time under load, and an agreement run queued behind them
        waited longer than it ran (benchmarks/RESULTS.md, branch priv7); a WAL reader sees
        the last committed state without waiting for the writer."""
        return await self._file.snapshot(lambda conn: fn(PrivateTxn(conn, self.values)))

    async def transaction(self, fn: Callable[[PrivateTxn], T], name: str = "privacy.execute") -> T:
        """Run `fn` inside one store transaction on the store thread (all or nothing); a
        transient fault rolls it back and runs `fn` again, so `fn` must only touch `txn`.

        Group commit: transactions asked for while one is committing wait and then commit
        together, each `fn` in a SAVEPOINT of ONE sqlite transaction, in the order asked. A
        COMMIT with `synchronous=FULL` is an fsync, and the store's one thread spent a third of
        its time in them with one COMMIT per Send batch, Push batch, delivery acknowledgement
        and executed block (benchmarks/RESULTS.md, branch priv). Each caller still returns only
        once its `fn` is durable. An `fn` that raises a DltmwError (a refusal) is rolled back to
        its savepoint and only its caller hears of it; anything else (a storage fault, a bug)
        fails the whole group — retried whole if transient, as one transaction was."""
        return await self._group.call(_Item(name, fn))  # type: ignore[no-any-return]

    async def _commit_group(self, items: Sequence[_Item]) -> list[Any]:
        """One write for `items` (`transaction`); each item's result or refusal. One item
        alone is its own write, as before grouping (its name, its failpoint, no savepoint)."""
        if len(items) == 1:
            item = items[0]
            one = await self._file.write(
                item.name, lambda conn: item.fn(PrivateTxn(conn, self.values))
            )
            return [one]

        def run_all(conn: Db) -> list[Any]:
            out: list[Any] = []
            for item in items:
                conn.execute("SAVEPOINT item")
                try:
                    result = item.fn(PrivateTxn(conn, self.values))
                    failpoints.hit(item.name)  # where its own transaction's COMMIT was
                except DltmwError as refused:
                    conn.execute("ROLLBACK TO SAVEPOINT item")
                    out.append(refused)
                else:
                    out.append(result)
                conn.execute("RELEASE SAVEPOINT item")
            return out

        names = GROUP_SEPARATOR.join(dict.fromkeys(item.name for item in items))
        if names in failpoints.NAMES:
            names += GROUP_SEPARATOR  # items of one name: the group's write is not theirs
        return await self._file.write(names, run_all)

    async def store_payloads(
        self,
        payloads: Sequence[NewPayload],
        deliveries: Sequence[Delivery] = (),
        since: float | None = None,
    ) -> int:
        """Store payloads in one transaction, with the deliveries this node (their sender) owes
        for them, queued at `since` (`private_outbox.py`); returns how many were new."""

        def run(txn: PrivateTxn) -> int:
            conn = txn.db
            private_outbox.queue(conn, deliveries, since)
            new, kept = 0, private_purge.not_purged(conn, payloads, "payload_hash")
            for verb, replace in (("INSERT OR IGNORE", False), ("INSERT OR REPLACE", True)):
                rows = [
                    (p.payload_hash, self.values.seal("payloads", p.payload_hash, p.data))
                    for p in kept
                    if p.replace is replace
                ]
                if rows:  # executemany sums rowcount: ignored duplicates count 0
                    new += conn.executemany(f"{verb} INTO payloads VALUES (?,?)", rows).rowcount
            conn.executemany(
                "INSERT OR IGNORE INTO payload_recipients VALUES (?,?)",
                sorted((r, p.payload_hash) for p in kept for r in p.recipients),
            )
            return new

        return await self.transaction(run, "privacy.store")

    async def delivered(self, deliveries: Sequence[Delivery]) -> None:
        """Acknowledged deliveries are owed no more."""
        if deliveries:
            await self.transaction(
                lambda txn: private_outbox.delivered(txn.db, deliveries), "privacy.outbox"
            )

    async def owed(self, after: Delivery, limit: int) -> list[Owed]:
        """A page of the deliveries still owed (`private_outbox.owed`)."""
        return await self._file.read(lambda conn: private_outbox.owed(conn, after, limit))

    async def outbox_rows(self, after: Delivery, limit: int) -> list[OutboxRow]:
        """A page of the outbox, owed and given-up rows (`private_outbox.rows`)."""
        return await self._file.read(lambda conn: private_outbox.rows(conn, after, limit))

    async def pending_nodes(self, payload_hash: bytes) -> list[str]:
        """Recipient nodes this node still owes `payload_hash` (its sender's view)."""
        return await self._file.read(lambda conn: private_outbox.pending_nodes(conn, payload_hash))

    async def delivery_states(self, payload_hash: bytes) -> dict[str, int]:
        """node -> outbox state of each delivery of `payload_hash` not acknowledged yet."""
        return await self._file.read(lambda conn: private_outbox.states(conn, payload_hash))

    async def any_given_up(self) -> bool:
        """Is any outbox row given up (`private_outbox.any_given_up`)?"""
        return await self._file.read(private_outbox.any_given_up)

    async def give_up(
        self,
        given_up: Sequence[tuple[Sequence[Delivery], int]],
        stamps: Sequence[Delivery] = (),
        since: float = 0.0,
    ) -> list[int]:
        """In one transaction: each (deliveries, state) of `given_up` is pushed no more
        (`private_outbox.give_up`), and the rows `stamps` get `since` when they have none.
        Returns how many owed rows each group changed."""

        def run(txn: PrivateTxn) -> list[int]:
            private_outbox.stamp(txn.db, stamps, since)
            return [private_outbox.give_up(txn.db, rows, state) for rows, state in given_up]

        if not any(rows for rows, _ in given_up) and not stamps:
            return [0] * len(given_up)
        return await self.transaction(run, "privacy.outbox")

    async def missing(self, hashes: Sequence[bytes]) -> list[bytes]:
        """Those of `hashes` this node neither holds (stored or deferred) nor purged, in the
        order asked, each once. One statement per table (`private_purge.rows_in`) instead of
        two per hash: the private executor asks for every private transaction of every block
        it is a recipient of, on the store's writer thread (benchmarks/RESULTS.md, priv10)."""

        def run(conn: Db) -> list[bytes]:
            out = list(dict.fromkeys(hashes))
            for table in ("payloads", "deferred", "purged"):
                if not out:
                    break
                found = private_purge.rows_in(conn, f"SELECT hash FROM {table} WHERE hash IN", out)
                seen = {bytes(r[0]) for r in found}
                out = [digest for digest in out if digest not in seen]
            return out

        return await self._file.read(run)

    async def payload(self, payload_hash: bytes) -> bytes | None:
        """Stored payload bytes, or None."""
        return (await self.held([payload_hash])).get(payload_hash)

    async def payload_or_purge(
        self, payload_hash: bytes
    ) -> bytes | private_purge.PurgeRecord | None:
        """The stored payload bytes; else the purge that removed it here
        (`private_purge.purge_record`); else None. One read (Receive's path): a subscriber of
        an organisation that is not a recipient asks, and misses, for every private
        transaction of the channel."""

        def run(conn: Db) -> bytes | private_purge.PurgeRecord | None:
            held = PrivateTxn(conn, self.values).held([payload_hash]).get(payload_hash)
            return held if held is not None else private_purge.purge_record(conn, payload_hash)

        return await self._file.read(run)

    async def defer_payloads(self, payloads: Sequence[NewPayload]) -> None:
        """Keep payloads offered for transactions not on the ledger yet (see the docstring)."""

        def run(txn: PrivateTxn) -> None:
            txn.db.executemany(
                "INSERT OR IGNORE INTO deferred VALUES (?,?,?)",
                [
                    (
                        p.payload_hash,
                        self.values.seal("deferred", p.payload_hash, p.data),
                        b"".join(p.recipients),
                    )
                    for p in private_purge.not_purged(txn.db, payloads, "payload_hash")
                ],
            )

        if payloads:
            await self.transaction(run, "privacy.store")

    async def held(self, hashes: Sequence[bytes]) -> dict[bytes, bytes]:
        """The stored bytes of those of `hashes` that are held (one round trip)."""
        return await self._file.read(lambda conn: PrivateTxn(conn, self.values).held(hashes))

    async def payloads_for(self, recipient: bytes, after: bytes, limit: int) -> list[bytes]:
        """Up to `limit` stored payloads addressed to `recipient` with hash > `after`, by hash."""

        def run(conn: Db) -> list[bytes]:
            rows = conn.execute(
                "SELECT p.hash, p.data FROM payload_recipients r JOIN payloads p"
                " ON p.hash = r.hash WHERE r.recipient=? AND r.hash>? ORDER BY r.hash LIMIT ?",
                (recipient, after, limit),
            )
            return [self.values.open("payloads", bytes(r[0]), bytes(r[1])) for r in rows]

        return await self._file.read(run)

    async def ptx(self, payload_hash: bytes) -> PrivateTxRecord | None:
        """The executor's record of the private transaction carrying `payload_hash`."""

        def run(conn: Db) -> PrivateTxRecord | None:
            row = conn.execute(
                "SELECT tx_id, block_number, tx_index, status, state_hash FROM ptxs"
                " WHERE payload_hash=?",
                (payload_hash,),
            ).fetchone()
            if row is None:
                return None
            return PrivateTxRecord(
                text(row[0]), int(row[1]), int(row[2]), int(row[3]), bytes(row[4])
            )

        return await self._file.read(run)

    async def checkpoint(self) -> bool:
        """After a purge: the WAL into the main file, truncated (`private_purge.checkpoint`)."""
        return await self._file.read(private_purge.checkpoint)

    async def cursor(self) -> int:
        """Next block the executor has to look at."""

        def run(conn: Db) -> int:
            row = conn.execute("SELECT value FROM meta WHERE name='cursor'").fetchone()
            return 0 if row is None else int(row[0])

        return await self._file.read(run)

    async def count_status(self, statuses: Iterable[int]) -> int:
        """Number of private transactions recorded with one of `statuses`."""
        wanted = sorted(set(statuses))
        marks = ",".join("?" * len(wanted))
        return await self._file.read(
            lambda conn: int(
                conn.execute(
                    f"SELECT COUNT(*) FROM ptxs WHERE status IN ({marks})", wanted
                ).fetchone()[0]
            )
        )

    async def reset_private_state(self) -> None:
        """Forget the private state and every execution record (payloads stay): re-derive."""

        def run(txn: PrivateTxn) -> None:
            conn = txn.db
            conn.execute("DELETE FROM pstate")
            conn.execute("DELETE FROM ptxs")
            conn.execute("DELETE FROM pstate_hashes")
            conn.execute("DELETE FROM pstate_acc")
            txn.set_cursor(0)

        await self.transaction(run, "privacy.reset")

    async def private_state(self, namespace: str) -> dict[str, bytes]:
        """Every private key of a namespace (tests, demo)."""

        def run(conn: Db) -> dict[str, bytes]:
            view = PrivateTxn(conn, self.values)
            rows = conn.execute(
                "SELECT key, value FROM pstate WHERE namespace=? ORDER BY key", (namespace,)
            )
            keys = [(text(r[0]), r[1]) for r in rows]
            return {k: view.state_value(namespace, k, v) for k, v in keys}

        return await self._file.read(run)

    async def audit(self, after: bytes, limit: int) -> PrivateAudit:
        """What `dltmw audit` compares (one store-thread call, so one consistent view): the
        stored and the recomputed private-state hash, and up to `limit` private transactions
        with payload hash > `after`, by hash. O(private state) for the recomputation."""
        page = max(1, min(limit, AUDIT_PAGE_MAX))

        def run(conn: Db) -> PrivateAudit:
            row = conn.execute("SELECT value FROM meta WHERE name='cursor'").fetchone()
            latest = conn.execute(
                "SELECT state_hash FROM pstate_hashes ORDER BY block_number DESC LIMIT 1"
            ).fetchone()
            rows = conn.execute("SELECT namespace, key, value, block_number, tx_index FROM pstate")
            recomputed = accumulate(pstate_entries(rows, self.values))
            txs = conn.execute(
                "SELECT payload_hash, tx_id, block_number, tx_index, status, state_hash FROM ptxs"
                " WHERE payload_hash>? ORDER BY payload_hash LIMIT ?",
                (after, page + 1),
            ).fetchall()
            records = tuple(
                (bytes(r[0]), PrivateTxRecord(text(r[1]), r[2], r[3], r[4], bytes(r[5])))
                for r in txs[:page]
            )
            return PrivateAudit(
                purged=frozenset(private_purge.purged_among(conn, (r[0] for r in records))),
                cursor=0 if row is None else int(row[0]),
                stored_state_hash=(
                    StateAccumulator().digest() if latest is None else bytes(latest[0])
                ),
                recomputed_state_hash=recomputed.digest(),
                txs=records,
                next_after=records[-1][0] if len(txs) > page else b"",
            )

        return await self._file.read(run)


@dataclass(frozen=True)
class PrivateAudit:
    """One store's audit view: see `PrivateStore.audit`."""

    cursor: int
    stored_state_hash: bytes
    recomputed_state_hash: bytes
    txs: tuple[tuple[bytes, PrivateTxRecord], ...]  # (payload hash, record)
    next_after: bytes  # b"" on the last page
    purged: frozenset[bytes] = frozenset()  # of `txs`, those whose payload was purged here


def pstate_entries(
    rows: Iterable[Any], values: ValueCodec
) -> Iterable[tuple[str, str, bytes, Version]]:
    """(namespace, key, value, version) of `pstate` rows (namespace, key, value, block, index),
    values opened: what the private-state hashes are over."""
    for r in rows:
        namespace, key = text(r[0]), text(r[1])
        value = values.open("pstate", state_id(namespace, key), bytes(r[2]))
        yield namespace, key, value, Version(r[3], r[4])


def _migrate_state_hash(conn: Db, name: str, values: ValueCodec) -> None:
    """A store older than private-state hashes gets its accumulator from its table; one that has
    stored hashes but lost the accumulator row was edited (recomputing would hide the edit)."""
    if conn.execute("SELECT 1 FROM pstate_acc").fetchone() is not None:
        return
    if conn.execute("SELECT 1 FROM pstate_hashes LIMIT 1").fetchone() is not None:
        raise InvariantViolation(f"{name}: private state accumulator missing (file edited?)")
    rows = conn.execute("SELECT namespace, key, value, block_number, tx_index FROM pstate")
    acc = accumulate(pstate_entries(rows, values))
    conn.execute("INSERT INTO pstate_acc VALUES (0,?)", (acc.to_bytes(),))
