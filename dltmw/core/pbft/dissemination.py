"""Dissemination: batches of envelopes are spread and stored before PBFT-lite orders their digests.

Separating dissemination from agreement (Narwhal, Arma) takes the envelopes off the consensus
path: the primary's pre-prepare carries availability certificates (a few hundred bytes per batch,
`availability.py`), never envelopes, and no replica signs or checks anything per envelope.

Theory of operation (one replica, pure state machine; `disseminating.py` composes it with the
`Replica` that orders the certificates):
- Intake: a client envelope admitted by `envelope_ok` (the ordering rule, checked once, here, at
  the replica that forms the batch) waits in `intake`. A batch is cut when it reaches
  `batch_count_max` envelopes or `batch_bytes_max` bytes, or when its oldest envelope waited
  `batch_wait_ticks` (the cutter's three bounds), or — Nagle's rule, `drained` — when the
  runtime's intake is empty and none of this replica's own batches is in flight (every one is
  in the chain). Every batch costs a slot (a pre-prepare, n prepares, n commits, n block
  signatures, a block, sqlite writes on every replica) whatever its size; cutting on a short
  timer while a batch is being agreed made slots of ~38 envelopes at n = 4 under load, and the
  replicas paid those per-slot costs every ~38 transactions. With the rule, the envelopes that
  arrive while a batch is agreed wait for it and leave together (a full batch still leaves at
  once, and the timer still bounds the wait when a batch is stuck).
- Forming: the batch gets the next own `batch_sequence` and this replica's assembled height
  (`formed_at`), is signed ONCE as a `Batch` message,
  persisted (`BatchRecord`) and sent to every other replica; the origin's own signed ack counts
  as the first of the f+1. Persisting before sending matters: a restarted origin never reuses
  a batch sequence for other envelopes (which would be an honest replica equivocating).
- Lone envelopes (config updates, `alone`) are cut into a batch of their own and their acks and
  certificate say so; a batch mixing one with other envelopes is never acked.
- Storing: a replica that receives a valid batch (origin's signature, recomputed digest, bounds)
  persists it, and only then (the driver runs persist before send) answers the origin with a
  signed `BatchAck`. It acks at most ONE digest per (origin, batch_sequence), whatever it
  receives later; a batch stored already is acked again (the origin may have lost the ack).
- The primary's own batch (docs/ordering.md, "The primary's own batch"): a batch formed by the
  current view's primary (not a lone one) is certified at once by its own ack alone, a
  *carried* certificate; it is still sent to every replica, ahead of the pre-prepare that
  names it, and the backups store it without acking it (`carries`). What stands in for the f+1
  acks is the slot's prepares: a backup prepares such a pre-prepare only once it stored the
  batch (`DisseminatingReplica`'s gate). When the primary changes (`recarry`), an own carried
  batch not in the chain goes back to the ack path and a new primary carries its own
  uncertified batches. Only where the group carries (`PbftConfig.carried`, the channel's
  `batch.pbft_carried_batches`): otherwise the primary's batches are acked like any other.
- Certifying: f+1 acks of distinct replicas over the same triple form the certificate; it is
  handed to the ordering replica (`certified`) and handed again every `retransmit_ticks` until
  the batch is in the chain (a lost forward, an overloaded primary, a restart lose nothing).
  Batches not certified yet are resent to the replicas that have not acked, on the same timer.
- Serving: a `BatchFetch` for a stored (origin, batch_sequence, digest) is answered with the
  origin's signed batch, forwarded as is (the fetcher checks the origin's signature and digest).
- Expiry (`advance`): a certificate can be assembled only within `expiry` slots of its batch's
  `formed_at` (`availability.live_in`). Once this replica's assembled height reaches
  formed_at + expiry, an own batch not in the chain gives its envelopes back to the intake (they
  are batched again, under a new key), and a stored batch of another origin that is not in the
  chain is forgotten; the one digest acked per key is forgotten too, and the origin's batches
  at or below that key are refused from then on (an honest origin's earlier batches expired
  earlier), so the memory of acks stays bounded and a key is still acked once.

Peers validate every envelope of every block (signatures, policy, MVCC), so a faulty origin
that batches junk gets nothing but INVALID codes; what it cannot do is get a batch ordered that
no correct replica holds, or one whose content differs from its digest.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from dltmw.core.pbft.availability import BatchKey, ack_message, expiry_slots, make_certificate
from dltmw.core.pbft.certs import Checker
from dltmw.core.pbft.types import Envelope, Rejected, Signer, digest_of_ids, request_id
from dltmw.core.reorder import arrangement
from dltmw.v1 import replica_pb2


@dataclass(frozen=True)
class DisseminationConfig:
    """Bounds of batch forming and storage; every replica of a group should use the same."""

    batch_count_max: int = 100
    batch_bytes_max: int = 1 << 22
    batch_wait_ticks: int = 2
    retransmit_ticks: int = 10
    intake_max: int = 10_000
    # Stored batches of one other origin not in the chain yet (a faulty origin cannot fill the
    # store with batches it never gets ordered). Batches in the chain are not counted: they are
    # kept as long as their slot is retained (`PbftConfig.decided_retain`: 256 slots in the
    # runtime) and go
    # with it.
    stored_per_origin_max: int = 256
    # Serve fetches of batches in the chain from the record store (`BatchFromStore`) instead
    # of keeping their signed messages in memory (see `Disseminator.chained`). Off: the
    # simulator, whose worlds answer every message from the core.
    chain_batches_from_store: bool = False

    def __post_init__(self) -> None:
        if self.batch_count_max < 1 or self.batch_bytes_max < 1 or self.batch_wait_ticks < 0:
            raise ValueError("batch bounds must be positive")


@dataclass(frozen=True)
class BatchRecord:
    """Persisted before the batch is acked (or, own, sent): a signed `Batch` message and its
    key (stored with it, so that the record can be compacted with the slot that took it)."""

    envelope: Envelope
    key: BatchKey
    formed_at: int = 0  # the batch's, so that storage can drop it once expired (`compact`)


@dataclass
class StoredBatch:
    """A valid batch this replica holds: the origin's signed message and its envelopes. Once
    the batch is in the chain its envelopes are dropped (assembly took them), and with
    `chain_batches_from_store` its signed message too (`envelope` None): a fetch of it is then
    answered from the record store (`BatchFromStore`)."""

    envelope: Envelope | None
    envelopes: tuple[bytes, ...]
    formed_at: int = 0
    ids: tuple[bytes, ...] = ()  # `request_id` of each envelope (hashed once, at receipt)


@dataclass(frozen=True)
class BatchFromStore:
    """Message: send `destination` the signed batch (key, digest) read back from the record
    store (`ledger/pbft_store.RecordStore.batch`). Why: a running replica kept the signed
    message of every batch in the chain for `decided_retain` slots only to answer fetches —
    256 slots x a batch's envelopes, ~15-20 MB of a replica's memory under load — though
    fetches come only from a replica catching up, and the record store holds the same bytes
    (durable before the batch was acked) for exactly as long (compacted with its slot)."""

    destination: int
    key: BatchKey
    digest: bytes


@dataclass
class OwnBatch:
    """A batch this replica formed, with the acks collected so far."""

    digest: bytes
    count: int
    alone: bool = False
    formed_at: int = 0
    acks: dict[int, Envelope] = field(default_factory=dict)
    certificate: bytes | None = None
    carried: bool = False  # `certificate` is a carried one (this replica was primary)


def open_batch(
    envelope: Envelope, message: replica_pb2.ReplicaMessage, config: DisseminationConfig
) -> tuple[BatchKey, bytes, tuple[bytes, ...], tuple[bytes, ...]] | str:
    """(key, digest, envelopes, their ids) of a signed batch whose signature was verified, or
    why it is refused (a drop-counter name). Each envelope is hashed here, once: its id serves
    the digest check, assembly, the block's content hashes and the replies."""
    batch = message.batch
    envelopes = tuple(batch.envelopes)
    if batch.batch_sequence < 1 or not envelopes or len(envelopes) > config.batch_count_max:
        return "batch-malformed"
    if sum(len(e) for e in envelopes) > config.batch_bytes_max:
        return "batch-malformed"
    ids = tuple(request_id(e) for e in envelopes)
    if digest_of_ids(ids) != batch.digest:
        return "batch-digest-mismatch"
    return BatchKey(envelope.replica, batch.batch_sequence), bytes(batch.digest), envelopes, ids


class Disseminator:
    """Forms, stores, acks and certifies batches (see the module docstring)."""

    def __init__(
        self,
        checker: Checker,
        me: int,
        sign: Signer,
        config: DisseminationConfig,
        envelope_ok: Callable[[bytes], bool],
        alone: Callable[[bytes], bool] = lambda _e: False,
        primary: Callable[[], int] = lambda: -1,
    ) -> None:
        """`envelope_ok`: the admission rule; `alone`: envelopes that must be ordered in a block
        of their own (config updates) — batched alone, their certificates say so; `primary`:
        the ordering replica's current primary (whose own batches are carried, not acked)."""
        self.checker = checker
        self.me = me
        self._sign = sign
        self.config = config
        self.expiry = expiry_slots(checker.config.decided_retain)
        self.height = 0  # the assembled height (`advance`): a new batch's `formed_at`
        self.envelope_ok = envelope_ok
        self.alone = alone
        self.primary = primary
        self.now = 0
        self.intake: dict[bytes, bytes] = {}  # envelope id -> envelope, arrival order
        # What `cut` needs of the intake without a pass over it: its bytes and its lone
        # envelopes (`alone` parses an envelope's header; once per envelope, at `submit`).
        self.intake_bytes = 0
        self.intake_lone: set[bytes] = set()
        self.intake_since = 0
        self.next_batch = 1
        # Form each batch in Fabric++ order (`core/reorder.py`): the channel's `batch.reorder`
        # in force here. The signed batch fixes the order (its digest covers the ids in order)
        # and a slot assembles its batch in that order, so every replica builds the same block.
        self.reorder = False
        self.own: dict[int, OwnBatch] = {}
        self.stored: dict[tuple[BatchKey, bytes], StoredBatch] = {}
        # The one digest acked per key, with the batch's formed_at (forgotten once it expired,
        # `advance`); below `floor` (per origin) every batch expired and is refused.
        self.acked: dict[BatchKey, tuple[bytes, int]] = {}
        self.floor: dict[int, int] = {}
        self._prune_at = 0
        self.per_origin: dict[int, int] = {}  # counted in `unordered`, by origin
        # Others' stored batches whose key is not in the chain yet: digests by key.
        self.unordered: dict[BatchKey, set[bytes]] = {}
        # Stored digests of a key the chain took with another digest (an equivocating origin's
        # other batch): never ordered, no longer counted against the origin's bound, dropped at
        # expiry as an unordered batch is (`advance`). They used to stay for good: a faulty
        # origin could grow every correct replica's memory by a batch per equivocation.
        self.shadowed: dict[BatchKey, set[bytes]] = {}
        self.batched_ids: set[bytes] = set()  # ids in own batches not yet in the chain
        self.certified: list[bytes] = []  # certificates to hand to the ordering replica
        self.persist: list[BatchRecord] = []
        self.send: list[tuple[int, Envelope]] = []
        self.from_store: list[BatchFromStore] = []  # fetches answered from the record store
        self.replies: list[Rejected] = []
        self.counters: dict[str, int] = {}

    def drop(self, reason: str) -> None:
        """Count a refused input (nothing else happens: bad peer input changes nothing)."""
        self.counters[reason] = self.counters.get(reason, 0) + 1

    def _signed(self, message: replica_pb2.ReplicaMessage) -> Envelope:
        message.epoch = self.checker.config.epoch
        payload = message.SerializeToString()
        return Envelope(payload=payload, replica=self.me, signature=self._sign(payload))

    def _others(self) -> list[int]:
        return [i for i in range(self.checker.config.n) if i != self.me]

    # -- intake and forming ----------------------------------------------------------------

    def submit(
        self,
        envelope: bytes,
        known: Callable[[bytes], bool],
        admitted: bool = False,
        eid: bytes = b"",
    ) -> None:
        """A client envelope: admit it once (`known`: already in the chain; `admitted`: the
        node's client boundary judged it already, `ClientRequest.admitted`; `eid`: its request
        id when the caller has it)."""
        eid = eid or request_id(envelope)
        if eid in self.intake or eid in self.batched_ids or known(eid):
            return
        if len(envelope) > self.config.batch_bytes_max or not (
            admitted or self.envelope_ok(envelope)
        ):
            self.drop("inadmissible-envelope")
            self.replies.append(Rejected(eid, "INVALID_REQUEST"))
            return
        if len(self.intake) >= self.config.intake_max:
            self.replies.append(Rejected(eid, "OVERLOADED"))
            return
        self._take_in(eid, envelope)

    def _take_in(self, eid: bytes, envelope: bytes) -> None:
        """Add an admitted envelope to the intake, keeping what `cut` reads of it true."""
        if not self.intake:
            self.intake_since = self.now
        self.intake[eid] = envelope
        self.intake_bytes += len(envelope)
        if self.alone(envelope):
            self.intake_lone.add(eid)

    def tick(self, now: int) -> None:
        """Cut what waited long enough; resend uncertified batches and certificates."""
        self.now = now
        self.cut(full_only=False)
        if now % self.config.retransmit_ticks == 0:
            self.retransmit()

    def in_flight(self) -> bool:
        """Is one of our own batches not in the chain yet (formed, maybe certified, not
        assembled)? The acknowledgement of Nagle's rule (`drained`)."""
        return bool(self.own)

    def drained(self) -> None:
        """The runtime's intake is empty: with none of our batches in flight, cut what waits now,
        full or not (a lone transaction at low load waits for no timer); with one in flight,
        leave it to grow until that batch is in the chain, a full batch, or the timer."""
        if not self.in_flight():
            self.cut(full_only=False, now=True)

    def cut(self, full_only: bool, now: bool = False) -> None:
        """Form batches from the intake (full ones only, unless the oldest waited enough or
        `now`: cut whatever waits)."""
        cfg = self.config
        while self.intake:
            if not (self.complete() or now or (not full_only and self._waited())):
                return  # what the pass below would find, without it (it ran per envelope)
            batch: list[bytes] = []
            ids: list[bytes] = []
            size = 0
            for eid, envelope in self.intake.items():
                lone = eid in self.intake_lone
                if batch and (
                    lone
                    or len(batch) >= cfg.batch_count_max
                    or size + len(envelope) > cfg.batch_bytes_max
                ):
                    break
                batch.append(envelope)
                ids.append(eid)
                size += len(envelope)
                if lone:
                    break  # a lone envelope is a batch by itself
            full = len(batch) < len(self.intake) or len(batch) >= cfg.batch_count_max
            full = full or (len(batch) == 1 and ids[0] in self.intake_lone)
            if not full and (full_only or not (self._waited() or now)):
                return
            for eid in ids:
                del self.intake[eid]
                self.intake_lone.discard(eid)
                self.batched_ids.add(eid)
            self.intake_bytes -= size
            self.intake_since = self.now
            if self.reorder:
                order = arrangement(batch)
                batch, ids = [batch[i] for i in order], [ids[i] for i in order]
            self._form(tuple(batch), tuple(ids))

    def complete(self) -> bool:
        """Does the intake hold a complete batch: `batch_count_max` envelopes, more than
        `batch_bytes_max` bytes (every envelope is below it: the first batch ends before the
        intake does), or a lone envelope (the batch before it ends there, or it is one)?"""
        cfg = self.config
        return (
            len(self.intake) >= cfg.batch_count_max
            or self.intake_bytes > cfg.batch_bytes_max
            or bool(self.intake_lone)
        )

    def _waited(self) -> bool:
        return self.now - self.intake_since >= self.config.batch_wait_ticks

    def _form(self, envelopes: tuple[bytes, ...], ids: tuple[bytes, ...]) -> None:
        seq, digest, formed = self.next_batch, digest_of_ids(ids), self.height
        lone = self.lone(envelopes)
        self.next_batch += 1
        message = replica_pb2.ReplicaMessage(
            batch=replica_pb2.Batch(
                batch_sequence=seq, digest=digest, envelopes=envelopes, formed_at=formed
            )
        )
        envelope = self._signed(message)
        key = BatchKey(self.me, seq)
        self.persist.append(BatchRecord(envelope, key, formed))
        self.stored[(key, digest)] = StoredBatch(envelope, envelopes, formed, ids)
        self.acked[key] = (digest, formed)
        self.own[seq] = OwnBatch(digest, len(envelopes), lone, formed)
        ack = ack_message(self.me, seq, digest, lone, formed)
        self.own[seq].acks[self.me] = self._signed(ack)
        self.send.extend((peer, envelope) for peer in self._others())
        if self.carries(self.me, lone):
            self._carry(seq)
        else:
            self._maybe_certify(seq)

    def carries(self, origin: int, lone: bool) -> bool:
        """Is a batch of `origin` carried by the primary's pre-prepare instead of acked?
        Never in a group that does not carry (`PbftConfig.carried`)."""
        return self.checker.config.carried and origin == self.primary() and not lone

    def _carry(self, seq: int) -> None:
        """Certify own batch `seq` by our own ack alone, to order as the primary."""
        own = self.own[seq]
        own.certificate = make_certificate(
            self.me, seq, own.digest, own.count, [own.acks[self.me]], False, own.formed_at, True
        )
        own.carried = True
        self.certified.append(own.certificate)

    def recarry(self) -> None:
        """The primary changed (or this replica restarted): own batches not in the chain follow
        the current primary. Not primary: a carried certificate no longer counts (no backup
        prepares it from us), so the batch goes back to the ack path, sent again to the
        replicas that have not acked. Primary: uncertified own batches are carried."""
        carrying = self.checker.config.carried and self.primary() == self.me
        stale: set[bytes] = set()
        for seq, own in sorted(self.own.items()):
            if own.carried and not carrying and own.certificate is not None:
                stale.add(own.certificate)
                own.certificate, own.carried = None, False
                stored = self.stored.get((BatchKey(self.me, seq), own.digest))
                if stored is not None and stored.envelope is not None:
                    peers = [p for p in self._others() if p not in own.acks]
                    self.send.extend((peer, stored.envelope) for peer in peers)
                self._maybe_certify(seq)
            elif carrying and own.certificate is None and not own.alone:
                self._carry(seq)
        if stale:
            self.certified = [c for c in self.certified if c not in stale]

    # -- peers' messages -------------------------------------------------------------------

    def on_batch(
        self, envelope: Envelope, message: replica_pb2.ReplicaMessage, needed: bool = False
    ) -> StoredBatch | None:
        """Store a valid batch and ack it to its origin; returns it when newly stored.
        `needed`: a batch this replica fetched for a slot (decided, or a pre-prepare naming it
        carried) is stored whatever the per-origin bound: the bound keeps an origin from filling
        our store with batches nobody orders, not a slot from the batch it takes. Without this
        a primary that runs ahead (its batches need no acks) filled a slow backup's bound with
        later batches and the backup never stored the one its next slot needed."""
        opened = open_batch(envelope, message, self.config)
        if isinstance(opened, str):
            self.drop(opened)
            return None
        key, digest, envelopes, ids = opened
        if key.origin == self.me:
            return None  # our own, relayed back: we hold it
        if len(envelopes) > 1 and any(self.alone(e) for e in envelopes):
            self.drop("batch-mixes-a-lone-request")  # never acked: it cannot be certified
            return None
        stored = self.stored.get((key, digest))
        acked = self.acked.get(key)
        fresh = stored is None
        if stored is None:
            formed = message.batch.formed_at
            # The floor assumes an origin forms its batches in sequence order; a faulty one
            # need not (its 5 formed after its 6), so a batch a slot needs passes it: else an
            # honest replica whose acked 6 expired refused for good the 5 its peers took.
            below_floor = key.batch_sequence <= self.floor.get(key.origin, 0) and not needed
            if below_floor or formed + self.expiry <= self.height:
                self.drop("batch-expired")  # no slot the chain still reaches can take it
                return None
            if (
                acked is None
                and not needed
                and self.per_origin.get(key.origin, 0) >= self.config.stored_per_origin_max
            ):
                self.drop("batch-store-full")
                return None
            stored = StoredBatch(envelope, envelopes, formed, ids)
            self.persist.append(BatchRecord(envelope, key, formed))
            self.stored[(key, digest)] = stored
            self._count(key, digest)
        if acked is None:
            self.acked[key] = acked = (digest, stored.formed_at)
        lone = self.lone(envelopes)
        if acked[0] == digest and self.carries(key.origin, lone):
            pass  # the primary's: its pre-prepare names it, our prepare stands for an ack
        elif acked[0] == digest:
            ack_body = ack_message(key.origin, key.batch_sequence, digest, lone, acked[1])
            self.send.append((key.origin, self._signed(ack_body)))
        else:
            self.drop("equivocating-batch")  # stored (it may be fetched), never acked
        return stored if fresh else None

    def on_ack(self, envelope: Envelope, message: replica_pb2.ReplicaMessage) -> None:
        """Collect an ack of one of our batches."""
        ack = message.batch_ack
        own = self.own.get(ack.batch_sequence)
        if ack.origin != self.me or own is None or ack.digest != own.digest:
            self.drop("ack-of-unknown-batch")
            return
        if ack.alone != own.alone or ack.formed_at != own.formed_at:
            self.drop("ack-of-unknown-batch")
            return
        own.acks.setdefault(envelope.replica, envelope)
        self._maybe_certify(ack.batch_sequence)

    def _maybe_certify(self, seq: int) -> None:
        own = self.own[seq]
        if own.certificate is not None or len(own.acks) < self.checker.config.f + 1:
            return
        acks = [own.acks[r] for r in sorted(own.acks)][: self.checker.config.f + 1]
        own.certificate = make_certificate(
            self.me, seq, own.digest, own.count, acks, own.alone, own.formed_at
        )
        self.certified.append(own.certificate)

    def lone(self, envelopes: tuple[bytes, ...]) -> bool:
        """Is this batch one envelope to be ordered alone?"""
        return len(envelopes) == 1 and self.alone(envelopes[0])

    def on_fetch(self, source: int, message: replica_pb2.ReplicaMessage) -> None:
        """Serve a stored batch (the origin's signed message, as is)."""
        fetch = message.batch_fetch
        stored = self.stored.get((BatchKey(fetch.origin, fetch.batch_sequence), fetch.digest))
        if stored is None:
            self.drop("fetch-of-unknown-batch")
            return
        if stored.envelope is None:  # in the chain, kept only on disk (`BatchFromStore`)
            key = BatchKey(fetch.origin, fetch.batch_sequence)
            self.from_store.append(BatchFromStore(source, key, bytes(fetch.digest)))
            return
        self.send.append((source, stored.envelope))

    # -- chain feedback --------------------------------------------------------------------

    def included(self, key: BatchKey, envelope_ids: list[bytes], digest: bytes) -> None:
        """The batch (`key`, `digest`) is in the chain: stop resending it (own) or its
        certificate, and stop counting `key`'s batches against their origin's bound (the chain
        takes each key once, so another digest of it — an equivocation — can never be ordered
        either: such a batch is `shadowed` until it expires; what was ordered stays stored
        while its slot is retained)."""
        if key.origin == self.me:
            own = self.own.pop(key.batch_sequence, None)
            if own is not None:
                self.batched_ids.difference_update(envelope_ids)
        others = self._uncount(key)
        others.discard(digest)
        if others:
            self.shadowed.setdefault(key, set()).update(others)

    def chained(self, stored: StoredBatch) -> None:
        """A stored batch is in the chain: assembly took its envelopes, and only a fetch (a
        replica catching up) needs it again — answered from its signed message in memory, or
        with `chain_batches_from_store` from the record store (`BatchFromStore`)."""
        stored.envelopes = stored.ids = ()
        if self.config.chain_batches_from_store:
            stored.envelope = None

    def delivered(self, envelope_ids: Sequence[bytes]) -> None:
        """Envelopes the chain took (in any replica's batch): not batched here again. A client
        that broadcast its envelope to every replica had it in each one's intake; leaving
        those copies to be batched and ordered later made assembly skip them only while its
        window (`recent.Recent`) still remembered the first."""
        intake = self.intake
        if intake:
            for eid in envelope_ids:
                envelope = intake.pop(eid, None)
                if envelope is not None:  # keep what `cut` reads of the intake true
                    self.intake_bytes -= len(envelope)
                    self.intake_lone.discard(eid)

    def forget(self, key: BatchKey, digest: bytes) -> None:
        """Drop a delivered batch from the store (its slot is older than `retain_slots`)."""
        self.stored.pop((key, digest), None)
        self._uncount(key)

    def _count(self, key: BatchKey, digest: bytes) -> None:
        digests = self.unordered.setdefault(key, set())
        if key.origin != self.me and digest not in digests:
            digests.add(digest)
            self.per_origin[key.origin] = self.per_origin.get(key.origin, 0) + 1

    def _uncount(self, key: BatchKey) -> set[bytes]:
        """Stop counting `key`'s stored batches; returns their digests."""
        digests = self.unordered.pop(key, None)
        if not digests:
            return set()
        self.per_origin[key.origin] -= len(digests)
        return digests

    def advance(self, height: int, known: Callable[[bytes], bool]) -> None:
        """The assembled height moved to `height` (slots are assembled above it only): expire
        what no such slot can take any more (the module docstring, "Expiry"); `known`: ids
        the chain took within the de-duplication window (not batched again)."""
        if height <= self.height:
            return
        self.height = height
        expiry = self.expiry
        for seq in [s for s, own in self.own.items() if own.formed_at + expiry <= height]:
            own = self.own.pop(seq)
            key = BatchKey(self.me, seq)
            stored = self.stored.pop((key, own.digest), None)
            self.drop("own-batch-expired")
            held = () if stored is None else zip(stored.envelopes, stored.ids, strict=True)
            for envelope, eid in held:
                self.batched_ids.discard(eid)
                if eid not in self.intake and not known(eid):  # batched again, under a new key
                    self._take_in(eid, envelope)
        for key, digests in list(self.unordered.items()):
            for digest in list(digests):
                stored = self.stored.get((key, digest))
                if stored is not None and stored.formed_at + expiry <= height:
                    del self.stored[(key, digest)]
                    digests.discard(digest)
                    self.per_origin[key.origin] -= 1
                    self.drop("stored-batch-expired")
            if not digests:
                del self.unordered[key]
        for key, digests in list(self.shadowed.items()):
            for digest in list(digests):
                stored = self.stored.get((key, digest))
                if stored is None or stored.formed_at + expiry <= height:
                    self.stored.pop((key, digest), None)
                    digests.discard(digest)
            if not digests:
                del self.shadowed[key]
        if height >= self._prune_at:  # a pass over every ack, every few slots
            self._prune_at = height + max(1, expiry // 8)
            for key, (_digest, formed) in list(self.acked.items()):
                if formed + expiry <= height:
                    del self.acked[key]
                    if key.batch_sequence > self.floor.get(key.origin, 0):
                        self.floor[key.origin] = key.batch_sequence

    def retransmit(self) -> None:
        """Resend uncertified own batches to non-ackers; re-hand certificates not in the chain."""
        for seq, own in sorted(self.own.items()):
            if own.certificate is not None:
                self.certified.append(own.certificate)
                continue
            stored = self.stored.get((BatchKey(self.me, seq), own.digest))
            if stored is None or stored.envelope is None:
                continue
            for peer in self._others():
                if peer not in own.acks:
                    self.send.append((peer, stored.envelope))

    def restore(self, record: BatchRecord) -> None:
        """Replay one persisted batch (restart): stored, acked, and own ones to certify anew."""
        message = replica_pb2.ReplicaMessage()
        message.ParseFromString(record.envelope.payload)
        envelopes = tuple(message.batch.envelopes)
        key = BatchKey(record.envelope.replica, message.batch.batch_sequence)
        digest, formed = bytes(message.batch.digest), message.batch.formed_at
        ids = tuple(request_id(e) for e in envelopes)
        self.stored[(key, digest)] = StoredBatch(record.envelope, envelopes, formed, ids)
        self.acked.setdefault(key, (digest, formed))
        if key.origin == self.me:
            self.next_batch = max(self.next_batch, key.batch_sequence + 1)
            lone = self.lone(envelopes)
            own = OwnBatch(digest, len(envelopes), lone, formed)
            ack = ack_message(self.me, key.batch_sequence, digest, lone, formed)
            own.acks[self.me] = self._signed(ack)
            self.own[key.batch_sequence] = own
            self.batched_ids.update(ids)
        else:
            self._count(key, digest)
