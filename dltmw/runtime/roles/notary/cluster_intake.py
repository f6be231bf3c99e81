"""How a notary-cluster member hands its admitted requests to PBFT-lite: a few wraps at a time.

A member splits the admitted requests of a call into groups of at most WRAP_BYTES_MAX
(`groups_of`). It keeps at most `limit` of its OWN wraps ordered at once; the groups that arrive
meanwhile wait here, in arrival order, and leave MERGED: the next wrap takes every waiting group
that fits WRAP_BYTES_MAX, each as one part (`core/notary_cluster.wrap_parts`; `OwnWraps`, on
the one batching helper `aio/coalesce.Coalescer`). Why merged: a cluster's cost is per PBFT
slot (its messages, their signatures, records and writes), and a slot holds at most
`batch_size_max` wraps; with one wrap per client call, a slot carried ~18 notarisations of the
benchmark (calls of ~19 requests) while hundreds waited for a turn. Why a few at a time:

- **Little waits at the primary.** Every replica relays what it is handed to all (`pbft.Replica
  .ready`), and a view change carries the prepared batches of the window. Handed everything at
  once, the cluster held whole bursts pending (8 client streams x 500 requests = 40 wraps
  against 2 per slot); while the request timer still timed each request from its arrival, the
  oldest waited more than 2 s under load, every replica blamed a correct primary, and view
  change followed view change, each carrying hundreds of KB (measured in RESULTS.md). The
  timer now starts again when the request it timed executes
  (`pbft.Replica.request_timer_expired`); with n members x `limit` wraps <= one window of slots
  (`own_wraps_max`) the primary still never holds more pending than it may propose at once.
- **A wrap waiting here can lose requests that were decided meanwhile.** Before a wrap leaves,
  the member looks its tx_ids up in its spent-set again (`signed_here`) and answers those
  signed there from the store: a client that asks members one after the other (relay: f+1
  signatures) reaches the second member after the first answered, and the second one orders
  the transaction again only if its own decider had not applied it yet when the wrap left.
  Re-deciding is idempotent but costs every member a re-admission and a PBFT slot's bytes.
- **The stamp is taken when the wrap leaves**, not at admission: the wait here must not age it
  towards the backups' freshness bound (`stamp_fresh`). Decisions depend on the stamp only, so
  every member still decides alike.

The whole wait — for a turn and for the decision — is bounded by `wait_s`; a request not
decided by then is answered WAIT_TIMEOUT (transient: the client may ask again, and gets the
same answer if it was decided after all).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from dltmw.aio.coalesce import Coalescer
from dltmw.aio.tasks import TaskOwner
from dltmw.core.errors import DltmwError, InvariantViolation, TransientError
from dltmw.core.handlers.notary import Decision
from dltmw.core.handlers.notary import signed as signed_decision
from dltmw.core.notary_cluster import Part
from dltmw.core.pbft import PbftConfig
from dltmw.v1 import errors_pb2, identity_pb2

HASH_BYTES = 32
# Protobuf framing of one repeated `bytes` entry: its tag and a length varint (<= 3 bytes up to
# 2 MiB). Counted, or fuller wraps would pass WRAP_BYTES_MAX by a few hundred bytes.
ENTRY_FRAMING = 4
WRAP_BASE_BYTES = 32  # a wrap's stamp and stamper, framed
Outcome = Decision | DltmwError
GROUPS_PER_WRAP_MAX = 64  # client messages merged into one wrap (well under its request count)


def own_wraps_max(config: PbftConfig) -> int:
    """Own wraps a member keeps ordered at once: all members together fill one window of
    slots (`window` x `batch_size_max` wraps), so nothing waits at the primary longer than
    the window it may propose takes to be decided."""
    return max(1, config.window * config.batch_size_max // config.n)


@dataclass(frozen=True)
class SignedPart:
    """A batch-signed client message being wrapped: its requester batch signature and the
    payload hashes of all its requests, which every wrap of it carries."""

    signature: identity_pb2.Signature
    hashes: tuple[bytes, ...]

    @property
    def overhead(self) -> int:
        """Bytes each wrap of the batch spends on the signature and the hashes."""
        framed = HASH_BYTES + ENTRY_FRAMING
        return self.signature.ByteSize() + framed * len(self.hashes) + 16


@dataclass(frozen=True)
class Item:
    """One admitted request to order: its position in the call, tx_id and raw bytes."""

    position: int
    tx_id: str
    raw: bytes


PART_FRAMING = 8  # a part's tag and length in the wrap, its fields' tags


@dataclass(frozen=True)
class Group:
    """Admitted requests of one call that travel in one wrap part, with the call's requester
    batch signature if it was batch-signed."""

    items: tuple[Item, ...]
    signed: SignedPart | None = None

    @property
    def size(self) -> int:
        """Bytes the group adds to a wrap (its requests and signed part, framed)."""
        signed = 0 if self.signed is None else self.signed.overhead
        return sum(len(i.raw) + ENTRY_FRAMING for i in self.items) + signed + PART_FRAMING

    def part(self, items: Sequence[Item]) -> Part:
        """The wrap part carrying `items` of this group."""
        raws = [i.raw for i in items]
        if self.signed is None:
            return Part(raws)
        return Part(raws, self.signed.signature, self.signed.hashes)


SignedHere = Callable[[list[str]], Awaitable[dict[str, bytes]]]
Decide = Callable[[Sequence[Part], int], Awaitable[Sequence[Outcome]]]


class OwnWraps:
    """At most `limit` own wraps ordered at once; groups that wait their turn leave in FIFO
    order, merged into wraps of at most `bytes_max` (module docstring)."""

    def __init__(
        self,
        limit: int,
        signed_here: SignedHere,
        decide: Decide,
        clock_ns: Callable[[], int],
        bytes_max: int,
        owner: TaskOwner | None = None,
    ) -> None:
        """`owner`: the node's, which supervises the batching tasks (`aio/coalesce.py`)."""
        if limit < 1:
            raise ValueError(f"limit must be positive, got {limit}")
        self.limit = limit
        self._signed_here = signed_here
        self._decide = decide
        self._clock_ns = clock_ns
        self._wraps: Coalescer[Group, list[Outcome]] = Coalescer(
            self._order,
            batch_max=GROUPS_PER_WRAP_MAX,
            name="notary-own-wraps",
            max_concurrent=limit,
            size=lambda g: g.size,
            size_max=bytes_max - WRAP_BASE_BYTES,
            owner=owner,
        )
        self.in_flight = 0
        self.peak = 0  # most wraps ordered at once so far (tests, metrics)

    async def order(self, group: Group, wait_s: float) -> list[Outcome]:
        """The outcomes of `group`'s items, in order, within `wait_s` for the wait for a turn
        and the decision together (then WAIT_TIMEOUT; a group whose wait ended before its
        wrap left is not ordered)."""
        try:
            async with asyncio.timeout(wait_s):
                return await self._wraps.call(group)
        except TimeoutError:
            wait = TransientError(errors_pb2.ERROR_REASON_WAIT_TIMEOUT, "not decided in time")
            return [wait] * len(group.items)
        except DltmwError as exc:
            return [exc] * len(group.items)

    async def close(self) -> None:
        """Stop merging; groups still waiting are cancelled."""
        await self._wraps.close()

    async def _order(self, groups: Sequence[Group]) -> list[list[Outcome]]:
        """One wrap: answer what is signed here by now from the store, order the rest of every
        group stamped now, one part per group."""
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        try:
            signed = await self._signed_here([i.tx_id for g in groups for i in g.items])
            todo = [[i for i in g.items if i.tx_id not in signed] for g in groups]
            parts = [g.part(t) for g, t in zip(groups, todo, strict=True) if t]
            flat = await self._decide(parts, self._clock_ns()) if parts else ()
            if len(flat) != sum(len(t) for t in todo):
                raise InvariantViolation("a wrap's decisions do not match its requests")
            outcomes = iter(flat)
            out: list[list[Outcome]] = []
            for group in groups:
                out.append(
                    [
                        signed_decision(i.tx_id, signed[i.tx_id])
                        if i.tx_id in signed
                        else next(outcomes)
                        for i in group.items
                    ]
                )
            return out
        finally:
            self.in_flight -= 1


def groups_of(items: Sequence[Item], base: int, bytes_max: int) -> list[list[Item]]:
    """`items` in wraps of at most `bytes_max` serialised (each wrap spends `base` on its stamp
    and a signed part); an item too large for any wrap is the caller's to refuse beforehand."""
    groups: list[list[Item]] = [[]]
    size = base
    for item in items:
        framed = len(item.raw) + ENTRY_FRAMING
        if size + framed > bytes_max and groups[-1]:
            groups.append([])
            size = base
        groups[-1].append(item)
        size += framed
    return [g for g in groups if g]
