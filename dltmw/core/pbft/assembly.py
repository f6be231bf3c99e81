"""Assembly: a decided slot of certificates becomes the envelopes of its block, in order.

PBFT-lite decides a sequence of certificates (`availability.py`); each replica turns the slot
into envelopes itself, deterministically, so every correct replica builds the same block:
- certificates are taken in the slot's order; one that is not live in the slot
  (`availability.live_in`: its batch was formed at assembled height F, and the slot S is not in
  (F, F + E]) is skipped as expired, and nothing is fetched for it;
- a batch whose (origin, batch_sequence) is already in the chain (an earlier slot, or earlier in
  this slot) is skipped — a faulty origin's second batch under one key, or a second certificate
  of the same batch, adds nothing. A live certificate's batch can only have been taken in the
  E slots before S (after F), so the keys of the last E slots are all a replica needs to
  remember (`included`), running or restarted;
- a replica that jumped over blocks (`DisseminatingReplica.jump`) does not know the keys of the
  slots it jumped (a block shows envelopes, not certificates): a live certificate formed before
  the last jumped slot may have been taken in one of them, so the replica cannot assemble that
  slot the way the others do. It does not guess: the slot waits (`uncertain`), and the replica
  takes the others' block by block-level catch-up, which its stalled ledger starts. Before, it
  assembled such an old certificate again that the others skipped, and its block differed
  (found by the simulator's catch-up model). At most E slots after a jump are concerned;
- the batch's envelopes follow in the batch's order, each envelope once in any window of slots
  (a client that sent the same envelope to two replicas has it in two batches). The window is
  `PbftConfig.decided_retain` slots (`recent.Recent`): what was taken earlier than that is
  forgotten by every replica alike, so a copy ordered that late is in the block again, and
  the peers mark it DUPLICATE_TXID;
- a batch this replica does not hold is fetched (`BatchFetch`) from a replica that acked it —
  the certificate names f+1 of them, at least one correct — then from every other replica (one
  may hold it without having acked it, while the ackers compacted it), one peer at a time, the
  next one on each retry; the answer is checked against the certificate's digest before it is
  used. Slots resolve strictly in sequence order: a later slot waits for an earlier one's
  batches.

What was assembled is persisted (`AssembledRecord`) before the slot is delivered, so a restart
neither delivers a slot twice nor forgets which keys and envelopes the window holds (the
runtime keeps the records of the window's slots; a jump over blocks records its slots too,
`DisseminatingReplica.jump`).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

from dltmw.core.pbft.availability import (
    BatchKey,
    ack_signers,
    expiry_slots,
    live_in,
    parse_certificate,
)
from dltmw.core.pbft.certs import Checker
from dltmw.core.pbft.dissemination import BatchRecord, StoredBatch
from dltmw.core.pbft.recent import Recent
from dltmw.core.pbft.types import Decided, request_id
from dltmw.v1 import replica_pb2

R = TypeVar("R")
Stored = dict[tuple[BatchKey, bytes], StoredBatch]  # the batches held, by key and digest


@dataclass(frozen=True)
class AssembledRecord:
    """Persisted before a slot is delivered: its sequence, the batches and envelopes it took.
    `jumped`: the slot was jumped over (a fetched block): its batch keys are not known."""

    sequence: int
    batches: tuple[tuple[int, int, bytes], ...]  # (origin, batch_sequence, digest)
    envelope_ids: tuple[bytes, ...]
    jumped: bool = False


def compact_assembled(records: Sequence[R], decided_from: int, expiry: int) -> list[R]:
    """The dissemination records a restart still needs (storage must match: `RecordStore.
    compact` does the same in SQL): assembled slots below `decided_from` go, and with each
    the stored batches it took — a batch key is in the chain once, so nothing can need them
    again; and every stored batch formed more than `expiry` slots below `decided_from`: no
    slot from `decided_from` on can take it (`availability.live_in`), and if a slot took it,
    that slot goes now. Other batches not in the chain stay (their number per origin is
    bounded, `DisseminationConfig.stored_per_origin_max`)."""
    gone: set[BatchKey] = set()
    for record in records:
        if isinstance(record, AssembledRecord) and record.sequence < decided_from:
            gone.update(BatchKey(origin, seq) for origin, seq, _digest in record.batches)
    out = []
    for record in records:
        if isinstance(record, AssembledRecord) and record.sequence < decided_from:
            continue
        if isinstance(record, BatchRecord) and (
            record.key in gone or record.formed_at + expiry < decided_from
        ):
            continue
        out.append(record)
    return out


@dataclass(frozen=True)
class Missing:
    """What a slot's assembly waits for: a batch not held (`cert`: its certificate), or
    (`cert` None) the block of a slot jumped over (`uncertain`)."""

    key: BatchKey
    digest: bytes
    cert: replica_pb2.AvailabilityCertificate | None


@dataclass
class Wanted:
    """A batch the head slot needs and this replica does not hold."""

    key: BatchKey
    digest: bytes
    sources: tuple[int, ...]
    tries: int = 0


class BatchResolver:
    """Resolves decided slots into envelopes (see the module docstring)."""

    def __init__(self, checker: Checker, me: int) -> None:
        self.checker = checker
        self.me = me
        self.queue: deque[Decided] = deque()
        window = checker.config.decided_retain
        self.expiry = expiry_slots(window)
        # The batch keys the chain took in the last `expiry` slots (see the module docstring).
        self.included: Recent[BatchKey] = Recent(self.expiry)
        self.delivered_ids: Recent[bytes] = Recent(window)
        # The last slot jumped over (its keys unknown), and the slot waiting for block-level
        # catch-up because of it (None: none waits).
        self.blind_upto = 0
        self.uncertain: int | None = None
        self.assembled_upto = 0
        self.wanted: Wanted | None = None
        self.fetches: list[tuple[int, replica_pb2.ReplicaMessage]] = []

    def push(self, decided: Decided) -> None:
        """A slot the ordering replica decided (in sequence order)."""
        if decided.sequence > self.assembled_upto:
            self.queue.append(decided)

    def restore(self, record: AssembledRecord) -> None:
        """Replay one persisted assembly (restart)."""
        self.note(record)
        self.assembled_upto = max(self.assembled_upto, record.sequence)

    def note(self, record: AssembledRecord) -> None:
        """The window takes what an assembled (or jumped) slot put in the chain."""
        self.included.add(record.sequence, (BatchKey(o, s) for o, s, _d in record.batches))
        self.delivered_ids.add(record.sequence, record.envelope_ids)
        if record.jumped:
            self.blind_upto = max(self.blind_upto, record.sequence)

    def resolve(
        self, stored: dict[tuple[BatchKey, bytes], StoredBatch]
    ) -> list[tuple[AssembledRecord, Decided]]:
        """Assemble every head slot whose batches are all held; fetch the first missing one."""
        out: list[tuple[AssembledRecord, Decided]] = []
        while self.queue:
            slot = self.queue[0]
            taken = self._take(slot, stored)
            if taken is None:
                return out
            self.queue.popleft()
            record, envelopes = taken
            self.note(record)
            self.assembled_upto = slot.sequence
            self.wanted = None
            self.uncertain = None
            ids = record.envelope_ids  # one per envelope: every one taken is fresh
            done = Decided(
                slot.view, slot.sequence, slot.digest, envelopes, slot.commits, envelopes, ids
            )
            out.append((record, done))
        return out

    def _take(
        self, slot: Decided, stored: dict[tuple[BatchKey, bytes], StoredBatch]
    ) -> tuple[AssembledRecord, tuple[bytes, ...]] | None:
        taken = self._collect(slot.sequence, slot.requests, stored)
        if isinstance(taken, Missing):
            if taken.cert is None:
                self.uncertain = slot.sequence  # may be in a jumped slot: wait for the block
            else:
                self._want(taken.key, taken.digest, taken.cert)
            return None
        return taken

    def peek(
        self, sequence: int, requests: Sequence[bytes], stored: Stored
    ) -> tuple[AssembledRecord, tuple[bytes, ...]] | None:
        """What slot `sequence` (its certificates: `requests`) would assemble to, changing
        nothing and fetching nothing: only when it is the next slot to assemble and nothing
        waits before it (the window then holds exactly the chain below it) and every batch
        it takes is held here; else None. A prepared slot's block is built from it before
        the slot is decided (`core/handlers/pbft_speculative.py`)."""
        if self.queue or sequence != self.assembled_upto + 1:
            return None
        taken = self._collect(sequence, requests, stored)
        return None if isinstance(taken, Missing) else taken

    def _collect(
        self, sequence: int, requests: Sequence[bytes], stored: Stored
    ) -> tuple[AssembledRecord, tuple[bytes, ...]] | Missing:
        """The slot's assembly (module docstring), or what it waits for; no side effects."""
        keys: set[BatchKey] = set()
        batches: list[tuple[int, int, bytes]] = []
        envelopes: list[bytes] = []
        taken: list[bytes] = []  # their ids, in order
        ids: set[bytes] = set()
        for data in requests:
            cert = parse_certificate(data)
            if cert is None:
                continue  # cannot happen: the replica ordered only certificates that parse
            if not live_in(cert.formed_at, sequence, self.expiry):
                continue  # expired (or not yet live): skipped by every replica alike
            key = BatchKey(cert.origin, cert.batch_sequence)
            if key in self.included or key in keys:
                continue
            if cert.formed_at < self.blind_upto:
                return Missing(key, bytes(cert.digest), None)
            batch = stored.get((key, bytes(cert.digest)))
            if batch is None:
                return Missing(key, bytes(cert.digest), cert)
            keys.add(key)
            batches.append((key.origin, key.batch_sequence, bytes(cert.digest)))
            known = batch.ids or tuple(request_id(e) for e in batch.envelopes)
            for envelope, eid in zip(batch.envelopes, known, strict=True):
                if eid not in self.delivered_ids and eid not in ids:
                    ids.add(eid)
                    envelopes.append(envelope)
                    taken.append(eid)
        record = AssembledRecord(sequence, tuple(batches), tuple(taken))
        return record, tuple(envelopes)

    def _want(
        self, key: BatchKey, digest: bytes, cert: replica_pb2.AvailabilityCertificate
    ) -> None:
        """Fetch a missing batch at once the first time (later: on `retry`): from the replicas
        that acked it first, then from every other. Any replica may hold it (it received the
        batch without acking, or fetched it itself), and the ackers may have compacted it
        while this replica was behind: two such replicas each waited for good for the batch
        the other held (found by the simulator's block catch-up runs)."""
        if self.wanted is not None and (self.wanted.key, self.wanted.digest) == (key, digest):
            return
        ackers = sorted(ack_signers(self.checker, cert) - {self.me})
        others = [r for r in range(self.checker.config.n) if r != self.me and r not in ackers]
        self.wanted = Wanted(key, digest, (*ackers, *others))
        self.retry()

    def retry(self) -> None:
        """Ask the next source of the wanted batch (if one is still wanted)."""
        wanted = self.wanted
        if wanted is None or not wanted.sources:
            return
        source = wanted.sources[wanted.tries % len(wanted.sources)]
        wanted.tries += 1
        fetch = replica_pb2.BatchFetch(
            origin=wanted.key.origin, batch_sequence=wanted.key.batch_sequence, digest=wanted.digest
        )
        self.fetches.append((source, replica_pb2.ReplicaMessage(batch_fetch=fetch)))

    def take_fetches(self) -> list[tuple[int, replica_pb2.ReplicaMessage]]:
        """Fetch messages to sign and send."""
        out, self.fetches = self.fetches, []
        return out
