"""PBFT-lite replica: the normal case, execution, checkpoints, catch-up and restart.

Normal case (view v, primary p = v mod n): p assigns the next sequence to a batch of pending
requests and broadcasts a signed PrePrepare; a backup that accepts it (right view, sequence
inside the watermarks, digest matches the requests, no other pre-prepare at that slot, no
request already executed) broadcasts a Prepare. With the pre-prepare and 2f matching prepares
from distinct backups a replica is *prepared*: it persists the prepared certificate and
broadcasts a Commit. 2f+1 matching commits make the slot *committed*; slots execute strictly in
sequence order, each producing a `Decided` with its commit certificate. Every K sequences a
replica broadcasts a signed Checkpoint; 2f+1 matching ones make it stable, which moves the
watermarks and discards older log entries. With `PbftConfig.collector` prepares and commits go
to the primary only, which sends backups the certificates it collected (`collector.py`).

Catch-up: every `probe_ticks` a replica that has not executed since the previous such tick
(or was proven behind since, `probe_if_stalled`) asks its peers for decided batches from its next
sequence — an idle one (nothing pending either) backs off to every 8th such tick; a peer
answers with up to `transfer_batches_max` consecutive decided batches, each
verified by its commit certificate before it is executed. A replica behind what its peers
retain is moved by `jump` over blocks its runtime verified (2f+1 orderer signatures; see
`pbft.jump`). The request timer times the oldest pending request and starts again when that one
executes (`request_timer_expired`): a backlog is not a silent primary. While catch-up keeps
proving the replica behind, the timer stands still (`note_behind`): it would otherwise blame the
primary for its own lag. Lost messages are retransmitted every `retransmit_ticks` (own votes of
undecided slots, forwarded requests, the view change).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence

from dltmw.core.pbft.certs import Checker
from dltmw.core.pbft.collector import CERTIFICATES, Collector
from dltmw.core.pbft.jump import jump
from dltmw.core.pbft.recovery import replay
from dltmw.core.pbft.state import Pending, Slot
from dltmw.core.pbft.types import (
    ClientRequest,
    Decided,
    DecidedRecord,
    DigestFn,
    Envelope,
    PbftConfig,
    PbftEffects,
    PreparedRecord,
    Record,
    Rejected,
    RequestCheck,
    Signer,
    StoredDecided,
    Verifier,
    VoteRecord,
    batch_digest,
    chain_state,
    request_id,
)
from dltmw.core.reorder import reorder
from dltmw.v1 import replica_pb2

VIEWED = frozenset({"pre_prepare", "prepare", "commit"})
CommitBlock = Callable[[int, bytes, tuple[bytes, ...]], tuple[bytes, bytes] | None]
BlockSigned = Callable[[int, int, bytes, bytes], None]


class Replica(Collector):
    """One PBFT-lite replica (pure state machine; see the module docstring)."""

    def __init__(
        self,
        config: PbftConfig,
        me: int,
        sign: Signer,
        verify: Verifier,
        digest: DigestFn = batch_digest,
        request_ok: RequestCheck = lambda _r: True,
        alone: RequestCheck = lambda _r: False,
    ) -> None:
        """`request_ok`: the admission rule; `alone`: requests ordered in a batch of their own,
        with nothing proposed after them until they executed (config updates, `propose`)."""
        checker = Checker(config, verify, digest, request_ok, alone)
        super().__init__(config, me, checker, sign)
        # As primary, cut batches of at most this many (<= the bound every replica checks,
        # `slot_requests_max` or `batch_size_max`): the channel's current block size, which a
        # config update may lower.
        self.cut_max = config.slot_requests_max or config.batch_size_max
        # As primary, propose each batch in Fabric++ order (`core/reorder.py`): the channel's
        # `batch.reorder` in force. The pre-prepare fixes the order (its digest covers it), so
        # every replica builds the same block whatever its own setting says.
        self.reorder = False
        # A lone batch executed in this step: propose and judge nothing more until `ready()`,
        # so the caller applies what it leads to (a config) before the next batch (`propose`).
        self.hold = False
        # stale(request, next_exec): no slot from next_exec on can use the request (set by a
        # replica ordering certificates that expire, `disseminating.py`). Such a request is not
        # admitted, and leaves `pending` once the chain passes it: otherwise every replica
        # keeps ordering dead certificates, one slot each, while live ones wait behind them
        # until they expire too, and the request timer times requests nobody needs.
        self.stale: Callable[[bytes, int], bool] | None = None
        # The PBFT orderer's hooks for block signatures carried by Commits (`core/handlers/
        # pbft_speculative.py`): `commit_block(sequence, digest, requests)` -> (block hash,
        # block signature) to put in our Commit of a slot we prepared in view 0, or None;
        # `block_signed(replica, sequence, block_hash, signature)`: a peer's Commit carried one.
        self.commit_block: CommitBlock | None = None
        self.block_signed: BlockSigned | None = None

    @classmethod
    def restore(
        cls,
        config: PbftConfig,
        me: int,
        sign: Signer,
        verify: Verifier,
        records: Sequence[Record],
        digest: DigestFn = batch_digest,
        request_ok: RequestCheck = lambda _r: True,
        alone: RequestCheck = lambda _r: False,
    ) -> Replica:
        """A replica rebuilt from exactly the records its earlier incarnation made durable."""
        replica = cls(config, me, sign, verify, digest, request_ok, alone)
        replay(replica, records)
        return replica

    @property
    def next_block(self) -> int:
        """The next sequence whose requests this replica has not output: `next_exec`."""
        return self.next_exec

    def block_contents(
        self, sequence: int, requests: tuple[bytes, ...]
    ) -> tuple[tuple[bytes, ...], tuple[bytes, ...]] | None:
        """The block of a slot is its batch as agreed (`Decided.requests`)."""
        del sequence
        return requests, ()

    def carry(self, ids: Collection[bytes]) -> None:
        """A new group's replica: the old group's window goes on as this group's sequence 0
        (forgotten after its first `decided_retain` sequences). Block content never depends on
        it here (a block is its batch as agreed): it only keeps this replica from ordering an
        executed request again."""
        self.executed_ids.add(0, ids)

    def jump(self, batches: Sequence[tuple[int, tuple[bytes, ...]]]) -> bool:
        """Execute batches proven by 2f+1-signed blocks the caller verified (`pbft.jump`)."""
        jumped = jump(self, batches)
        self.prune_stale()
        return jumped

    # -- inputs ----------------------------------------------------------------------------

    def step(self, message: object) -> None:
        """Feed a ClientRequest, a SignedReplicaMessage from a peer, or decided batches read
        back from our records for a peer's catch-up (`StoredDecided`)."""
        if isinstance(message, ClientRequest):
            self.on_request(message.request, forward=True)
        elif isinstance(message, Envelope):
            self.on_envelope(message)
        elif isinstance(message, StoredDecided):
            self.on_stored_decided(message.replica, message.batches)
        else:
            raise TypeError(f"PBFT replica cannot step {type(message).__name__}")
        self.propose(full_only=True)

    def ready(self) -> PbftEffects:
        """Take the outputs; client requests admitted by a backup since the last call are first
        relayed to every replica (PBFT clients broadcast on timeout; relaying at once lets every
        correct replica time a silent primary, so f+1 of them ask for a view change)."""
        self.hold = False
        chunk = self.config.batch_size_max * 4
        buffered, self.forward_buffer = self.forward_buffer, []
        for start in range(0, len(buffered), chunk):
            self.broadcast(self._forward_message(buffered[start : start + chunk]))
        return super().ready()

    def tick(self, now: int) -> None:
        """The `now`-th tick: timers, batching, retransmission, catch-up probes."""
        self.now = now
        if self.changing:
            if self.vc_deadline is not None and self.now >= self.vc_deadline:
                self.start_view_change(self.view + 1)
        elif self.pending:
            if self.request_timer_expired():
                self.start_view_change(self.view + 1)
        else:
            self.timed = None
        self.propose(full_only=False)
        if self.now % self.config.retransmit_ticks == 0:
            self.retransmit()
        if self.now % self.config.probe_ticks == 0:
            self.probe_if_stalled()

    def request_timer_expired(self) -> bool:
        """PBFT's request timer (Castro and Liskov): it times the oldest pending request, and
        when that one executes while others wait, it starts again for the next — from then,
        not from that request's arrival. Timing each from its arrival (as before) made any
        backlog look like a silent primary: with more pending than a slot takes, the oldest
        waited past the timeout while a correct primary decided slot after slot, and every
        replica asked for a view change (a notary cluster under load made hundreds). A primary
        that leaves one request out still meets the timeout once that request is the oldest.
        Never while catching up (`behind_at`)."""
        rid, oldest = next(iter(self.pending.items()))
        if rid != self.timed:  # the one timed before executed (or none was timed)
            self.timed, self.timed_from = rid, max(oldest.since, self.executed_at)
        waited = self.now - max(self.timed_from, self.behind_at)
        return waited >= self.config.request_timeout_ticks

    def prune_stale(self) -> None:
        """Forget pending requests no slot from `next_exec` on can use (`stale`)."""
        stale = self.stale
        if stale is not None and self.pending:
            for rid in [r for r, p in self.pending.items() if stale(p.request, self.next_exec)]:
                del self.pending[rid]
                self.drop("stale-request")

    def on_request(self, request: bytes, forward: bool) -> None:
        """Admit a client (or forwarded) request: remember it and make sure the primary has it.

        A replica in a view change relays its clients' requests too (to every replica, as
        `ready` does): it may be alone in a higher view while the others order in the current
        one (see `arm_view_change_timer`), which can last until their next view change. They
        order the request, and this replica learns the decision by state transfer (`probe`),
        so its clients are still answered."""
        rid = request_id(request)
        if rid in self.executed_ids or rid in self.pending:
            return
        if self.stale is not None and self.stale(request, self.next_exec):
            self.drop("stale-request")
            return
        if len(request) > self.config.request_bytes_max or not self.checker.request_ok(request):
            self.drop("inadmissible-request")
            self._replies.append(Rejected(rid, "INVALID_REQUEST"))
            return
        if len(self.pending) >= self.config.pending_max:
            self._replies.append(Rejected(rid, "OVERLOADED"))
            return
        self.pending[rid] = Pending(request, self.now)
        if forward and (self.changing or self.primary() != self.me):
            self.forward_buffer.append(request)

    def on_envelope(self, envelope: Envelope) -> None:
        """Dispatch a signed message after verifying its signature."""
        message = self.checker.open(envelope)
        if message is None:
            self.drop("bad-signature-or-malformed")
            return
        kind = message.WhichOneof("body")
        if kind in VIEWED:
            body = getattr(message, kind)
            if body.view > self.view or (body.view == self.view and self.changing):
                self.buffer_future(envelope)
            elif body.view < self.view:
                self.drop("old-view")
            elif kind == "pre_prepare":
                self.on_pre_prepare(envelope, message.pre_prepare)
            else:
                self.on_vote(envelope, kind, body)
        elif kind in CERTIFICATES:
            self.on_certificate(envelope, message)
        elif kind == "checkpoint":
            self.on_checkpoint(envelope, message.checkpoint)
        elif kind == "view_change":
            self.on_view_change(envelope)
        elif kind == "new_view":
            self.on_new_view(envelope, message.new_view)
        elif kind == "forwarded":
            for request in message.forwarded.requests[: self.config.batch_size_max * 4]:
                self.on_request(request, forward=False)
        elif kind == "state_request":
            self.on_state_request(envelope.replica, message.state_request.from_sequence)
        elif kind == "state_reply":
            self.on_state_reply(envelope.replica, message.state_reply)

    # -- normal case -----------------------------------------------------------------------

    def propose(self, full_only: bool) -> None:
        """As primary: cut batches of pending, unproposed requests into new sequences.

        A lone request (`alone`: a config update) is cut into a batch by itself, and nothing is
        proposed after it until it executed and the caller took the step's effects (`hold`):
        every replica then judges the next batch under the config it leads to (the barrier;
        `barrier_below`)."""
        if self.changing or self.hold or self.primary() != self.me or self.next_exec <= self.low:
            return
        while self.next_seq <= self.low + self.config.window:
            if self.barrier_below(self.next_seq) or self.beyond_end(self.next_seq):
                return
            batch, full = self._next_batch()
            if not batch or (full_only and not full):
                return
            if self.reorder:
                batch = reorder(batch)
            seq, digest = self.next_seq, self.checker.digest(batch)
            self.next_seq += 1
            pp = replica_pb2.PrePrepare(view=self.view, sequence=seq, digest=digest, requests=batch)
            envelope = self.sign(replica_pb2.ReplicaMessage(pre_prepare=pp))
            self.persist_vote(envelope)
            self.broadcast(envelope)
            slot = self.slots.setdefault(seq, Slot())
            slot.pre_prepare, slot.digest, slot.requests = envelope, digest, tuple(batch)
            slot.mine.append(envelope)
            self.proposed_ids.update(self.ids_of(slot.requests))

    def _next_batch(self) -> tuple[list[bytes], bool]:
        """The next batch in arrival order and whether it is complete (full, or cut short by a
        lone request, which goes alone in the batch after)."""
        alone = self.checker.alone
        batch: list[bytes] = []
        for rid, pending in self.pending.items():
            if rid in self.proposed_ids:
                continue
            if pending.lone is None:
                pending.lone = alone(pending.request)
            if pending.lone:
                return (batch, True) if batch else ([pending.request], True)
            batch.append(pending.request)
            if len(batch) >= self.cut_max:
                return batch, True
        return batch, False

    def barrier_below(self, sequence: int) -> bool:
        """Is a lone batch that has not executed yet known below `sequence`? (At most a window
        of slots is looked at.)"""
        alone = self.checker.alone
        for seq in range(self.next_exec, sequence):
            slot = self.slots.get(seq)
            if slot is not None and len(slot.requests) == 1 and alone(slot.requests[0]):
                return True
        return False

    def beyond_end(self, sequence: int) -> bool:
        """Is `sequence` past the last sequence of this epoch (`end`)?"""
        return self.end is not None and sequence > self.end

    def persist_vote(self, envelope: Envelope) -> None:
        """Persist one of our own pre-prepares before it is sent."""
        self.persist(VoteRecord(envelope))

    def on_pre_prepare(self, envelope: Envelope, pp: replica_pb2.PrePrepare) -> None:
        """A backup accepts a valid pre-prepare and votes Prepare for it."""
        if envelope.replica != self.primary() or self.primary() == self.me:
            self.drop("pre-prepare-not-from-primary")
            return
        if not self.in_window(pp.sequence):
            self.drop("outside-watermarks")
            return
        if self.beyond_end(pp.sequence):
            self.drop("pre-prepare-beyond-the-epoch")
            return
        if self.hold or self.barrier_below(pp.sequence):
            # Judged only once the lone batch below executed (the primary retransmits it).
            self.drop("pre-prepare-beyond-a-lone-batch")
            return
        slot = self.slots.setdefault(pp.sequence, Slot())
        if slot.pre_prepare is not None:
            if slot.digest != pp.digest:
                self.drop("equivocating-primary")
                self.start_view_change(self.view + 1)
            return
        requests = tuple(pp.requests)
        error = self.checker.batch_error(pp.digest, requests)
        if error is not None:
            # Not prepared, so never ordered; a primary that insists leaves the requests that
            # correct replicas hold pending, and their request timer replaces it (view change).
            self.drop(error)
            return
        ids = self.ids_of(requests)
        if any(rid in self.executed_ids for rid in ids):
            self.drop("batch-repeats-executed-request")
            return
        if slot.my_digest is not None and slot.my_digest != pp.digest:
            self.drop("pre-prepare-conflicts-with-own-prepare")
            return
        slot.pre_prepare, slot.digest, slot.requests = envelope, pp.digest, requests
        self.proposed_ids.update(ids)
        for request in requests:
            self.on_request(request, forward=False)
        if slot.my_digest is None:
            self.vote_prepare(slot, pp.sequence, pp.digest)
        self.advance(pp.sequence)

    def on_vote(self, envelope: Envelope, kind: str, vote: replica_pb2.Vote) -> None:
        """Record one prepare or commit (first vote per replica and slot counts)."""
        if not self.in_window(vote.sequence):
            self.drop("outside-watermarks")
            return
        if vote.sequence < self.next_exec:
            if kind == "commit":
                self.block_signed_by(envelope.replica, vote)  # its block may still be signing
                self.answer_late_commit(envelope.replica, vote.sequence)
            self.drop("late-vote")
            return
        if kind == "prepare" and envelope.replica == self.primary():
            self.drop("prepare-from-primary")
            return
        slot = self.slots.setdefault(vote.sequence, Slot())
        votes = slot.prepares if kind == "prepare" else slot.commits
        if envelope.replica in votes:
            if votes[envelope.replica][0] != vote.digest:
                self.drop("double-vote")
            return
        votes[envelope.replica] = (vote.digest, envelope)
        if kind == "commit":
            self.block_signed_by(envelope.replica, vote)
        self.advance(vote.sequence)

    def block_signed_by(self, replica: int, vote: replica_pb2.Vote) -> None:
        """Hand a block signature a verified Commit carried to the orderer (`block_signed`);
        whether it counts is the block assembler's business (it must match our block)."""
        if self.block_signed is not None and vote.block_signature:
            self.block_signed(replica, vote.sequence, vote.block_hash, vote.block_signature)

    def advance(self, sequence: int) -> None:
        """Prepared -> persist certificate and commit; committed -> execute in order."""
        slot = self.slots.get(sequence)
        if slot is None or slot.pre_prepare is None:
            return
        if not slot.commit_sent:
            matching = [e for r, (d, e) in sorted(slot.prepares.items()) if d == slot.digest]
            needed = self.config.quorum - 1  # 2f for n = 3f+1: with the pre-prepare, a quorum
            if len(matching) >= needed:
                cert = replica_pb2.PreparedCertificate(
                    pre_prepare=slot.pre_prepare, prepares=matching[:needed]
                )
                self.prepared[sequence] = cert
                self.persist(PreparedRecord(cert))
                slot.commit_sent = True
                block = None
                if self.commit_block is not None and self.view == 0:
                    block = self.commit_block(sequence, slot.digest, slot.requests)
                slot.mine.append(self.vote("commit", sequence, slot.digest, block))
                slot.commits.setdefault(self.me, (slot.digest, slot.mine[-1]))
                self.send_prepared_certificate(slot, cert)
        self.execute()

    def committed_batch(self, sequence: int) -> replica_pb2.DecidedBatch | None:
        """The decided batch of a committed slot (2f+1 matching commits, or the collector's
        commit certificate), or None."""
        slot = self.slots.get(sequence)
        if slot is not None and slot.decided is not None:
            return slot.decided
        if slot is None or slot.pre_prepare is None:
            return None
        commits = [e for r, (d, e) in sorted(slot.commits.items()) if d == slot.digest]
        if len(commits) < self.config.quorum:
            return None
        return replica_pb2.DecidedBatch(
            view=self.view,
            sequence=sequence,
            digest=slot.digest,
            requests=slot.requests,
            commits=commits[: self.config.quorum],
        )

    def execute(self) -> None:
        """Execute committed slots in sequence order."""
        while (batch := self.committed_batch(self.next_exec)) is not None:
            self.apply(batch)
            self.send_commit_certificate(batch)

    def apply(self, batch: replica_pb2.DecidedBatch, restoring: bool = False) -> None:
        """Execute one decided batch (the next sequence): persist, output, checkpoint."""
        requests = tuple(batch.requests)
        fresh = []
        ids: dict[bytes, None] = {}
        for request in requests:
            rid = request_id(request)
            if rid not in self.executed_ids and rid not in ids:
                fresh.append(request)
            ids[rid] = None
            self.pending.pop(rid, None)
            self.proposed_ids.discard(rid)
        self.executed_ids.add(batch.sequence, ids)
        if len(requests) == 1 and self.checker.alone(requests[0]):
            self.hold = True
        self.state_digest = chain_state(self.state_digest, batch.digest)
        self.decided[batch.sequence] = batch
        self.next_exec = batch.sequence + 1
        self.prune_stale()
        if not restoring:
            self.executed_at = self.now
            self.persist(DecidedRecord(batch))
            self._decided.append(
                Decided(
                    batch.view,
                    batch.sequence,
                    batch.digest,
                    requests,
                    tuple(batch.commits),
                    tuple(fresh),
                )
            )
        if batch.sequence % self.config.checkpoint_interval == 0:
            self.state_at[batch.sequence] = self.state_digest
            if self.jumped_upto:  # chained over a jump's digest too: not the group's yet
                self.jump_chained.add(batch.sequence)  # (on replay as well: it rebuilds it)
            if not restoring:
                self.send_checkpoint(batch.sequence)
        self.maybe_stable()

    def ids_of(self, requests: tuple[bytes, ...]) -> list[bytes]:
        """Request ids of a batch."""
        return [request_id(r) for r in requests]

    def _forward_message(self, requests: list[bytes]) -> Envelope:
        return self.sign(
            replica_pb2.ReplicaMessage(forwarded=replica_pb2.ForwardedRequests(requests=requests))
        )

    def forward_pending(self) -> None:
        """As a backup: (re)send pending requests not yet proposed to the primary (bounded)."""
        if self.changing or self.primary() == self.me:
            return
        todo = [p.request for rid, p in self.pending.items() if rid not in self.proposed_ids]
        chunk = self.config.batch_size_max * 4
        if todo:
            self.send_to(self.primary(), self._forward_message(todo[:chunk]))

    def replay_future(self) -> None:
        """Re-step buffered messages now that a new view is installed."""
        buffered, self.future = self.future, {}
        for queue in buffered.values():
            for envelope in queue:
                self.on_envelope(envelope)

    def retransmit(self) -> None:
        """Resend our own messages that may have been lost. Our pre-prepare goes only to the
        replicas that have not shown they hold it (a prepare or commit of theirs for its
        digest: a correct replica votes only for a pre-prepare it accepted and persisted): it
        carries the slot's requests, ~770 KB per slot in a loaded notary cluster, and was sent
        again to every replica every `retransmit_ticks` while any of them lagged. Votes are
        small and go to every replica, as before.

        A slot with a message of ours sent since the previous pass is left to the next one:
        that message is younger than `retransmit_ticks`, on its way rather than lost — at
        n = 13 under load, resending each undecided slot's votes at every pass added 1-4
        prepares per slot to the 12 (benchmarks/RESULTS.md, 2026-12-02 12:35), each sent,
        verified and stepped by 12 replicas. A lost message is resent within two passes."""
        if self.changing:
            if self.my_view_change is not None:
                self.broadcast(self.my_view_change)
            return
        for seq, slot in sorted(self.slots.items()):
            if seq >= self.next_exec:
                if len(slot.mine) != slot.mine_seen:
                    slot.mine_seen = len(slot.mine)  # sent since the last pass: not yet
                    continue
                for envelope in slot.mine:
                    if envelope is slot.pre_prepare:
                        self._resend_pre_prepare(slot, envelope)
                    else:
                        self.send_vote(envelope)
                if self.collecting:
                    self.resend_prepared_certificate(seq, slot)
        self.forward_pending()

    def _resend_pre_prepare(self, slot: Slot, envelope: Envelope) -> None:
        voted = {r for r, (d, _e) in slot.prepares.items() if d == slot.digest}
        voted.update(r for r, (d, _e) in slot.commits.items() if d == slot.digest)
        for replica in range(self.config.n):
            if replica != self.me and replica not in voted:
                self._send.append((replica, envelope))
