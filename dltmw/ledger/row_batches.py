"""Many rows written by a few sqlite statements: `INSERT ... VALUES (...),(...),...`.

Why not `executemany`. It runs the statement once per row (bind, step, reset), and Python's
sqlite3 module releases and re-takes the GIL around every step: a peer's commit of a 40-tx block
ran ~87 statements on the writer's thread, 80 of them a row each. One multi-row INSERT binds and
steps once for all its rows: 2 statements per table for 40 rows. Measured (benchmarks/
RESULTS.md, 2026-12-04 22:36-23:17 UTC, branch kvstore): the statements' CPU 2.94 -> 2.53 us per
transaction; the writer's context switches per block did not change (it re-takes the GIL before
the loop's thread wakes), so the gain is the count and that CPU, not hand-offs.

Same rows, same order. A multi-row VALUES inserts its rows one after the other in the order
given, under the statement's conflict clause, exactly as `executemany` of the same rows would
(`INSERT OR IGNORE` keeps the first of two rows with one key, `INSERT OR REPLACE` the last);
`tests/unit/test_row_batches.py` checks that against `executemany` on random rows.

Statement text. Rows go in chunks of power-of-two sizes up to `CHUNK_ROWS_MAX` (40 rows = 32 +
8), so a table has at most 7 distinct statement texts, made once (`_statement`) and kept
prepared in the connection's statement cache (128 texts), and a chunk stays far below sqlite's
bound parameters (`CHUNK_ROWS_MAX` times columns ≤ 999, the oldest default).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any, Protocol

CHUNK_ROWS_MAX = 64


class Executes(Protocol):
    """A connection that runs one statement: sqlite3's, or the private store's on PostgreSQL
    (`private_pg.PgPrivateConnection`, which turns `INSERT OR ...` into its dialect)."""

    def execute(self, sql: str, parameters: Sequence[Any], /) -> Any: ...


def insert_rows(conn: Executes, head: str, rows: Sequence[Sequence[object]]) -> None:
    """`head` (e.g. "INSERT OR IGNORE INTO txs") with `rows` as its VALUES, rows of equal width,
    in as few statements as the chunking allows (module docstring)."""
    if not rows:
        return
    width = len(rows[0])
    start = 0
    for size in chunk_sizes(len(rows)):
        params = [value for row in rows[start : start + size] for value in row]
        conn.execute(_statement(head, width, size), params)
        start += size


def chunk_sizes(count: int) -> list[int]:
    """`count` as a sum of powers of two of at most `CHUNK_ROWS_MAX`, largest first."""
    sizes: list[int] = []
    size = CHUNK_ROWS_MAX
    while count > 0:
        while size > count:
            size //= 2
        sizes.append(size)
        count -= size
    return sizes


def in_lists(values: Sequence[object]) -> list[list[object]]:
    """`values` as the bound lists of a few `... IN (?,...)` reads: chunks of at most
    `CHUNK_ROWS_MAX`, each padded by repeating its last value to a power of two up to 8 and
    to a multiple of 8 above (1, 2, 4, 8, 16, 24, ..., 64: 11 statement texts).

    Why pad a read, not split it as `chunk_sizes` splits an INSERT. An IN list is a set: a
    repeated value changes no answer, and sqlite builds its ephemeral index of the list once
    per statement, so a repeat costs an index insert while a statement more costs its bind,
    step and Python-side cursor: 15 ids as one IN of 16 take ~1.8 us per id against ~2.2 as
    8 + 4 + 2 + 1 (a 40,000-id tx index, benchmarks/RESULTS.md, branch kvdup). Below 8 a
    power of two: 1 id padded to 8 cost 1.7 times one id alone."""
    lists: list[list[object]] = []
    for start in range(0, len(values), CHUNK_ROWS_MAX):
        chunk = list(values[start : start + CHUNK_ROWS_MAX])
        count = len(chunk)
        size = 1 << (count - 1).bit_length() if count <= 8 else -(-count // 8) * 8
        lists.append(chunk + chunk[-1:] * (size - count))
    return lists


@functools.lru_cache(maxsize=128)
def _statement(head: str, width: int, size: int) -> str:
    one = "(" + ",".join("?" * width) + ")"
    return f"{head} VALUES {','.join([one] * size)}"
