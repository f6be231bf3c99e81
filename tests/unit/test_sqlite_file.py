"""The one store-opening helper (`ledger/sqlite_file.py`): every store opens and writes this way."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from concurrent.futures import Executor, Future
from pathlib import Path
from typing import Any

import pytest

from dltmw.ledger.sqlite_file import FORMAT, SqliteFile, StoreClosed, StoreFormatError

SCHEMA = "CREATE TABLE IF NOT EXISTS t (k INTEGER PRIMARY KEY, v TEXT NOT NULL);"


def rows(path: Path) -> list[tuple[int, str]]:
    with sqlite3.connect(path) as conn:
        return conn.execute("SELECT k, v FROM t ORDER BY k").fetchall()


async def test_open_applies_pragmas_schema_and_setup(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "a.sqlite"
    file = SqliteFile(path, SCHEMA, synchronous="NORMAL")
    seen: list[str] = []
    await file.open(lambda conn: seen.append(conn.execute("PRAGMA synchronous").fetchone()[0]))
    assert file.created and seen == [1]  # NORMAL
    assert await file.read(lambda c: c.execute("PRAGMA journal_mode").fetchone()[0]) == "wal"
    await file.close()
    again = SqliteFile(path, SCHEMA)
    await again.open()
    assert not again.created
    await again.close()


async def test_a_write_is_one_transaction_rolled_back_whole_on_error(tmp_path: Path) -> None:
    file = SqliteFile(tmp_path / "a.sqlite", SCHEMA)
    await file.open()
    await file.write("vault.record", lambda c: c.execute("INSERT INTO t VALUES (1, 'one')"))

    def half(conn: sqlite3.Connection) -> None:
        conn.execute("INSERT INTO t VALUES (2, 'two')")
        conn.execute("INSERT INTO t VALUES (1, 'again')")  # primary key: IntegrityError

    with pytest.raises(sqlite3.IntegrityError):
        await file.write("vault.record", half)
    assert rows(tmp_path / "a.sqlite") == [(1, "one")]  # the first insert of `half` is gone
    await file.close()


async def test_a_refused_open_leaves_no_connection_and_no_thread(tmp_path: Path) -> None:
    threads = threading.active_count()
    file = SqliteFile(tmp_path / "a.sqlite", SCHEMA)

    def refuse(_conn: sqlite3.Connection) -> None:
        raise ValueError("chain broken")

    with pytest.raises(ValueError, match="chain broken"):
        await file.open(refuse)
    assert threading.active_count() == threads
    with pytest.raises(StoreClosed):
        _ = file.connection


async def test_close_is_idempotent_and_use_after_close_is_refused(tmp_path: Path) -> None:
    file = SqliteFile(tmp_path / "a.sqlite", SCHEMA, reader=True)
    await file.open()
    assert await file.snapshot(lambda c: c.execute("SELECT count(*) FROM t").fetchone()[0]) == 0
    await file.close()
    await file.close()
    with pytest.raises(StoreClosed):
        _ = file.connection


def test_an_unknown_mode_is_refused_before_the_file_exists(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unsupported synchronous mode"):
        SqliteFile(tmp_path / "a.sqlite", SCHEMA, synchronous="OFF")
    assert not (tmp_path / "a.sqlite").exists()


def test_the_blocking_api_runs_on_the_file_worker(tmp_path: Path) -> None:
    file = SqliteFile(tmp_path / "a.sqlite", SCHEMA)
    file.open_blocking()
    names = file.run_blocking(lambda: threading.current_thread().name)
    assert names.startswith("store") and names != threading.current_thread().name
    file.run_blocking(
        lambda: file.write_here("t", lambda c: c.execute("INSERT INTO t VALUES (3,'x')"))
    )
    file.close_blocking()
    assert rows(tmp_path / "a.sqlite") == [(3, "x")]


class Inline(Executor):
    """What a simulated loop provides: the job runs at once, on the caller's thread."""

    def __init__(self) -> None:
        self.jobs = 0

    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> Future[Any]:
        self.jobs += 1
        future: Future[Any] = Future()
        future.set_result(fn(*args, **kwargs))
        return future


class LoopWithStoreExecutor(asyncio.SelectorEventLoop):
    """A loop that hands stores its own executor (as `dltmw/sim`'s virtual-time loop does)."""

    def __init__(self) -> None:
        super().__init__()
        self.inline = Inline()

    def store_executor(self, _name: str) -> Executor:
        return self.inline


def test_the_running_loop_may_supply_the_worker(tmp_path: Path) -> None:
    loop = LoopWithStoreExecutor()
    threads = threading.active_count()

    async def use() -> list[tuple[int, str]]:
        file = SqliteFile(tmp_path / "a.sqlite", SCHEMA)
        await file.open()
        await file.write("t", lambda c: c.execute("INSERT INTO t VALUES (4,'y')"))
        got = await file.read(lambda c: c.execute("SELECT k, v FROM t").fetchall())
        await file.close()
        return got

    try:
        assert loop.run_until_complete(use()) == [(4, "y")]
    finally:
        loop.close()
    assert loop.inline.jobs >= 3 and threading.active_count() == threads


async def test_reads_in_place_use_one_thread_and_stop_at_close(tmp_path: Path) -> None:
    file = SqliteFile(tmp_path / "a.sqlite", SCHEMA, reader=True)
    await file.open()
    await file.write("vault.record", lambda c: c.execute("INSERT INTO t VALUES (1, 'one')"))
    threads: list[str] = []

    def count(conn: sqlite3.Connection) -> int:
        threads.append(threading.current_thread().name)
        return int(conn.execute("SELECT count(*) FROM t").fetchone()[0])

    assert await file.snapshot_here(count) == 1  # on this thread: the caller's
    assert threads == [threading.current_thread().name]
    # From another thread (its own loop) it hops to the reader's worker like `snapshot`: the
    # in-place connection belongs to the first caller's thread only.
    assert await asyncio.to_thread(lambda: asyncio.run(file.snapshot_here(count))) == 1
    assert threads[1].startswith("store-read")
    await file.close()
    with pytest.raises(StoreClosed):
        await file.snapshot_here(count)


async def test_a_file_of_a_later_format_is_refused_untouched(tmp_path: Path) -> None:
    """A file a newer dltmw wrote (a later `user_version`) is refused before its schema or
    data are touched; a file without a number (older releases) gets today's."""
    path = tmp_path / "a.sqlite"
    with sqlite3.connect(path) as conn:
        conn.execute(f"PRAGMA user_version = {FORMAT + 1}")
    file = SqliteFile(path, SCHEMA)
    with pytest.raises(StoreFormatError, match="newer dltmw"):
        await file.open()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == FORMAT + 1
        assert conn.execute("SELECT name FROM sqlite_master").fetchall() == []  # no table made
    older = tmp_path / "b.sqlite"
    sqlite3.connect(older).close()
    file = SqliteFile(older, SCHEMA)
    await file.open()
    assert await file.read(lambda c: c.execute("PRAGMA user_version").fetchone()[0]) == FORMAT
    await file.close()


async def test_a_read_that_fails_transiently_is_surfaced_as_storage_unavailable(
    tmp_path: Path,
) -> None:
    """A read's busy/I-O/full fault reaches a client as UNAVAILABLE + STORAGE_UNAVAILABLE (it
    used to escape the servicer as a bare sqlite error: UNKNOWN); anything else is unchanged."""
    from dltmw.core.errors import TransientError
    from dltmw.ledger.failpoints import error_of
    from dltmw.v1 import errors_pb2

    file = SqliteFile(tmp_path / "a.sqlite", SCHEMA, reader=True, name="ledger")
    await file.open()

    def faulty(kind: str) -> Any:
        def read(_: sqlite3.Connection) -> None:
            raise error_of("test", kind)

        return read

    for read in (file.read, file.snapshot, file.snapshot_here):
        for kind in ("locked", "ioerror", "full"):
            with pytest.raises(TransientError) as caught:
                await read(faulty(kind))
            assert caught.value.reason == errors_pb2.ERROR_REASON_STORAGE_UNAVAILABLE
            assert caught.value.metadata == {"store": "ledger"}
        with pytest.raises(sqlite3.DatabaseError, match="malformed"):  # not transient: a bug
            await read(faulty("corrupt"))
        with pytest.raises(ZeroDivisionError):
            await read(lambda _: 1 // 0)
    # the file still works: a read's failure changed nothing
    await file.write("vault.record", lambda c: c.execute("INSERT INTO t VALUES (1, 'one')"))
    assert await file.snapshot_here(lambda c: c.execute("SELECT v FROM t").fetchall()) == [("one",)]
    await file.close()
