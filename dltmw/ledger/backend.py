"""The seam between a node's roles and the store of a channel ledger: what they may ask of it.

Two backends implement it: `sqlite.ChannelLedger` (one file per node and channel, the default)
and `postgresql.PgChannelLedger` (a peer's ledger in a schema of a PostgreSQL database,
`state = "postgresql"` in node.toml, `docs/postgresql.md`). The roles (committer, endorser,
gateway, explorer, block feeds) are typed against these Protocols only, so either backend serves
them unchanged; the Protocols are structural, so the sqlite ledger's hot path keeps its own
methods as they were (no wrapper, no extra await or copy).

Rules every backend keeps (the ledger test suite runs on both, `tests/unit/test_ledger_*`):
* a block and ALL its effects (block bytes with this peer's codes, tx index, world-state writes,
  the state hash, the orderer queue entries it consumed) commit in ONE transaction, so a crash
  leaves all of a block or none of it and opening re-verifies the chain and resumes;
* `read_snapshot(fn)` runs `fn` against ONE consistent committed state (a simulation never sees
  half a block), synchronously (contract simulation makes many small reads);
* keys compare as their UTF-8 bytes (range reads and the state hash depend on that order).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Protocol, TypeVar

from dltmw.core.block import TxRecord
from dltmw.core.handlers.base import PendingEnvelope
from dltmw.core.identity_table import IdentityTable, TableEntry
from dltmw.core.rwset import StateEntry, StateWrite, Version
from dltmw.ledger.audit import LedgerAudit
from dltmw.v1 import block_pb2

T = TypeVar("T")
KeyVersions = dict[tuple[str, str], Version]
RangeVersions = dict[tuple[str, str, str], list[tuple[str, Version]]]
# The range reads' limit when a validation reads a whole range (it must see every key).
RANGE_ALL = 1_000_000


class StateReader(Protocol):
    """Synchronous reads inside one read transaction (used by contract simulation)."""

    def last_block_number(self) -> int:
        """Number of the last block in this snapshot (-1 before block 0)."""
        ...

    def get(self, namespace: str, key: str) -> tuple[bytes, Version] | None:
        """Committed value and version of a key."""
        ...

    def tx_record(self, tx_id: str) -> TxRecord | None:
        """Where `tx_id` committed (its first occurrence), or None."""
        ...

    def tx_records_found(self, tx_ids: Sequence[str]) -> dict[str, TxRecord]:
        """`tx_record` of each of `tx_ids` that committed, by a few statements (not one per id:
        a block's commit asks for all its ids at once)."""
        ...

    def range(self, namespace: str, start: str, end: str, limit: int) -> list[StateEntry]:
        """Keys in [start, end) (end "" = unbounded), in key order."""
        ...


class Ledger(Protocol):
    """Blocks, tx index, world state and orderer queue of one channel on one node."""

    @property
    def name(self) -> str:
        """Where it is, for messages (a file path, or a database schema)."""
        ...

    @property
    def created(self) -> bool:
        """True when this open created the ledger (the node's first start)."""
        ...

    @property
    def height(self) -> int:
        """Blocks held."""
        ...

    @property
    def last_hash(self) -> bytes:
        """Hash of the last block (ZERO_HASH before block 0)."""
        ...

    @property
    def state_hash(self) -> bytes:
        """Hash of the world state block height-1 left."""
        ...

    @property
    def identities(self) -> IdentityTable:
        """The channel's client identity table as of this height (`core/identity_table.py`)."""
        ...

    async def close(self) -> None:
        """Release connections and threads (idempotent)."""
        ...

    async def commit_block(
        self,
        block: block_pb2.Block,
        tx_ids: Sequence[str],
        writes: Iterable[StateWrite] = (),
        consumed_seq: int = 0,
        identities: Sequence[TableEntry] = (),
    ) -> None:
        """Append `block` and all its effects (the identity-table entries it adds among them)
        in one transaction."""
        ...

    async def enqueue(self, pending: Sequence[PendingEnvelope]) -> None:
        """Durably queue admitted envelopes (orderer) in one transaction."""
        ...

    async def pending(self) -> list[PendingEnvelope]:
        """Queued envelopes not yet in a block, in order."""
        ...

    async def block(self, number: int) -> block_pb2.Block | None:
        """The stored block `number`, or None."""
        ...

    async def blocks(self, start: int, stop: int) -> list[block_pb2.Block]:
        """Blocks start..stop-1 that exist."""
        ...

    async def block_data(self, start: int, stop: int) -> list[bytes]:
        """Blocks start..stop-1 that exist, serialised as stored."""
        ...

    async def blocks_before(self, before: int, limit: int) -> list[block_pb2.Block]:
        """Up to `limit` blocks numbered below `before`, newest first."""
        ...

    async def verify_stored_chain(self) -> None:
        """Check the whole stored chain from block 0 (after an open that checked its tail only,
        `chain_check.py`); InvariantViolation on a break."""
        ...

    async def tx_record(self, tx_id: str) -> TxRecord | None:
        """Where `tx_id` committed, or None."""
        ...

    async def tx_records(self, tx_ids: Sequence[str]) -> list[TxRecord | None]:
        """`tx_record` of many ids at once."""
        ...

    async def existing_tx_ids(self, tx_ids: Iterable[str]) -> set[str]:
        """The subset of `tx_ids` already on the ledger."""
        ...

    async def versions(self, keys: Iterable[tuple[str, str]]) -> KeyVersions:
        """Committed versions of the given (namespace, key) pairs that exist."""
        ...

    async def ranges(self, ranges: Iterable[tuple[str, str, str]]) -> RangeVersions:
        """Committed (key, version) lists of the given ranges."""
        ...

    async def commit_reads(
        self,
        keys: Iterable[tuple[str, str]],
        ranges: Iterable[tuple[str, str, str]],
        tx_ids: Iterable[str],
    ) -> tuple[KeyVersions, RangeVersions, set[str]]:
        """`versions`, `ranges` and `existing_tx_ids` from one read transaction."""
        ...

    async def delta_values(self, keys: Iterable[tuple[str, str]]) -> dict[tuple[str, str], bytes]:
        """Committed values of the given (namespace, key) pairs that exist."""
        ...

    async def audit(self, numbers: Sequence[int], chain_from: int, recompute: bool) -> LedgerAudit:
        """Heights and hashes for `dltmw audit`, from one consistent snapshot."""
        ...

    async def read_snapshot(self, fn: Callable[[StateReader], T]) -> T:
        """Run `fn` inside one read transaction."""
        ...

    async def read_small(self, lookups: int, fn: Callable[[StateReader], T]) -> T:
        """`read_snapshot(fn)` for an `fn` of about `lookups` point reads: in place (no thread
        hop) where the backend can read a few keys cheaply, still one consistent snapshot."""
        ...


def versions_of(reader: StateReader, keys: Iterable[tuple[str, str]]) -> KeyVersions:
    """Versions of the keys of `keys` that exist, read through `reader`."""
    found: KeyVersions = {}
    for ns, key in keys:
        got = reader.get(ns, key)
        if got is not None:
            found[(ns, key)] = got[1]
    return found


def values_of(reader: StateReader, keys: Iterable[tuple[str, str]]) -> dict[tuple[str, str], bytes]:
    """Values of the keys of `keys` that exist, read through `reader`."""
    return {(ns, key): got[0] for ns, key in keys if (got := reader.get(ns, key)) is not None}


def ranges_of(reader: StateReader, ranges: Iterable[tuple[str, str, str]]) -> RangeVersions:
    """Every (key, version) of each range, read through `reader`."""
    return {
        (ns, s, e): [(x.key, x.version) for x in reader.range(ns, s, e, RANGE_ALL)]
        for ns, s, e in ranges
    }
