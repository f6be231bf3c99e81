"""A peer's channel ledger in PostgreSQL (`state = "postgresql"`): the `backend.Ledger` contract
on a schema of a server database, for ledgers that outgrow a file or whose state users query
with SQL (read-only views, `docs/postgresql.md`).

Theory of operation: the sqlite ledger's (`sqlite.py`), table for table. A block and every
effect of it — block bytes with this peer's codes, tx index, world-state writes, the state hash
accumulator and its per-block history, the consumed queue entries — are written in ONE
PostgreSQL transaction, one hop to the writer's thread (`pg_database.PgSchema`). Opening
re-verifies the hash chain and checks the stored accumulator against the height, so a crash
leaves all of a block or none of it and the node resumes at its height — what the sqlite ledger
does; nothing is repaired. Contract simulation reads in one REPEATABLE READ snapshot.

Representation. Keys are stored as their UTF-8 bytes (`bytea`): PostgreSQL text cannot hold
NUL (a key may: `a\\x00b`), and bytea compares bytewise, which is sqlite's BINARY order of the
same UTF-8 text — range reads and their phantom checks see the same keys in the same order on
both backends. Namespaces are `text COLLATE "C"` (bytewise too). Versions are (block_number,
tx_index) columns as in sqlite.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

import psycopg
from psycopg import sql

from dltmw.core.block import TxRecord
from dltmw.core.errors import InvariantViolation
from dltmw.core.handlers.base import PendingEnvelope
from dltmw.core.identity_table import TableEntry
from dltmw.core.rwset import StateEntry, StateWrite, Version
from dltmw.core.statehash import KeyRef, StateAccumulator, advance
from dltmw.ledger.audit import LedgerAudit, audit_snapshot
from dltmw.ledger.backend import (
    KeyVersions,
    RangeVersions,
    StateReader,
    ranges_of,
)
from dltmw.ledger.ledger_base import LedgerBase
from dltmw.ledger.pg_database import PgSchema, QmarkConnection
from dltmw.ledger.retry import DEFAULT_RETRY, RetryPolicy
from dltmw.v1 import block_pb2

T = TypeVar("T")
Conn = psycopg.Connection[Any]

# Read-only views for reporting (docs/postgresql.md): text where the bytes are UTF-8 text. A key
# is always UTF-8 (it was a str) but may hold NUL, which PostgreSQL text cannot: such a key shows
# in escape form. A value is any bytes: `value_text` is NULL where it is not UTF-8 text.
UTF8_OR_NULL = """
CREATE OR REPLACE FUNCTION utf8_or_null(data bytea) RETURNS text
    LANGUAGE plpgsql IMMUTABLE STRICT AS $$
BEGIN
    RETURN convert_from(data, 'UTF8');
EXCEPTION WHEN OTHERS THEN
    RETURN NULL;
END $$;
"""
VIEWS = (
    UTF8_OR_NULL
    + """
CREATE OR REPLACE VIEW world_state AS SELECT
    namespace,
    CASE WHEN position('\\x00'::bytea IN key) = 0 THEN convert_from(key, 'UTF8')
        ELSE encode(key, 'escape') END AS key,
    utf8_or_null(value) AS value_text, value, block_number, tx_index
    FROM state;
CREATE OR REPLACE VIEW transactions AS SELECT tx_id, block_number, tx_index,
    code AS validation_code FROM txs;
"""
)
SCHEMA = (
    """
CREATE TABLE IF NOT EXISTS blocks (
    number bigint PRIMARY KEY, hash bytea NOT NULL, data bytea NOT NULL);
CREATE TABLE IF NOT EXISTS txs (
    tx_id text COLLATE "C" PRIMARY KEY, block_number bigint NOT NULL, tx_index integer NOT NULL,
    code integer NOT NULL);
CREATE TABLE IF NOT EXISTS state (
    namespace text COLLATE "C" NOT NULL, key bytea NOT NULL, value bytea NOT NULL,
    block_number bigint NOT NULL, tx_index integer NOT NULL, PRIMARY KEY (namespace, key));
CREATE TABLE IF NOT EXISTS pending (seq bigint PRIMARY KEY, envelope bytea NOT NULL);
CREATE TABLE IF NOT EXISTS identities (
    org_id text COLLATE "C" NOT NULL, certificate_ref bytea NOT NULL,
    certificate_der bytea NOT NULL, first_block bigint NOT NULL,
    PRIMARY KEY (org_id, certificate_ref));
CREATE TABLE IF NOT EXISTS state_hashes (
    block_number bigint PRIMARY KEY, state_hash bytea NOT NULL);
CREATE TABLE IF NOT EXISTS state_acc (
    id integer PRIMARY KEY CHECK (id = 0), block_number bigint NOT NULL, acc bytea NOT NULL,
    state_hash bytea NOT NULL);
"""
    + VIEWS
)

STORE_ACC_SQL = (
    "INSERT INTO state_acc VALUES (0, %s, %s, %s) ON CONFLICT (id) DO UPDATE"
    " SET block_number = EXCLUDED.block_number, acc = EXCLUDED.acc,"
    " state_hash = EXCLUDED.state_hash"
)
UPSERT_SQL = (
    "INSERT INTO state VALUES (%s, %s, %s, %s, %s) ON CONFLICT (namespace, key) DO UPDATE"
    " SET value = EXCLUDED.value, block_number = EXCLUDED.block_number,"
    " tx_index = EXCLUDED.tx_index"
)


LEDGER_VIEWS = ("world_state", "transactions")
PRIVATE_VIEWS = ("private_state", "private_transactions")  # of a private store (`private_pg`)


def reader_grants(
    schema: str, role: str, views: Sequence[str] = LEDGER_VIEWS
) -> list[sql.Composed]:
    """The statements that let `role` (an existing login role) read a schema's views and
    nothing else: no table, no write (docs/postgresql.md; run them as the schema's owner).
    `views`: a ledger's, or `PRIVATE_VIEWS` with a private store's schema."""
    names = {"s": sql.Identifier(schema), "r": sql.Identifier(role)}
    listed = sql.SQL(", ").join(
        sql.SQL("{s}.{v}").format(v=sql.Identifier(v), **names) for v in views
    )
    return [
        sql.SQL("GRANT USAGE ON SCHEMA {s} TO {r}").format(**names),
        sql.SQL("GRANT SELECT ON {l} TO {r}").format(l=listed, **names),
        sql.SQL("GRANT EXECUTE ON FUNCTION {s}.utf8_or_null(bytea) TO {r}").format(**names),
    ]


class PgSnapshotReader:
    """`backend.StateReader` on a connection inside a read transaction."""

    def __init__(self, conn: Conn) -> None:
        self._conn = conn

    def last_block_number(self) -> int:
        """Number of the last block in this snapshot (-1 before block 0)."""
        row = self._conn.execute("SELECT MAX(number) FROM blocks").fetchone()
        return -1 if row is None or row[0] is None else int(row[0])

    def get(self, namespace: str, key: str) -> tuple[bytes, Version] | None:
        """Committed value and version of a key."""
        row = self._conn.execute(
            "SELECT value, block_number, tx_index FROM state WHERE namespace=%s AND key=%s",
            (namespace, key.encode()),
        ).fetchone()
        return None if row is None else (bytes(row[0]), Version(row[1], row[2]))

    def tx_record(self, tx_id: str) -> TxRecord | None:
        """Where `tx_id` committed (its first occurrence), or None."""
        row = self._conn.execute(
            "SELECT block_number, tx_index, code FROM txs WHERE tx_id=%s", (tx_id,)
        ).fetchone()
        return None if row is None else TxRecord(row[0], row[1], row[2])

    def tx_records_found(self, tx_ids: Sequence[str]) -> dict[str, TxRecord]:
        """`tx_record` of each of `tx_ids` that committed, in one statement."""
        rows = self._conn.execute(
            "SELECT tx_id, block_number, tx_index, code FROM txs WHERE tx_id = ANY(%s)",
            (list(tx_ids),),
        )
        return {r[0]: TxRecord(r[1], r[2], r[3]) for r in rows}

    def range(self, namespace: str, start: str, end: str, limit: int) -> list[StateEntry]:
        """Keys in [start, end) (end "" = unbounded), in key (byte) order."""
        query = (
            "SELECT key, value, block_number, tx_index FROM state WHERE namespace=%s AND key>=%s"
        )
        args: list[object] = [namespace, start.encode()]
        if end:
            query += " AND key<%s"
            args.append(end.encode())
        rows = self._conn.execute(query + " ORDER BY key LIMIT %s", (*args, limit)).fetchall()
        return [StateEntry(bytes(r[0]).decode(), bytes(r[1]), Version(r[2], r[3])) for r in rows]


class PgChannelLedger(LedgerBase):
    """`backend.Ledger` in one PostgreSQL schema (module docstring)."""

    def __init__(self, db: PgSchema) -> None:
        super().__init__()
        self._db = db

    @property
    def name(self) -> str:
        """The schema, for messages."""
        return f"postgresql schema {self._db.schema!r}"

    @classmethod
    async def open(
        cls, dsn: str, schema: str, *, retry: RetryPolicy = DEFAULT_RETRY
    ) -> PgChannelLedger:
        """Open (creating if needed) and verify the hash chain; raises InvariantViolation."""
        ledger = cls(PgSchema(dsn, schema, SCHEMA, retry=retry, name="ledger-pg"))
        await ledger._db.open(ledger._check_and_load)
        ledger.created = ledger._db.created
        return ledger

    async def close(self) -> None:
        """Close both connections (idempotent)."""
        await self._db.close()

    def _check_and_load(self, conn: Conn) -> None:
        with conn.transaction(), conn.cursor(name="chain") as cur:  # server-side: bounded memory
            cur.execute("SELECT number, hash, data FROM blocks ORDER BY number")
            self._verify_chain(cur)
        row = conn.execute("SELECT block_number, acc FROM state_acc").fetchone()
        if row is not None:
            self._load_accumulator(row[0], bytes(row[1]))
        elif self.height > 0:  # no PostgreSQL ledger predates state hashes: an edit
            raise InvariantViolation(f"{self.name}: state accumulator missing (edited?)")
        rows = conn.execute(
            "SELECT org_id, certificate_ref, certificate_der, first_block FROM identities"
        )
        self.identities.add(TableEntry(r[0], bytes(r[1]), bytes(r[2]), r[3]) for r in rows)

    async def commit_block(
        self,
        block: block_pb2.Block,
        tx_ids: Sequence[str],
        writes: Iterable[StateWrite] = (),
        consumed_seq: int = 0,
        identities: Sequence[TableEntry] = (),
    ) -> None:
        """Append `block` and all its effects, with the hash of the state it leaves and the
        identity-table entries it adds, in one transaction (one hop to the writer)."""
        identity_rows = self._identity_rows(identities)
        prepared = self._prepare(block, tx_ids, writes)
        number, final, rows = prepared.number, prepared.final, prepared.tx_rows
        upserts = [
            (w.namespace, w.key.encode(), w.value, w.version.block_number, w.version.tx_index)
            for w in final.values()
            if w.value is not None
        ]
        deletes = [(w.namespace, w.key.encode()) for w in final.values() if w.value is None]

        def write(conn: Conn) -> StateAccumulator:
            acc = advance(self._acc, _entries(conn, list(final)) if final else {}, final)
            with conn.cursor() as cur:
                cur.execute(
                    "INSERT INTO blocks VALUES (%s, %s, %s)",
                    (number, prepared.digest, prepared.data),
                )
                if rows:
                    cur.executemany(
                        "INSERT INTO txs VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING", rows
                    )
                if upserts:
                    cur.executemany(UPSERT_SQL, upserts)
                if deletes:
                    cur.executemany("DELETE FROM state WHERE namespace=%s AND key=%s", deletes)
                cur.execute(STORE_ACC_SQL, (number, acc.to_bytes(), acc.digest()))
                cur.execute("INSERT INTO state_hashes VALUES (%s, %s)", (number, acc.digest()))
                if consumed_seq:
                    cur.execute("DELETE FROM pending WHERE seq<=%s", (consumed_seq,))
                if identity_rows:
                    cur.executemany(
                        "INSERT INTO identities VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING",
                        identity_rows,
                    )
            return acc

        acc = await self._db.write("ledger.commit_block", write)
        self._committed(prepared, acc, identities)

    async def enqueue(self, pending: Sequence[PendingEnvelope]) -> None:
        """Durably queue admitted envelopes (orderer) in one transaction."""
        if not pending:
            return
        rows = [(p.seq, p.envelope) for p in pending]

        def write(conn: Conn) -> None:
            with conn.cursor() as cur:
                cur.executemany("INSERT INTO pending VALUES (%s, %s)", rows)

        await self._db.write("ledger.enqueue", write)

    async def pending(self) -> list[PendingEnvelope]:
        """Queued envelopes not yet in a block, in order."""

        def read(conn: Conn) -> list[PendingEnvelope]:
            rows = conn.execute("SELECT seq, envelope FROM pending ORDER BY seq")
            return [PendingEnvelope(seq, bytes(env)) for seq, env in rows]

        return await self._db.snapshot(read)

    async def _stored_data(self, start: int, stop: int) -> list[bytes]:
        def read(conn: Conn) -> list[bytes]:
            query = "SELECT data FROM blocks WHERE number>=%s AND number<%s ORDER BY number"
            return [bytes(r[0]) for r in conn.execute(query, (start, stop))]

        return await self._db.snapshot(read)

    async def verify_stored_chain(self) -> None:
        """Nothing left: the open checked the whole chain (a server-side cursor; the tail-only
        open of `chain_check.py` is the sqlite ledger's)."""

    async def blocks_before(self, before: int, limit: int) -> list[block_pb2.Block]:
        """Up to `limit` blocks numbered below `before`, newest first."""
        return await self._blocks(
            "SELECT data FROM blocks WHERE number<%s ORDER BY number DESC LIMIT %s", before, limit
        )

    async def _blocks(self, query: str, *args: int) -> list[block_pb2.Block]:
        def read(conn: Conn) -> list[block_pb2.Block]:
            return [block_pb2.Block.FromString(r[0]) for r in conn.execute(query, args)]

        return await self._db.snapshot(read)

    async def tx_record(self, tx_id: str) -> TxRecord | None:
        """Where `tx_id` committed (its first occurrence), or None."""
        return await self.read_snapshot(lambda r: r.tx_record(tx_id))

    async def tx_records(self, tx_ids: Sequence[str]) -> list[TxRecord | None]:
        """`tx_record` of many ids in ONE hop and one query."""

        def read(conn: Conn) -> list[TxRecord | None]:
            rows = conn.execute(
                "SELECT tx_id, block_number, tx_index, code FROM txs WHERE tx_id = ANY(%s)",
                (list(tx_ids),),
            )
            found = {r[0]: TxRecord(r[1], r[2], r[3]) for r in rows}
            return [found.get(t) for t in tx_ids]

        return await self._db.snapshot(read)

    async def versions(self, keys: Iterable[tuple[str, str]]) -> KeyVersions:
        """Committed versions of the given (namespace, key) pairs that exist (one statement
        per namespace: each statement is a round trip to the server)."""
        refs = list(keys)
        return await self._db.snapshot(lambda conn: _versions(conn, refs))

    async def commit_reads(
        self,
        keys: Iterable[tuple[str, str]],
        ranges: Iterable[tuple[str, str, str]],
        tx_ids: Iterable[str],
    ) -> tuple[KeyVersions, RangeVersions, set[str]]:
        """`versions`, `ranges` and `existing_tx_ids` in ONE hop and one read transaction, with
        a statement per namespace and per range rather than per key (each is a round trip: a
        block of 100 transactions would otherwise make hundreds)."""
        wanted = [t for t in set(tx_ids) if t]
        refs, spans = list(keys), list(ranges)

        def read(conn: Conn) -> tuple[KeyVersions, RangeVersions, set[str]]:
            found: set[str] = set()
            if wanted:
                rows = conn.execute("SELECT tx_id FROM txs WHERE tx_id = ANY(%s)", (wanted,))
                found = {r[0] for r in rows}
            return _versions(conn, refs), ranges_of(PgSnapshotReader(conn), spans), found

        return await self._db.snapshot(read)

    async def audit(self, numbers: Sequence[int], chain_from: int, recompute: bool) -> LedgerAudit:
        """`audit.audit_snapshot` in one snapshot (on the reader: one audit at a time)."""
        return await self._db.snapshot(
            lambda conn: audit_snapshot(QmarkConnection(conn), numbers, chain_from, recompute)
        )

    async def read_snapshot(self, fn: Callable[[StateReader], T]) -> T:
        """Run `fn` on the reader's thread inside one read transaction."""
        return await self._db.snapshot(lambda conn: fn(PgSnapshotReader(conn)))


def _versions(conn: Conn, refs: Sequence[KeyRef]) -> KeyVersions:
    return {ref: entry[1] for ref, entry in _entries(conn, refs).items()}


def _entries(conn: Conn, refs: Sequence[KeyRef]) -> dict[KeyRef, tuple[bytes, Version]]:
    """The current entries of `refs` that exist (in the caller's transaction): one statement
    per namespace."""
    by_namespace: dict[str, list[bytes]] = {}
    for namespace, key in refs:
        by_namespace.setdefault(namespace, []).append(key.encode())
    found: dict[KeyRef, tuple[bytes, Version]] = {}
    for namespace, keys in by_namespace.items():
        rows = conn.execute(
            "SELECT key, value, block_number, tx_index FROM state"
            " WHERE namespace=%s AND key = ANY(%s)",
            (namespace, keys),
        )
        for r in rows:
            found[(namespace, bytes(r[0]).decode())] = (bytes(r[1]), Version(r[2], r[3]))
    return found
