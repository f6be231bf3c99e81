"""MVCC validation of a block, with Fabric's semantics.

Transactions are validated in block order. A transaction that passed its structural, signature
and policy checks (its `code` is VALID on entry) is valid iff every key it read still has the
version it read and every range it read would return the same keys at the same versions, where
"still" includes the writes of EARLIER VALID transactions of the same block. Its writes then take
the version (block_number, tx_index). An invalid transaction stays in the block, keeps its code
and writes nothing. Duplicate tx_ids (already on the ledger, or earlier in the block) are marked
DUPLICATE_TXID whatever the other checks said.

The function is pure: the caller prefetches the committed versions of every key and range the
block reads (`reads_of`) in one storage round trip and passes them in.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence, Set
from dataclasses import dataclass

from dltmw.core.lifecycle import DEFINITION_CHANGED, changed_in_block
from dltmw.core.rwset import StateWrite, Version
from dltmw.v1 import rwset_pb2, transaction_pb2

VALID = transaction_pb2.TX_VALIDATION_CODE_VALID
MVCC_READ_CONFLICT = transaction_pb2.TX_VALIDATION_CODE_MVCC_READ_CONFLICT
PHANTOM_READ_CONFLICT = transaction_pb2.TX_VALIDATION_CODE_PHANTOM_READ_CONFLICT
DUPLICATE_TXID = transaction_pb2.TX_VALIDATION_CODE_DUPLICATE_TXID

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


def validate_block(
    block_number: int,
    txs: Sequence[TxForMvcc],
    committed_versions: Mapping[KeyRef, Version],
    committed_ranges: Mapping[RangeRef, Sequence[tuple[str, Version]]],
    committed_tx_ids: Set[str],
) -> tuple[list[int], list[StateWrite]]:
    """Final validation codes (one per tx) and the writes to apply, in order."""
    updates: dict[KeyRef, Version | None] = {}  # in-block writes; None = deleted
    seen: set[str] = set()
    codes: list[int] = []
    writes: list[StateWrite] = []
    for index, tx in enumerate(txs):
        code = tx.code
        if tx.tx_id and (tx.tx_id in committed_tx_ids or tx.tx_id in seen):
            code = DUPLICATE_TXID
        if tx.tx_id:
            seen.add(tx.tx_id)
        if code == VALID and tx.rwset is not None and changed_in_block(tx.rwset.namespace, updates):
            code = DEFINITION_CHANGED  # endorsed before a definition committed earlier here
        if code == VALID and tx.rwset is not None:
            code = _mvcc(tx.rwset, updates, committed_versions, committed_ranges)
        codes.append(code)
        if code != VALID or tx.rwset is None:
            continue
        version = Version(block_number, index)
        ns = tx.rwset.namespace
        for w in tx.rwset.writes:
            value = None if w.is_delete else w.value
            updates[(ns, w.key)] = None if w.is_delete else version
            writes.append(StateWrite(ns, w.key, value, version))
    return codes, writes


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
