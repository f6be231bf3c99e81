"""Named failpoints in the storage paths: test-only fault injection (FoundationDB `BUGGIFY`,
etcd `gofail` style), enabled only by the environment variable `DLTMW_FAILPOINTS`.

Every durable write transaction of a node calls `hit(name)` after its statements ran and before
its COMMIT, so an injected fault exercises the real rollback and the real retry or stop. Names:

| name | where |
|---|---|
| `ledger.commit_block` | a block and its effects (peer and orderer ledger) |
| `ledger.enqueue` | the orderer's durable queue of admitted envelopes |
| `pbft.append`, `pbft.compact` | the PBFT-lite record log (orderer replicas and notary clusters) |
| `notary.record` | the single notary's spent-set and signatures |
| `notary_cluster.record` | a notary-cluster replica's spent-set, signatures and sequence |
| `privacy.store` | encrypted payloads (sender's Send and recipient's Push) |
| `privacy.execute`, `privacy.reset` | a block's private execution; forgetting private state |
| `vault.record`, `vault.dependencies` | a vault's transactions, states and outbox rows |
| `outbox.write` | deleting an outbox row once its recipient acknowledged |
| `<store>.read` | before each read of a store: a transient fault is answered STORAGE_UNAVAILABLE |

Stores: `ledger`, `notary`, `pbft-store`, `private-store`, `vault`, `ledger-pg`, `private-pg`.

Setting (read ONCE, when this module is first imported, i.e. at process start):
`DLTMW_FAILPOINTS="ledger.commit_block=locked*3@1;notary.record=ioerror"` — `;`-separated
`name=kind[*times][@skip]`: let the first `skip` hits pass (default 0), then fail `times` hits
(default: every hit). Kinds raise what sqlite itself raises: `locked`/`busy` →
`sqlite3.OperationalError("database is locked")` (SQLITE_BUSY), `ioerror` → "disk I/O error"
(SQLITE_IOERR), `full` → "database or disk is full" (SQLITE_FULL), `corrupt` →
`sqlite3.DatabaseError("database disk image is malformed")` (SQLITE_CORRUPT, not transient).
The exception carries a note naming the failpoint, so its traceback does too.

Cost when off: `hit` is a function whose body is one test of a module constant. The setting is
test-only: production deployments never set it, and `dltmw up`'s keeper drops it on restarts
(a restart models the operator's fix).
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
from dataclasses import dataclass

logger = logging.getLogger(__name__)

ENV = "DLTMW_FAILPOINTS"
NAMES = frozenset(
    {
        "ledger.commit_block",
        "ledger.enqueue",
        "pbft.append",
        "pbft.compact",
        "notary.record",
        "notary_cluster.record",
        "privacy.store",
        "privacy.execute",
        "privacy.reset",
        "vault.record",
        "vault.dependencies",
        "outbox.write",
        # reads (`retry.read_sync`), one per store: `<store's name>.read`
        "ledger.read",
        "notary.read",
        "pbft-store.read",
        "private-store.read",
        "vault.read",
        "ledger-pg.read",
        "private-pg.read",
    }
)
# kind -> (exception class, message, sqlite primary result code, its name)
KINDS: dict[str, tuple[type[sqlite3.Error], str, int, str]] = {
    "locked": (sqlite3.OperationalError, "database is locked", 5, "SQLITE_BUSY"),
    "busy": (sqlite3.OperationalError, "database is locked", 5, "SQLITE_BUSY"),
    "ioerror": (sqlite3.OperationalError, "disk I/O error", 10, "SQLITE_IOERR"),
    "full": (sqlite3.OperationalError, "database or disk is full", 13, "SQLITE_FULL"),
    "corrupt": (sqlite3.DatabaseError, "database disk image is malformed", 11, "SQLITE_CORRUPT"),
}


@dataclass
class Failpoint:
    """One armed failpoint: its fault kind, hits still to let pass, failures still to inject."""

    name: str
    kind: str
    skip: int = 0
    times: int | None = None  # None: every hit after `skip`

    def fire(self) -> bool:
        """Count one hit; True when this hit must fail."""
        if self.skip > 0:
            self.skip -= 1
            return False
        if self.times is None:
            return True
        if self.times > 0:
            self.times -= 1
            return True
        return False


def parse(spec: str) -> dict[str, Failpoint]:
    """The failpoints of a setting; ValueError naming the bad entry."""
    out: dict[str, Failpoint] = {}
    for entry in filter(None, (e.strip() for e in spec.split(";"))):
        name, sep, rest = entry.partition("=")
        name = name.strip()
        if not sep or name not in NAMES:
            raise ValueError(f"{ENV}: unknown failpoint in {entry!r} (known: {sorted(NAMES)})")
        rest, _, skip = rest.partition("@")
        kind, _, times = rest.partition("*")
        if kind not in KINDS:
            raise ValueError(f"{ENV}: unknown fault kind in {entry!r} (known: {sorted(KINDS)})")
        try:
            out[name] = Failpoint(name, kind, int(skip or 0), int(times) if times else None)
        except ValueError as exc:
            raise ValueError(f"{ENV}: bad count in {entry!r}") from exc
    return out


def error_of(name: str, kind: str) -> sqlite3.Error:
    """The exception sqlite raises for `kind`, noted with the failpoint's name."""
    cls, message, code, code_name = KINDS[kind]
    exc = cls(message)
    exc.sqlite_errorcode = code  # what sqlite3 sets on its own errors (Python >= 3.11)
    exc.sqlite_errorname = code_name
    exc.add_note(f"injected by failpoint {name} ({kind}, {ENV})")
    return exc


_ARMED: dict[str, Failpoint] = parse(os.environ.get(ENV, ""))
_LOCK = threading.Lock()  # stores run on their own threads


def hit(name: str) -> None:
    """Raise the configured fault at failpoint `name`, if armed (no-op when the setting is off)."""
    if not _ARMED:
        return
    point = _ARMED.get(name)
    if point is None:
        return
    with _LOCK:
        failing = point.fire()
    if failing:
        logger.warning("failpoint %s fires: %s", name, point.kind)
        raise error_of(name, point.kind)


def armed() -> dict[str, Failpoint]:
    """The armed failpoints (for a start-up log line)."""
    return dict(_ARMED)
