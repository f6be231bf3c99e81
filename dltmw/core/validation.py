"""MVCC validation of a block, with Fabric's semantics.

Transactions are validated in block order. A transaction that passed its structural, signature
and policy checks (its `code` is VALID on entry) is valid iff every key it read still has the
version it read and every range it read would return the same keys at the same versions, where
"still" includes the writes of EARLIER VALID transactions of the same block. Its writes then take
the version (block_number, tx_index). An invalid transaction stays in the block, keeps its code
and writes nothing. Duplicate tx_ids (already on the ledger, or earlier in the block) are marked
DUPLICATE_TXID whatever the other checks said.

The function is pure: the caller prefetches the committed versions of every key and range the
block reads (`reads_of`) in one storage round trip and passes them in, and the committed values
of the keys its deltas change (`delta_keys_of`).

Deltas (`core/deltas.py`): after a transaction's reads check out, its deltas are applied to the
values the committed state and the block's earlier valid transactions left; a delta that is not
applicable or breaks its bound gives the transaction that code and nothing of it is applied.
A delta is a write for everything after it: its key takes the version (block_number, tx_index),
so a later read of it in the block is an MVCC_READ_CONFLICT, and a later delta or write sees
(or replaces) its value.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence, Set
from dataclasses import dataclass

from dltmw.core import deltas
from dltmw.core.lifecycle import DEFINITION_CHANGED, changed_in_block
from dltmw.core.rwset import StateWrite, Version
from dltmw.v1 import rwset_pb2, transaction_pb2

VALID = transaction_pb2.TX_VALIDATION_CODE_VALID
MVCC_READ_CONFLICT = transaction_pb2.TX_VALIDATION_CODE_MVCC_READ_CONFLICT
PHANTOM_READ_CONFLICT = transaction_pb2.TX_VALIDATION_CODE_PHANTOM_READ_CONFLICT
DUPLICATE_TXID = transaction_pb2.TX_VALIDATION_CODE_DUPLICATE_TXID
PRIVATE_STATE_CONFLICT = transaction_pb2.TX_VALIDATION_CODE_PRIVATE_STATE_CONFLICT
PRIVATE_NAMESPACE = "_private"  # = core/privacy/conflict.NAMESPACE (no import: layer order)

KeyRef = tuple[str, str]
RangeRef = tuple[str, str, str]


@dataclass(frozen=True)
class TxForMvcc:
    """One transaction as MVCC sees it: pre-validation verdict and simulation result."""

    tx_id: str
    code: int
    rwset: rwset_pb2.ReadWriteSet | None


def reads_of(txs: Iterable[TxForMvcc]) -> tuple[set[KeyRef], set[RangeRef]]:
    """Keys and ranges whose committed versions `validate_block` needs."""
    keys: set[KeyRef] = set()
    ranges: set[RangeRef] = set()
    for tx in txs:
        if tx.code != VALID or tx.rwset is None:
            continue
        ns = tx.rwset.namespace
        keys.update((ns, r.key) for r in tx.rwset.reads)
        ranges.update((ns, q.start_key, q.end_key) for q in tx.rwset.range_queries)
    return keys, ranges


def delta_keys_of(txs: Iterable[TxForMvcc]) -> set[KeyRef]:
    """Keys whose committed values `validate_block` needs to apply the block's deltas."""
    return {
        (tx.rwset.namespace, d.key)
        for tx in txs
        if tx.code == VALID and tx.rwset is not None
        for d in tx.rwset.deltas
    }


def validate_block(
    block_number: int,
    txs: Sequence[TxForMvcc],
    committed_versions: Mapping[KeyRef, Version],
    committed_ranges: Mapping[RangeRef, Sequence[tuple[str, Version]]],
    committed_tx_ids: Set[str],
    committed_values: Mapping[KeyRef, bytes] | None = None,
) -> tuple[list[int], list[StateWrite]]:
    """Final validation codes (one per tx) and the writes to apply, in order."""
    state = BlockState(committed_versions, committed_ranges, committed_values or {})
    codes: list[int] = []
    writes: list[StateWrite] = []
    for index, (tx, entry) in enumerate(zip(txs, entry_codes(txs, committed_tx_ids), strict=True)):
        code, own = validate_tx(block_number, index, tx, entry, state)
        codes.append(code)
        state.record(own)
        writes.extend(own)
    return codes, writes


def entry_codes(txs: Sequence[TxForMvcc], committed_tx_ids: Set[str]) -> list[int]:
    """Each transaction's code before MVCC: DUPLICATE_TXID for a tx_id already on the ledger or
    earlier in the block, whatever the other checks said; else its pre-validation verdict."""
    seen: set[str] = set()
    codes: list[int] = []
    for tx in txs:
        duplicate = bool(tx.tx_id) and (tx.tx_id in committed_tx_ids or tx.tx_id in seen)
        codes.append(DUPLICATE_TXID if duplicate else tx.code)
        if tx.tx_id:
            seen.add(tx.tx_id)
    return codes


class BlockState:
    """The state a transaction is validated against: committed versions, ranges and delta
    values overlaid with the writes of the block's earlier valid transactions (`record`)."""

    def __init__(
        self,
        committed_versions: Mapping[KeyRef, Version],
        committed_ranges: Mapping[RangeRef, Sequence[tuple[str, Version]]],
        committed_values: Mapping[KeyRef, bytes],
    ) -> None:
        self.versions = committed_versions
        self.ranges = committed_ranges
        self.updates: dict[KeyRef, Version | None] = {}  # in-block writes; None = deleted
        self.values = _Values(committed_values)

    def record(self, writes: Iterable[StateWrite]) -> None:
        """Overlay a valid transaction's writes (its deltas' results included)."""
        for w in writes:
            ref = (w.namespace, w.key)
            self.updates[ref] = None if w.value is None else w.version
            self.values.wrote(ref, w.value)


def validate_tx(
    block_number: int, index: int, tx: TxForMvcc, code: int, state: BlockState
) -> tuple[int, list[StateWrite]]:
    """One transaction's final code and writes against `state` (which it does not change)."""
    rwset = tx.rwset
    if code != VALID or rwset is None:
        return code, []
    if changed_in_block(rwset.namespace, state.updates):
        return DEFINITION_CHANGED, []  # endorsed before a definition committed earlier here
    code = _mvcc(rwset, state.updates, state.versions, state.ranges)
    applied: dict[str, bytes] = {}
    if code == VALID and rwset.deltas:
        code, applied = state.values.apply(rwset)
    if code == MVCC_READ_CONFLICT and rwset.namespace == PRIVATE_NAMESPACE:
        code = PRIVATE_STATE_CONFLICT  # hashes of private keys (core/privacy/conflict.py)
    if code != VALID:
        return code, []
    version = Version(block_number, index)
    ns = rwset.namespace
    own = [StateWrite(ns, w.key, None if w.is_delete else w.value, version) for w in rwset.writes]
    own.extend(StateWrite(ns, key, new, version) for key, new in applied.items())
    return VALID, own


class _Values:
    """Values of delta keys as the block's earlier valid transactions left them."""

    def __init__(self, committed: Mapping[KeyRef, bytes]) -> None:
        self._committed = committed
        self._block: dict[KeyRef, bytes | None] = {}

    def wrote(self, ref: KeyRef, value: bytes | None) -> None:
        self._block[ref] = value

    def apply(self, rwset: rwset_pb2.ReadWriteSet) -> tuple[int, dict[str, bytes]]:
        ns = rwset.namespace
        current = {}
        for d in rwset.deltas:
            ref = (ns, d.key)
            current[d.key] = self._block[ref] if ref in self._block else self._committed.get(ref)
        return deltas.apply(rwset, current)


def _current(
    ref: KeyRef, updates: Mapping[KeyRef, Version | None], committed: Mapping[KeyRef, Version]
) -> Version | None:
    if ref in updates:
        return updates[ref]
    return committed.get(ref)


def _mvcc(
    rwset: rwset_pb2.ReadWriteSet,
    updates: Mapping[KeyRef, Version | None],
    committed_versions: Mapping[KeyRef, Version],
    committed_ranges: Mapping[RangeRef, Sequence[tuple[str, Version]]],
) -> int:
    ns = rwset.namespace
    for read in rwset.reads:
        if _current((ns, read.key), updates, committed_versions) != Version.from_read(read):
            return MVCC_READ_CONFLICT
    for query in rwset.range_queries:
        now = _range_now(ns, query, updates, committed_ranges)
        recorded = [(r.key, Version.from_read(r)) for r in query.reads]
        if now != recorded:
            return PHANTOM_READ_CONFLICT
    return VALID


def _range_now(
    ns: str,
    query: rwset_pb2.RangeQueryInfo,
    updates: Mapping[KeyRef, Version | None],
    committed_ranges: Mapping[RangeRef, Sequence[tuple[str, Version]]],
) -> list[tuple[str, Version | None]]:
    """The range as it would read now: committed entries overlaid with in-block writes."""
    view: dict[str, Version | None] = dict(
        committed_ranges.get((ns, query.start_key, query.end_key), ())
    )
    for (u_ns, key), version in updates.items():
        if u_ns == ns and key >= query.start_key and (not query.end_key or key < query.end_key):
            view[key] = version
    return sorted((k, v) for k, v in view.items() if v is not None)
