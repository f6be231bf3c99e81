"""Privacy groups in the private store: membership and each group's own state hash.

A group's membership and state are rows of the private store's `pstate` table under the
group's reserved namespaces (`core/privacy/groups.py`: `"\\x00g\\x00<group>\\x00..."`), written
by the private executor in block order like any private write. So no table, no storage format
change and no migration: an existing store's private state is the no-group state, unchanged
(its namespaces are contract names, which never start with NUL).

Each group's state hash is the same multiset hash as the store's (`core/statehash.py`), over
the group's rows only: members that executed the same group transactions have the same one,
whatever else (other groups, the no-group state) each of them holds. Computed on demand, O(the
group's state); the membership record's version is the block of the group's last change.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from dltmw.core.privacy.groups import PREFIX, members_of, scoped
from dltmw.core.rwset import Version
from dltmw.core.statehash import accumulate
from dltmw.ledger.at_rest import PLAIN, ValueCodec
from dltmw.ledger.private_sql import Db, text
from dltmw.ledger.private_store import PrivateTxn, pstate_entries


def members(view: PrivateTxn, group: str) -> tuple[tuple[str, ...] | None, Version | None]:
    """The group's member organisations (None: no such group here) and the block of its last
    change (the record's version)."""
    return members_of(view, group)


def _bounds(prefix: str) -> tuple[str, str]:
    """[low, high) of every namespace starting with `prefix` (which ends with NUL)."""
    return prefix, prefix[:-1] + "\x01"


def group_ids(conn: Db) -> list[str]:
    """Every group this store holds a state of, sorted."""
    low, high = _bounds(PREFIX)
    rows = conn.execute(
        "SELECT DISTINCT namespace FROM pstate WHERE namespace>=? AND namespace<?", (low, high)
    )
    return sorted({text(r[0])[len(PREFIX) :].split("\x00", 1)[0] for r in rows})


def group_state_hash(conn: Db, group: str, values: ValueCodec = PLAIN) -> bytes:
    """The multiset hash of the group's private state (membership record included)."""
    low, high = _bounds(scoped(group, ""))
    rows = conn.execute(
        "SELECT namespace, key, value, block_number, tx_index FROM pstate"
        " WHERE namespace>=? AND namespace<?",
        (low, high),
    )
    return _digest(rows, values)


def no_group_state_hash(conn: Db, values: ValueCodec = PLAIN) -> bytes:
    """The multiset hash of the private state outside every group."""
    low, high = _bounds(PREFIX)
    rows = conn.execute(
        "SELECT namespace, key, value, block_number, tx_index FROM pstate"
        " WHERE NOT (namespace>=? AND namespace<?)",
        (low, high),
    )
    return _digest(rows, values)


def _digest(rows: Iterable[Any], values: ValueCodec) -> bytes:
    """The multiset hash of pstate rows (namespace, key, value, block, index), values opened."""
    return accumulate(pstate_entries(rows, values)).digest()
