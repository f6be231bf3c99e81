"""How much of a sqlite file each connection of a node keeps in its own page cache.

Why bounded, and smaller than sqlite's default. sqlite keeps up to `cache_size` pages per
CONNECTION (default 2,000 KiB) and frees them only when the connection closes. A store has up
to three long-lived connections (the writer, the snapshot reader, the in-place reader:
`sqlite_file.py`) and the background chain check opens one per chunk (`ledger/sqlite.py`), so a
peer's channel ledger could hold ~8 MB of pages — mostly block bodies (overflow pages of ~250 KB
blocks) that the writer wrote once and the reader streamed once to Deliver, never read again
from that cache. Every page a connection misses is still in the operating system's page cache
(one `pread`, microseconds); what earns a place in sqlite's own cache is the B-tree interior
pages every lookup walks, a few hundred KiB even for a million keys. The writer keeps more: a
block's commit touches the blocks, txs and state trees and rewrites their pages in one
transaction, and pages it must spill before COMMIT cost a second write.

The bounds are per connection (`PRAGMA cache_size`, negative = KiB), set where each connection
is opened; `tests/unit/test_page_cache.py` reads them back from every connection a store uses.
"""

from __future__ import annotations

import sqlite3

WRITER_CACHE_KIB = 1024
READER_CACHE_KIB = 512


def bound_cache(conn: sqlite3.Connection, kib: int) -> None:
    """Keep at most `kib` KiB of pages in `conn`'s own cache."""
    conn.execute(f"PRAGMA cache_size=-{int(kib)}")
