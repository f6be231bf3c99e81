"""A purge's rewrite in PostgreSQL (`ledger/private_pg._erase`) waits for older transactions:
`VACUUM FULL` copies a deleted row into the new file while any transaction that may still see it
is open — another organisation's peer on the same server, a report — so the purged bytes stayed
on disk (found by tests/integration/test_postgresql_private.py under load). Real server.

What holds the deleted row is the database's xid horizon, not when a transaction began: a write
transaction idle between statements (an id, no snapshot) and a snapshot taken while an older
transaction ran (its xmin stays that older id after it ends) both hold it. The last two tests
were red when `_erase` waited only for transactions with a snapshot begun before it."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pg_server
import psycopg
import pytest

from dltmw.ledger import private_pg
from dltmw.ledger.private_pg import PgPrivateConnection, _erase

CANARY = b"purged-canary-6c1f0e"
TABLES = ("payloads", "payload_recipients", "deferred", "pstate")
OLDER_WAIT_BOUND_S = private_pg.OLDER_WAIT_S + 5.0


@pytest.fixture
def schema(pg_instance: pg_server.PgServer) -> Iterator[str]:
    name = "erase_test"
    with psycopg.connect(pg_instance.dsn, autocommit=True) as admin:
        admin.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE")
        admin.execute(f"CREATE SCHEMA {name}")
        for table in TABLES:
            admin.execute(f"CREATE TABLE {name}.{table} (v bytea)")
        admin.execute(f"INSERT INTO {name}.pstate VALUES (%s)", (CANARY,))
    yield name
    with psycopg.connect(pg_instance.dsn, autocommit=True) as admin:
        admin.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE")


def canary_on_disk(server: pg_server.PgServer, schema: str) -> bool:
    """Is the canary in the table's current file (after a CHECKPOINT wrote buffers out)?"""
    with psycopg.connect(server.dsn, autocommit=True) as conn:
        conn.execute("CHECKPOINT")
        row = conn.execute("SELECT pg_relation_filepath(%s)", (f"{schema}.pstate",)).fetchone()
    assert row is not None
    return CANARY in (server.root / "data" / str(row[0])).read_bytes()


@pytest.mark.parametrize("waits", [True, False], ids=["waits", "control-no-wait"])
def test_the_rewrite_waits_until_no_older_snapshot_can_see_the_purged_row(
    pg_instance: pg_server.PgServer, schema: str, waits: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not waits:  # the control: rewrite at once, as before the fix
        monkeypatch.setattr(private_pg, "OLDER_WAIT_S", 0.0)
    # a transaction begun before the purge, holding a snapshot but no lock on these tables (as
    # another organisation's executor working on its own schema): VACUUM FULL's lock does not
    # wait for it, only its snapshot keeps the deleted row "recently dead"
    older = psycopg.connect(pg_instance.dsn)
    older.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
    assert older.execute("SELECT 1").fetchall() == [(1,)]
    ended = threading.Timer(0.5, older.rollback)
    try:
        with psycopg.connect(pg_instance.dsn, autocommit=True) as writer:
            writer.execute(f"DELETE FROM {schema}.pstate")  # the purge's block, committed
            writer.execute(f"SET search_path TO {schema}")
            ended.start()  # the older transaction ends while the rewrite waits
            _erase(PgPrivateConnection(lambda: writer))
        ended.join(5)
        # waiting: the rewrite ran after the older snapshot ended, the row is gone from disk;
        # not waiting: it ran while that snapshot could still see the row, which it kept
        assert canary_on_disk(pg_instance, schema) is (not waits)
    finally:
        ended.cancel()
        older.close()


def _rewrite_waiting(server: pg_server.PgServer, schema: str) -> threading.Thread:
    """The purge's block committed, then `_erase` started on a thread of its own."""

    def run() -> None:
        with psycopg.connect(server.dsn, autocommit=True) as writer:
            writer.execute(f"SET search_path TO {schema}")
            _erase(PgPrivateConnection(lambda: writer))

    with psycopg.connect(server.dsn, autocommit=True) as writer:
        writer.execute(f"DELETE FROM {schema}.pstate")
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def _write_transaction(server: pg_server.PgServer) -> psycopg.Connection[tuple[object, ...]]:
    """A write transaction left idle between statements: an xid, no snapshot (no backend_xmin)."""
    conn = psycopg.connect(server.dsn)
    conn.execute("CREATE TEMP TABLE scratch (v int)")
    conn.execute("INSERT INTO scratch VALUES (1)")
    held = conn.execute(
        "SELECT backend_xid IS NOT NULL FROM pg_stat_activity WHERE pid = pg_backend_pid()"
    ).fetchone()
    assert held == (True,)  # (this read's own snapshot is released when it ends)
    return conn


def test_the_rewrite_waits_for_a_write_transaction_idle_between_statements(
    pg_instance: pg_server.PgServer, schema: str
) -> None:
    older = _write_transaction(pg_instance)
    try:
        rewrite = _rewrite_waiting(pg_instance, schema)
        time.sleep(0.5)
        assert rewrite.is_alive(), "the rewrite ran while an older write transaction was open"
        older.rollback()
        rewrite.join(OLDER_WAIT_BOUND_S)
        assert not rewrite.is_alive()
        assert not canary_on_disk(pg_instance, schema)
    finally:
        older.close()


def test_the_rewrite_waits_for_a_snapshot_taken_while_an_older_transaction_ran(
    pg_instance: pg_server.PgServer, schema: str
) -> None:
    older = _write_transaction(pg_instance)
    later = psycopg.connect(pg_instance.dsn)
    try:
        rewrite = _rewrite_waiting(pg_instance, schema)
        time.sleep(0.2)
        # begun after the rewrite started, while `older` runs: its snapshot's xmin is older's id
        later.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
        assert later.execute("SELECT count(*) FROM pg_class").fetchone() is not None
        older.rollback()
        time.sleep(0.5)
        assert rewrite.is_alive(), "the rewrite ran while a snapshot older than the purge was held"
        later.rollback()
        rewrite.join(OLDER_WAIT_BOUND_S)
        assert not rewrite.is_alive()
        assert not canary_on_disk(pg_instance, schema)
    finally:
        older.close()
        later.close()
