"""The spent-set of one notary-cluster replica: the single notary's tables plus the last applied
PBFT sequence, all written in ONE durable transaction per decider step (one or several
consecutive decided batches: `record_all`).

Why the sequence: the PBFT record log makes a decided batch durable before this store applies
it, so a crash can fall between the two. At restart the role re-applies every retained decided
batch above `applied` (`core/notary_cluster.unapplied`); re-applying is harmless anyway (a
signed tx_id keeps its signature, consumers never change), the sequence only avoids the work.
The spent table's primary key still makes a double spend impossible even if a decision were
wrong: the INSERT fails, the batch rolls back and the role stops.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from dltmw.core.handlers.notary import Spent
from dltmw.ledger.notary_store import NotaryStore, _write

APPLIED_SCHEMA = "CREATE TABLE IF NOT EXISTS applied (k INTEGER PRIMARY KEY, seq INTEGER NOT NULL)"


class ClusterNotaryStore(NotaryStore):
    """NotaryStore whose unit of work is one decided PBFT batch (decided by the role's
    `ClusterDecider` core; this store only loads rows and records)."""

    def _setup(self, conn: sqlite3.Connection) -> None:
        conn.execute(APPLIED_SCHEMA)

    @property
    def synchronous(self) -> str:
        """The sqlite synchronous mode (the record log uses the same)."""
        return self._synchronous

    def applied(self) -> int:
        """The last applied sequence (0 when none); runs on the store thread."""
        conn = self._conn
        row = conn.execute("SELECT seq FROM applied WHERE k=0").fetchone()
        return int(row[0]) if row else 0

    def signatures_of(self, tx_ids: Sequence[str]) -> dict[str, bytes]:
        """Stored signatures of those `tx_ids` already notarised here; runs on the store thread.
        A signed tx_id's answer never changes, so the role answers these without ordering."""
        return self.attestations(set(tx_ids))

    def record(self, spent: Spent) -> None:
        """Commit what the batch at `spent.sequence` spent and that sequence, in one
        transaction; runs on the store thread."""
        self.record_all((spent,))

    def record_all(self, spents: Sequence[Spent]) -> None:
        """Commit what several consecutive decided batches spent and the last one's sequence,
        in ONE transaction (one fsync for the decider's whole step: group commit); runs on the
        store thread. All or none: a crash leaves `applied` at the batch before the first, and
        the restart re-applies them all from the retained records."""
        if not spents:
            return
        rows = [self._remember(spent) for spent in spents]
        last = spents[-1].sequence

        def write(c: sqlite3.Connection) -> None:
            for spent, spent_rows in zip(spents, rows, strict=True):
                _write(c, spent, spent_rows)
            c.execute("INSERT OR REPLACE INTO applied(k, seq) VALUES (0, ?)", (last,))

        self._file.write_here("notary_cluster.record", write)
