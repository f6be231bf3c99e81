"""Reordering a block's transactions before it is signed (Fabric++), deterministically.

Why: MVCC invalidates a transaction that reads a key an EARLIER valid transaction of the same
block wrote (`validation.py`). Arrival order is arbitrary, so a block often has a writer of k
before a reader of k that would have been valid the other way round: on a hot account every
payment that reads the account after a deposit's delta is lost (issue 13: 33 % at the hot
point). Putting readers before writers keeps them valid and changes nothing else: the writers
record no version of what the readers write (or they would be readers too).

The rule (pure; applied when the channel's `BatchConfig.reorder` is set by whoever fixes a
block's or batch's order: the solo and JetStream orderers' cutter to each cut batch, PBFT-lite's
primary to each batch it proposes (`pbft/replica.py`), and with dissemination each replica to
each batch it forms, before signing it (`pbft/dissemination.py`)):

1. Each endorser transaction's footprint comes from its envelope (best effort: an envelope that
   does not parse, or is not an endorser transaction, has none and keeps its relative place).
   Reads: its point reads and ranges; writes: its writes, deletes and delta keys. A delta has no
   read version, so it is a writer only; a lifecycle transaction writing a contract's definition
   is a writer of what every transaction of that contract reads.
2. Edge i -> j ("i must precede j") when i reads a key j writes (in i's ranges too), i != j.
3. Cycles cannot all be honoured. First, of the transactions that read AND write one key (a
   read-modify-write; any two of them form a cycle, and at most one of them can be valid in a
   block), all but the earliest arrival are deferred, key by key (this keeps step 3 linear on
   a hot key). Then, while the graph has a strongly connected component of more
   than one transaction, move one transaction of each such component to the DEFERRED set — the
   one with the most edges inside its component, the latest arrival on a tie (so the earliest
   arrivals keep their chance: on Figure 8's cycle of deposit and payment the payment is
   deferred). Greedy, like Fabric++: the smallest such set is NP-hard to find.
4. The block is the remaining transactions in a topological order that takes, at each step, the
   earliest-arrived transaction whose predecessors are placed (stable: without edges the order
   is the arrival order), then the deferred ones in arrival order.

Nothing is dropped or judged here: the peers validate the block in its (new) order as always,
so a deferred transaction whose conflicting writer turns out invalid still commits. The block's
order is the order every client, event stream and peer sees. Same batch bytes, same block, on
any node and at any time.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence

from dltmw.core.early_abort import endorsed_rwset
from dltmw.core.errors import InvariantViolation
from dltmw.core.lifecycle import NAMESPACE as LIFECYCLE_NS
from dltmw.core.lifecycle import definition_key
from dltmw.core.txgraph import in_range
from dltmw.core.validation import KeyRef, RangeRef
from dltmw.v1 import rwset_pb2

Access = tuple[frozenset[KeyRef], frozenset[RangeRef], frozenset[KeyRef]]  # reads, ranges, writes
NONE: Access = (frozenset(), frozenset(), frozenset())


def access(rwset: rwset_pb2.ReadWriteSet | None) -> Access:
    """What a read/write set reads (keys, ranges) and writes, as step 1 defines it."""
    if rwset is None:
        return NONE
    ns = rwset.namespace
    reads = {(ns, r.key) for r in rwset.reads}
    reads.add((LIFECYCLE_NS, definition_key(ns)))
    ranges = {(ns, q.start_key, q.end_key) for q in rwset.range_queries}
    writes = {(ns, w.key) for w in rwset.writes} | {(ns, d.key) for d in rwset.deltas}
    return frozenset(reads), frozenset(ranges), frozenset(writes)


def precedence(accesses: Sequence[Access]) -> list[set[int]]:
    """succ[i]: the transactions i must precede (i reads what they write)."""
    writers: dict[KeyRef, list[int]] = {}
    for j, (_, _, writes) in enumerate(accesses):
        for ref in writes:
            writers.setdefault(ref, []).append(j)
    succ: list[set[int]] = [set() for _ in accesses]
    for i, (reads, ranges, _) in enumerate(accesses):
        for ref in reads:
            succ[i].update(writers.get(ref, ()))
        for query in ranges:
            for ref, js in writers.items():
                if in_range(ref, query):
                    succ[i].update(js)
        succ[i].discard(i)
    return succ


def components(nodes: Sequence[int], succ: Sequence[set[int]]) -> list[list[int]]:
    """Strongly connected components of the graph restricted to `nodes` (iterative Tarjan:
    a block of thousands must not hit the recursion limit); each in ascending order."""
    alive = set(nodes)
    index: dict[int, int] = {}
    low: dict[int, int] = {}
    stack: list[int] = []
    on_stack: set[int] = set()
    out: list[list[int]] = []
    for root in nodes:
        if root in index:
            continue
        work = [(root, iter(sorted(succ[root] & alive)))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    member, group = -1, []
                    while member != node:
                        member = stack.pop()
                        on_stack.discard(member)
                        group.append(member)
                    out.append(sorted(group))
            elif child not in index:
                index[child] = low[child] = len(index)
                stack.append(child)
                on_stack.add(child)
                work.append((child, iter(sorted(succ[child] & alive))))
            elif child in on_stack:
                low[node] = min(low[node], index[child])
    return out


def deferred(accesses: Sequence[Access], succ: Sequence[set[int]]) -> set[int]:
    """Step 3: the transactions moved to the end so that the rest has no cycle."""
    out: set[int] = set()
    first_rmw: dict[KeyRef, int] = {}
    for i, (reads, _, writes) in enumerate(accesses):
        for ref in sorted(reads & writes):
            if first_rmw.setdefault(ref, i) != i:
                out.add(i)
    remaining = [i for i in range(len(succ)) if i not in out]
    while True:
        cyclic = [c for c in components(remaining, succ) if len(c) > 1]
        if not cyclic:
            return out
        for group in cyclic:
            members = set(group)
            victim = max(group, key=lambda i: (_degree(i, members, succ), i))
            out.add(victim)
        remaining = [i for i in remaining if i not in out]


def _degree(i: int, members: set[int], succ: Sequence[set[int]]) -> int:
    return len(succ[i] & members) + sum(1 for j in members if i in succ[j])


def order(accesses: Sequence[Access]) -> list[int]:
    """The block's order as indices into the batch (steps 2-4)."""
    succ = precedence(accesses)
    late = deferred(accesses, succ)
    kept = [i for i in range(len(accesses)) if i not in late]
    waiting = {i: 0 for i in kept}
    for i in kept:
        for j in succ[i]:
            if j in waiting:
                waiting[j] += 1
    ready = [i for i in kept if waiting[i] == 0]
    heapq.heapify(ready)
    out: list[int] = []
    while ready:
        i = heapq.heappop(ready)
        out.append(i)
        for j in succ[i]:
            if j in waiting:
                waiting[j] -= 1
                if waiting[j] == 0:
                    heapq.heappush(ready, j)
    if len(out) != len(kept):
        raise InvariantViolation("reorder: a cycle survived step 3")
    return out + sorted(late)


def arrangement(batch: Sequence[bytes]) -> list[int]:
    """The Fabric++ order of `batch` as indices into it (for a caller that permutes something
    kept beside the envelopes, such as their ids, the same way)."""
    if len(batch) < 2:
        return list(range(len(batch)))
    return order([access(endorsed_rwset(e)) for e in batch])


def reorder(batch: Sequence[bytes]) -> list[bytes]:
    """`batch` in Fabric++ order (the module docstring); a batch of one is returned as is."""
    return [batch[i] for i in arrangement(batch)]
