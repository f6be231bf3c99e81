"""Replica state and the output helpers every part of the protocol shares.

The replica is split by protocol phase: this base holds the state and the persist/send helpers,
`viewchange.ViewChanges` adds view changes, `replica.Replica` the normal case, checkpoints and
catch-up. Rules a reader must keep: a record that must survive a crash is appended to
`_persist` before the message that depends on it is appended to `_send` (the driver executes
persist before send); nothing here raises on peer input — bad input is dropped and counted.
"""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass, field

from dltmw.core.effects import Effects
from dltmw.core.pbft.certs import Checker, ViewChangeInfo
from dltmw.core.pbft.recent import Recent
from dltmw.core.pbft.types import (
    ZERO_DIGEST,
    Decided,
    Envelope,
    Outgoing,
    PbftConfig,
    PbftEffects,
    Record,
    Rejected,
    Signer,
    VoteRecord,
)
from dltmw.v1 import replica_pb2


@dataclass
class Slot:
    """Log entry of one sequence in the current view (internal, mutable)."""

    pre_prepare: Envelope | None = None
    digest: bytes = b""
    requests: tuple[bytes, ...] = ()
    my_digest: bytes | None = None
    prepares: dict[int, tuple[bytes, Envelope]] = field(default_factory=dict)
    commits: dict[int, tuple[bytes, Envelope]] = field(default_factory=dict)
    commit_sent: bool = False
    mine: list[Envelope] = field(default_factory=list)
    # len(mine) at the last retransmission pass: a slot with a message of ours newer than
    # that pass is not resent in this one (`Replica.retransmit`).
    mine_seen: int = 0
    # Vote collector (`PbftConfig.collector`): as primary, our signed prepared certificate of
    # the slot (sent to every backup, resent to those that have not committed); as backup, the
    # primary's validated commit certificate, which decides the slot (`collector.py`).
    certificate: Envelope | None = None
    decided: replica_pb2.DecidedBatch | None = None


@dataclass
class Pending:
    """A request this replica knows and has not executed; `since` drives the request timer;
    `lone`: the `alone` verdict, judged once (`Replica._next_batch` reads it on every step as
    primary, and `alone` parses the request)."""

    request: bytes
    since: int
    lone: bool | None = None


class ReplicaState:
    """State of one replica and the helpers that produce its outputs."""

    def __init__(self, config: PbftConfig, me: int, checker: Checker, sign: Signer) -> None:
        if not 0 <= me < config.n:
            raise ValueError(f"replica index {me} outside 0..{config.n - 1}")
        self.config = config
        self.me = me
        self.checker = checker
        self._signer = sign
        self.now = 0
        self.view = 0
        self.changing = False
        # Execution: next sequence to execute and the chained state digest up to it.
        self.next_exec = 1
        self.state_digest = ZERO_DIGEST
        self.state_at: dict[int, bytes] = {}
        # The last sequence a jump executed (`pbft.jump`), until a proven checkpoint at or above
        # it gave this replica the cluster's state digest again (`Checkpoints.adopt_proven`).
        self.jumped_upto = 0
        # Checkpoint sequences whose digest a jump chained over fetched blocks (with
        # dissemination not the group's): no vote of ours there (`Checkpoints.send_checkpoint`)
        # until adoption re-chains it or the low watermark passes it.
        self.jump_chained: set[int] = set()
        # Ids executed in the last `decided_retain` sequences (`recent.Recent`: bounded).
        self.executed_ids: Recent[bytes] = Recent(config.decided_retain)
        # The last `config.kept` decided batches (older retained ones: in the records only).
        self.decided: dict[int, replica_pb2.DecidedBatch] = {}
        # Checkpoints: `low` is the highest proven checkpoint (the low watermark); it becomes
        # `stable_seq` once this replica has executed up to it.
        self.low = 0
        self.low_digest = ZERO_DIGEST
        self.low_proof: tuple[Envelope, ...] = ()
        self.stable_seq = 0
        self.checkpoints: dict[int, dict[int, Envelope]] = {}
        # Normal case of the current view.
        self.slots: dict[int, Slot] = {}
        self.next_seq = 1
        self.proposed_ids: set[bytes] = set()
        self.pending: dict[bytes, Pending] = {}
        # The last tick that proved this replica behind the cluster (see `note_behind`).
        self.behind_at = 0
        # `next_exec` and the tick at the last periodic probe (`Checkpoints.probe_if_stalled`);
        # None: none yet.
        self.probed_exec: int | None = None
        self.probed_at = 0
        # Periodic probes in a row that found this replica idle (`probe_if_stalled`).
        self.idle_probes = 0
        # The request timer (`Replica.request_timer_expired`): the pending request it times,
        # since when, and the tick of the last execution.
        self.timed: bytes | None = None
        self.timed_from = 0
        self.executed_at = 0
        self.forward_buffer: list[bytes] = []
        # The last sequence of this replica group (its epoch), once known: a config batch that
        # changes the replica set ends the epoch, and nothing is proposed or judged beyond it
        # (the next blocks are the next group's; `PbftOrdererCore._track` sets it).
        self.end: int | None = None
        self.prepared: dict[int, replica_pb2.PreparedCertificate] = {}
        # Vote collector, as primary: our signed commit certificates of recently executed
        # slots and the tick each was sent, to answer a backup's late Commit
        # (`Collector.answer_late_commit`; a window of them).
        self.commit_certificates: dict[int, tuple[Envelope, int]] = {}
        # View change.
        self.vc_attempts = 0
        # When to give up on the view we are changing to; None until 2f+1 replicas asked for it
        # (see `ViewChanges.arm_view_change_timer`).
        self.vc_deadline: int | None = None
        self.my_view_change: Envelope | None = None
        self.my_new_view: Envelope | None = None
        self.view_changes: dict[int, dict[int, ViewChangeInfo]] = {}
        self.future: dict[int, deque[Envelope]] = {}
        self.served_at: dict[int, int] = {}
        self.counters: Counter[str] = Counter()
        self._persist: list[Record] = []
        self._decided: list[Decided] = []
        self._send: list[tuple[int, Outgoing]] = []
        self._replies: list[Rejected] = []

    # -- outputs ---------------------------------------------------------------------------

    def ready(self) -> PbftEffects:
        """Take the outputs accumulated since the last call (persist, decided, send, replies)."""
        out: PbftEffects = Effects(
            tuple(self._persist),
            tuple(self._decided),
            tuple(self._send),
            tuple((r.request_id, r) for r in self._replies),
        )
        self._persist, self._decided, self._send, self._replies = [], [], [], []
        return out

    def primary(self) -> int:
        """Primary of the current view."""
        return self.config.primary(self.view)

    def sign(self, message: replica_pb2.ReplicaMessage) -> Envelope:
        """Our signed envelope for `message`."""
        if self.config.epoch:  # epoch 0 stays absent: the bytes signed before epochs existed
            message.epoch = self.config.epoch
        payload = message.SerializeToString()
        return Envelope(payload=payload, replica=self.me, signature=self._signer(payload))

    def send_to(self, replica: int, envelope: Envelope) -> None:
        """Queue `envelope` for one peer."""
        if replica != self.me:
            self._send.append((replica, envelope))

    def broadcast(self, envelope: Envelope) -> None:
        """Queue `envelope` for every other replica."""
        for replica in range(self.config.n):
            if replica != self.me:
                self._send.append((replica, envelope))

    def persist(self, record: Record) -> None:
        """Queue `record` to be made durable before anything queued after it is sent."""
        self._persist.append(record)

    def drop(self, reason: str) -> None:
        """Count an input dropped for `reason` (bad signature, outside window, ...)."""
        self.counters[reason] += 1

    def vote(
        self, kind: str, sequence: int, digest: bytes, block: tuple[bytes, bytes] | None = None
    ) -> Envelope:
        """Sign, persist and broadcast our prepare or commit for (view, sequence, digest);
        `block`: (block hash, block signature) a Commit carries (`Replica.commit_block`)."""
        message = replica_pb2.ReplicaMessage()
        vote = replica_pb2.Vote(view=self.view, sequence=sequence, digest=digest)
        if block is not None:
            vote.block_hash, vote.block_signature = block
        getattr(message, kind).CopyFrom(vote)
        envelope = self.sign(message)
        self.persist(VoteRecord(envelope))
        self.send_vote(envelope)
        return envelope

    def send_vote(self, envelope: Envelope) -> None:
        """Send our prepare or commit: to every other replica, or with a vote collector only to
        the view's primary (none when we are it: the certificates carry our vote)."""
        if self.config.collector:
            self.send_to(self.primary(), envelope)
        else:
            self.broadcast(envelope)

    def vote_prepare(self, slot: Slot, sequence: int, digest: bytes) -> None:
        """Vote Prepare for a slot's pre-prepare (our vote counts towards our own quorum)."""
        envelope = self.vote("prepare", sequence, digest)
        slot.my_digest = digest
        slot.mine.append(envelope)
        slot.prepares[self.me] = (digest, envelope)

    def note_behind(self) -> None:
        """Record proof that the cluster decided past what we executed: batches we fetched
        (under 2f+1 commits, or in blocks `jump` took with 2f+1 signatures) or a checkpoint
        above `next_exec` proven by 2f+1.
        The request timer does not run while such proof keeps coming: the requests we wait for
        may be decided in batches we have not fetched yet, so a timeout would blame the primary
        for our own lag — and alone in view v+1 we would be out of the cluster (PBFT never
        lets a replica return to view v). One faulty replica cannot forge the proof."""
        self.behind_at = self.now

    def in_window(self, sequence: int) -> bool:
        """Sequence between the watermarks (low, low + L]."""
        return self.low < sequence <= self.low + self.config.window

    def buffer_future(self, envelope: Envelope) -> None:
        """Keep a message of a view we have not installed yet (bounded per peer)."""
        queue = self.future.setdefault(envelope.replica, deque())
        if len(queue) >= self.config.future_per_peer_max:
            self.drop("future-buffer-full")
            return
        queue.append(envelope)
