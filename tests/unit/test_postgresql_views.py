"""The read-only SQL views of a PostgreSQL peer ledger and private store (docs/postgresql.md), on
a real server: balances read as text with SQL, keys with NUL and values that are not text shown
safely, and a reporting role granted by `reader_grants` reads the views but can neither write
nor read the tables behind them.
"""

from __future__ import annotations

from typing import Any

import pg_server
import psycopg
import pytest
from psycopg import errors, sql

from dltmw.core.block import make_block
from dltmw.core.privacy import groups
from dltmw.core.rwset import StateWrite, Version
from dltmw.ledger.postgresql import PRIVATE_VIEWS, PgChannelLedger, reader_grants
from dltmw.ledger.private_pg import open_pg_private_store
from dltmw.ledger.private_store import PrivateTxn, PrivateTxRecord
from dltmw.runtime.config import SCHEMA_NAME_BYTES_MAX, peer_schema


async def test_views_show_the_state_and_a_reporting_role_only_reads_them(pg_dsn: str) -> None:
    schema = pg_server.fresh_schema("views")
    ledger = await PgChannelLedger.open(pg_dsn, schema)
    try:
        block = make_block("trades", 0, ledger.last_hash, [b"env"])
        block.metadata.validation_codes.append(1)
        writes = [("A", b"100"), ("B", b"250"), ("a\x00b", b"x"), ("raw", b"\xff\xfe")]
        await ledger.commit_block(
            block,
            ["tx0"],
            [StateWrite("bank", k, v, Version(0, i)) for i, (k, v) in enumerate(writes)],
        )
    finally:
        await ledger.close()
    role = f"report_{schema}"
    with psycopg.connect(pg_dsn, autocommit=True) as owner:
        owner.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
        for statement in reader_grants(schema, role):
            owner.execute(statement)
    with psycopg.connect(pg_dsn.replace("user=postgres", f"user={role}")) as reader:
        s = sql.Identifier(schema)
        rows = reader.execute(
            sql.SQL(
                "SELECT key, value_text::bigint FROM {}.world_state"
                " WHERE namespace = 'bank' AND key IN ('A', 'B') ORDER BY key"
            ).format(s)
        ).fetchall()
        assert rows == [("A", 100), ("B", 250)]
        odd = dict(
            reader.execute(
                sql.SQL(
                    "SELECT key, value_text FROM {}.world_state WHERE key NOT IN ('A', 'B')"
                ).format(s)
            ).fetchall()
        )
        assert odd == {"a\\000b": "x", "raw": None}
        assert reader.execute(
            sql.SQL("SELECT tx_id, validation_code FROM {}.transactions").format(s)
        ).fetchall() == [("tx0", 1)]
        reader.rollback()
        _all_refused(
            reader,
            s,
            "UPDATE {}.world_state SET value = 'forged' WHERE key = 'A'",
            "UPDATE {}.state SET value = 'forged'",
            "SELECT count(*) FROM {}.state",
            "DELETE FROM {}.transactions",
        )


def _all_refused(reader: psycopg.Connection[Any], schema: sql.Identifier, *statements: str) -> None:
    """Each of `statements` ({} = the schema) is refused to the reporting role."""
    for statement in statements:
        with pytest.raises(errors.InsufficientPrivilege):
            reader.execute(sql.SQL(statement).format(schema))  # type: ignore[arg-type]
        reader.rollback()


async def test_a_long_node_and_channel_name_still_gives_one_schema_each(pg_dsn: str) -> None:
    node, channel = "peer0." + "very-long-organisation-name" * 2, "trades-" + "é" * 20
    names = {peer_schema(node, channel), peer_schema(node, channel + "x"), peer_schema("p", "c")}
    assert len(names) == 3 and peer_schema(node, channel) == peer_schema(node, channel)
    assert all(len(n.encode()) <= SCHEMA_NAME_BYTES_MAX for n in names)
    assert peer_schema("p", "c") == "p/c/peer"  # short names stay readable as they are
    ledger = await PgChannelLedger.open(pg_dsn, peer_schema(node, channel))
    await ledger.close()


async def test_private_views_show_the_private_state_and_a_reporting_role_only_reads_them(
    pg_dsn: str,
) -> None:
    schema = pg_server.fresh_schema("pviews")
    store = await open_pg_private_store(pg_dsn, schema)
    digest = bytes(range(32))
    group_ns = groups.scoped("g1", "kv")
    try:

        def block(txn: PrivateTxn) -> None:
            txn.apply(
                [
                    StateWrite("bank", "A", b"100", Version(2, 0)),
                    StateWrite(group_ns, "k", b"\xff", Version(2, 0)),
                ]
            )
            txn.record(digest, PrivateTxRecord("tx2", 2, 0, 1, b"\x01" * 32))
            txn.remove_payloads([digest], "purge", 2)
            txn.set_cursor(3)

        await store.transaction(block)
    finally:
        await store.close()
    role = f"report_{schema}"
    with psycopg.connect(pg_dsn, autocommit=True) as owner:
        owner.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
        for statement in reader_grants(schema, role, PRIVATE_VIEWS):
            owner.execute(statement)
    with psycopg.connect(pg_dsn.replace("user=postgres", f"user={role}")) as reader:
        s = sql.Identifier(schema)
        rows = reader.execute(
            sql.SQL("SELECT namespace, key, value_text FROM {}.private_state ORDER BY 1").format(s)
        ).fetchall()
        assert rows == [("\\000g\\000g1\\000kv", "k", None), ("bank", "A", "100")]
        assert reader.execute(
            sql.SQL(
                "SELECT payload_hash, tx_id, status, state_hash, purged"
                " FROM {}.private_transactions"
            ).format(s)
        ).fetchall() == [(digest.hex(), "tx2", 1, "01" * 32, True)]
        reader.rollback()
        _all_refused(
            reader,
            s,
            "UPDATE {}.private_state SET value = 'forged'",
            "SELECT count(*) FROM {}.pstate",
            "DELETE FROM {}.ptxs",
        )
