"""What a store's page cache really holds once its file outgrows it: sqlite's own count of the
memory it allocated (`sqlite3_memory_used`, process-wide), before the store opens and after it
wrote several times its bound. The bounds read back with `PRAGMA cache_size` elsewhere
(`test_page_cache.py`, `test_notary_store.py`); here the resident memory the PBFT-lite record
store's bound buys, against issue 18's 100 MB per node (benchmarks/RESULTS.md 2026-12-05,
branch rss60: a notary-cluster member's sqlite memory 0.25 -> 5.7 MiB under load, its caches
full). The notary store's 4 MiB is above sqlite's default of ~2 MiB: its bound cannot show
here (a check of it was flaky on its lower side); `test_notary_store.py` reads it back.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from dltmw.core.pbft import Envelope
from dltmw.core.pbft.availability import BatchKey
from dltmw.core.pbft.dissemination import BatchRecord
from dltmw.ledger.pbft_store import RECORDS_CACHE_KIB, RecordStore
from dltmw.v1 import replica_pb2

SLACK = 512 * 1024  # schema, prepared statements, the pager's own structures


def _memory_used() -> Callable[[], int]:
    """sqlite's process-wide allocation count, from the library the `sqlite3` module uses;
    skips where that cannot be shown (a module built with its own copy of sqlite)."""
    name = ctypes.util.find_library("sqlite3")
    if name is None:
        pytest.skip("no shared libsqlite3")
    used = ctypes.CDLL(name).sqlite3_memory_used
    used.restype = ctypes.c_int64
    before = used()
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE t (x BLOB)")
    conn.execute("INSERT INTO t VALUES (zeroblob(200000))")
    grew = used() - before
    conn.close()
    if grew < 100_000:
        pytest.skip("the sqlite3 module does not use the shared libsqlite3")
    return lambda: int(used())


def _big_batch(sequence: int, size: int) -> BatchRecord:
    body = replica_pb2.Batch(
        batch_sequence=sequence, digest=bytes(32), envelopes=[bytes([sequence % 256]) * size]
    )
    payload = replica_pb2.ReplicaMessage(batch=body).SerializeToString()
    envelope = Envelope(payload=payload, replica=1, signature=b"s")
    return BatchRecord(envelope, BatchKey(1, sequence), 0)


async def test_a_record_stores_pages_take_at_most_256_kib(tmp_path: Path) -> None:
    """Records whose blobs are overflow pages written once (6 MiB of them): the writer keeps
    RECORDS_CACHE_KIB (256 KiB; the writers' 1 MiB before: red), not more."""
    used = _memory_used()
    before = used()
    store = await RecordStore.open(tmp_path / "r.sqlite")
    try:
        for step in range(12):
            await store.append([_big_batch(step * 4 + i, 128 * 1024) for i in range(4)])
        held = used() - before
    finally:
        await store.close()
    assert held <= RECORDS_CACHE_KIB * 1024 + SLACK
    assert held <= 256 * 1024 + SLACK
