"""The conflict graph of a block's transactions, and MVCC validation in waves over it.

Why: MVCC is defined in block order (`validation.py`: a transaction sees the writes of the
EARLIER valid ones), which reads as strictly sequential. But two transactions that touch no
common key can be validated in either order, or at once, with the same result. Fabric-X's
committer validates along such a dependency graph; this module is that graph.

Footprint of a transaction that enters MVCC as VALID (the others read and write nothing):
- reads: its point reads, its ranges, and the definition of its own contract (a lifecycle
  transaction earlier in the block that commits a new definition makes it DEFINITION_CHANGED);
- writes: its writes and deletes and the keys of its deltas (a delta reads the value the earlier
  transactions left and gives its key a new version: it is both a read and a write).

Transactions i < j CONFLICT when one writes a key the other reads or writes, or writes a key
inside a range the other read. Conflicts are taken from the read/write sets, not from the
outcome: a transaction that will turn out invalid still conflicts (over-serialising is safe,
under-serialising is not).

Waves: wave(j) = 1 + max wave(i) over the conflicting i < j (0 without any). Hence a
transaction's conflicting predecessors are all in earlier waves and its conflicting successors
in later ones; transactions of one wave touch disjoint keys. Validating wave by wave, every
transaction of a wave against the state the earlier waves left, gives each transaction exactly
the state sequential validation gives it — the keys it reads were last written by its
conflicting predecessors, all in earlier waves, and by no later transaction of an earlier wave
(that one would conflict with it and sit in a later wave). The writes are then emitted in block
order, so the result is IDENTICAL to `validate_block` (a Hypothesis property checks it).

Duplicates (DUPLICATE_TXID) are decided first, in block order: a cheap set walk.

Parallelism: the transactions of one wave are independent, so a caller may validate them at once
(`validate_in_waves` takes the mapping function; the default is the builtin `map`). In CPython
the per-transaction MVCC work is pure Python under the GIL, so the peer runs the waves on its
own thread; the graph is what lets the work split once it is worth sending elsewhere.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence, Set
from dataclasses import dataclass

from dltmw.core.lifecycle import NAMESPACE as LIFECYCLE_NS
from dltmw.core.lifecycle import definition_key
from dltmw.core.rwset import StateWrite, Version
from dltmw.core.validation import (
    VALID,
    BlockState,
    KeyRef,
    RangeRef,
    TxForMvcc,
    entry_codes,
    validate_tx,
)

Verdict = tuple[int, list[StateWrite]]
Mapper = Callable[[Callable[[int], Verdict], Sequence[int]], Iterable[Verdict]]


@dataclass(frozen=True)
class Footprint:
    """What one transaction reads and writes, as the conflict relation sees it."""

    reads: frozenset[KeyRef] = frozenset()
    ranges: frozenset[RangeRef] = frozenset()
    writes: frozenset[KeyRef] = frozenset()


NOTHING = Footprint()


def footprint(tx: TxForMvcc, code: int) -> Footprint:
    """The keys and ranges `tx` reads and the keys it writes (nothing unless it enters VALID)."""
    rwset = tx.rwset
    if code != VALID or rwset is None:
        return NOTHING
    ns = rwset.namespace
    reads = {(ns, r.key) for r in rwset.reads}
    reads.add((LIFECYCLE_NS, definition_key(ns)))
    writes = {(ns, w.key) for w in rwset.writes}
    writes.update((ns, d.key) for d in rwset.deltas)
    ranges = {(ns, q.start_key, q.end_key) for q in rwset.range_queries}
    return Footprint(frozenset(reads | writes), frozenset(ranges), frozenset(writes))


def in_range(ref: KeyRef, query: RangeRef) -> bool:
    """Whether key `ref` lies in range `query` (an empty end: unbounded)."""
    ns, key = ref
    q_ns, start, end = query
    return ns == q_ns and key >= start and (not end or key < end)


def _in_any(ref: KeyRef, queries: frozenset[RangeRef]) -> bool:
    return any(in_range(ref, q) for q in queries)


def conflicts(a: Footprint, b: Footprint) -> bool:
    """Whether the order of `a` and `b` can matter: one writes what the other reads or writes."""
    if a.writes & b.reads or b.writes & a.reads:
        return True
    return any(in_range(w, q) for w in a.writes for q in b.ranges) or any(
        in_range(w, q) for w in b.writes for q in a.ranges
    )


def waves(prints: Sequence[Footprint]) -> list[list[int]]:
    """Transaction indices grouped in waves (see the module docstring), each in block order.

    One pass in block order with, per key, the latest wave that wrote it and that read it, and
    the ranges read so far: wave(j) is one more than the latest wave it conflicts with, which is
    `conflicts` applied to every earlier transaction without the quadratic walk.
    """
    wrote: dict[KeyRef, int] = {}
    read: dict[KeyRef, int] = {}
    scanned: list[tuple[RangeRef, int]] = []
    out: list[list[int]] = []
    for index, p in enumerate(prints):
        after = -1
        for ref in p.reads:
            after = max(after, wrote.get(ref, -1))
        for ref in p.writes:
            after = max(after, read.get(ref, -1))
        if p.ranges:
            after = max([after, *(w for ref, w in wrote.items() if _in_any(ref, p.ranges))])
        if scanned and p.writes:
            after = max([after, *(w for q, w in scanned for ref in p.writes if in_range(ref, q))])
        wave = after + 1
        if wave == len(out):
            out.append([])
        out[wave].append(index)
        for ref in p.reads:
            read[ref] = max(read.get(ref, -1), wave)
        for ref in p.writes:
            wrote[ref] = max(wrote.get(ref, -1), wave)
        scanned.extend((q, wave) for q in p.ranges)
    return out


def validate_in_waves(
    block_number: int,
    txs: Sequence[TxForMvcc],
    committed_versions: Mapping[KeyRef, Version],
    committed_ranges: Mapping[RangeRef, Sequence[tuple[str, Version]]],
    committed_tx_ids: Set[str],
    committed_values: Mapping[KeyRef, bytes] | None = None,
    mapper: Mapper = map,
) -> tuple[list[int], list[StateWrite]]:
    """`validate_block`'s result, computed wave by wave (each wave's transactions through
    `mapper`, which may run them at once: they only read `state` while the wave runs)."""
    codes = entry_codes(txs, committed_tx_ids)
    state = BlockState(committed_versions, committed_ranges, committed_values or {})
    verdicts: list[Verdict] = [(code, []) for code in codes]
    for wave in waves([footprint(tx, code) for tx, code in zip(txs, codes, strict=True)]):

        def one(index: int) -> Verdict:
            return validate_tx(block_number, index, txs[index], codes[index], state)

        done = list(mapper(one, wave))
        for index, verdict in zip(wave, done, strict=True):
            verdicts[index] = verdict
        for _, own in done:
            state.record(own)
    writes = [w for _, own in verdicts for w in own]
    return [code for code, _ in verdicts], writes
