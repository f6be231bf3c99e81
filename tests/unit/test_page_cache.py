"""Every connection a store keeps or opens has a bounded page cache (`ledger/page_cache.py`):
the writer, the snapshot reader, the in-place reader and the chain check's per-chunk one.

sqlite's default is 2,000 KiB per connection, kept until the connection closes; read back here
with `PRAGMA cache_size` (negative = KiB) from each connection itself.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from dltmw.ledger import sqlite as channel_sqlite
from dltmw.ledger.page_cache import READER_CACHE_KIB, WRITER_CACHE_KIB
from dltmw.ledger.sqlite_file import SqliteFile

SCHEMA = "CREATE TABLE IF NOT EXISTS blocks (number INTEGER PRIMARY KEY, hash BLOB, data BLOB);"
SQLITE_DEFAULT_KIB = 2000


def _cache(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA cache_size").fetchone()[0])


def test_the_bounds_are_below_sqlites_default() -> None:
    assert 0 < READER_CACHE_KIB <= WRITER_CACHE_KIB < SQLITE_DEFAULT_KIB


async def test_writer_and_both_readers_of_a_store_are_bounded(tmp_path: Path) -> None:
    file = SqliteFile(tmp_path / "a.sqlite", SCHEMA, reader=True)
    await file.open()
    try:
        assert await file.read(_cache) == -WRITER_CACHE_KIB
        assert await file.snapshot(_cache) == -READER_CACHE_KIB
        assert await file.snapshot_here(_cache) == -READER_CACHE_KIB
    finally:
        await file.close()


def test_the_chain_checks_connection_is_bounded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "a.sqlite"
    with sqlite3.connect(path) as conn:
        conn.executescript(SCHEMA)
    seen: list[int] = []

    class Recording(sqlite3.Connection):
        def close(self) -> None:
            seen.append(_cache(self))
            super().close()

    real = sqlite3.connect

    def connect(*args: Any, **kwargs: Any) -> sqlite3.Connection:
        return real(*args, factory=Recording, **kwargs)

    monkeypatch.setattr(sqlite3, "connect", connect)  # as `check_chunk` calls it
    channel_sqlite.check_chunk(path, 0, 1, b"")
    assert seen == [-READER_CACHE_KIB]
