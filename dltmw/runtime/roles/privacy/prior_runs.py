"""The agreement runs of one channel, kept until their transactions' blocks are executed.

The agreement of a private transaction runs it on this node (`agreement.py`); the private
executor runs it again when its block commits. The executor reuses the first run when it is
provably the same (`core/privacy/prior_run.py`): this is where the runs wait in between.
Both sides use it on the event loop only (the runs are put after the store thread answered,
taken when the executor loads a block), so it needs no lock.

Bounded: a run whose transaction is never ordered (a failed collection, a client that gave up)
would otherwise stay forever; the oldest go first. `RUNS_MAX` is several seconds of runs at the
rates measured (an agreement precedes its commit by about one closed-loop latency, ~1-2 s under
load), each a few hundred bytes with the values read and written. A run dropped, or never
kept (after a restart), costs one execution at commit, never a different result.
"""

from __future__ import annotations

from collections.abc import Iterable

from dltmw.core.privacy.prior_run import PriorRun

RUNS_MAX = 4096


class PriorRuns:
    """Payload hash -> this node's latest agreement run of it, the newest `limit`."""

    def __init__(self, limit: int = RUNS_MAX) -> None:
        self._limit = limit
        self._runs: dict[bytes, PriorRun] = {}

    def __len__(self) -> int:
        return len(self._runs)

    def keep(self, digest: bytes, run: PriorRun) -> None:
        """Remember a run (a later run of the same payload replaces it: it read a newer state)."""
        self._runs.pop(digest, None)
        self._runs[digest] = run
        while len(self._runs) > self._limit:
            del self._runs[next(iter(self._runs))]

    def take(self, digests: Iterable[bytes]) -> dict[bytes, PriorRun]:
        """The runs of these payloads, forgotten here (each commit uses its run once)."""
        out: dict[bytes, PriorRun] = {}
        for digest in digests:
            run = self._runs.pop(digest, None)
            if run is not None:
                out[digest] = run
        return out

    def clear(self) -> None:
        """Forget every run (the private state is derived again from block 0)."""
        self._runs.clear()
