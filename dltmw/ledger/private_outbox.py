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

A row is given up, not deleted, when its recipient can no longer be served (branch priv57): its
`state` turns EXPIRED (queued longer ago than the node's `[private] delivery_expiry_s`) or
REMOVED (the node is no longer a member of the channel config in force, or its key there is not
one the payload was sealed for), or ABANDONED (an operator gave up the payload's delivery:
`dltmw private abandon`). Such a row is pushed no more but stays, so the sender's view
(ValidatePrivateState, `dltmw private pending`) says why the recipient never got it. `since`
is the wall-clock second (UNIX time, the loop's clock: virtual in the simulator) the row was
queued; a row from before the column (an older store) has none until the redelivery's next
pass stamps it, so it expires a full period after the upgrade, never at once.

A purge that removes a payload removes its rows (nothing is left to deliver, and a purged payload
is never pushed again). Functions here take the store thread's connection.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence

from dltmw.ledger.private_sql import Db, text

SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    hash BLOB NOT NULL, node TEXT NOT NULL, since REAL, state INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (hash, node)) WITHOUT ROWID;
"""
Delivery = tuple[bytes, str]  # (payload hash, recipient node id)
Owed = tuple[bytes, str, float | None]  # (payload hash, node, queued at: UNIX seconds or None)
Row = tuple[bytes, str, float | None, int]  # an outbox row: Owed and its state
# `state`: what became of the row (0, owed: the default of rows older than the column)
OWED, EXPIRED, REMOVED, ABANDONED = 0, 1, 2, 3


def setup(conn: sqlite3.Connection) -> None:
    """Create the table (every open; a store older than queued delivery gets it empty, one
    older than the `since` and `state` columns gets them: NULL and owed)."""
    conn.executescript(SCHEMA)
    columns = {r[1] for r in conn.execute("PRAGMA table_info(outbox)")}
    if "since" not in columns:
        conn.execute("ALTER TABLE outbox ADD COLUMN since REAL")
    if "state" not in columns:
        conn.execute("ALTER TABLE outbox ADD COLUMN state INTEGER NOT NULL DEFAULT 0")


def queue(conn: Db, deliveries: Iterable[Delivery], since: float | None = None) -> None:
    """Record deliveries still owed (inside the transaction that stores their payloads),
    queued at `since`; a row already there (owed or given up) stays as it is."""
    conn.executemany(
        "INSERT OR IGNORE INTO outbox (hash, node, since, state) VALUES (?,?,?,0)",
        [(h, n, since) for h, n in sorted(set(deliveries))],
    )


def delivered(conn: Db, deliveries: Iterable[Delivery]) -> None:
    """Forget deliveries that were acknowledged."""
    conn.executemany("DELETE FROM outbox WHERE hash=? AND node=?", sorted(set(deliveries)))


def give_up(conn: Db, deliveries: Iterable[Delivery], state: int) -> int:
    """Push these owed deliveries no more: they turn `state` (EXPIRED, REMOVED, ABANDONED) and
    stay for the sender's view. Returns how many owed rows changed."""
    cur = conn.executemany(
        "UPDATE outbox SET state=? WHERE hash=? AND node=? AND state=0",
        [(state, h, n) for h, n in sorted(set(deliveries))],
    )
    return max(0, cur.rowcount)


def stamp(conn: Db, deliveries: Iterable[Delivery], since: float) -> None:
    """Give rows queued before the `since` column (NULL) the time they were first seen."""
    conn.executemany(
        "UPDATE outbox SET since=? WHERE hash=? AND node=? AND since IS NULL",
        [(since, h, n) for h, n in sorted(set(deliveries))],
    )


def forget_payloads(conn: Db, hashes: Sequence[bytes]) -> None:
    """A purge removed these payloads: nothing is owed for them any more."""
    conn.executemany("DELETE FROM outbox WHERE hash=?", [(h,) for h in hashes])


def owed(conn: Db, after: Delivery, limit: int) -> list[Owed]:
    """Up to `limit` owed deliveries after `after`, in (hash, node) order (paging), with the
    time each was queued (None: queued before the column)."""
    rows = conn.execute(
        "SELECT hash, node, since FROM outbox WHERE (hash, node) > (?, ?) AND state=0"
        " ORDER BY hash, node LIMIT ?",
        (*after, limit),
    )
    return [(bytes(r[0]), text(r[1]), None if r[2] is None else float(r[2])) for r in rows]


def rows(conn: Db, after: Delivery, limit: int) -> list[Row]:
    """Up to `limit` rows after `after`, owed or given up, in (hash, node) order: the listing
    of `dltmw private pending`."""
    found = conn.execute(
        "SELECT hash, node, since, state FROM outbox WHERE (hash, node) > (?, ?)"
        " ORDER BY hash, node LIMIT ?",
        (*after, limit),
    )
    return [
        (bytes(r[0]), text(r[1]), None if r[2] is None else float(r[2]), int(r[3])) for r in found
    ]


def pending_nodes(conn: Db, payload_hash: bytes) -> list[str]:
    """Recipient nodes that have not acknowledged `payload_hash` yet and are still pushed to,
    sorted."""
    found = conn.execute(
        "SELECT node FROM outbox WHERE hash=? AND state=0 ORDER BY node", (payload_hash,)
    )
    return [text(r[0]) for r in found]


def any_given_up(conn: Db) -> bool:
    """Is any row given up (not owed)? One scan of the table, read once per start by the
    redelivery (`Redelivery.given_up_of`), so that a collection needs no read of its own while
    nothing was ever given up."""
    return bool(list(conn.execute("SELECT 1 FROM outbox WHERE state<>0 LIMIT 1")))


def states(conn: Db, payload_hash: bytes) -> dict[str, int]:
    """node -> state of every row of `payload_hash` (OWED or given up): the sender's view."""
    found = conn.execute("SELECT node, state FROM outbox WHERE hash=?", (payload_hash,))
    return {text(r[0]): int(r[1]) for r in found}
