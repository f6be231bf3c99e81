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
import sqlite3
from collections.abc import Sequence

CHUNK_ROWS_MAX = 64


def insert_rows(conn: sqlite3.Connection, head: str, rows: Sequence[Sequence[object]]) -> None:
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


@functools.lru_cache(maxsize=128)
def _statement(head: str, width: int, size: int) -> str:
    one = "(" + ",".join("?" * width) + ")"
    return f"{head} VALUES {','.join([one] * size)}"
