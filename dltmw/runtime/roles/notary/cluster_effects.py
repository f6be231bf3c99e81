"""The effects of a notary-cluster member's two drivers (`cluster.ClusterNotaryRole`).

`ReplicaExecutor` carries out what the PBFT-lite `Replica` decides: records appended durably
(a step of stable checkpoints only rides with the next append, see `persist`; then compacted
below a stable checkpoint, every COMPACT_EVERY sequences), decided batches handed to the
decider, messages to the other members' links, and the reads of our records a lagging member's
catch-up asks for (`DecidedFromStore`, stepped back in as `StoredDecided`).
`DecisionExecutor` carries out the `ClusterDecider`'s: a decided batch re-admitted at its stamp
on the verify pool and its spent rows read (load), what the step's batches spent committed in one
sqlite transaction (apply), and the waiting callers answered (reply). Kept apart from the role so
each file holds one concept: the role (admission, ordering, answering) and the effects its
cores ask for.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol

from dltmw.core.effects import Token
from dltmw.core.errors import ClientError, InvariantViolation, TransientError
from dltmw.core.handlers.notary import Decision, Spent
from dltmw.core.notary import NotarisationAsk
from dltmw.core.notary_cluster import OpenedBatch, Unpacked
from dltmw.core.pbft import (
    ClientRequest,
    Decided,
    DecidedFromStore,
    Envelope,
    PbftConfig,
    Record,
    Rejected,
    StableRecord,
    StoredDecided,
    request_id,
)
from dltmw.core.pbft.types import Outgoing
from dltmw.ledger.cluster_notary_store import ClusterNotaryStore
from dltmw.ledger.pbft_store import RecordStore
from dltmw.runtime.context import NodeContext
from dltmw.runtime.driver import Driver
from dltmw.runtime.executor import Executing
from dltmw.runtime.replica_frame import FrameOnce
from dltmw.runtime.replica_link import ReplicaLink
from dltmw.runtime.roles.notary.cluster_attest import Attesting
from dltmw.runtime.waiters import Waiters
from dltmw.v1 import errors_pb2

logger = logging.getLogger(__name__)
R = errors_pb2
# Compact the records once the stable checkpoint moved this many sequences since the last
# compaction, not at every checkpoint: with a checkpoint every slot (`cluster_config`) a
# compaction per slot was one more durable sqlite transaction per slot. Records a compaction
# skips are those a crash between a stable record and its compaction leaves too (a restart
# already restores from them); they are at most COMPACT_EVERY - 1 slots of votes.
COMPACT_EVERY = 4


class MemberRole(Protocol):
    """What the executors use of their role (`cluster.ClusterNotaryRole`): named here, not
    imported, so the role's module imports this one and not the other way round."""

    ctx: NodeContext
    cluster_id: str
    config: PbftConfig
    records: RecordStore | None
    cluster_store: ClusterNotaryStore
    pool: ThreadPoolExecutor
    links: dict[int, ReplicaLink]
    decider: DeciderDriver | None
    waiters: Waiters[Token, Answers]
    attesting: Attesting

    @property
    def replica_driver(self) -> ReplicaDriver | None:
        """The replica's driver, once started."""

    def open_all(self, requests: Sequence[bytes]) -> list[Unpacked]:
        """Re-admit every wrapped request of a decided batch (on the verify pool)."""


@dataclass(frozen=True)
class DecidedBatch:
    """A batch the replica decided, for the decider: its sequence and PBFT requests."""

    sequence: int
    requests: tuple[bytes, ...]


Answers = tuple[Decision, ...]


ReplicaInput = ClientRequest | Envelope | StoredDecided


class ReplicaExecutor(Executing[ReplicaInput, Record, Decided, Outgoing, Rejected]):
    """The replica's effects: records, then decided batches to the decider, sends (and reads of
    our records for a peer's catch-up), refusals."""

    def __init__(self, role: MemberRole) -> None:
        self._role = role
        self._compacted = 0  # the stable sequence of the last compaction (0: none yet)
        self._held: list[Record] = []  # stable records not yet appended (`persist`)

    async def persist(self, records: Sequence[Record]) -> None:
        """Append the step's records in one durable transaction. A step whose records are ALL
        stable checkpoints (~0.8 of the ~3.5 appends per slot with a checkpoint every slot) is
        held and appended first in the next append instead of in a transaction (fsync) of its
        own: nothing sent depends on a stable record (it only lets older records be dropped),
        and losing it in a crash restores the replica from the stable checkpoint before it,
        with every record since still in the log (a compaction only follows an appended stable
        record). The rule kept: a vote, prepared or decided record is durable before anything
        depending on it leaves, i.e. such a step is never held."""
        log = self._role.records
        if log is None:
            raise InvariantViolation("notary cluster record log is not open")
        if records and all(isinstance(r, StableRecord) for r in records):
            self._held.extend(records)
            return
        if self._held:
            records, self._held = [*self._held, *records], []
        await log.append(records)
        stable = [r.sequence for r in records if isinstance(r, StableRecord)]
        if stable and stable[-1] - self._compacted >= COMPACT_EVERY:
            self._compacted = stable[-1]
            await log.compact(stable[-1], stable[-1] - self._role.config.decided_retain + 1)

    async def apply(self, decided: Sequence[Decided]) -> None:
        decider = self._role.decider
        if decider is None:
            raise InvariantViolation("notary cluster decider is not running")
        for batch in decided:
            await decider.put(DecidedBatch(batch.sequence, batch.requests))

    async def send(self, messages: Sequence[tuple[int, Outgoing]]) -> None:
        framed = FrameOnce()  # a broadcast serialised once for all links
        for destination, message in messages:
            if isinstance(message, DecidedFromStore):
                await self._read_decided(destination, message)
                continue
            link = self._role.links.get(destination)
            if link is not None:
                link.send(framed(message))

    async def _read_decided(self, peer: int, wanted: DecidedFromStore) -> None:
        """Read decided batches a peer's catch-up asked for from our records and hand them to
        the replica; with its inbox full (or the replica stopping) they are dropped: the peer
        probes again every `probe_ticks`."""
        log, driver = self._role.records, self._role.replica_driver
        if log is None or driver is None:
            return
        batches = await log.decided(wanted.from_sequence, wanted.count)
        try:
            driver.submit(StoredDecided(peer, tuple(batches)))
        except TransientError as exc:  # Overloaded, or SHUTTING_DOWN
            logger.debug("catch-up of replica %d not answered now: %s", peer, exc)

    async def reply(self, replies: Sequence[tuple[Token, Rejected]]) -> None:
        for rid, rejected in replies:
            error = ClientError(R.ERROR_REASON_INVALID_FIELD, f"refused: {rejected.reason}")
            self._role.waiters.fail(rid, error)


class DecisionExecutor:
    """The decider's side: open a batch and read its rows, commit what it spent, answer."""

    def __init__(self, role: MemberRole) -> None:
        self._role = role

    async def load(self, inputs: Sequence[DecidedBatch]) -> Sequence[OpenedBatch]:
        role, loop = self._role, asyncio.get_running_loop()
        store = role.cluster_store
        out: list[OpenedBatch] = []
        for batch in inputs:
            unpacked = await loop.run_in_executor(role.pool, role.open_all, batch.requests)
            asks = [i for u in unpacked for i in u.items if isinstance(i, NotarisationAsk)]
            rows = await loop.run_in_executor(store.executor, store.rows_for, asks)
            ids = tuple(request_id(r) for r in batch.requests)
            out.append(OpenedBatch(batch.sequence, ids, tuple(unpacked), rows))
        return out

    async def persist(self, records: Sequence[None]) -> None:
        """The decider keeps no log (the replica's records are it)."""

    async def apply(self, decided: Sequence[Spent]) -> None:
        """Every batch this step decided, in ONE durable transaction (group commit)."""
        if not decided:
            return
        store = self._role.cluster_store
        await asyncio.get_running_loop().run_in_executor(store.executor, store.record_all, decided)

    async def send(self, messages: Sequence[tuple[int, None]]) -> None:
        """Every replica decides alone."""

    async def reply(self, replies: Sequence[tuple[Token, Answers]]) -> None:
        role = self._role
        for rid, decisions in replies:  # every member decides every batch: each counts its own
            role.ctx.metrics.observe_decisions(role.cluster_id, decisions)
            role.waiters.resolve(rid, decisions)
            role.attesting.decided(decisions)


ReplicaDriver = Driver[ReplicaInput, ReplicaInput, Record, Decided, Outgoing, Rejected]
DeciderDriver = Driver[DecidedBatch, OpenedBatch, None, Spent, None, Answers]
