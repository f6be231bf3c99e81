"""Checkpoints (garbage collection, watermarks) and catch-up by state transfer.

A checkpoint at sequence s (a multiple of K) is the chained digest of every batch digest up to
s. 2f+1 matching signed checkpoints prove it: it becomes the low watermark `low` (the log keeps
sequences in (low, low + L]) and, once this replica has executed up to s with the same digest,
its stable checkpoint. A replica that learns of a checkpoint above what it executed is behind:
it probes its peers, who answer with decided batches and their commit certificates; each batch
is verified (2f+1 distinct signed commits over its view, sequence and digest, digest matching
the requests) before it is executed, so no peer has to be trusted. A replica serves the last
`decided_retain` decided batches: the last `decided_kept` from memory, older ones from its
durable records (`DecidedFromStore` out, `StoredDecided` back in): a notary cluster member
kept ~20 MiB of batches in memory only to answer a rare lagging peer.
"""

from __future__ import annotations

from collections import Counter

from dltmw.core.pbft.types import DecidedFromStore, Envelope, StableRecord, chain_state
from dltmw.core.pbft.viewchange import ViewChanges
from dltmw.v1 import replica_pb2

# An idle replica's periodic probe, at most every this many probe periods (`probe_if_stalled`).
IDLE_PROBE_EVERY_MAX = 8


class Checkpoints(ViewChanges):
    """Checkpoint and state-transfer handling (the normal case lives in `replica.Replica`)."""

    def send_checkpoint(self, sequence: int) -> None:
        """Broadcast our signed checkpoint for an executed multiple of K — except at or above
        a jump not yet confirmed (`jumped_upto`): a jump chains its state digest over what the
        fetched blocks show, which with dissemination is not what the others chained, and a
        correct replica's vote for such a digest could, with two jumped replicas and one
        byzantine vote, prove it and shut out the replicas that executed normally (review of
        rss59). It abstains until it took the group's digest (`adopt_proven`,
        `adopt_vouched`) or saw its own proven (`maybe_stable`); then it casts the votes it
        owes (`_vote_from`). So every checkpoint vote of a correct replica is the group's
        state, and f+1 matching votes of others include one of them.

        It abstains as well at every checkpoint a jump chained below its end (`jump_chained`,
        from `JumpRecord.checkpoint_states`, live and on restart): those digests are the fetched
        blocks' too, and no adoption can fix them (`_adopt` re-chains only from the jump's end
        on, where it holds the decided batches). Checked here, so every path that votes — the
        execution, `_vote_from`, `resend_checkpoints` — is covered (review of probe60: a
        stalled jumped replica resent votes for such digests inside its jump). An entry leaves
        the set when the low watermark reaches it (`learn_checkpoint`) or adoption re-chains it
        (`_adopt`, `adopt_vouched`): then its digest is the group's or no vote there counts."""
        if self.jumped_upto and sequence >= self.jumped_upto:
            self._vouched(sequence, self.checkpoints.get(sequence, {}))
            return
        if sequence in self.jump_chained:
            return
        message = replica_pb2.ReplicaMessage(
            checkpoint=replica_pb2.Checkpoint(
                sequence=sequence, state_digest=self.state_at[sequence]
            )
        )
        envelope = self.sign(message)
        self.broadcast(envelope)
        self.on_checkpoint(envelope, message.checkpoint)

    def on_checkpoint(self, envelope: Envelope, cp: replica_pb2.Checkpoint) -> None:
        """Collect checkpoint votes; 2f+1 matching ones prove the checkpoint."""
        seq, interval = cp.sequence, self.config.checkpoint_interval
        if seq <= self.low or seq % interval or seq > self.low + 2 * self.config.window:
            self.drop("checkpoint-out-of-range")
            return
        votes = self.checkpoints.setdefault(seq, {})
        votes.setdefault(envelope.replica, envelope)
        matching: list[Envelope] = []
        for replica in sorted(votes):
            message = self.checker.open(votes[replica])
            if message is not None and message.checkpoint.state_digest == cp.state_digest:
                matching.append(votes[replica])
        if len(matching) >= self.config.quorum:
            self.learn_checkpoint(seq, cp.state_digest, tuple(matching[: self.config.quorum]))
        elif self.jumped_upto and self.jumped_upto <= seq < self.next_exec:
            self._vouched(seq, votes)

    def check_vouched(self, sequence: int) -> None:
        """`_vouched` with the votes already held for `sequence` (a jump that ends on a
        checkpoint: the others' votes may have come before it, and a replica resends its votes
        only once it stalls: `resend_checkpoints`)."""
        on_checkpoint = sequence % self.config.checkpoint_interval == 0
        if self.jumped_upto and on_checkpoint and self.low < sequence < self.next_exec:
            self._vouched(sequence, self.checkpoints.get(sequence, {}))

    def _vouched(self, sequence: int, votes: dict[int, Envelope]) -> None:
        """`adopt_vouched` the digest f+1 other replicas voted at `sequence`, if one has them
        (checked at each vote, and at a jump's end by `check_vouched` — not when `sequence` is
        executed by state transfer: votes held from before then count at the next vote, at
        the latest the others' resend once they stall, `resend_checkpoints`)."""
        counts: Counter[bytes] = Counter()
        for replica, vote in votes.items():
            message = None if replica == self.me else self.checker.open(vote)
            if message is not None:
                counts[message.checkpoint.state_digest] += 1
        for digest, count in counts.items():
            if count > self.config.f:
                self.adopt_vouched(sequence, digest)
                return

    def adopt_vouched(self, sequence: int, digest: bytes) -> None:
        """After a jump, take a checkpoint digest f+1 OTHER replicas voted and vote from there.

        Safe because a replica votes no digest of its own jump (`send_checkpoint`): of f+1
        matching votes at least one is a correct replica's, and a correct replica votes only
        the state it executed normally or took from the group, so it is the group's digest.
        Needed because `adopt_proven` needs 2f+1 votes: when two replicas of four jumped over
        the same blocks, only two replicas vote and nothing is ever proven — the low watermark
        stayed and the group stopped (a 1M run on branch rss59, 171,602 transactions in,
        benchmarks/RESULTS.md 2026-12-05 rss59)."""
        if not self.jumped_upto or not self.jumped_upto <= sequence < self.next_exec:
            return
        if self.state_at.get(sequence) == digest:
            self.jumped_upto = 0  # the jump's digest is the group's (no dissemination)
            # from `sequence` on chained over the group's digest (no jump above it: jumped_upto
            # <= sequence); the ones below stay (`send_checkpoint`)
            self.jump_chained = {s for s in self.jump_chained if s < sequence}
        elif not self._adopt(sequence, digest):
            return
        self.counters["jump-state-vouched"] += 1
        self._vote_from(sequence)

    def _vote_from(self, sequence: int) -> None:
        """Cast the checkpoint votes owed from `sequence` (a multiple of K) on, once a jump's
        state is the group's again."""
        for at in range(sequence, self.next_exec, self.config.checkpoint_interval):
            if at > self.low and at in self.state_at:
                self.send_checkpoint(at)

    def learn_checkpoint(self, sequence: int, digest: bytes, proof: tuple[Envelope, ...]) -> None:
        """Adopt a proven checkpoint as the low watermark and discard the log below it."""
        if sequence <= self.low:
            return
        self.low, self.low_digest, self.low_proof = sequence, digest, proof
        self.slots = {s: slot for s, slot in self.slots.items() if s > sequence}
        self.prepared = {s: c for s, c in self.prepared.items() if s > sequence}
        self.checkpoints = {s: v for s, v in self.checkpoints.items() if s > sequence}
        self.jump_chained = {s for s in self.jump_chained if s > sequence}  # no vote there counts
        if self.next_exec <= sequence:
            self.note_behind()
            self.probe()
        self.maybe_stable()

    def maybe_stable(self) -> None:
        """Make the proven checkpoint stable once we executed up to it with the same state."""
        if self.stable_seq >= self.low or self.next_exec <= self.low:
            return
        owed = bool(self.jumped_upto) and self.low >= self.jumped_upto
        if self.state_at.get(self.low) != self.low_digest:
            if not self.adopt_proven():
                self.drop("checkpoint-state-diverged")
                return
        elif owed:
            # our own digest is the group's at or after the jump (a jump without dissemination
            # chains the same digests): nothing left to adopt, and a later divergence is a real
            # one, never again papered over by `adopt_proven` (review of rss59)
            self.jumped_upto = 0
            # what it executed above `low` since is chained over the group's digest: voted
            # again (kept in the set, nobody would vote them: the group stalled, review 3)
            self.jump_chained = {s for s in self.jump_chained if s < self.low}
        low, interval = self.low, self.config.checkpoint_interval
        self.stable_seq = low
        self.persist(StableRecord(low, self.low_digest, self.low_proof))
        self.state_at = {s: d for s, d in self.state_at.items() if s >= low}
        horizon = low - self.config.kept
        if horizon > 0:
            self.decided = {s: b for s, b in self.decided.items() if s > horizon}
        if owed:
            self._vote_from(low + interval)  # (after our own state is settled: it may recurse)

    def adopt_proven(self) -> bool:
        """Take the proven checkpoint's digest at `low` as ours, after a jump (True if taken).

        A jump chains the state digest over what the fetched blocks show, and a block shows
        envelopes: where the replicas order batch certificates (dissemination,
        `DisseminatingReplica.jump`) the others chained the certificates, so every checkpoint
        digest of this replica from its jump on differed from theirs. Its checkpoints never
        became stable again: `decided` (pruned at a stable checkpoint) grew by a batch per slot
        for good, 1,177 of them 100 s after a 30 s pause (a 256-slot retention), and its
        checkpoint votes never counted — two such replicas of four left no quorum of matching
        votes, the low watermark stopped and the group stopped ordering (the first 1M run of
        benchmarks/RESULTS.md 2026-12-05 rss58: two replicas jumped, then no block).

        Safe: `low`'s digest is proven by 2f+1 signed votes (f+1 correct replicas executed up
        to `low` with it), this replica executed the same batches up to `low` (the jump's are
        2f+1-signed blocks, the rest committed batches), and only what a jump chained is
        replaced: `low` is at or above the last jumped sequence, and the digests after it are
        chained again over the decided batches executed since (all in `decided`: nothing is
        pruned there before a stable checkpoint). A divergence with no jump below it is still
        refused (`checkpoint-state-diverged`)."""
        if not self._adopt(self.low, self.low_digest):
            return False
        self.counters["jump-state-adopted"] += 1
        return True

    def _adopt(self, sequence: int, digest: bytes) -> bool:
        """`digest` as our state at `sequence` (at or above our last jump), chained again over
        the decided batches executed since; False (nothing changed) otherwise."""
        if not self.jumped_upto or sequence < self.jumped_upto:
            return False
        state, at = digest, {sequence: digest}
        interval = self.config.checkpoint_interval
        for later in range(sequence + 1, self.next_exec):
            batch = self.decided.get(later)
            if batch is None:
                return False
            state = chain_state(state, batch.digest)
            if later % interval == 0:
                at[later] = state
        self.state_digest = state
        self.state_at.update(at)
        self.jump_chained.difference_update(at)  # the group's digests now
        self.jumped_upto = 0
        return True

    def probe_if_stalled(self) -> None:
        """The periodic catch-up probe (every `probe_ticks`), sent only when it can be needed:
        this replica executed nothing since the previous periodic probe, or was proven behind
        since (`note_behind`: it fetched decided batches, jumped, or saw a checkpoint above
        what it executed — then it keeps probing until it has caught up).

        Why: a probe is a signed broadcast every replica verifies and steps, and it was sent
        whether or not the replica was behind. At n = 13 under load (~2.5 slots a second) the
        probes were ~5 of the ~32 messages a backup sent per slot, and ~5 of those it received,
        each ~1 % of its per-slot CPU. A replica that keeps executing learns each decision from
        the normal case; one that stops — cut off, restarted, or beyond the watermarks, where
        it accepts no more pre-prepares — probes at its next periodic tick, as before. The
        probes on restart (`recovery.replay`), on a checkpoint above it (`learn_checkpoint`)
        and after a jump are unconditional, as before."""
        progressed = self.probed_exec is not None and self.next_exec > self.probed_exec
        stalled = self.probed_exec is not None and not progressed  # for a whole period
        proven_behind = self.behind_at >= self.probed_at
        self.probed_exec, self.probed_at = self.next_exec, self.now
        if progressed or proven_behind or self.pending:
            self.idle_probes = 0
        if progressed and not proven_behind:
            return
        if not (proven_behind or self.pending):
            # Idle: nothing executed, nothing pending, not proven behind. Probing every period
            # made an idle 13-replica channel verify ~12 probes a second per replica, ~23 ms of
            # CPU a second each (benchmarks/RESULTS.md, 2026-12-03 21:06, lane pbft9). Back
            # off: probe 1, 2 and 4 idle periods in, then every IDLE_PROBE_EVERY_MAX-th. A
            # replica with work waiting, or proven behind, probes every period as before.
            self.idle_probes += 1
            n = self.idle_probes
            if n & (n - 1) and n % IDLE_PROBE_EVERY_MAX:
                return
        if stalled:
            self.resend_checkpoints()
        self.probe()

    def resend_checkpoints(self) -> None:
        """Broadcast again our checkpoint votes from the low watermark up (one per checkpoint
        we executed from `low` up, outside a jump: usually the one at `low`, at most
        `window / checkpoint_interval + 1` for a replica that executed in its window; more only
        after state transfer or an adopted jump took it beyond) with each probe
        `probe_if_stalled` makes after a whole probe period with nothing executed: every
        period with work waiting or proven behind, backed off (1, 2, 4, then every 8th
        period) when idle.

        Why: a vote was sent once, when we executed its sequence. One lost — a crash right
        before the send (a restart replays what it executed and votes nothing), a link that
        dropped it — when no other vote made the 2f+1 quorum left every replica at the top of
        its window for good: nothing proven, nothing collected, no slot accepted above it, and
        a view change carries no newer proof when nobody has one (the simulator's
        "lost-checkpoint-votes": every seed stopped at sequence 8). The vote at `low` goes too,
        and an idle replica resends: the one left below may be the only one with work waiting
        (the primary stuck at its window's top while its peers, idle, proved the checkpoint
        with votes it never got).

        Resending (PBFT's retransmission of checkpoint messages) rather than answering a probe
        with our stable proof: it also covers the case where nobody holds a proof, needs no
        new message or field, and costs a stalled replica one small signed message per
        checkpoint in its window (an idle one: one per backed-off probe, beside the probe). A
        peer that has the checkpoint proven drops the copy (`checkpoint-out-of-range`), one
        that holds our vote keeps its first (first-come, `on_checkpoint`). A jumped replica's
        abstention holds, at or above its jump and at every checkpoint it chained
        (`send_checkpoint`, `jump_chained`). The vote at `low` is our own vote from the proof,
        never another envelope of ours a peer put there (`_our_vote`). Not bounded to the
        window: a vote above it may be the one the group needs (an adopted jump ahead of a low
        watermark this replica has not learned yet). An idle replica goes on resending its
        vote at `low` with each backed-off probe for good (about twice an idle replica's
        verifications at n = 13, the review of probe60 estimated; not measured, left as is).
        Counted `checkpoint-vote-resent`."""
        interval = self.config.checkpoint_interval
        for sequence in sorted(self.state_at):
            if sequence < max(self.low, interval) or sequence >= self.next_exec:
                continue
            if sequence % interval or sequence in self.jump_chained:
                continue  # (`send_checkpoint` would abstain there, and uncounted)
            if self.jumped_upto and sequence >= self.jumped_upto:
                continue
            if sequence > self.low:
                mine = self.checkpoints.get(sequence, {}).get(self.me)
                if mine is None:
                    self.send_checkpoint(sequence)  # never sent: a crash right before the send
                    self.counters["checkpoint-vote-resent"] += 1
                    continue
            elif self.state_at[sequence] != self.low_digest:
                continue  # not the proven state: nothing of ours to vote
            else:
                mine = next((e for e in self.low_proof if self._our_vote(e, sequence)), None)
                if mine is None:
                    vote = replica_pb2.Checkpoint(sequence=sequence, state_digest=self.low_digest)
                    mine = self.sign(replica_pb2.ReplicaMessage(checkpoint=vote))
            self.broadcast(mine)
            self.counters["checkpoint-vote-resent"] += 1

    def _our_vote(self, envelope: Envelope, sequence: int) -> bool:
        """Is `envelope` our signed checkpoint vote for `low_digest` at `sequence`? A proof
        taken from a peer's state reply (`on_state_reply`) is checked for 2f+1 matching votes
        only: a byzantine peer can put any other envelope of ours in it (an old state request,
        a vote for another digest), which the resend must not broadcast again (review of
        probe60)."""
        message = self.checker.open(envelope) if envelope.replica == self.me else None
        if message is None or message.WhichOneof("body") != "checkpoint":
            return False
        vote = message.checkpoint
        return vote.sequence == sequence and vote.state_digest == self.low_digest

    def probe(self) -> None:
        """Ask every peer for decided batches from our next sequence on."""
        request = replica_pb2.StateRequest(from_sequence=self.next_exec)
        self.broadcast(self.sign(replica_pb2.ReplicaMessage(state_request=request)))

    def on_state_request(self, replica: int, from_sequence: int) -> None:
        """Answer a peer's catch-up request with decided batches (bounded, once per tick): from
        memory, or, for retained batches older than memory holds, from our records."""
        if replica == self.me or from_sequence >= self.next_exec:
            return
        if from_sequence not in self.decided and not self.in_store(from_sequence):
            return
        if self.served_at.get(replica) == self.now:
            self.drop("state-request-rate")
            return
        self.served_at[replica] = self.now
        count = self.config.transfer_batches_max
        if from_sequence not in self.decided:
            self._send.append((replica, DecidedFromStore(from_sequence, count)))
            return
        batches: list[replica_pb2.DecidedBatch] = []
        seq = from_sequence
        while seq in self.decided and len(batches) < count:
            batches.append(self.decided[seq])
            seq += 1
        self.send_state_reply(replica, batches)

    def in_store(self, sequence: int) -> bool:
        """Is decided batch `sequence` retained in our records though not in memory? Records
        keep `decided_retain` sequences below the stable checkpoint (`compaction_floor`)."""
        config = self.config
        return config.kept < config.decided_retain and (
            max(1, self.stable_seq - config.decided_retain + 1) <= sequence < self.next_exec
        )

    def on_stored_decided(
        self, replica: int, batches: tuple[replica_pb2.DecidedBatch, ...]
    ) -> None:
        """Answer `replica` with decided batches read back from our records (consecutive ones
        from the first; at most `transfer_batches_max`)."""
        out: list[replica_pb2.DecidedBatch] = []
        for batch in batches[: self.config.transfer_batches_max]:
            if out and batch.sequence != out[-1].sequence + 1:
                break
            out.append(batch)
        if out:
            self.send_state_reply(replica, out)

    def send_state_reply(self, replica: int, batches: list[replica_pb2.DecidedBatch]) -> None:
        """Send `batches` with our stable checkpoint's proof (when it is the proven one)."""
        reply = replica_pb2.StateReply(
            batches=batches, stable_sequence=self.stable_seq, stable_proof=self.low_proof
        )
        if self.stable_seq != self.low:
            del reply.stable_proof[:]
            reply.stable_sequence = 0
        self.send_to(replica, self.sign(replica_pb2.ReplicaMessage(state_reply=reply)))

    def on_state_reply(self, replica: int, reply: replica_pb2.StateReply) -> None:
        """Execute verified decided batches that continue our sequence."""
        applied = 0
        for batch in reply.batches:
            if batch.sequence < self.next_exec:
                continue
            if batch.sequence != self.next_exec:
                break
            if not self.checker.committed(batch):
                self.drop("bad-commit-certificate")
                return
            self.apply(batch)
            applied += 1
        if reply.stable_sequence > self.low:
            digest = self.checker.checkpoint(reply.stable_sequence, reply.stable_proof)
            if digest is not None:
                self.learn_checkpoint(reply.stable_sequence, digest, tuple(reply.stable_proof))
        if applied:
            self.note_behind()
            self.execute()
            if len(reply.batches) >= self.config.transfer_batches_max:
                request = replica_pb2.StateRequest(from_sequence=self.next_exec)
                self.send_to(replica, self.sign(replica_pb2.ReplicaMessage(state_request=request)))

    # -- provided by replica.Replica --------------------------------------------------------

    def apply(self, batch: replica_pb2.DecidedBatch, restoring: bool = False) -> None:
        """Execute one decided batch."""
        raise NotImplementedError

    def execute(self) -> None:
        """Execute committed slots in order."""
        raise NotImplementedError
