"""Benchmarks with the peers' ledgers in PostgreSQL (`dltmw bench --postgresql-dsn DSN`).

Each run gets a database of its own on the given server (created before the network starts,
dropped after it stopped), so runs never see each other's ledgers; every peer's node.toml gets
`[ledger] state = "postgresql"` with that database. The run's ledger check reads each peer's
tx index from its schema (`runtime/config.peer_schema`), as it reads the sqlite files
otherwise. psycopg (the `postgresql` extra) is imported only here.
"""

from __future__ import annotations

import itertools
import os
import tomllib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import tomli_w

from dltmw.runtime.config import peer_schema

_RUNS = itertools.count()


@contextmanager
def run_database(dsn: str) -> Iterator[str]:
    """A fresh database on the server of `dsn` for one run; yields its DSN, drops it after."""
    import psycopg
    from psycopg import conninfo, sql

    name = f"dltmw_bench_{os.getpid()}_{next(_RUNS)}"
    with psycopg.connect(dsn, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield conninfo.make_conninfo(dsn, dbname=name)
    finally:
        with psycopg.connect(dsn, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))


def use_postgresql(net: Path, peers: Sequence[str], dsn: str) -> None:
    """Point each peer's node.toml at the database `dsn`."""
    for peer in peers:
        path = net / "nodes" / peer / "node.toml"
        config = tomllib.loads(path.read_text())
        config.setdefault("ledger", {}).update({"state": "postgresql", "postgresql_dsn": dsn})
        path.write_text(tomli_w.dumps(config))


def read_codes(dsn: str, peer: str, channel: str, tx_ids: Sequence[str]) -> dict[str, int]:
    """tx_id -> validation code for those of `tx_ids` in a peer's PostgreSQL ledger."""
    import psycopg
    from psycopg import sql

    table = sql.Identifier(peer_schema(peer, channel), "txs")
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            sql.SQL("SELECT tx_id, code FROM {} WHERE tx_id = ANY(%s)").format(table),
            (list(tx_ids),),
        )
        return {str(t): int(c) for t, c in rows}
