"""The notary's spent-set on sqlite: which states are consumed, and the signature of every
notarised tx_id.

Theory of operation. The store stores; the notary's driver decides (`runtime/roles/notary`).
For a batch of admitted requests the driver first loads the spent rows and earlier signatures
the batch touches (`rows_for`: one indexed query per chunk, on the store's own thread, for the
keys its in-memory `SeenFilter`s say may have been written: fresh inputs cost no probe), steps the
pure `SingleNotary` over the batch in order, and hands what it decided (`Spent`) to `record`,
which writes what was consumed and signed and COMMITs (WAL, `synchronous=FULL` by default) —
all before any caller may be answered. A crash therefore loses either the whole batch (nobody
was answered) or nothing; since signatures are stored with the spent rows, a retried request
after a restart gets the very signature it would have got. The primary key on `spent.ref`
makes a double spend impossible even if the core were wrong: the INSERT would fail and the
batch roll back.

`exit_after_commit` is a test hook (see runtime/roles/notary/single.py): the process ends right
after a commit that signed something, before any reply leaves, to hit the crash window
deterministically.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Executor
from pathlib import Path
from typing import TypeVar

from dltmw.core.handlers.notary import Spent
from dltmw.core.notary import NotarisationAsk
from dltmw.core.utxo.model import Ref
from dltmw.ledger.retry import DEFAULT_RETRY, RetryPolicy
from dltmw.ledger.seen_filter import BITS_LOG2, SeenFilter
from dltmw.ledger.sqlite_file import SqliteFile

T = TypeVar("T")
SCHEMA = """
CREATE TABLE IF NOT EXISTS spent (ref BLOB PRIMARY KEY, tx_id TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS notarised (
    tx_id TEXT PRIMARY KEY, signature BLOB NOT NULL, inputs INTEGER NOT NULL) WITHOUT ROWID;
"""
CHUNK = 500  # sqlite's bound on host parameters is 999 on old builds


class SpentRows:
    """The durable rows a batch touches, loaded up front (the core's SpentView)."""

    def __init__(self, consumed: dict[Ref, str], signatures: dict[str, bytes]) -> None:
        self._consumed = consumed
        self._signatures = signatures

    def consumer_of(self, ref: Ref) -> str | None:
        return self._consumed.get(ref)

    def signature_of(self, tx_id: str) -> bytes | None:
        return self._signatures.get(tx_id)


def _write(conn: sqlite3.Connection, spent: Spent) -> None:
    """The spent rows and signatures of a decided batch (inside the caller's transaction)."""
    inputs = {tx: 0 for tx, _ in spent.signed}
    for _, tx in spent.consumed:
        inputs[tx] += 1
    conn.executemany(
        "INSERT INTO spent(ref, tx_id) VALUES (?,?)", [(ref.key, tx) for ref, tx in spent.consumed]
    )
    conn.executemany(
        "INSERT INTO notarised(tx_id, signature, inputs) VALUES (?,?,?)",
        [(tx, sig, inputs[tx]) for tx, sig in spent.signed],
    )


def _chunks(items: Sequence[T]) -> Iterable[Sequence[T]]:
    for i in range(0, len(items), CHUNK):
        yield items[i : i + CHUNK]


class NotaryStore:
    """Spent-set and signatures of one notary; all sqlite work on one dedicated thread."""

    def __init__(
        self,
        path: Path,
        sign: Callable[[bytes], bytes],
        synchronous: str = "FULL",
        exit_after_commit: bool = False,
        retry: RetryPolicy = DEFAULT_RETRY,
    ) -> None:
        # ValueError for an unknown mode, before touching the file
        self._file = SqliteFile(path, SCHEMA, synchronous=synchronous, retry=retry, name="notary")
        self.path = path
        self._sign = sign
        self._synchronous = synchronous
        self._exit_after_commit = exit_after_commit
        self._seen_refs = SeenFilter()  # every spent ref (and false positives): seen_filter.py
        self._seen_txs = SeenFilter(BITS_LOG2 - 1)  # every notarised tx_id

    def _setup(self, conn: sqlite3.Connection) -> None:
        """What a subclass adds to the schema (run once at open, on the store thread)."""

    def open(self) -> None:
        """Open (creating if needed) and fill the seen-filters from the tables; blocking,
        called once at start."""
        self._file.open_blocking(self._setup)
        self.run(self._fill_filters)

    def _fill_filters(self) -> None:
        """Add every durable key to the filters (store thread; one scan of each table)."""
        self._seen_refs, self._seen_txs = SeenFilter(), SeenFilter(BITS_LOG2 - 1)
        for (ref,) in self._conn.execute("SELECT ref FROM spent"):
            self._seen_refs.add(bytes(ref))
        for (tx_id,) in self._conn.execute("SELECT tx_id FROM notarised"):
            self._seen_txs.add(tx_id.encode())

    def _remember(self, spent: Spent) -> None:
        """Add what a batch is about to write to the filters, BEFORE writing it: the filters
        stay a superset of the tables whatever the commit's outcome."""
        for ref, _ in spent.consumed:
            self._seen_refs.add(ref.key)
        for tx_id, _ in spent.signed:
            self._seen_txs.add(tx_id.encode())

    def maybe_notarised(self, tx_ids: Iterable[str]) -> list[str]:
        """Those of `tx_ids` that may be in the notarised table (the others certainly are not);
        store thread."""
        return [t for t in tx_ids if self._seen_txs.may_hold(t.encode())]

    def close(self) -> None:
        """Close the database (idempotent; blocking)."""
        self._file.close_blocking()

    def run(self, fn: Callable[[], T]) -> T:
        """Run `fn` on the store thread (blocking)."""
        return self._file.run_blocking(fn)

    @property
    def executor(self) -> Executor:
        """The store thread, for `loop.run_in_executor`."""
        return self._file.executor

    @property
    def _conn(self) -> sqlite3.Connection:
        """The connection (only on the store thread); StoreClosed once closed."""
        return self._file.connection

    def record(self, spent: Spent) -> None:
        """Commit what a decision spent, durably; runs on the store thread."""
        self._remember(spent)
        self._file.write_here("notary.record", lambda c: _write(c, spent))
        if self._exit_after_commit:
            os._exit(70)  # test hook: durable, but nobody has been answered

    def notarised(self, tx_id: str) -> tuple[bytes, int] | None:
        """(signature, inputs consumed) of a notarised tx id, or None: a primary-key lookup
        (the explorer); runs on the store thread."""
        row = self._conn.execute(
            "SELECT signature, inputs FROM notarised WHERE tx_id=?", (tx_id,)
        ).fetchone()
        return None if row is None else (bytes(row[0]), int(row[1]))

    def rows_for(self, asks: Sequence[NotarisationAsk]) -> SpentRows:
        """The spent rows and signatures `asks` touch; runs on the store thread. Only keys the
        seen-filters may hold are looked up: the others were certainly never written."""
        conn = self._conn
        seen = self._seen_refs
        refs = {r.key for a in asks for r in (*a.inputs, *a.references)}
        keys = [k for k in refs if seen.may_hold(k)]
        tx_ids = self.maybe_notarised({a.tx_id for a in asks})
        consumed: dict[Ref, str] = {}
        signatures: dict[str, bytes] = {}
        for chunk in _chunks(keys):
            marks = ",".join("?" * len(chunk))
            for ref, tx in conn.execute(
                f"SELECT ref, tx_id FROM spent WHERE ref IN ({marks})", chunk
            ):
                consumed[Ref.from_key(bytes(ref))] = tx
        for ids in _chunks(tx_ids):
            marks = ",".join("?" * len(ids))
            sql = f"SELECT tx_id, signature FROM notarised WHERE tx_id IN ({marks})"
            for tx, sig in conn.execute(sql, ids):
                signatures[tx] = bytes(sig)
        return SpentRows(consumed, signatures)
