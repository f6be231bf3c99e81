"""One schema of a PostgreSQL database, opened and used one way: the seam of the PostgreSQL ledger.

The counterpart of `sqlite_file.SqliteFile`, with the same rules so that the ledger above it
keeps one shape on both backends:

* **Opening** creates the schema and its tables if needed (idempotent `CREATE ... IF NOT
  EXISTS`, in one transaction), then runs the store's `setup` (the chain check). Every
  connection sets `search_path` to the schema alone, so the SQL names tables plainly and one
  database can hold many ledgers (one schema per node and channel).
* **One writer**: one connection used by one worker thread only; a whole block is ONE hop to it.
  `write(name, body)` is BEGIN, the body, the failpoint `name` (`failpoints.py`), COMMIT —
  retried whole on transient faults by the same loop as sqlite's (`retry.retried`), rolled back
  on anything else. A connection the server dropped is reopened before the next attempt, so a
  database restart is a slow write, not a dead node (within the retry budget).
* **Snapshot reads**: a second connection on a second thread, read-only, each `snapshot(fn)` in
  one REPEATABLE READ transaction — one committed state while the writer goes on (what WAL gives
  sqlite). There are no reads in place: each statement is a round trip to the server, so doing
  them on the event loop's thread would block it.

psycopg 3 is used synchronously on these threads (not its asyncio API) because contract
simulation reads state synchronously (`backend.StateReader`), as it does on sqlite.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any, TypeVar

import psycopg
from psycopg import sql

from dltmw.ledger import failpoints
from dltmw.ledger.retry import (
    DEFAULT_RETRY,
    RetryPolicy,
    is_transient_storage_error,
    read_sync,
    retried,
)
from dltmw.ledger.sqlite_file import StoreClosed, store_executor

logger = logging.getLogger(__name__)
T = TypeVar("T")
Setup = Callable[[psycopg.Connection[Any]], None]
CONNECT_TIMEOUT_S = 10
IDENTIFIER_BYTES_MAX = 63  # PostgreSQL's NAMEDATALEN - 1


def is_transient_pg_error(exc: BaseException) -> bool:
    """A failure that may pass: the connection or server went away, a serialization failure or
    deadlock, a full disk (all `psycopg.OperationalError`), or a failpoint's injected sqlite
    fault of the same kinds (failpoints speak sqlite's errors on both backends)."""
    return isinstance(exc, psycopg.OperationalError) or is_transient_storage_error(exc)


class QmarkConnection:
    """A psycopg connection seen through `?` placeholders (the audit's shared SQL)."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self._conn = conn

    def execute(self, query: str, parameters: Any = (), /) -> psycopg.Cursor[Any]:
        """Run `query` with its `?` as `%s`."""
        return self._conn.execute(query.replace("?", "%s"), parameters)


class PgSchema:
    """One schema: opening, one writer connection on its own worker, snapshot reads."""

    def __init__(
        self,
        dsn: str,
        schema: str,
        ddl: str,
        *,
        retry: RetryPolicy = DEFAULT_RETRY,
        name: str = "pg",
    ) -> None:
        if not schema or len(schema.encode()) > IDENTIFIER_BYTES_MAX:
            raise ValueError(f"schema name {schema!r}: 1 to {IDENTIFIER_BYTES_MAX} bytes")
        self.dsn = dsn
        self.schema = schema
        self.retry = retry
        self.name = name
        self.created = False
        self._ddl = ddl
        self._executor: Executor = store_executor(name)
        self._reader_executor: Executor = store_executor(f"{name}-read")
        self._conn: psycopg.Connection[Any] | None = None
        self._reader: psycopg.Connection[Any] | None = None
        self._closed = False

    # --- lifecycle ---------------------------------------------------------------------------

    async def open(self, setup: Setup | None = None) -> None:
        """Connect, create the schema and tables if missing, run `setup(connection)`; raises
        what connecting or `setup` raises, with nothing left open."""
        try:
            await self._hop(lambda: self._open(setup))
        except BaseException:
            await self.close()
            raise

    def _connect(self, *, read_only: bool) -> psycopg.Connection[Any]:
        conn = psycopg.connect(self.dsn, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S)
        try:
            if read_only:
                conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
                conn.read_only = True
            conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(self.schema)))
        except BaseException:
            conn.close()
            raise
        return conn

    def _open(self, setup: Setup | None) -> None:
        conn = self._connect(read_only=False)
        self._conn = conn
        found = conn.execute(
            "SELECT 1 FROM pg_namespace WHERE nspname = %s", (self.schema,)
        ).fetchone()
        self.created = found is None
        with conn.transaction():
            conn.execute(
                sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(self.schema))
            )
            conn.execute(self._ddl.encode())
        if setup is not None:
            setup(conn)

    async def close(self) -> None:
        """Close both connections and stop the workers (idempotent)."""
        if self._closed:
            return
        self._closed = True
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self._close_writer)
        await loop.run_in_executor(self._reader_executor, self._close_reader)
        self._executor.shutdown(wait=True)
        self._reader_executor.shutdown(wait=True)

    def _close_writer(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _close_reader(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None

    # --- the writer ------------------------------------------------------------------------

    async def write(self, name: str, body: Callable[[psycopg.Connection[Any]], T]) -> T:
        """`body` as ONE transaction on the writer's worker (see the module docstring)."""
        return await self._hop(
            lambda: retried(
                name, lambda: self._attempt(name, body), self.retry, is_transient_pg_error
            )
        )

    def _attempt(self, name: str, body: Callable[[psycopg.Connection[Any]], T]) -> T:
        conn = self._writer()
        with conn.transaction():  # rolls back on any exception, COMMITs otherwise
            result = body(conn)
            failpoints.hit(name)
        return result

    def _writer(self) -> psycopg.Connection[Any]:
        if self._closed:
            raise StoreClosed(f"{self.schema}: store is closed")
        if self._conn is None or self._conn.closed or self._conn.broken:
            if self._conn is not None:
                logger.warning("%s: reconnecting the writer to the database", self.schema)
                self._conn.close()
            self._conn = None
            self._conn = self._connect(read_only=False)
        return self._conn

    async def _hop(self, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn)

    @property
    def executor(self) -> Executor:
        """The writer's worker, for a store whose code runs on it (the private store's)."""
        return self._executor

    def writer(self) -> psycopg.Connection[Any]:
        """The writer connection, reopened if the server dropped it: ONLY on the worker."""
        return self._writer()

    async def read(self, fn: Callable[[psycopg.Connection[Any]], T]) -> T:
        """`fn(writer)` on the writer's worker, outside a transaction (autocommit: each statement
        sees what is committed; nothing else writes this schema). A connection the server
        dropped is reopened and `fn` run once more, as for `snapshot`."""

        def run() -> T:
            try:
                return fn(self._writer())
            except psycopg.OperationalError:
                if self._conn is None or not self._conn.broken:
                    raise
                logger.warning("%s: reconnecting the writer to the database", self.schema)
                return fn(self._writer())

        return await self._hop(lambda: read_sync(self.name, run, is_transient_pg_error))

    # --- snapshot reads --------------------------------------------------------------------

    async def snapshot(self, fn: Callable[[psycopg.Connection[Any]], T]) -> T:
        """`fn(reader)` inside one read-only REPEATABLE READ transaction on the reader's worker."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self._reader_executor,
            lambda: read_sync(self.name, lambda: self._in_snapshot(fn), is_transient_pg_error),
        )

    def _in_snapshot(self, fn: Callable[[psycopg.Connection[Any]], T]) -> T:
        """`fn` in one read transaction; a connection the server dropped (a restart) is
        reopened and `fn` run once more — a read has no effect to repeat. A second failure, or
        any other, reaches the caller."""
        try:
            return self._read_once(fn)
        except psycopg.OperationalError:
            if self._reader is None or not self._reader.broken:
                raise
            logger.warning("%s: reconnecting the reader to the database", self.schema)
            return self._read_once(fn)

    def _read_once(self, fn: Callable[[psycopg.Connection[Any]], T]) -> T:
        if self._closed:
            raise StoreClosed(f"{self.schema}: store is closed")
        if self._reader is None or self._reader.closed or self._reader.broken:
            if self._reader is not None:
                self._reader.close()
            self._reader = None
            self._reader = self._connect(read_only=True)
        with self._reader.transaction():
            return fn(self._reader)
