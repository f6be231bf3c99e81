"""A state reader that reads each key of one private execution once.

`execution.execute` asks its state about the same keys several times: the contract's own reads
(`simulate`), then the pre-state hash (the value of every touched key), the touched versions and
the resulting values — four reads of one key for a `kv.put`. Below it is the private store: each
read is a sqlite statement on the store's thread, which gives up the GIL and must take it back
from a busy event loop (up to the interpreter's switch interval, 5 ms, per statement), so on a
loaded peer those repeated reads were the largest share of the store thread's time and delayed
every agreement and every executor step queued behind them (benchmarks/RESULTS.md, PRIV4).

Why caching is exact here: one execution runs on ONE state that does not change while it runs
(the executor applies a transaction's writes after `execute` returns; an agreement writes
nothing), so the first answer for a key is the answer for every later read of it in the same
execution. A range read's entries are that same state too, so they answer later point reads.
A reader lives for one execution only; nothing is kept across transactions.
"""

from __future__ import annotations

from dltmw.core.contract import StateReader
from dltmw.core.rwset import StateEntry, Version

Found = tuple[bytes, Version] | None


class ReadOnce:
    """`StateReader` over `state`, answering each (namespace, key) from its first read."""

    def __init__(self, state: StateReader) -> None:
        self._state = state
        self._seen: dict[tuple[str, str], Found] = {}

    def get(self, namespace: str, key: str) -> Found:
        """Value and version of a key, read from `state` the first time only."""
        at = (namespace, key)
        if at in self._seen:
            return self._seen[at]
        found = self._seen[at] = self._state.get(namespace, key)
        return found

    def range(self, namespace: str, start: str, end: str, limit: int) -> list[StateEntry]:
        """Keys in [start, end) from `state` (always asked: bounds and limits differ); the
        entries returned answer later point reads of those keys."""
        entries = self._state.range(namespace, start, end, limit)
        for entry in entries:
            self._seen.setdefault((namespace, entry.key), (entry.value, entry.version))
        return entries
