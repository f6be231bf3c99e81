"""One sqlite file of a node, opened and used one way: the storage seam every store goes through.

Every store of a node (the channel ledger, the PBFT-lite record log, the notary spent-sets, the
private store, the vault) keeps its data in one sqlite file and uses it through this class, so
the rules below hold for all of them and are written down once:

* **Opening** (`open`, or `open_blocking` for a store with a blocking API): the parent directory
  is created, the durability PRAGMAs are set (`durability.py`: WAL, `synchronous=FULL` by
  default), the storage format is checked (`FORMAT`, kept in sqlite's `user_version`: a file a
  newer dltmw wrote is refused with `StoreFormatError` before anything in it is touched, so a
  downgrade never half-reads or rewrites it; a file with no number yet is format 1; an older
  file is given today's number once opened), the schema is applied (idempotent
  `CREATE ... IF NOT EXISTS`), then the store's own `setup` (a check or a migration) runs. A
  mode that is not known is refused in the constructor, before the file is touched; a failing
  `setup` closes the connection and stops the worker before it raises, so a store that refuses
  to open leaves nothing behind.
* **One writer.** One connection, used by one thread only: the file's own worker thread. Every
  access is one hop to it (`read`, `write`), so a store never blocks the event loop and never
  runs two statements of its connection at once. Batch work into one hop (a hop costs
  ~70-100 µs): a whole block is one call, not one call per statement.
* **One transaction idiom.** Every durable change is `write(name, body)`: BEGIN IMMEDIATE, the
  body, the failpoint `name`, COMMIT — retried whole on transient faults (`retry.py`), rolled
  back on anything else. `write_here` is the same for code already on the file's thread.
* **Reads fail softly.** A read that fails with a fault that may pass (busy, an I/O error, a full
  disk) raises `TransientError(STORAGE_UNAVAILABLE)` (`retry.read_sync`): a client is told to
  retry, a loop retries; a read changes nothing, so there is nothing to roll back.
* **Snapshot reads** (`snapshot(fn)`, only when made with `reader=True`): a second, read-only
  connection on a second thread, `fn` inside one read transaction. In WAL mode it sees one
  committed state while the writer goes on (contract simulation reads many keys this way).
* **Small reads in place** (`snapshot_here(fn)`, `reader=True` stores): a third read-only
  connection used on the caller's own thread (the event loop's), for reads known to be a few
  indexed point lookups (~6 µs each). At low load a lone transaction's path has several such
  reads (duplicate checks, a commit's version reads), and each hop to the reader thread cost
  ~0.3-1 ms of latency there (the thread wakes, then the loop must come round for the result)
  against ~50 µs of work; the caller bounds what it reads in place (`ChannelLedger`). Called
  from a thread other than the first caller's, it hops like `snapshot` (one thread per
  connection, always).

Where the thread comes from is the running event loop's business, like its clock
(`aio/clock.py`): a loop that offers `store_executor(name)` — the simulator's virtual-time loop
(`dltmw/sim/vloop.py`) — gets every hop run inline on the loop's thread, so a simulated run has
no thread at all. A whole transaction is then one uninterrupted call, so a simulated crash (which
stops a node between two steps of the loop) finds the file exactly as it was after its last
COMMIT — what kill -9 leaves.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Callable
from concurrent.futures import Executor, ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from dltmw.ledger.durability import durable_pragmas
from dltmw.ledger.page_cache import READER_CACHE_KIB, WRITER_CACHE_KIB, bound_cache
from dltmw.ledger.retry import DEFAULT_RETRY, RetryPolicy, read_sync, write_sync

T = TypeVar("T")
Setup = Callable[[sqlite3.Connection], None]
# The layout of every dltmw sqlite file. A release that changes a layout raises it and migrates
# older files in `_open` (docs/deploy.md, "Upgrades").
# Format 2: the notary keeps each decided batch once (`ledger/notary_store.py`; format-1 files
# open unchanged, their rows stay valid).
FORMAT = 2


class StoreFormatError(ValueError):
    """A file written by a newer dltmw (a later storage format): not opened, not changed."""


def store_executor(name: str) -> Executor:
    """The one worker a store's connection lives on: a thread of its own, or what the running
    event loop provides instead (`store_executor(name)`, the simulator's inline executor)."""
    try:
        loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
    except RuntimeError:
        loop = None
    factory = getattr(loop, "store_executor", None)
    if factory is not None:
        executor: Executor = factory(name)
        return executor
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)


class StoreClosed(RuntimeError):
    """A store was used after `close` (a programming error: stop users before closing)."""


class SqliteFile:
    """One sqlite file: opening, one writer connection on its own worker, one write idiom."""

    def __init__(
        self,
        path: Path,
        schema: str,
        *,
        synchronous: str = "FULL",
        retry: RetryPolicy = DEFAULT_RETRY,
        name: str = "store",
        reader: bool = False,
    ) -> None:
        self._pragmas = durable_pragmas(synchronous)  # ValueError before touching the file
        self.path = path
        self.synchronous = synchronous
        self.retry = retry
        self.name = name
        self._schema = schema
        self._executor = store_executor(name)
        self._conn: sqlite3.Connection | None = None
        self._reader_executor = store_executor(f"{name}-read") if reader else None
        self._reader: sqlite3.Connection | None = None
        self._here: sqlite3.Connection | None = None  # `snapshot_here`'s, on `_here_thread`
        self._here_thread: int | None = None
        self.created = False  # True when `open` created the file
        self._closed = False

    # --- lifecycle ---------------------------------------------------------------------------

    async def open(self, setup: Setup | None = None) -> None:
        """Open (creating if needed): pragmas, schema, then `setup(connection)` (the store's
        check or migration); raises what `setup` raises, with nothing left open (no connection,
        no worker thread: they would keep a node that refuses to start from exiting)."""
        try:
            await self._hop(lambda: self._open(setup))
        except BaseException:
            self._shutdown()
            raise

    def open_blocking(self, setup: Setup | None = None) -> None:
        """`open` for a caller that may block (it waits for the file's worker)."""
        try:
            self._executor.submit(self._open, setup).result()
        except BaseException:
            self._shutdown()
            raise

    def _open(self, setup: Setup | None) -> None:
        self.created = not self.path.exists()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            for pragma in self._pragmas:
                conn.execute(pragma)
            bound_cache(conn, WRITER_CACHE_KIB)
            _check_format(conn, self.path)
            conn.executescript(self._schema)
            if setup is not None:
                setup(conn)
        except BaseException:
            conn.close()
            raise
        self._conn = conn

    async def close(self) -> None:
        """Close both connections and stop the workers (idempotent)."""
        if self._closed:
            return
        await self._hop(self._close_writer)
        if self._reader_executor is not None:
            await asyncio.get_running_loop().run_in_executor(
                self._reader_executor, self._close_reader
            )
        self._close_here()
        self._shutdown()

    def close_blocking(self) -> None:
        """`close` for a caller that may block."""
        if self._closed:
            return
        self._executor.submit(self._close_writer).result()
        if self._reader_executor is not None:
            self._reader_executor.submit(self._close_reader).result()
        self._close_here()
        self._shutdown()

    def _close_writer(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _close_reader(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None

    def _close_here(self) -> None:
        if self._here is not None and self._here_thread == threading.get_ident():
            self._here.close()
        self._here = None  # (another thread's is left to the garbage collector)

    def _shutdown(self) -> None:
        self._closed = True
        self._executor.shutdown(wait=True)
        if self._reader_executor is not None:
            self._reader_executor.shutdown(wait=True)

    # --- work on the writer's worker -------------------------------------------------------

    @property
    def executor(self) -> Executor:
        """The file's worker, for a store whose methods run on it (`loop.run_in_executor`)."""
        return self._executor

    @property
    def connection(self) -> sqlite3.Connection:
        """The writer connection: ONLY for code running on the file's worker."""
        if self._conn is None:
            raise StoreClosed(f"{self.path.name}: store is closed")
        return self._conn

    async def read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """`fn(connection)` on the file's worker (reads; no transaction is opened)."""
        return await self._hop(lambda: read_sync(self.name, lambda: fn(self.connection)))

    async def write(self, name: str, body: Callable[[sqlite3.Connection], T]) -> T:
        """`body` as ONE transaction on the file's worker (see the module docstring)."""
        return await self._hop(lambda: self.write_here(name, body))

    def write_here(self, name: str, body: Callable[[sqlite3.Connection], T]) -> T:
        """`write` for code already running on the file's worker (blocking)."""
        return write_sync(self.connection, name, body, self.retry)

    def run_blocking(self, fn: Callable[[], T]) -> T:
        """Run `fn` on the file's worker and wait for it (blocking)."""
        return self._executor.submit(fn).result()

    async def _hop(self, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn)

    # --- snapshot reads --------------------------------------------------------------------

    async def snapshot(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """`fn(reader)` inside one read transaction on the reader's worker."""
        if self._reader_executor is None:
            raise TypeError(f"{self.name}: made without reader=True")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._reader_executor, self._in_snapshot, fn)

    async def snapshot_here(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """`snapshot(fn)` run on this thread, without a hop, for SMALL reads only (module
        docstring); from any other thread than the first caller's it is `snapshot(fn)`."""
        me = threading.get_ident()
        if self._here_thread is None:
            self._here_thread = me
        if self._here_thread != me or self._reader_executor is None:
            return await self.snapshot(fn)
        if self._here is None:
            self._here = self._read_only()
        here = self._here
        return read_sync(self.name, lambda: _in_transaction(here, fn))

    def _read_only(self) -> sqlite3.Connection:
        if self._conn is None or self._closed:
            raise StoreClosed(f"{self.path.name}: store is closed")
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA query_only=ON")
        bound_cache(conn, READER_CACHE_KIB)
        return conn

    def _in_snapshot(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._reader is None:
            self._reader = self._read_only()
        reader = self._reader
        return read_sync(self.name, lambda: _in_transaction(reader, fn))


def _check_format(conn: sqlite3.Connection, path: Path) -> None:
    """Refuse a file of a later format; number one that has none (see the module docstring)."""
    found = int(conn.execute("PRAGMA user_version").fetchone()[0])
    if found > FORMAT:
        raise StoreFormatError(
            f"{path} was written by a newer dltmw (storage format {found}; this version reads"
            f" format {FORMAT} and older): run that version, or restore the data directory from"
            " a backup made with this one (docs/deploy.md, Upgrades)"
        )
    if found < FORMAT:
        conn.execute(f"PRAGMA user_version = {FORMAT}")


def _in_transaction(conn: sqlite3.Connection, fn: Callable[[sqlite3.Connection], T]) -> T:
    """`fn(conn)` inside one read transaction (one WAL snapshot)."""
    conn.execute("BEGIN")
    try:
        return fn(conn)
    finally:
        conn.execute("COMMIT")
