"""This node's agreement runs kept for their commit, in a bounded map (`core/privacy/reuse.py`).

The agreement side (`agreement.py`) keeps each run it made of a payload (the latest one: a
retried collection runs again, on a newer state); the private executor takes a block's runs
out as it loads the block (`executor.py` `BlockExecutor.load`) and its core reuses one only when
nothing the run depended on changed. Both sides touch the map on the event loop only (the runs
themselves are made on the store's reader thread and handed back), so it needs no lock.

Keyed by payload hash alone: a payload's execution depends on its bytes (checked exactly at
commit), the deployed contract (compared by identity) and the keys' values (the pre-state
hash), never on the transaction carrying it, so two transactions with the same payload may
share one entry and each is still judged on its own state. Bounded by `KEPT_MAX` (oldest out
first): an entry leaves when its block is loaded, and a run whose transaction is never ordered
(a failed collection) ages out; a miss costs only the second run it always cost. Not kept
across a restart: the executor then runs every payload, as before.
"""

from __future__ import annotations

from collections.abc import Iterable

from dltmw.core.privacy.reuse import PriorRun

# Runs between agreement and commit: rate x (agreement-to-commit time), ~2,000 at 2,000 tx/s
# and 1 s; four times that, at a few hundred bytes per entry (keys, written values), ~2-4 MB.
KEPT_MAX = 8192


class PriorRuns:
    """Payload hash -> this node's latest agreement run of it, at most `limit` entries."""

    def __init__(self, limit: int = KEPT_MAX) -> None:
        self._limit = limit
        self._runs: dict[bytes, PriorRun] = {}

    def __len__(self) -> int:
        return len(self._runs)

    def keep(self, digest: bytes, run: PriorRun | None) -> None:
        """Keep `run` as the latest of payload `digest` (None: the latest run is not reusable,
        so an older one is dropped too: a newer state may have made it stale)."""
        self._runs.pop(digest, None)  # re-inserted last: the oldest leave first
        if run is None:
            return
        self._runs[digest] = run
        while len(self._runs) > self._limit:
            del self._runs[next(iter(self._runs))]

    def take(self, digests: Iterable[bytes]) -> dict[bytes, PriorRun]:
        """The runs of `digests` kept, removed from the map (their block is being executed)."""
        out: dict[bytes, PriorRun] = {}
        for digest in digests:
            run = self._runs.pop(digest, None)
            if run is not None:
                out[digest] = run
        return out
