"""A peer's private store in PostgreSQL (`state = "postgresql"`): the private store's tables in a
schema of their own (`node/channel/private`), beside the peer ledger's (`node/channel/peer`).

Same semantics as the sqlite store because it is the same code (`private_store.PrivateStore`):
a block's private effects, versions, the private-state hash and its per-block history, payloads,
deferred copies, purge records and privacy groups are written by the same statements in ONE
transaction. What this module adds is only the PostgreSQL side of the seam:

* `PgPrivateConnection`: runs the store's sqlite-dialect statements on a psycopg connection —
  `?` placeholders become `%s`, `INSERT OR IGNORE` becomes `ON CONFLICT DO NOTHING` and
  `INSERT OR REPLACE` an upsert on the table's primary key (`CONFLICT_KEYS`), and str
  parameters go as UTF-8 bytes because every text column here is `bytea` (`private_sql.py`).
* `PgPrivateSchema`: `private_store.StoreFile` on `pg_database.PgSchema` — one writer
  connection on one worker thread (the private executor's driver steps its core there, reading
  through the store's view), each write one transaction retried on transient faults and
  reconnected after a server restart (`retry.retried`, `pg_database.is_transient_pg_error`),
  reads reconnected once; anything else reaches the caller.
* Purge (`PgPrivateStore.checkpoint`): PostgreSQL keeps a deleted row's bytes in its heap page
  until the page is rewritten, so after a block that purged, `VACUUM FULL` rewrites the tables a
  purge deletes from into new files and drops the old ones (the sqlite store's secure_delete and
  WAL truncation, in PostgreSQL's terms). `VACUUM FULL` copies into the new files every deleted
  row that a transaction still running may see, so it first waits (bounded) until no other
  session of the database holds its xid horizon below the purge (`_erase`): another peer's
  schema on the same server, a reporting query. Found by the purge test on real processes under
  load, where the other organisation's executor kept the purged row alive in the rewritten file.
  The server's write-ahead log (and any archive or
  replica of it) still holds the rows until its segments are recycled: that part is the
  operator's (docs/postgresql.md, "Private state").

Read-only views for reporting: `private_state` and `private_transactions` (docs/postgresql.md).
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Executor
from functools import lru_cache
from typing import Any, TypeVar

import psycopg

from dltmw.aio.tasks import TaskOwner
from dltmw.ledger.at_rest import PLAIN, ValueCodec
from dltmw.ledger.pg_database import PgSchema
from dltmw.ledger.postgresql import UTF8_OR_NULL
from dltmw.ledger.private_sql import Db
from dltmw.ledger.private_store import PrivateStore
from dltmw.ledger.retry import DEFAULT_RETRY, RetryPolicy

logger = logging.getLogger(__name__)
T = TypeVar("T")
Conn = psycopg.Connection[Any]

# The sqlite store's tables (`private_store.SCHEMA`, `private_purge.PURGE_SCHEMA`,
# `private_outbox.SCHEMA`), column for column; text columns are bytea (module docstring of
# `private_sql.py`).
SCHEMA = (
    """
CREATE TABLE IF NOT EXISTS payloads (hash bytea PRIMARY KEY, data bytea NOT NULL);
CREATE TABLE IF NOT EXISTS payload_recipients (
    recipient bytea NOT NULL, hash bytea NOT NULL, PRIMARY KEY (recipient, hash));
CREATE TABLE IF NOT EXISTS pstate (
    namespace bytea NOT NULL, key bytea NOT NULL, value bytea NOT NULL,
    block_number bigint NOT NULL, tx_index integer NOT NULL, PRIMARY KEY (namespace, key));
CREATE TABLE IF NOT EXISTS ptxs (
    payload_hash bytea PRIMARY KEY, tx_id bytea NOT NULL, block_number bigint NOT NULL,
    tx_index integer NOT NULL, status integer NOT NULL, state_hash bytea NOT NULL);
CREATE TABLE IF NOT EXISTS meta (name bytea PRIMARY KEY, value bigint NOT NULL);
CREATE TABLE IF NOT EXISTS pstate_hashes (
    block_number bigint PRIMARY KEY, state_hash bytea NOT NULL);
CREATE TABLE IF NOT EXISTS pstate_acc (id integer PRIMARY KEY CHECK (id = 0), acc bytea NOT NULL);
CREATE TABLE IF NOT EXISTS deferred (
    hash bytea PRIMARY KEY, data bytea NOT NULL, recipients bytea NOT NULL);
CREATE TABLE IF NOT EXISTS purged (
    hash bytea PRIMARY KEY, tx_id bytea NOT NULL, block_number bigint NOT NULL);
CREATE TABLE IF NOT EXISTS outbox (
    hash bytea NOT NULL, node bytea NOT NULL, since double precision,
    state integer NOT NULL DEFAULT 0, PRIMARY KEY (hash, node));
ALTER TABLE outbox ADD COLUMN IF NOT EXISTS since double precision;
ALTER TABLE outbox ADD COLUMN IF NOT EXISTS state integer NOT NULL DEFAULT 0;
"""
    + UTF8_OR_NULL
    + """
CREATE OR REPLACE VIEW private_state AS SELECT
    CASE WHEN position('\\x00'::bytea IN namespace) = 0 THEN convert_from(namespace, 'UTF8')
        ELSE encode(namespace, 'escape') END AS namespace,
    CASE WHEN position('\\x00'::bytea IN key) = 0 THEN convert_from(key, 'UTF8')
        ELSE encode(key, 'escape') END AS key,
    utf8_or_null(value) AS value_text, value, block_number, tx_index
    FROM pstate;
CREATE OR REPLACE VIEW private_transactions AS SELECT
    encode(payload_hash, 'hex') AS payload_hash, convert_from(tx_id, 'UTF8') AS tx_id,
    block_number, tx_index, status, encode(state_hash, 'hex') AS state_hash,
    EXISTS (SELECT 1 FROM purged p WHERE p.hash = ptxs.payload_hash) AS purged
    FROM ptxs;
"""
)
# Primary key, then the other columns, of each table the store writes with INSERT OR REPLACE.
CONFLICT_KEYS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "payloads": (("hash",), ("data",)),
    "pstate": (("namespace", "key"), ("value", "block_number", "tx_index")),
    "ptxs": (("payload_hash",), ("tx_id", "block_number", "tx_index", "status", "state_hash")),
    "meta": (("name",), ("value",)),
    "pstate_hashes": (("block_number",), ("state_hash",)),
    "pstate_acc": (("id",), ("acc",)),
}
# The tables a purge deletes from (payloads, their index and deferred copies; key values).
PURGED_TABLES = "payloads, payload_recipients, deferred, pstate"
_INSERT_OR = re.compile(r"^INSERT OR (IGNORE|REPLACE) INTO (\w+) (.*)$", re.DOTALL)


@lru_cache(maxsize=256)
def pg_statement(statement: str) -> str:
    """The PostgreSQL form of one of the store's sqlite statements (module docstring)."""
    match = _INSERT_OR.match(statement)
    if match is not None:
        verb, table, rest = match.groups()
        if verb == "IGNORE":
            statement = f"INSERT INTO {table} {rest} ON CONFLICT DO NOTHING"
        else:
            keys, others = CONFLICT_KEYS[table]
            sets = ", ".join(f"{c} = EXCLUDED.{c}" for c in others)
            statement = (
                f"INSERT INTO {table} {rest} ON CONFLICT ({', '.join(keys)}) DO UPDATE SET {sets}"
            )
    return statement.replace("?", "%s")


def _params(row: Sequence[Any]) -> list[Any]:
    return [p.encode() if isinstance(p, str) else p for p in row]


class PgPrivateConnection:
    """`private_sql.Db` on a psycopg connection (`conn()` gives it at each statement).
    `reconnect`: outside any transaction only (the store's view), a statement that failed
    because the server dropped the connection runs once more on a new one (`conn()` reopens
    it); a second failure, or any other, reaches the caller."""

    def __init__(self, conn: Callable[[], Conn], *, reconnect: bool = False) -> None:
        self._conn = conn
        self._reconnect = reconnect

    def execute(self, sql: str, parameters: Sequence[Any] = (), /) -> psycopg.Cursor[Any]:
        """Run one statement."""
        conn = self._conn()
        try:
            return conn.execute(pg_statement(sql), _params(parameters))
        except psycopg.OperationalError:
            if not (self._reconnect and conn.broken):
                raise
            logger.warning("private store: reconnecting to the database")
            return self._conn().execute(pg_statement(sql), _params(parameters))

    def executemany(self, sql: str, parameters: Iterable[Sequence[Any]], /) -> psycopg.Cursor[Any]:
        """Run one statement per row (rowcount: the sum, as in sqlite)."""
        cursor = self._conn().cursor()
        cursor.executemany(pg_statement(sql), [_params(row) for row in parameters])
        return cursor


class PgPrivateSchema:
    """`private_store.StoreFile` on one PostgreSQL schema (`pg_database.PgSchema`)."""

    def __init__(self, db: PgSchema) -> None:
        self.db = db

    @property
    def created(self) -> bool:
        """True when opening created the schema."""
        return self.db.created

    @property
    def executor(self) -> Executor:
        """The writer's worker."""
        return self.db.executor

    @property
    def connection(self) -> Db:
        """The writer, looked up at each statement (so on the worker, and reopened after a
        server restart)."""
        return PgPrivateConnection(self.db.writer, reconnect=True)

    async def open(self, setup: Callable[[Db], None]) -> None:
        """Create the schema and tables if needed, then `setup` (the store's)."""
        await self.db.open(lambda conn: setup(PgPrivateConnection(lambda: conn)))

    async def read(self, fn: Callable[[Db], T]) -> T:
        """`fn(writer)` on the worker, outside a transaction."""
        return await self.db.read(lambda conn: fn(PgPrivateConnection(lambda: conn)))

    async def snapshot(self, fn: Callable[[Db], T]) -> T:
        """`fn(reader)` inside one read-only REPEATABLE READ transaction on the reader's worker."""
        return await self.db.snapshot(lambda conn: fn(PgPrivateConnection(lambda: conn)))

    async def write(self, name: str, body: Callable[[Db], T]) -> T:
        """`body` as one transaction on the worker, retried on transient faults."""
        return await self.db.write(name, lambda conn: body(PgPrivateConnection(lambda: conn)))

    async def close(self) -> None:
        """Close the connections (idempotent)."""
        await self.db.close()


class PgPrivateStore(PrivateStore):
    """The private store in PostgreSQL: the sqlite store's code, PostgreSQL's purge."""

    async def checkpoint(self) -> bool:
        """After a purge: the purged rows' tables rewritten without them (module docstring)."""
        await self._file.read(_erase)
        return True


# Sessions of this database, other than this one, that still hold back its xid horizon below
# `?` (the next transaction id when the erase began, so above the purge's own): a running
# transaction id (a write transaction holds one even while idle between statements, with no
# snapshot and so no `backend_xmin`) or a snapshot's xmin (a snapshot taken while an older
# transaction ran keeps that older xmin after it ends, whenever its own transaction began).
# `VACUUM FULL` keeps every row deleted at or after that horizon. `age()` orders transaction ids
# across wraparound: an older id has the greater age (NULL for none, never counted).
HORIZON = "SELECT pg_snapshot_xmax(pg_current_snapshot())::xid::text::bigint"
HELD_BACK = (
    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
    " AND pid <> pg_backend_pid()"
    " AND (age(backend_xid) > age(?::text::xid) OR age(backend_xmin) > age(?::text::xid))"
)
OLDER_WAIT_S = 10.0
OLDER_POLL_S = 0.05


def _erase(conn: Db) -> None:
    """`VACUUM FULL` of the purged tables once no other session holds the database's xid horizon
    below this call's start (`HELD_BACK`, module docstring), waiting at most `OLDER_WAIT_S`: past
    that the rewrite runs anyway and says so (the rows then go with the next purge's rewrite). A
    role that may not see other roles' sessions (no `pg_read_all_stats`) sees none and does not
    wait. Waiting for transactions begun before the call was not enough: a transaction begun
    after it could hold a snapshot taken while an older one ran (found under load, 1 run in 6)."""
    horizon = int(conn.execute(HORIZON).fetchone()[0])
    deadline = time.monotonic() + OLDER_WAIT_S
    while (open_ := conn.execute(HELD_BACK, (horizon, horizon)).fetchone()[0]) > 0:
        if time.monotonic() > deadline:
            logger.warning(
                "purge: %d session(s) still hold back the horizon of the purge after %.0f s;"
                " rewriting anyway, rows they can see stay on disk until the next purge",
                open_,
                OLDER_WAIT_S,
            )
            break
        time.sleep(OLDER_POLL_S)
    conn.execute(f"VACUUM FULL {PURGED_TABLES}")


async def open_pg_private_store(
    dsn: str,
    schema: str,
    *,
    retry: RetryPolicy = DEFAULT_RETRY,
    lost_if_created: bool = False,
    values: ValueCodec = PLAIN,
    owner: TaskOwner | None = None,
) -> PgPrivateStore:
    """Open (creating if needed) the private store in `schema` of the database `dsn`;
    `lost_if_created` as for `PrivateStore.open`."""
    file = PgPrivateSchema(PgSchema(dsn, schema, SCHEMA, retry=retry, name="private-pg"))
    store = PgPrivateStore(file, f"postgresql schema {schema!r}", values, owner)
    await file.open(lambda conn: store.setup(conn, lost_if_created))
    return store
