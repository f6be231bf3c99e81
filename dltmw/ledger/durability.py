"""The durability settings every sqlite file of a node uses, in one place.

WAL lets readers (simulation snapshots, queries) run beside the one writer; `synchronous=FULL`
(the default) makes a committed transaction survive power loss, which is what lets a node reply
only after its commit. `NORMAL` trades that for speed (a crash may lose the last commits, never
corrupt the file) and is offered for benchmarks; `EXTRA` also syncs the directory.
"""

from __future__ import annotations

SYNCHRONOUS_MODES = frozenset({"FULL", "NORMAL", "EXTRA"})


def durable_pragmas(synchronous: str) -> tuple[str, str]:
    """The PRAGMAs to run on every new connection; ValueError for an unknown mode."""
    if synchronous not in SYNCHRONOUS_MODES:
        raise ValueError(f"unsupported synchronous mode {synchronous!r}")
    return ("PRAGMA journal_mode=WAL", f"PRAGMA synchronous={synchronous}")
