"""The SQL seam of the private store: the one connection shape its code is written against.

The private store's logic (`private_store.py`, `private_purge.py`, `private_groups.py`) is
written ONCE, in sqlite's SQL, against `Db`: a sqlite3 connection is one as it is, and the
PostgreSQL backend (`private_pg.py`) gives an adapter that turns the same statements into
PostgreSQL's (placeholders, `INSERT OR IGNORE/REPLACE`) and text parameters into UTF-8 bytes.

Why text goes to PostgreSQL as bytes: private-state namespaces and keys may hold NUL (privacy
groups' namespaces start with one, `core/privacy/groups.py`), which PostgreSQL `text` cannot
hold, and range reads need sqlite's BINARY order of UTF-8, which is how `bytea` compares. So
every text column of the PostgreSQL private store is `bytea`, and code reading a text column
goes through `text()`, which accepts either form.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Protocol


class Rows(Protocol):
    """What a statement returns: a sqlite3 or psycopg cursor."""

    @property
    def rowcount(self) -> int:
        """Rows changed (summed over an executemany)."""
        ...

    def fetchone(self) -> Any:
        """The next row, or None."""
        ...

    def fetchall(self) -> list[Any]:
        """The remaining rows."""
        ...

    def __iter__(self) -> Iterator[Any]:
        """The remaining rows, one by one."""
        ...


class Db(Protocol):
    """A connection that runs the private store's (sqlite-dialect, `?`) statements."""

    def execute(self, sql: str, parameters: Sequence[Any] = (), /) -> Rows:
        """Run one statement."""
        ...

    def executemany(self, sql: str, parameters: Iterable[Sequence[Any]], /) -> Rows:
        """Run one statement per parameter row."""
        ...


def text(value: str | bytes) -> str:
    """A text column's value: str on sqlite, its UTF-8 bytes on PostgreSQL (module docstring)."""
    return value if isinstance(value, str) else bytes(value).decode()
