"""The notary's spent-set on sqlite: which states are consumed, and the signature of every
notarised tx_id.

Theory of operation. A batch of admitted requests is decided and made durable in ONE call on the
store's own thread: load the spent rows and earlier signatures the batch touches (one indexed
query each), run the pure `SingleNotary` over the batch in order, write what it consumed and
signed, and COMMIT (WAL, `synchronous=FULL` by default) — all before the caller may reply. A
crash therefore loses either the whole batch (nobody was answered) or nothing; since signatures
are stored with the spent rows, a retried request after a restart gets the very signature it
would have got. The primary key on `spent.ref` makes a double spend impossible even if the core
were wrong: the INSERT would fail and the batch roll back.

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

from dltmw.core.handlers.notary import Ask, NotaryReady, SingleNotary
from dltmw.core.utxo.model import Ref
from dltmw.ledger.retry import DEFAULT_RETRY, RetryPolicy
from dltmw.ledger.sqlite_file import SqliteFile

T = TypeVar("T")
SCHEMA = """
CREATE TABLE IF NOT EXISTS spent (ref BLOB PRIMARY KEY, tx_id TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS notarised (
    tx_id TEXT PRIMARY KEY, signature BLOB NOT NULL, inputs INTEGER NOT NULL) WITHOUT ROWID;
"""
CHUNK = 500  # sqlite's bound on host parameters is 999 on old builds


class _BatchView:
    """The durable rows a batch touches, loaded up front (SpentView for the core)."""

    def __init__(self, consumed: dict[Ref, str], signatures: dict[str, bytes]) -> None:
        self._consumed = consumed
        self._signatures = signatures

    def consumer_of(self, ref: Ref) -> str | None:
        return self._consumed.get(ref)

    def signature_of(self, tx_id: str) -> bytes | None:
        return self._signatures.get(tx_id)


def _write(conn: sqlite3.Connection, ready: NotaryReady, inputs: dict[str, int]) -> None:
    """The spent rows and signatures of a decided batch (inside the caller's transaction)."""
    conn.executemany(
        "INSERT INTO spent(ref, tx_id) VALUES (?,?)", [(ref.key, tx) for ref, tx in ready.consumed]
    )
    conn.executemany(
        "INSERT INTO notarised(tx_id, signature, inputs) VALUES (?,?,?)",
        [(tx, sig, inputs[tx]) for tx, sig in ready.signed],
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

    def _setup(self, conn: sqlite3.Connection) -> None:
        """What a subclass adds to the schema (run once at open, on the store thread)."""

    def open(self) -> None:
        """Open (creating if needed); blocking, called once at start."""
        self._file.open_blocking(self._setup)

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

    def decide(self, asks: Sequence[Ask]) -> NotaryReady:
        """Decide a batch in order and commit its effects durably; runs on the store thread."""
        conn = self._conn
        view = self._load(conn, asks)
        core = SingleNotary(view, self._sign)
        for ask in asks:
            core.step(ask)
        ready = core.ready()
        if ready.signed:
            inputs = {tx: 0 for tx, _ in ready.signed}
            for _, tx in ready.consumed:
                inputs[tx] += 1
            self._file.write_here("notary.record", lambda c: _write(c, ready, inputs))
            if self._exit_after_commit:
                os._exit(70)  # test hook: durable, but nobody has been answered
        return ready

    @staticmethod
    def _load(conn: sqlite3.Connection, asks: Sequence[Ask]) -> _BatchView:
        keys = list({r.key for a in asks for r in (*a.ask.inputs, *a.ask.references)})
        tx_ids = list({a.ask.tx_id for a in asks})
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
        return _BatchView(consumed, signatures)
