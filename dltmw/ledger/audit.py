"""What `dltmw audit` reads from one channel ledger file, in one consistent snapshot.

The read runs on its own short-lived read-only sqlite connection, inside one read transaction
(WAL snapshot isolation), so the height, the hashes at the asked heights, the stored state hash
and the state recomputed from the table all describe the same committed state while the node
keeps committing. It runs on a worker thread, not on the ledger's reader thread, so an audit's
full scan of the state table never delays contract simulation.

Cost: the recomputation is O(state) (one SHAKE-256 per entry, ~2 µs); the state-hash chain is
O(highest asked height) reads of 32-byte rows. An audit asks for at most `POINTS_MAX` heights at
a time, and the CLI bisects rather than shipping every hash.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from dltmw.core.hashing import ZERO_HASH
from dltmw.core.rwset import Version
from dltmw.core.statehash import accumulate, chain_step

POINTS_MAX = 1024


@dataclass(frozen=True)
class AuditPoint:
    """Hashes at one height. `state_chain` is the running hash over the stored state hashes
    from the asked `chain_from` to this block (b"" below `chain_from` or where none is stored)."""

    block_number: int
    block_hash: bytes
    state_hash: bytes
    state_chain: bytes


@dataclass(frozen=True)
class LedgerAudit:
    """One snapshot of one ledger: see `read_audit`."""

    height: int
    points: tuple[AuditPoint, ...]
    state_hashes_from: int  # lowest block with a stored state hash (= height when none)
    stored_state_hash: bytes  # stored with block height-1 (b"" when none)
    recomputed_state_hash: bytes  # from the state table now (b"" unless asked)


class Queryable(Protocol):
    """A connection that runs one statement with `?` placeholders (sqlite3's; the PostgreSQL
    ledger passes an adapter, `pg_database.QmarkConnection`)."""

    def execute(self, sql: str, parameters: Sequence[Any] = ..., /) -> Any:
        """Run `sql`; the result iterates rows and has `fetchone()`."""
        ...


def read_audit(path: Path, numbers: Sequence[int], chain_from: int, recompute: bool) -> LedgerAudit:
    """Heights, hashes at `numbers` (those below the height), and optionally the recomputed
    state hash, all from one read transaction of the ledger file at `path` (blocking)."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None)
    try:
        conn.execute("BEGIN")
        audit = audit_snapshot(conn, numbers, chain_from, recompute)
        conn.execute("COMMIT")
    finally:
        conn.close()
    return audit


def audit_snapshot(
    conn: Queryable, numbers: Sequence[int], chain_from: int, recompute: bool
) -> LedgerAudit:
    """`read_audit` inside the caller's read transaction on `conn` (either backend's tables:
    a key is TEXT in sqlite and its UTF-8 bytes in PostgreSQL)."""
    height = int(conn.execute("SELECT COALESCE(MAX(number) + 1, 0) FROM blocks").fetchone()[0])
    first = conn.execute("SELECT MIN(block_number) FROM state_hashes").fetchone()[0]
    wanted = sorted({n for n in numbers if 0 <= n < height})
    points = _points(conn, wanted, min(max(chain_from, 0), height))  # ints are 64-bit in both
    stored = conn.execute(
        "SELECT state_hash FROM state_hashes WHERE block_number=?", (height - 1,)
    ).fetchone()
    recomputed = b""
    if recompute:
        rows = conn.execute("SELECT namespace, key, value, block_number, tx_index FROM state")
        recomputed = accumulate(
            (r[0], _text(r[1]), bytes(r[2]), Version(r[3], r[4])) for r in rows
        ).digest()
    return LedgerAudit(
        height=height,
        points=points,
        state_hashes_from=height if first is None else int(first),
        stored_state_hash=b"" if stored is None else bytes(stored[0]),
        recomputed_state_hash=recomputed,
    )


def _text(key: str | bytes) -> str:
    return key if isinstance(key, str) else bytes(key).decode()


def _points(conn: Queryable, wanted: list[int], chain_from: int) -> tuple[AuditPoint, ...]:
    if not wanted:
        return ()
    marks = ",".join("?" * len(wanted))
    block_hashes = dict(
        conn.execute(f"SELECT number, hash FROM blocks WHERE number IN ({marks})", wanted)
    )
    state_hashes: dict[int, bytes] = {}
    chains: dict[int, bytes] = {}
    chain, expected = ZERO_HASH, max(chain_from, 0)
    rows = conn.execute(
        "SELECT block_number, state_hash FROM state_hashes"
        " WHERE block_number >= ? AND block_number <= ? ORDER BY block_number",
        (expected, wanted[-1]),
    )
    wanted_set = set(wanted)
    for number, digest in rows:
        if number != expected:  # a gap: no chain from here on (reported as b"")
            break
        chain, expected = chain_step(chain, bytes(digest)), expected + 1
        if number in wanted_set:
            state_hashes[number], chains[number] = bytes(digest), chain
    for number, digest in conn.execute(
        f"SELECT block_number, state_hash FROM state_hashes WHERE block_number IN ({marks})",
        wanted,
    ):
        state_hashes.setdefault(number, bytes(digest))
    return tuple(
        AuditPoint(n, bytes(block_hashes[n]), state_hashes.get(n, b""), chains.get(n, b""))
        for n in wanted
    )
