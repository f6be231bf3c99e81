"""Many rows written by a few sqlite statements: `INSERT ... VALUES (...),(...),...`.

Why not `executemany`. Python's sqlite3 module releases the GIL around every `sqlite3_step`,
and `executemany` steps once per row: a peer's block commit of 40 transactions stepped ~85
times on the writer's thread (a tx index row and a state row per transaction). Each step lets
go of the GIL and must win it back from the event loop's thread, which at saturation holds it:
a GIL hand-off (futex wake-ups, a context switch on both threads, and up to the interpreter's
switch interval of wait) per row, on the commit's path (benchmarks/RESULTS.md, 2026-12-04
22:35-00:25 UTC, branch kvstore). One multi-row INSERT steps once for all its rows.

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
