"""The sender's duty to deliver private payloads, in its private store (`<channel>.private.sqlite`,
or its PostgreSQL schema: `private_pg.py`, where `node` is bytea like every text column).

On a channel that requires agreements (ALL_RECIPIENTS, the default, or a policy expression:
`core/privacy/agreement_policy.py`) Send does not fail for a recipient that is down: one
`outbox` row per (payload, recipient node) a push did not reach is stored
(`PrivateStore.store_payloads(..., deliveries)`) BEFORE Send answers with that node pending,
and a row is deleted once that node acknowledged durable storage of the payload (Push is
idempotent at the receiver, so a push repeated after a lost acknowledgement changes nothing).
A Send whose recipients all acknowledged writes no row. From the answer on, the duty survives
any crash: the redelivery task (`runtime/roles/privacy/redelivery.py`) reads the table after a
restart.

A purge that removes a payload removes its rows (nothing is left to deliver, and a purged payload
is never pushed again). Functions here take the store thread's connection.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence

from dltmw.ledger.private_sql import Db, text

SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    hash BLOB NOT NULL, node TEXT NOT NULL, PRIMARY KEY (hash, node)) WITHOUT ROWID;
"""
Delivery = tuple[bytes, str]  # (payload hash, recipient node id)


def setup(conn: sqlite3.Connection) -> None:
    """Create the table (every open; a store older than queued delivery gets it empty)."""
    conn.executescript(SCHEMA)


def queue(conn: Db, deliveries: Iterable[Delivery]) -> None:
    """Record deliveries still owed (inside the transaction that stores their payloads)."""
    conn.executemany("INSERT OR IGNORE INTO outbox VALUES (?,?)", sorted(set(deliveries)))


def delivered(conn: Db, deliveries: Iterable[Delivery]) -> None:
    """Forget deliveries that were acknowledged."""
    conn.executemany("DELETE FROM outbox WHERE hash=? AND node=?", sorted(set(deliveries)))


def forget_payloads(conn: Db, hashes: Sequence[bytes]) -> None:
    """A purge removed these payloads: nothing is owed for them any more."""
    conn.executemany("DELETE FROM outbox WHERE hash=?", [(h,) for h in hashes])


def owed(conn: Db, after: Delivery, limit: int) -> list[Delivery]:
    """Up to `limit` owed deliveries after `after`, in (hash, node) order (paging)."""
    rows = conn.execute(
        "SELECT hash, node FROM outbox WHERE (hash, node) > (?, ?) ORDER BY hash, node LIMIT ?",
        (*after, limit),
    )
    return [(bytes(r[0]), text(r[1])) for r in rows]


def pending_nodes(conn: Db, payload_hash: bytes) -> list[str]:
    """Recipient nodes that have not acknowledged `payload_hash` yet, sorted."""
    rows = conn.execute("SELECT node FROM outbox WHERE hash=? ORDER BY node", (payload_hash,))
    return [text(r[0]) for r in rows]
