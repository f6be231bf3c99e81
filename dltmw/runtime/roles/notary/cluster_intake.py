"""How a notary-cluster member hands its admitted requests to PBFT-lite: a few wraps at a time.

A member wraps the admitted requests of a call into PBFT requests of at most WRAP_BYTES_MAX
(`core/notary_cluster.wrap`). It keeps at most `limit` of its OWN wraps ordered at once; the
others wait here, in arrival order, for one of them to be decided (`OwnWraps`). Why:

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
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass

from dltmw.core.errors import DltmwError, TransientError
from dltmw.core.handlers.notary import Decision
from dltmw.core.handlers.notary import signed as signed_decision
from dltmw.core.pbft import PbftConfig
from dltmw.v1 import errors_pb2, identity_pb2

HASH_BYTES = 32
# Protobuf framing of one repeated `bytes` entry: its tag and a length varint (<= 3 bytes up to
# 2 MiB). Counted, or fuller wraps would pass WRAP_BYTES_MAX by a few hundred bytes.
ENTRY_FRAMING = 4
WRAP_BASE_BYTES = 32  # a wrap's stamp and stamper, framed
Outcome = Decision | DltmwError


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


class OwnWraps:
    """At most `limit` own wraps ordered at once; the others wait their turn in FIFO order."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"limit must be positive, got {limit}")
        self.limit = limit
        self._turns = asyncio.Semaphore(limit)
        self.in_flight = 0
        self.peak = 0  # most wraps ordered at once so far (tests, metrics)

    @contextlib.asynccontextmanager
    async def turn(self) -> AsyncIterator[None]:
        """Hold one of the `limit` turns while a wrap is ordered and decided."""
        async with self._turns:
            self.in_flight += 1
            self.peak = max(self.peak, self.in_flight)
            try:
                yield
            finally:
                self.in_flight -= 1


SignedHere = Callable[[list[str]], Awaitable[dict[str, bytes]]]
Decide = Callable[[list[bytes], int, SignedPart | None], Awaitable[Sequence[Outcome]]]


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


async def order_group(
    group: Sequence[Item],
    turns: OwnWraps,
    signed_here: SignedHere,
    decide: Decide,
    clock_ns: Callable[[], int],
    wait_s: float,
    signed_part: SignedPart | None = None,
) -> list[Outcome]:
    """The outcomes of one wrap's items, in order: wait for a turn, answer what is signed here
    by now from the store, order the rest stamped now (module docstring)."""
    try:
        async with asyncio.timeout(wait_s), turns.turn():
            signed = await signed_here([item.tx_id for item in group])
            todo = [item for item in group if item.tx_id not in signed]
            outcomes = await decide([i.raw for i in todo], clock_ns(), signed_part) if todo else ()
            decided = dict(zip((i.position for i in todo), outcomes, strict=True))
            for i in group:
                if i.tx_id in signed:
                    decided[i.position] = signed_decision(i.tx_id, signed[i.tx_id])
            return [decided[i.position] for i in group]
    except TimeoutError:
        wait = TransientError(errors_pb2.ERROR_REASON_WAIT_TIMEOUT, "not decided in time")
        return [wait] * len(group)
    except DltmwError as exc:
        return [exc] * len(group)
