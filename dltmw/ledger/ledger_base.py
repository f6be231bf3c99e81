"""What both channel-ledger backends do the same way above their storage (`sqlite.ChannelLedger`,
`postgresql.PgChannelLedger`): written once so the two cannot drift apart.

The in-memory position (height, last hash, state accumulator), the checks made on open (the hash
chain from block 0, the stored accumulator against the height), the preparation of a block's
rows and the bookkeeping after its one transaction committed, the newest blocks kept serialised
for followers, and the reads that are compositions of a backend's primitives (`read_snapshot`,
`tx_records`, `_stored_data`). No method here awaits more than its backend's one hop, so the
sqlite ledger's hot path is what it was.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from dltmw.core.block import TxRecord, block_hash
from dltmw.core.errors import InvariantViolation
from dltmw.core.hashing import ZERO_HASH
from dltmw.core.identity_table import IdentityTable, TableEntry
from dltmw.core.rwset import StateWrite
from dltmw.core.statehash import KeyRef, StateAccumulator, final_writes
from dltmw.ledger.backend import (
    KeyVersions,
    RangeVersions,
    StateReader,
    ranges_of,
    values_of,
    versions_of,
)
from dltmw.ledger.chain_check import check_rows
from dltmw.v1 import block_pb2

T = TypeVar("T")
# Serialised blocks just committed, kept so that a follower (Deliver, Events) reads the newest
# blocks without a hop to the store: at low load every block has one follower read per
# subscriber, and the hop cost as much as the rest of sending the block.
RECENT_BLOCKS = 8
IDS_PER_LOOKUP = 2  # tx ids in an IN list that cost about one point lookup (`tx_ids_cost`)


@dataclass(frozen=True)
class PreparedBlock:
    """A block's rows, made before its transaction: the tx index rows (tx_id, number, index,
    code) and the final write of each key (only the last write to a key counts: a delete and a
    later rewrite in one block must leave the rewrite, whatever order a backend applies them)."""

    number: int
    digest: bytes
    data: bytes
    tx_rows: list[tuple[str, int, int, int]]
    final: dict[KeyRef, StateWrite]


class LedgerBase(ABC):
    """The backend-independent half of a channel ledger (module docstring)."""

    def __init__(self) -> None:
        self.created = False  # True when this open created the ledger (the node's first start)
        self.height = 0
        self.last_hash = ZERO_HASH
        self._acc = StateAccumulator()
        self.state_hash = self._acc.digest()  # stored with block height-1
        self._recent: dict[int, bytes] = {}  # number -> data, the last RECENT_BLOCKS committed
        # The channel's client identity table (`core/identity_table.py`): loaded at open, grown
        # by each block's commit after its transaction, which stored the same rows.
        self.identities = IdentityTable()

    @property
    @abstractmethod
    def name(self) -> str:
        """Where it is, for messages."""

    @abstractmethod
    async def read_snapshot(self, fn: Callable[[StateReader], T]) -> T:
        """Run `fn` inside one read transaction."""

    async def read_small(self, lookups: int, fn: Callable[[StateReader], T]) -> T:
        """`read_snapshot(fn)` for an `fn` of about `lookups` point reads, which a backend may
        run in place, without a thread hop (sqlite: `ChannelLedger.read_small`); here, on
        the reader like any snapshot (a PostgreSQL read is a round trip to the server)."""
        return await self.read_snapshot(fn)

    @abstractmethod
    async def tx_records(self, tx_ids: Sequence[str]) -> list[TxRecord | None]:
        """`tx_record` of many ids at once."""

    @abstractmethod
    async def _stored_data(self, start: int, stop: int) -> list[bytes]:
        """Blocks start..stop-1 read from the store, serialised as stored."""

    # --- opening ---------------------------------------------------------------------------

    def _verify_chain(
        self,
        rows: Iterable[tuple[int, bytes, bytes]],
        first: int = 0,
        previous: bytes = ZERO_HASH,
    ) -> None:
        """Check the stored (number, hash, data) rows, in order, link from block `first`
        (whose predecessor's hash is `previous`); sets the height and last hash; raises
        InvariantViolation. From block 0 it is the whole chain; from `first` > 0 it is the
        tail checked at open (`chain_check.py`)."""
        self.height, self.last_hash = check_rows(self.name, rows, first, previous)

    def _load_accumulator(self, block_number: int, acc: bytes) -> None:
        """The stored accumulator row: it must be the last block's."""
        if block_number != self.height - 1:
            raise InvariantViolation(
                f"{self.name}: state hash stored for block {block_number}, height is {self.height}"
            )
        self._acc = StateAccumulator.from_bytes(acc)
        self.state_hash = self._acc.digest()

    # --- committing ------------------------------------------------------------------------

    def _prepare(
        self, block: block_pb2.Block, tx_ids: Sequence[str], writes: Iterable[StateWrite]
    ) -> PreparedBlock:
        """The rows of `block`, which must be the next one."""
        number = block.header.number
        if number != self.height:
            raise InvariantViolation(f"commit of block {number} at height {self.height}")
        codes = list(block.metadata.validation_codes)
        rows = [(t, number, i, codes[i] if codes else 0) for i, t in enumerate(tx_ids) if t]
        return PreparedBlock(
            number, block_hash(block), block.SerializeToString(), rows, final_writes(writes)
        )

    @staticmethod
    def _identity_rows(
        identities: Sequence[TableEntry],
    ) -> list[tuple[str, bytes, bytes, int]]:
        """A block's identity-table rows (org_id, certificate_ref, certificate_der, block)."""
        return [(e.org_id, e.certificate_ref, e.certificate_der, e.first_block) for e in identities]

    def _committed(
        self,
        prepared: PreparedBlock,
        acc: StateAccumulator,
        identities: Sequence[TableEntry] = (),
    ) -> None:
        """Move the in-memory position past a block whose transaction committed (and the
        identity table past the entries that transaction stored)."""
        self.identities.add(identities)
        number = prepared.number
        self.height, self.last_hash = number + 1, prepared.digest
        self._acc, self.state_hash = acc, acc.digest()
        self._recent[number] = prepared.data
        self._recent.pop(number - RECENT_BLOCKS, None)

    # --- reads -----------------------------------------------------------------------------

    async def block(self, number: int) -> block_pb2.Block | None:
        """The stored block `number` (with this node's metadata), or None."""
        found = await self.blocks(number, number + 1)
        return found[0] if found else None

    async def blocks(self, start: int, stop: int) -> list[block_pb2.Block]:
        """Blocks start..stop-1 that exist (the newest from memory: fresh copies either way)."""
        return [block_pb2.Block.FromString(d) for d in await self.block_data(start, stop)]

    async def block_data(self, start: int, stop: int) -> list[bytes]:
        """Blocks start..stop-1 that exist, serialised as stored (the newest from memory): what
        a follower sends on without parsing it (the orderer's Deliver)."""
        stop = min(stop, self.height)
        if start >= stop:
            return []
        recent = self._recent
        if all(n in recent for n in range(start, stop)):
            return [recent[n] for n in range(start, stop)]
        return await self._stored_data(start, stop)

    async def existing_tx_ids(self, tx_ids: Iterable[str]) -> set[str]:
        """The subset of `tx_ids` already on the ledger (one hop)."""
        wanted = [t for t in set(tx_ids) if t]
        if not wanted:
            return set()
        records = await self.tx_records(wanted)
        return {t for t, r in zip(wanted, records, strict=True) if r is not None}

    async def versions(self, keys: Iterable[tuple[str, str]]) -> KeyVersions:
        """Committed versions of the given (namespace, key) pairs that exist."""
        return await self.read_snapshot(lambda r: versions_of(r, keys))

    async def ranges(self, ranges: Iterable[tuple[str, str, str]]) -> RangeVersions:
        """Committed (key, version) lists of the given ranges."""
        return await self.read_snapshot(lambda r: ranges_of(r, ranges))

    async def delta_values(self, keys: Iterable[tuple[str, str]]) -> dict[tuple[str, str], bytes]:
        """Committed values of the given (namespace, key) pairs that exist: what a block's
        deltas apply to (`validation.delta_keys_of`); read only for blocks that carry deltas."""
        return await self.read_snapshot(lambda r: values_of(r, keys))


def commit_reader(
    keys: Iterable[tuple[str, str]],
    ranges: Iterable[tuple[str, str, str]],
    tx_ids: Iterable[str],
) -> tuple[int, Callable[[StateReader], tuple[KeyVersions, RangeVersions, set[str]]]]:
    """What a peer's commit of one block reads (`commit_reads`), as one function of a snapshot,
    and what it costs in point lookups (-1 when it reads a range: unbounded): one per key read,
    one per `IDS_PER_LOOKUP` tx ids (`tx_ids_cost`)."""
    wanted = [t for t in set(tx_ids) if t]
    keys, ranges = list(keys), list(ranges)

    def read(reader: StateReader) -> tuple[KeyVersions, RangeVersions, set[str]]:
        found = set(reader.tx_records_found(wanted))
        return versions_of(reader, keys), ranges_of(reader, ranges), found

    return (-1 if ranges else tx_ids_cost(len(wanted)) + len(keys)), read


def tx_ids_cost(count: int) -> int:
    """`count` tx ids looked up in `IN (...)` lists (`SnapshotReader.tx_records_found`), in
    point lookups: an id in a list costs a third to a half of a point read with its own
    statement (~0.6 against ~1.3 µs, `tx_records_found`; ~1.8 against ~6 µs, branch kvdup's
    figures and `sqlite.INLINE_READS_MAX`), so `IDS_PER_LOOKUP` ids count as one (the
    conservative end). Counted one per id before, the duplicate check of a block of 17 blind
    writes (1,300 tx/s on a quiet host: 17 tx per block) was 17 "lookups" and took a
    reader-thread hop per block on each peer for some 30 µs of reads (benchmarks/RESULTS.md,
    branch lat60); now up to 32 ids with no key read stay in place."""
    return -(-count // IDS_PER_LOOKUP)
