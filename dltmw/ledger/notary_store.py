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

Layout (storage format 2). A decided batch's signature and its tx_ids (32 raw bytes each, in
leaf order) are ONE row of `notary_batches`; each tx_id's `notarised` row holds, instead of its
own copy of the signature and Merkle proof (~450 bytes a row, written for every transaction,
the largest part of each commit), a 16-byte reference `_IN_BATCH || batch id || leaf`. A
retried request's proof is rebuilt from the batch's tx_ids — the same proof its first answer
carried. Rows written before (format 1: a bare signature, or `notary_batch.encode`'s signature
with proof) stay as they are and are answered as before, so a format-1 file opens unchanged
(nothing to migrate; the format number only stops an older dltmw from misreading the new rows).

`exit_after_commit` is a test hook (see runtime/roles/notary/single.py): the process ends right
after a commit that signed something, before any reply leaves, to hit the crash window
deterministically.
"""

from __future__ import annotations

import os
import sqlite3
import struct
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Executor
from pathlib import Path
from typing import TypeVar

from dltmw.core.handlers.notary import Spent
from dltmw.core.notary import NotarisationAsk
from dltmw.core.notary_batch import SignedBatch, encode
from dltmw.core.utxo.model import Ref
from dltmw.ledger.page_cache import bound_cache
from dltmw.ledger.retry import DEFAULT_RETRY, RetryPolicy
from dltmw.ledger.seen_filter import BITS_LOG2, SeenFilter
from dltmw.ledger.sqlite_file import SqliteFile

T = TypeVar("T")
SCHEMA = """
CREATE TABLE IF NOT EXISTS spent (ref BLOB PRIMARY KEY, tx_id TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS notarised (
    tx_id TEXT PRIMARY KEY, signature BLOB NOT NULL, inputs INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS notary_batches (
    id INTEGER PRIMARY KEY, signature BLOB NOT NULL, tx_ids BLOB NOT NULL);
"""
# A `notarised.signature` value naming (batch id, leaf); never the first bytes of a DER (0x30)
# or raw signature, nor of `notary_batch.encode`'s value (b"\xffNB1").
_IN_BATCH = b"\xffNB2"
_AT = struct.Struct(">QI")
_REF_SIZE = len(_IN_BATCH) + _AT.size
CHUNK = 500  # sqlite's bound on host parameters is 999 on old builds
# The page cache of the notary's connection (sqlite's default is 2 MiB; allocated as pages are
# used, and held until the connection closes, so it is resident memory for the node's life).
# Every spent row and notarised row goes to a random place of its B-tree. Both are inserted in
# key order (`_remember`, `write_batches`), so a batch walks each B-tree once, left to right: a
# leaf is read, changed and not wanted again in that batch, and what the cache must keep is the
# interior pages every insert walks (a few hundred KiB at a million rows) and the current run of
# leaves. A 16 MiB cache was chosen when the notarised rows went in leaf (random) order, where
# it held the whole file at 80,000 rows (~1.7x less insert CPU than 2 MiB then); at a million
# notarisations the trees are ~300 MB and a batch changes thousands of leaves, more than any
# cache a node can afford, and the 16 MiB were 17 MB of the notary's RSS (sqlite3_memory_used).
# With key-ordered inserts 4 MiB costs no store-thread CPU against 16 MiB with random order, at
# 20,000 to 1,000,000 rows, and neither did 2 or 1 MiB at 60,000 / 120,000 rows (benchmarks/
# RESULTS.md, 2026-12-02 20:15 UTC). A notary-cluster member's cache is full within its first
# minute under load and is ~4 of the ~16 MiB it holds above its idle start (sqlite3_memory_used
# 0.25 -> 5.7 MiB); 2 MiB took 3.3 MiB off each member's peak but its notary-cluster throughput
# A/B was not resolved (5 pairs x0.68-1.36, median x0.87, at load 11-34; RESULTS.md 2026-12-05,
# branch rss60), so 4 MiB stays until a quiet-host A/B settles it.
CACHE_KIB = 4096
# WAL frames before sqlite checkpoints them into the database file at a COMMIT (default 1000:
# 4 MB). Each decided batch dirties pages all over the spent and notarised B-trees (random
# keys), mostly the SAME pages as the batch before; with the default a checkpoint ran at nearly
# every batch and copied those pages again each time. At 10,000 frames (~40 MB of WAL on disk,
# reset after each checkpoint; not memory) a page dirtied by ten batches is copied once:
# ~15 % less CPU per batch in the store thread (65 -> 55 ms per 2,000-transaction batch,
# benchmarks/RESULTS.md 2026-12-01 19:50 UTC). Durability is the COMMIT's fsync of the WAL, as
# before; a restart replays what the WAL holds.
WAL_AUTOCHECKPOINT_PAGES = 10_000


class SpentRows:
    """The durable rows a batch touches, loaded up front (the core's SpentView)."""

    def __init__(self, consumed: dict[Ref, str], signatures: dict[str, bytes]) -> None:
        self._consumed = consumed
        self._signatures = signatures

    def consumer_of(self, ref: Ref) -> str | None:
        return self._consumed.get(ref)

    def signature_of(self, tx_id: str) -> bytes | None:
        return self._signatures.get(tx_id)


def _write(conn: sqlite3.Connection, spent: Spent, rows: Sequence[tuple[bytes, str]]) -> None:
    """The spent `rows` (ref key, consumer) and the batches of a decided step (inside the
    caller's transaction)."""
    conn.executemany("INSERT INTO spent(ref, tx_id) VALUES (?,?)", rows)
    write_batches(conn, spent)


def write_batches(conn: sqlite3.Connection, spent: Spent) -> None:
    """Each batch of `spent` once, and per tx_id a short reference to it (`_IN_BATCH`)."""
    inputs: dict[str, int] = {}
    for _, tx in spent.consumed:
        inputs[tx] = inputs.get(tx, 0) + 1
    for batch in spent.batches:
        packed = pack_tx_ids(batch.tx_ids)
        cursor = conn.execute(
            "INSERT INTO notary_batches(signature, tx_ids) VALUES (?,?)", (batch.signature, packed)
        )
        at, pack, get = cursor.lastrowid, _AT.pack, inputs.get
        rows = [(t, _IN_BATCH + pack(at, i), get(t, 0)) for i, t in enumerate(batch.tx_ids)]
        rows.sort()  # key order, as the spent rows (`_remember`): each leaf visited once
        conn.executemany("INSERT INTO notarised(tx_id, signature, inputs) VALUES (?,?,?)", rows)


_RAW, _TEXT = b"\x00", b"\x01"


def pack_tx_ids(tx_ids: Sequence[str]) -> bytes:
    """A batch's tx_ids as stored: 32 raw bytes each when all are tx_ids (64 lowercase hex
    digits, as the notary admits them), else (tests, simulations) their text, one per line."""
    try:
        raw = b"".join(bytes.fromhex(t) for t in tx_ids)
    except ValueError:
        raw = b""
    if len(raw) == 32 * len(tx_ids) and raw.hex() == "".join(tx_ids):
        return _RAW + raw
    if any("\n" in t for t in tx_ids):
        raise ValueError("a tx_id with a line break")
    return _TEXT + "\n".join(tx_ids).encode()


def unpack_tx_ids(packed: bytes) -> tuple[str, ...]:
    """Inverse of `pack_tx_ids`."""
    body = packed[1:]
    if packed[:1] == _RAW:
        return tuple(body[i : i + 32].hex() for i in range(0, len(body), 32))
    return tuple(body.decode().split("\n"))


def resolve(conn: sqlite3.Connection, stored: dict[str, bytes]) -> dict[str, bytes]:
    """The attestations (`notary_batch.encode`, or a bare signature from before batch signing)
    of `stored` (tx_id -> `notarised.signature` value): batch references resolved by loading
    each batch once and rebuilding its proofs. Module-level so tests and tools reading a file
    directly see what the notary answers."""
    wanted: dict[int, list[tuple[str, int]]] = {}
    out: dict[str, bytes] = {}
    for tx_id, value in stored.items():
        if value.startswith(_IN_BATCH) and len(value) == _REF_SIZE:
            batch_id, leaf = _AT.unpack_from(value, len(_IN_BATCH))
            wanted.setdefault(batch_id, []).append((tx_id, leaf))
        else:
            out[tx_id] = value
    for batch_id, leaves in wanted.items():
        row = conn.execute(
            "SELECT signature, tx_ids FROM notary_batches WHERE id=?", (batch_id,)
        ).fetchone()
        if row is None:
            raise StoreCorrupt(f"notarised rows name batch {batch_id}, which is not stored")
        batch = SignedBatch(bytes(row[0]), unpack_tx_ids(bytes(row[1])))
        proofs = batch.proofs()
        for tx_id, leaf in leaves:
            if leaf >= len(batch.tx_ids) or batch.tx_ids[leaf] != tx_id:
                raise StoreCorrupt(f"batch {batch_id} has no tx_id {tx_id} at leaf {leaf}")
            out[tx_id] = encode(batch.signature, proofs[leaf])
    return out


class StoreCorrupt(RuntimeError):
    """The notary's file contradicts itself (a reference to a batch it does not hold): never
    answered from; the caller's step fails and the notary stops."""


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
        self._seen_txs = SeenFilter(BITS_LOG2 - 1)  # every notarised tx_id (its text)

    @property
    def filter_bytes(self) -> int:
        """Memory of the two seen filters (a fixed part of a notary's resident size)."""
        return self._seen_refs.size_bytes + self._seen_txs.size_bytes

    def _prepare(self, conn: sqlite3.Connection) -> None:
        bound_cache(conn, CACHE_KIB)  # above the writer's default: see CACHE_KIB
        conn.execute(f"PRAGMA wal_autocheckpoint={WAL_AUTOCHECKPOINT_PAGES}")
        self._setup(conn)

    def _setup(self, conn: sqlite3.Connection) -> None:
        """What a subclass adds to the schema (run once at open, on the store thread)."""

    def open(self) -> None:
        """Open (creating if needed) and fill the seen-filters from the tables; blocking,
        called once at start."""
        self._file.open_blocking(self._prepare)
        self.run(self._fill_filters)

    def _fill_filters(self) -> None:
        """Add every durable key to the filters (store thread; one scan of each table)."""
        self._seen_refs, self._seen_txs = SeenFilter(), SeenFilter(BITS_LOG2 - 1)
        self._seen_refs.add_all(bytes(r) for (r,) in self._conn.execute("SELECT ref FROM spent"))
        self._seen_txs.add_all(t for (t,) in self._conn.execute("SELECT tx_id FROM notarised"))

    def _remember(self, spent: Spent) -> list[tuple[bytes, str]]:
        """Add what a batch is about to write to the filters, BEFORE writing it: the filters
        stay a superset of the tables whatever the commit's outcome. Returns the spent rows
        (ref key, consumer), each key computed once, in key order: consecutive inserts then
        walk neighbouring B-tree pages, which stay cached, instead of random ones."""
        rows = sorted((ref.key, tx) for ref, tx in spent.consumed)  # key order: B-tree locality
        self._seen_refs.add_all([key for key, _ in rows])
        self._seen_txs.add_all(spent.tx_ids)
        return rows

    def maybe_notarised(self, tx_ids: Iterable[str]) -> list[str]:
        """Those of `tx_ids` that may be in the notarised table (the others certainly are not);
        store thread."""
        return self._seen_txs.maybe(tx_ids)

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
        rows = self._remember(spent)
        self._file.write_here("notary.record", lambda c: _write(c, spent, rows))
        if self._exit_after_commit:
            os._exit(70)  # test hook: durable, but nobody has been answered

    def notarised(self, tx_id: str) -> tuple[bytes, int] | None:
        """(signature, inputs consumed) of a notarised tx id, or None: a primary-key lookup
        (the explorer); runs on the store thread."""
        conn = self._conn
        row = conn.execute(
            "SELECT signature, inputs FROM notarised WHERE tx_id=?", (tx_id,)
        ).fetchone()
        if row is None:
            return None
        return resolve(conn, {tx_id: bytes(row[0])})[tx_id], int(row[1])

    def attestations(self, tx_ids: Iterable[str]) -> dict[str, bytes]:
        """The stored attestation of each of `tx_ids` notarised here (the others are absent);
        only tx_ids the seen-filter may hold are looked up. Store thread."""
        conn = self._conn
        stored: dict[str, bytes] = {}
        for ids in _chunks(self.maybe_notarised(tx_ids)):
            marks = ",".join("?" * len(ids))
            sql = f"SELECT tx_id, signature FROM notarised WHERE tx_id IN ({marks})"
            stored.update((tx, bytes(sig)) for tx, sig in conn.execute(sql, ids))
        return resolve(conn, stored) if stored else stored

    def rows_for(self, asks: Sequence[NotarisationAsk]) -> SpentRows:
        """The spent rows and signatures `asks` touch; runs on the store thread. Only keys the
        seen-filters may hold are looked up: the others were certainly never written."""
        conn = self._conn
        refs = {r.key for a in asks for r in (*a.inputs, *a.references)}
        keys = self._seen_refs.maybe(refs)
        consumed: dict[Ref, str] = {}
        for chunk in _chunks(keys):
            marks = ",".join("?" * len(chunk))
            for ref, tx in conn.execute(
                f"SELECT ref, tx_id FROM spent WHERE ref IN ({marks})", chunk
            ):
                consumed[Ref.from_key(bytes(ref))] = tx
        return SpentRows(consumed, self.attestations({a.tx_id for a in asks}))
