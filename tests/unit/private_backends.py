"""The private store's test suite runs on both backends (as the ledger's, `ledger_backends.py`):
a `PrivateSite` is where one test's private store lives — a sqlite file, or a schema of the
session's PostgreSQL server — with what the tests need besides the store's API: reopening it,
editing its tables behind its back, and scanning the files that hold it for a canary.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pg_server
import psycopg
from psycopg import sql

from dltmw.ledger.at_rest import PLAIN, ValueCodec
from dltmw.ledger.private_pg import PgPrivateConnection, open_pg_private_store
from dltmw.ledger.private_store import PrivateStore
from dltmw.ledger.retry import DEFAULT_RETRY, RetryPolicy

BACKENDS = ("sqlite", "postgresql")


@dataclass
class PrivateSite:
    """One test's private store location on one backend."""

    backend: str
    path: Path  # the sqlite file (sqlite)
    server: pg_server.PgServer | None = None  # (postgresql)
    schema: str = ""

    async def open(
        self,
        *,
        lost_if_created: bool = False,
        values: ValueCodec = PLAIN,
        retry: RetryPolicy = DEFAULT_RETRY,
    ) -> PrivateStore:
        """Open (or reopen) the store here."""
        kw: dict[str, Any] = {"lost_if_created": lost_if_created, "values": values, "retry": retry}
        if self.server is None:
            return await PrivateStore.open(self.path, **kw)
        return await open_pg_private_store(self.server.dsn, self.schema, **kw)

    def sibling(self, name: str) -> PrivateSite:
        """Another store beside this one (another file, another schema)."""
        return replace(self, path=self.path.with_name(name), schema=f"{self.schema}_{name}")

    def _pg(self) -> psycopg.Connection[Any]:
        assert self.server is not None
        conn = psycopg.connect(self.server.dsn, autocommit=True)
        conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(self.schema)))
        return conn

    def query(self, statement: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        """Run one statement (the store's sqlite dialect) on its tables, behind its back; its
        rows, if any (text columns as on the backend: str, or UTF-8 bytes)."""
        if self.server is None:
            with sqlite3.connect(self.path) as conn:
                return list(conn.execute(statement, params))
        with self._pg() as conn:
            cur = PgPrivateConnection(lambda: conn).execute(statement, params)
            return list(cur) if cur.description else []

    def files_with(self, needle: bytes) -> list[str]:
        """The files holding the store that contain `needle`: the sqlite file and its -wal/-shm,
        or every table file of the PostgreSQL cluster (`base/`, after a CHECKPOINT writes
        the buffers out; the server's WAL, `pg_wal`, is not a table file: docs/postgresql.md)."""
        if self.server is None:
            files = self.path.parent.glob(self.path.name + "*")
            return sorted(p.name for p in files if needle in p.read_bytes())
        with psycopg.connect(self.server.dsn, autocommit=True) as conn:
            conn.execute("CHECKPOINT")
        base = self.server.root / "data" / "base"
        return sorted(
            str(p.relative_to(base))
            for p in base.rglob("*")
            if p.is_file() and needle in p.read_bytes()
        )
