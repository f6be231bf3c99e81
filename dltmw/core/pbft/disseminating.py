"""A PBFT-lite replica that orders batch certificates: dissemination + agreement + assembly.

`DisseminatingReplica` is a core like `Replica` (`step`, `tick`, `ready` -> `PbftEffects`) and
can stand where one stands; inside it:
- a `Disseminator` takes the client envelopes, forms, stores, acks and certifies batches;
- an unchanged `Replica` orders the certificates — its requests are certificate bytes and its
  admission rule is `AvailabilityRule` (f+1 valid distinct acks), so the primary's pre-prepare
  carries digests and acks, never envelopes, and a backup prepares no slot naming a batch that
  is not provably stored by a correct replica;
- a `BatchResolver` turns each decided slot into its envelopes, fetching missing batches.

Its `Decided` outputs carry envelopes: `requests` = `fresh` = the slot's envelopes, each once in
the whole chain, in certificate then batch order (`assembly.py`); `digest` and `commits` are
the ordered slot's (over certificates). Records persisted: the replica's, `BatchRecord`s and
`AssembledRecord`s; `restore` takes them all back in order.

Effects keep the core contract: every record (a stored batch, the replica's votes, an
assembled slot) is in `persist` before any message that depends on it is in `send` (an ack
leaves only once its batch is durable). Replies are the disseminator's refusals, by envelope id.
The primary's own batch is carried (docs/ordering.md, "The primary's own batch"): certified by
the origin's ack alone (`availability`, `carried`), sent ahead of the pre-prepare and stored by
the backups without an ack. The gate (`carried_held`): a pre-prepare naming a carried
certificate goes to the replica only if its sender is the certificate's origin and the view's
primary, and the batch is stored here — in this step at the latest, so its `BatchRecord` is in
`persist` before the prepare is in `send`. Otherwise it is dropped (the primary retransmits it)
and the batch fetched from its origin. 2f+1 prepares then mean f+1 correct holders, what f+1
acks meant. A carried certificate whose origin is not the current primary is stale (`_expired`):
no correct backup would prepare it, so no replica keeps it pending, forwards or proposes it.
In a group that does not carry (`PbftConfig.carried` off: a channel without
`batch.pbft_carried_batches`) there is no gate and no such staleness: the field is ignored and
every certificate needs its f+1 acks (`availability.certificate_error`).

Lone envelopes (config updates, `alone`) are batched alone and their certificate says so
(`availability.certificate_alone`): the replica orders that certificate in a slot of its own,
so the config update is alone in its block, as without dissemination.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Collection, Iterator, Sequence

from google.protobuf.message import DecodeError

from dltmw.core.effects import Effects
from dltmw.core.pbft.assembly import AssembledRecord, BatchResolver
from dltmw.core.pbft.availability import (
    AvailabilityRule,
    BatchKey,
    carried_keys,
    certificate_alone,
    expiry_slots,
    parse_certificate,
)
from dltmw.core.pbft.certs import Checker
from dltmw.core.pbft.dissemination import (
    BatchFromStore,
    BatchRecord,
    DisseminationConfig,
    Disseminator,
)
from dltmw.core.pbft.recent import Recent
from dltmw.core.pbft.replica import Replica
from dltmw.core.pbft.state import Pending
from dltmw.core.pbft.surface import DisseminatedRecord
from dltmw.core.pbft.types import (
    ClientRequest,
    Decided,
    Envelope,
    Outgoing,
    PbftConfig,
    Rejected,
    Signer,
    Verifier,
    batch_digest,
    request_id,
)
from dltmw.v1 import replica_pb2

DISSEMINATION_KINDS = frozenset({"batch", "batch_ack", "batch_fetch"})
DisseminatedEffects = Effects[DisseminatedRecord, Decided, Outgoing, Rejected]


# Carried batches the gate asks for at once, at most (`_fetching`).
FETCHING_MAX = 64
# Assembled slots a running replica keeps in memory after delivering them (see `_keep`).
ASSEMBLED_KEPT = 4


class DisseminatingReplica:
    """See the module docstring."""

    def __init__(
        self,
        config: PbftConfig,
        me: int,
        sign: Signer,
        verify: Verifier,
        dissemination: DisseminationConfig,
        envelope_ok: Callable[[bytes], bool] = lambda _e: True,
        enforce_certificates: bool = True,
        alone: Callable[[bytes], bool] = lambda _e: False,
    ) -> None:
        """`envelope_ok`: the admission rule, run once at the replica that batches an envelope;
        `enforce_certificates=False` is the simulator's negative control only; `alone`:
        envelopes ordered in a block of their own (config updates)."""
        self.checker = Checker(config, verify, batch_digest, lambda _r: True)
        self.rule = AvailabilityRule(self.checker, enforce=enforce_certificates)
        self.replica = Replica(
            config, me, sign, verify, request_ok=self.rule, alone=certificate_alone
        )
        self.expiry = expiry_slots(config.decided_retain)
        self.replica.stale = self._expired
        self.me = me
        self._sign = sign
        self.disseminator = Disseminator(
            self.checker, me, sign, dissemination, envelope_ok, alone, self._primary
        )
        self._seen_view: int | None = None  # the view `recarry` last ran for
        # Carried batches the gate fetched (`_needed`), until the slot taking them assembles.
        self._fetching: set[tuple[BatchKey, bytes]] = set()
        self.resolver = BatchResolver(self.checker, me)
        self.retransmit_ticks = dissemination.retransmit_ticks
        # A delivered batch is kept as long as its decided slot is (state transfer serves the
        # slot's certificates; a replica catching up then fetches their batches).
        self.retain_slots = config.decided_retain
        self._persist: list[DisseminatedRecord] = []
        self._used: dict[int, list[tuple[BatchKey, bytes]]] = {}
        self._assembled: dict[int, Decided] = {}
        # Fetches to answer from the record store (`BatchFromStore`), taken by the orderer
        # core with `take_from_store`: they are not `Envelope`s, so not in `ready().send`.
        self.from_store: list[BatchFromStore] = []
        # What the previous replica group put in the chain, as this replica knew it when it
        # entered this group (`carry`); forgotten after this group's first `decided_retain`
        # slots, as the previous window would have been. Never read by assembly: see `carry`.
        self.earlier: frozenset[bytes] = frozenset()

    @classmethod
    def restore(
        cls,
        config: PbftConfig,
        me: int,
        sign: Signer,
        verify: Verifier,
        dissemination: DisseminationConfig,
        records: Sequence[DisseminatedRecord],
        envelope_ok: Callable[[bytes], bool] = lambda _e: True,
        enforce_certificates: bool = True,
        alone: Callable[[bytes], bool] = lambda _e: False,
    ) -> DisseminatingReplica:
        """Rebuilt from exactly the records its earlier incarnation made durable."""
        core = cls(
            config, me, sign, verify, dissemination, envelope_ok, enforce_certificates, alone
        )
        inner = [r for r in records if not isinstance(r, BatchRecord | AssembledRecord)]
        core.replica = Replica.restore(
            config, me, sign, verify, inner, request_ok=core.rule, alone=certificate_alone
        )
        core.replica.stale = core._expired
        in_chain: dict[BatchKey, bytes] = {}
        for record in records:
            if isinstance(record, BatchRecord):
                core.disseminator.restore(record)
            elif isinstance(record, AssembledRecord):
                core.resolver.restore(record)
                core._rebuild(record)
                in_chain.update((BatchKey(o, s), d) for o, s, d in record.batches)
        for key, digest in in_chain.items():
            core.disseminator.included(key, [], digest)
        for (key, _digest), stored in core.disseminator.stored.items():
            if key in in_chain:  # rebuilt above: only a fetch needs it now
                core.disseminator.chained(stored)
        core.disseminator.batched_ids.difference_update(core.resolver.delivered_ids)
        core._advance()
        for seq in sorted(core.replica.decided):
            batch = core.replica.decided[seq]
            requests = tuple(batch.requests)
            core.resolver.push(
                Decided(batch.view, seq, batch.digest, requests, tuple(batch.commits), requests)
            )
        return core

    # -- the core contract -----------------------------------------------------------------

    @property
    def view(self) -> int:
        """The ordering replica's view."""
        return self.replica.view

    @property
    def counters(self) -> Counter[str]:
        """Drop counters of the replica and of dissemination."""
        merged: Counter[str] = Counter(self.replica.counters)
        merged.update(self.disseminator.counters)
        return merged

    def step(self, message: object) -> None:
        """Feed a ClientRequest (an envelope) or a SignedReplicaMessage from a peer."""
        if isinstance(message, ClientRequest):
            self.disseminator.submit(
                message.request,
                self.known,
                message.admitted,
                message.request_id,
            )
            self.disseminator.cut(full_only=True)
            return
        if not isinstance(message, Envelope):
            raise TypeError(f"disseminating replica cannot step {type(message).__name__}")
        parsed = _parsed(message)
        kind = None if parsed is None else parsed.WhichOneof("body")
        if (
            kind == "pre_prepare"
            and parsed is not None
            and self.rule.enforce
            and not self.carried_held(message.replica, parsed.pre_prepare)
        ):
            return
        if kind not in DISSEMINATION_KINDS:
            self.replica.step(message)
            return
        opened = self.checker.open(message, parsed)  # parsed once: a batch is large
        if opened is None:
            self.disseminator.drop("bad-signature-or-malformed")
        elif kind == "batch":
            named = (BatchKey(message.replica, opened.batch.batch_sequence), opened.batch.digest)
            self.disseminator.on_batch(message, opened, self._needed(named))
            self._fetching.discard(named)
        elif kind == "batch_ack":
            self.disseminator.on_ack(message, opened)
        else:
            self.disseminator.on_fetch(message.replica, opened)

    def _needed(self, named: tuple[BatchKey, bytes]) -> bool:
        """Is this batch one this replica fetched (`Disseminator.on_batch`'s `needed`)?"""
        wanted = self.resolver.wanted
        return named in self._fetching or (
            wanted is not None and (wanted.key, wanted.digest) == named
        )

    def _primary(self) -> int:
        return self.replica.primary()

    def carried_held(self, sender: int, pp: replica_pb2.PrePrepare) -> bool:
        """The gate (module docstring): every carried certificate `pp` names is the sender's
        own batch, the sender is the primary of `pp`'s view, and the batch is stored here.
        A missing batch is fetched from its origin (the primary retransmits its pre-prepare)."""
        for cert, key in carried_keys(pp, self.replica.config.carried):
            if cert.origin != sender or sender != self.replica.config.primary(pp.view):
                self.disseminator.drop("carried-certificate-not-the-primary's")
                return False
            if (key, bytes(cert.digest)) not in self.disseminator.stored:
                self.disseminator.drop("carried-batch-not-held")
                fetch = replica_pb2.BatchFetch(
                    origin=key.origin, batch_sequence=key.batch_sequence, digest=cert.digest
                )
                message = replica_pb2.ReplicaMessage(batch_fetch=fetch)
                self.disseminator.send.append((sender, self._signed(message)))
                if len(self._fetching) >= FETCHING_MAX:  # never answered: forget them
                    self._fetching.clear()
                self._fetching.add((key, bytes(cert.digest)))
                return False
        return True

    def tick(self, now: int) -> None:
        """Dissemination timers, then the replica's, then a fetch retry."""
        self.disseminator.tick(now)
        self.replica.tick(now)
        if now % self.retransmit_ticks == 0:
            self.resolver.retry()

    def ready(self) -> DisseminatedEffects:
        """Hand certificates to the replica, take its effects, assemble decided slots."""
        d = self.disseminator
        if self.replica.view != self._seen_view:  # a new primary: own batches follow it
            self._seen_view = self.replica.view
            d.recarry()
            self.replica.prune_stale()
        for cert in d.certified:
            self.replica.step(ClientRequest(cert))
        d.certified = []
        inner = self.replica.ready()
        for decided in inner.decided:
            self.resolver.push(decided)
        assembled = self.resolver.resolve(d.stored)
        persist: list[DisseminatedRecord] = [*d.persist, *inner.persist, *self._persist]
        self._persist = []
        for record, done in assembled:
            persist.append(record)
            d.delivered(record.envelope_ids)
            self._note_used(record)
            self._keep(done, ASSEMBLED_KEPT)
        if assembled:
            self._advance()
        send: list[tuple[int, Outgoing]] = [*d.send, *inner.send]
        send.extend((peer, self._signed(m)) for peer, m in self.resolver.take_fetches())
        self.from_store.extend(d.from_store)
        d.from_store = []
        replies = [(r.request_id, r) for r in d.replies]
        d.persist, d.send, d.replies = [], [], []
        return Effects(
            persist=tuple(persist),
            decided=tuple(done for _record, done in assembled),
            send=tuple(send),
            replies=tuple(replies),
        )

    def _expired(self, request: bytes, next_exec: int) -> bool:
        """A certificate no slot from `next_exec` on can assemble (`availability.live_in`), or
        a carried one whose origin is not the current primary (no correct backup prepares it)."""
        cert = parse_certificate(request)
        if cert is None:
            return False
        carried = cert.carried and self.replica.config.carried
        if carried and cert.origin != self.replica.primary():
            return True
        return cert.formed_at + self.expiry < next_exec

    def _advance(self) -> None:
        """Dissemination learns the assembled height: new batches are formed at it, and what
        expired below it goes (`Disseminator.advance`)."""
        if self.earlier and self.resolver.assembled_upto >= self.retain_slots:
            self.earlier = frozenset()  # as `Recent` forgets sequence 0 (`carry`)
        self.disseminator.advance(self.resolver.assembled_upto, self.known)

    def take_from_store(self) -> list[BatchFromStore]:
        """The fetches gathered by `ready` that the record store answers (and forget them),
        each once: a repeated fetch costs the executor a read, not only a send."""
        taken, self.from_store = self.from_store, []
        return list(dict.fromkeys(taken))

    def _rebuild(self, record: AssembledRecord) -> None:
        """An assembled slot's envelopes again, from the stored batches it took (restart)."""
        if not record.batches:
            return  # a slot jumped over (`jump`) or with nothing new: no envelopes to rebuild
        by_id: dict[bytes, bytes] = {}
        for origin, batch_sequence, digest in record.batches:
            stored = self.disseminator.stored.get((BatchKey(origin, batch_sequence), digest))
            if stored is None:
                return  # forgotten (older than the retention): nothing to rebuild
            by_id.update((request_id(e), e) for e in stored.envelopes)
        envelopes = tuple(by_id[i] for i in record.envelope_ids if i in by_id)
        self._keep(Decided(0, record.sequence, b"", envelopes, (), envelopes), self.retain_slots)

    def _keep(self, done: Decided, slots: int) -> None:
        """Retain an assembled slot, and the `slots` before it. A restart rebuilds every slot of
        the retention window from the records and hands them to the orderer core, which builds
        the blocks its ledger lacks; a running replica has delivered each slot as it assembled
        it, so it keeps only a few (each held its block's envelopes: 256 slots of them were
        tens of MB of a replica's memory)."""
        self._assembled[done.sequence] = done
        horizon = done.sequence - slots
        for seq in [s for s in self._assembled if s <= horizon]:
            del self._assembled[seq]

    def _note_used(self, record: AssembledRecord) -> None:
        """Tell dissemination which batches are in the chain; forget old delivered batches."""
        used = []
        for origin, batch_sequence, digest in record.batches:
            key = BatchKey(origin, batch_sequence)
            stored = self.disseminator.stored.get((key, digest))
            ids = [] if stored is None else list(stored.ids)
            self.disseminator.included(key, ids, digest)
            if stored is not None:  # in the chain: only a fetch needs it now
                self.disseminator.chained(stored)
            used.append((key, digest))
        self._used[record.sequence] = used
        for seq in [s for s in self._used if s <= record.sequence - self.retain_slots]:
            for key, digest in self._used.pop(seq):
                self.disseminator.forget(key, digest)

    # -- what the PBFT orderer core reads of its replica (`pbft_orderer.PbftOrdererCore`) -----
    # The orderer core was written against `Replica`; these keep its meaning in envelope terms:
    # executed ids are the envelopes in the chain, pending ones those batched or waiting here,
    # `decided` the assembled slots still retained (a restart rebuilds unfinished blocks).

    @property
    def config(self) -> PbftConfig:
        """The ordering replica's protocol parameters."""
        return self.replica.config

    @property
    def stable_seq(self) -> int:
        """The agreeing replica's last stable checkpoint."""
        return self.replica.stable_seq

    @property
    def next_exec(self) -> int:
        """The next sequence to execute."""
        return self.replica.next_exec

    @property
    def next_block(self) -> int:
        """The next slot to assemble (the agreeing replica may have executed past it)."""
        return self.resolver.assembled_upto + 1

    @property
    def next_seq(self) -> int:
        """As primary, the next sequence to propose."""
        return self.replica.next_seq

    @property
    def behind_at(self) -> int:
        """Tick at which the replica last proved itself behind."""
        return self.replica.behind_at

    @property
    def now(self) -> int:
        """The replica's tick count."""
        return self.replica.now

    @now.setter
    def now(self, value: int) -> None:
        self.replica.now = value
        self.disseminator.now = value

    @property
    def end(self) -> int | None:
        """The last sequence of this epoch (None: open)."""
        return self.replica.end

    @end.setter
    def end(self, value: int | None) -> None:
        self.replica.end = value

    @property
    def cut_max(self) -> int:
        """Certificates per slot: one, so a block is one batch (at most the channel's
        `max_tx_count` envelopes, the batch bound) whatever the channel's block size says."""
        return self.replica.cut_max

    @cut_max.setter
    def cut_max(self, _value: int) -> None:
        self.replica.cut_max = 1

    @property
    def reorder(self) -> bool:
        """Batches this replica forms leave in Fabric++ order (`Disseminator.reorder`): the
        order a block has is its batch's, fixed when the batch is signed."""
        return self.disseminator.reorder

    @reorder.setter
    def reorder(self, value: bool) -> None:
        self.disseminator.reorder = value

    @property
    def executed_ids(self) -> Collection[bytes]:
        """Ids of the envelopes in the chain's last `decided_retain` slots (assembly's window)
        and of those the previous group put in the chain as this replica knew them (`carry`)."""
        if not self.earlier:
            return self.resolver.delivered_ids
        return InChain(self.resolver.delivered_ids, self.earlier)

    def known(self, eid: bytes) -> bool:
        """Is envelope `eid` known here to be in the chain (`executed_ids`)?"""
        return eid in self.resolver.delivered_ids or eid in self.earlier

    def carry(self, ids: Collection[bytes]) -> None:
        """This replica starts a new group (epoch); `ids`: what the old group's replica here
        knew to be in the chain. They are known in the chain (a client resubmitting one is
        answered at once, `executed_ids`; an own batch does not take it again), but assembly
        never skips them: which of them a replica knows depends on its history — one that ran
        through the boundary knows the old window, one restarted after it or that joined the
        group by fetching blocks knows none of it — and block content must be a function of
        the chain (`recent.py`). Every replica of the new group starts assembly with an empty
        window, so an envelope the old group ordered and a new batch carries again is in the
        new block on every replica alike, and the peers mark that copy DUPLICATE_TXID. Before,
        the old window was assembly's (`executed_ids.add(0, ...)`): replicas that ran through
        the last boundary of `cfg-pbft-members-dissemination` (seed 1) built block 19 without
        two such envelopes, the two that had joined or restarted with them, and no block 19
        ever got a quorum of signatures."""
        self.earlier = frozenset(ids)

    @property
    def pending(self) -> dict[bytes, Pending]:
        """Envelopes admitted here and not in the chain yet (waiting, or in our batches)."""
        d = self.disseminator
        out = {eid: Pending(e, d.intake_since) for eid, e in d.intake.items()}
        for seq, own in d.own.items():
            stored = d.stored.get((BatchKey(self.me, seq), own.digest))
            for envelope in () if stored is None else stored.envelopes:
                out.setdefault(request_id(envelope), Pending(envelope, d.now))
        return out

    @property
    def decided(self) -> dict[int, Decided]:
        """Assembled slots still retained, by sequence."""
        return self._assembled

    def on_request(self, request: bytes, forward: bool) -> None:
        """An envelope handed over (a new replica group takes the old one's pending)."""
        del forward  # dissemination spreads it anyway
        self.disseminator.submit(request, self.known)

    def drained(self) -> None:
        """The runtime's intake is empty (`PbftOrdererCore.drained`): Nagle's rule on our own
        batches (`Disseminator.drained`), on any replica a client reaches, primary or not. The
        ordering replica has nothing to do then: each certificate is a full slot already."""
        self.disseminator.drained()

    def propose(self, full_only: bool) -> None:
        """Cut the intake and, as primary, propose certificates (the cutter's drained rule)."""
        self.disseminator.cut(full_only)
        self.replica.propose(full_only)

    def block_contents(
        self, sequence: int, requests: tuple[bytes, ...]
    ) -> tuple[tuple[bytes, ...], tuple[bytes, ...]] | None:
        """The envelopes (and ids) slot `sequence` of these certificates assembles to, when
        it is the next slot to assemble and every batch it takes is held (`BatchResolver.
        peek`): changes nothing, fetches nothing."""
        peeked = self.resolver.peek(sequence, requests, self.disseminator.stored)
        if peeked is None:
            return None
        record, envelopes = peeked
        return envelopes, record.envelope_ids

    def jump(self, batches: Sequence[tuple[int, tuple[bytes, ...]]]) -> bool:
        """Assembly, and execution where it is behind too, jump over verified blocks
        (`pbft.jump`); the batches must continue the assembled slots (`next_block`), else
        nothing changes and False is returned (`jump-refused`).

        Their envelopes, not the certificates, are all a block shows: they count as executed
        and assembled, and the replica's chained state digest is computed over them — so this
        replica's checkpoint votes differ from its peers' until it takes the first checkpoint
        they prove at or above its jump as its state (`Checkpoints.adopt_proven`). Execution
        may already be past some of them (certificates executed while their batches were
        compacted everywhere before this replica fetched them): for those only assembly
        moves — waiting for such a batch would stall this replica's blocks for good.

        The last `decided_retain` slots jumped over are recorded as assembled slots without
        batches: assembly's de-duplication window must hold what every other replica's holds
        (their envelope ids), here and after a restart. They are marked `jumped`: their batch
        keys are not known, so for the next `expiry` slots assembly waits for the others'
        blocks where a certificate might have been taken in one of them (`assembly.py`)."""
        todo = [(s, e) for s, e in batches if s > self.resolver.assembled_upto]
        first = self.resolver.assembled_upto + 1
        if not todo or [s for s, _ in todo] != list(range(first, first + len(todo))):
            self.replica.drop("jump-refused")
            return False
        ahead = [(s, e) for s, e in todo if s >= self.replica.next_exec]
        if ahead and not self.replica.jump(ahead):
            return False
        last = todo[-1][0]
        for seq, envelopes in todo:
            if seq > self.resolver.assembled_upto:
                ids = tuple(request_id(e) for e in envelopes)
                if seq > last - self.retain_slots:
                    record = AssembledRecord(seq, (), ids, jumped=True)
                    self._persist.append(record)
                    self.resolver.note(record)
                self.disseminator.delivered(ids)
                self.resolver.assembled_upto = seq
        while (
            self.resolver.queue and self.resolver.queue[0].sequence <= self.resolver.assembled_upto
        ):
            self.resolver.queue.popleft()
        self.resolver.wanted = self.resolver.uncertain = None
        self._advance()
        return True

    def _signed(self, message: replica_pb2.ReplicaMessage) -> Envelope:
        message.epoch = self.checker.config.epoch
        payload = message.SerializeToString()
        return Envelope(payload=payload, replica=self.me, signature=self._sign(payload))


class InChain:
    """`DisseminatingReplica.executed_ids` after a boundary: assembly's window and the ids
    carried from the previous group, as one read-only collection."""

    def __init__(self, window: Recent[bytes], earlier: frozenset[bytes]) -> None:
        self.window, self.earlier = window, earlier

    def __contains__(self, key: object) -> bool:
        return key in self.window or key in self.earlier

    def __iter__(self) -> Iterator[bytes]:
        yield from self.window
        yield from (k for k in self.earlier if k not in self.window)

    def __len__(self) -> int:
        return len(self.window) + sum(1 for k in self.earlier if k not in self.window)


def _parsed(envelope: Envelope) -> replica_pb2.ReplicaMessage | None:
    """The (not yet verified) message, to route it by its body kind; None when it does not
    parse (junk goes to the replica, which drops and counts it)."""
    message = replica_pb2.ReplicaMessage()
    try:
        message.ParseFromString(envelope.payload)
    except DecodeError:
        return None
    return message
