"""The channel ledger's test suite runs on both backends: a `LedgerSite` is where one test's
ledger lives (a sqlite file, or a schema of the session's PostgreSQL server), with what the tests
need besides the `backend.Ledger` API: reopening the same ledger, editing its tables behind its
back (tamper tests), recomputing the state hash from the table and auditing it.

The sqlite runs are the tests as they were (same files, same `read_audit`); the PostgreSQL runs
use the server `pg_server` starts once per session (the `pg_dsn` fixture, `conftest.py`).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from dltmw.core.rwset import Version
from dltmw.core.statehash import accumulate
from dltmw.ledger.audit import LedgerAudit, audit_snapshot, read_audit
from dltmw.ledger.backend import Ledger
from dltmw.ledger.pg_database import QmarkConnection
from dltmw.ledger.postgresql import PgChannelLedger
from dltmw.ledger.sqlite import ChannelLedger

BACKENDS = ("sqlite", "postgresql")


@dataclass
class LedgerSite:
    """One test's ledger location on one backend."""

    backend: str
    path: Path  # the sqlite file (sqlite)
    dsn: str = ""  # the server (postgresql)
    schema: str = ""

    async def open(self) -> Ledger:
        """Open (or reopen) the ledger here."""
        if self.backend == "sqlite":
            return await ChannelLedger.open(self.path)
        return await PgChannelLedger.open(self.dsn, self.schema)

    def _pg(self) -> psycopg.Connection[Any]:
        conn = psycopg.connect(self.dsn, autocommit=True)
        conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(self.schema)))
        return conn

    def execute(self, statement: str, params: Sequence[object] = ()) -> None:
        """Run one statement (`?` placeholders) on the ledger's tables, behind its back."""
        if self.backend == "sqlite":
            with sqlite3.connect(self.path) as conn:
                conn.execute(statement, params)
            return
        with self._pg() as conn:
            QmarkConnection(conn).execute(statement, params)

    def table_hash(self) -> bytes:
        """The state hash recomputed from the state table now."""
        query = "SELECT namespace, key, value, block_number, tx_index FROM state"
        if self.backend == "sqlite":
            with sqlite3.connect(self.path) as conn:
                rows = list(conn.execute(query))
        else:
            with self._pg() as conn:
                rows = [(r[0], bytes(r[1]).decode(), *r[2:]) for r in conn.execute(query)]
        return accumulate((r[0], r[1], bytes(r[2]), Version(r[3], r[4])) for r in rows).digest()

    def audit(self, numbers: Sequence[int], chain_from: int, recompute: bool) -> LedgerAudit:
        """What `dltmw audit` reads of this ledger, from outside the node."""
        if self.backend == "sqlite":
            return read_audit(self.path, numbers, chain_from, recompute)
        with self._pg() as conn, conn.transaction():
            return audit_snapshot(QmarkConnection(conn), numbers, chain_from, recompute)
