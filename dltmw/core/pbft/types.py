"""Value types of the PBFT-lite core: configuration, inputs, outputs and persisted records.

A replica is driven like every other core (`dltmw.core.effects`): `step(input)`, `tick(now)`, then
`ready()` hands back a `PbftEffects` whose fields must be executed in order — persist (make the
records durable), then deliver `decided`, then `send`, then `replies` (refused requests, by request
id). Restart = `Replica.restore(..., records)` with
exactly the records that were made durable, in order.

Decided batches: the last `decided_retain` are durable (compaction keeps them); only the last
`decided_kept` of them stay in memory. A peer's catch-up request for an older one is a send to
the replica's own store (`DecidedFromStore`); the runtime reads those `DecidedRecord`s back and
steps them in (`StoredDecided`), and the replica answers from them as from memory.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from dltmw.core.effects import Effects
from dltmw.core.quorum import quorum_of
from dltmw.v1 import replica_pb2

Envelope = replica_pb2.SignedReplicaMessage
Signer = Callable[[bytes], bytes]
Verifier = Callable[[int, bytes, bytes], bool]
DigestFn = Callable[[Sequence[bytes]], bytes]
RequestCheck = Callable[[bytes], bool]

ZERO_DIGEST = bytes(32)


def request_id(request: bytes) -> bytes:
    """A request is identified by its SHA-256."""
    return hashlib.sha256(request).digest()


def batch_digest(requests: Sequence[bytes]) -> bytes:
    """Default batch digest: SHA-256 over a domain tag and each request's SHA-256, in order.

    Equal to `dltmw.core.hashing.data_hash` of the requests prefixed by the tag, so adapters can
    define their own (e.g. the block data hash) and inject it instead.
    """
    return digest_of_ids([request_id(r) for r in requests])


def digest_of_ids(ids: Sequence[bytes]) -> bytes:
    """`batch_digest` of requests whose ids (`request_id`) are known: a replica hashes each
    envelope once and carries its id on (receipt, assembly, block, replies), where it used to
    hash it ~6 times on each replica (benchmarks/RESULTS.md, lane `bkp`)."""
    h = hashlib.sha256(b"dltmw-pbft-batch\x00")
    for rid in ids:
        h.update(rid)
    return h.digest()


def chain_state(previous: bytes, digest: bytes) -> bytes:
    """Checkpoint state digest after executing one more batch: SHA-256(previous || digest)."""
    return hashlib.sha256(previous + digest).digest()


@dataclass(frozen=True)
class PbftConfig:
    """Static parameters of one replica group; every replica of the group must use the same.

    `n` >= 4 replicas tolerate f = (n-1) // 3 faulty ones. n = 3f+1 is the classic size; a
    replica-set change (docs/governance.md) may give any n >= 4, e.g. 5, and the quorum is then
    the smallest size any two of which share f+1 replicas — at least one correct — whatever n:
    ceil((n+f+1)/2), which is 2f+1 exactly when n = 3f+1 (n=5: 4 of 5). `epoch`: the number of the
    config block that started this group (0: block 0's); every message it signs carries it and
    it counts no message of another epoch (`certs.Checker.open`).

    `decided_retain`: decided batches kept for state transfer (durably: the record store's
    compaction floor) and the de-duplication window. `decided_kept`: how many of them also stay
    in memory (0: all of them); older ones are served from the records (`DecidedFromStore`).
    A notary cluster's batches carry whole wraps (up to ~200 KB each), so 1,024 of them in
    memory were ~20 MiB per member; the normal pipeline needs only the window.

    `collector`: the vote-collector pattern (docs/ordering.md): backups send prepares and
    commits to the view's primary only, and the primary sends them the certificates it
    collected (`collector.py`). False: all-to-all, PBFT's pattern. Every replica of a group must
    agree on it (a backup of an all-to-all group waiting for prepares the others send only to
    the primary would never prepare).

    `carried`: with dissemination, the primary's own batch is certified by its own ack alone
    and its slot's prepares stand for the f+1 acks (docs/ordering.md, "The primary's own
    batch"). False: every batch takes the f+1-ack path and a certificate's `carried` field is
    ignored, so a carried one is refused for want of acks — what a release before it does, so
    old and new replicas of a channel without the flag decide alike (a rolling upgrade). The
    runtime passes the channel's `batch.pbft_carried_batches`, the simulator its own choice
    (`sim/dissem_runner.run_dissemination`, on by default there); off by default here, the
    behaviour every release understands. Every replica of a group must agree on it.

    `slot_requests_max`: requests one slot may order, when it must be below `batch_size_max`
    (0: `batch_size_max`). The runtime's disseminating replicas order one availability
    certificate per slot (a block is one batch, at most the channel's `max_tx_count`
    envelopes) and set 1: a backup then refuses a pre-prepare naming several certificates,
    which a faulty primary could otherwise send — `batch_size_max` certificates of
    `max_tx_count` envelopes each, a block ~100 times the channel's bound. A correct primary
    never proposes more (`DisseminatingReplica.cut_max` is 1), so the rule changes nothing
    that correct replicas decide.
    """

    n: int
    checkpoint_interval: int = 8
    batch_size_max: int = 16
    request_bytes_max: int = 1 << 20
    view_change_timeout_ticks: int = 40
    request_timeout_ticks: int = 60
    retransmit_ticks: int = 10
    probe_ticks: int = 15
    backoff_exponent_max: int = 5
    pending_max: int = 10_000
    future_per_peer_max: int = 256
    transfer_batches_max: int = 16
    decided_retain: int = 4096
    decided_kept: int = 0
    epoch: int = 0
    collector: bool = False
    carried: bool = False
    slot_requests_max: int = 0

    def __post_init__(self) -> None:
        if self.n < 4:
            raise ValueError(f"n must be at least 4 (f >= 1), got {self.n}")
        if self.epoch < 0:
            raise ValueError(f"epoch must not be negative, got {self.epoch}")
        if self.checkpoint_interval < 1 or self.batch_size_max < 1:
            raise ValueError("checkpoint_interval and batch_size_max must be positive")
        if self.slot_requests_max < 0:
            raise ValueError(f"slot_requests_max must not be negative: {self.slot_requests_max}")
        if self.decided_kept < 0:
            raise ValueError(f"decided_kept must not be negative, got {self.decided_kept}")

    @property
    def kept(self) -> int:
        """Decided batches held in memory: `decided_kept`, at most `decided_retain` (0: all)."""
        if self.decided_kept == 0:
            return self.decided_retain
        return min(self.decided_kept, self.decided_retain)

    @property
    def f(self) -> int:
        """Faulty replicas tolerated."""
        return (self.n - 1) // 3

    @property
    def quorum(self) -> int:
        """Size of a prepare/commit/checkpoint/view-change quorum: ceil((n+f+1)/2), i.e. 2f+1
        for n = 3f+1 (any two quorums intersect in f+1 replicas; see the class docstring)."""
        return quorum_of(self.n)

    @property
    def window(self) -> int:
        """L: sequences accepted above the low watermark (two checkpoint intervals)."""
        return 2 * self.checkpoint_interval

    def primary(self, view: int) -> int:
        """Primary of `view`."""
        return view % self.n


@dataclass(frozen=True)
class ClientRequest:
    """Input: a client submitted `request` to this replica.

    `admitted`: the node's client boundary already judged `request` by a rule at least as
    strict as the core's admission rule (an orderer's Broadcast check: the same checks with the
    clock, against the config in force). A disseminating replica then does not judge it again
    (`Disseminator.submit`): there it ran once per envelope on the event loop, ~0.15 ms of the
    primary's ~1.2 ms per transaction. Replicas that order envelopes themselves (`Replica`)
    judge every request alike whatever the flag, as their backups re-judge what they propose.
    `request_id`: its SHA-256 (`request_id`) when the caller computed it already (b"": not).
    """

    request: bytes
    admitted: bool = False
    request_id: bytes = b""


@dataclass(frozen=True)
class DecidedFromStore:
    """Output, sent as `(peer, DecidedFromStore)`: peer's catch-up asked for decided batches no
    longer in memory (`PbftConfig.decided_kept`). The runtime reads our durable `DecidedRecord`s
    from `from_sequence` on (at most `count`, consecutive) and steps them back in as
    `StoredDecided(peer, ...)`; nothing when none is stored any more (the peer asks again)."""

    from_sequence: int
    count: int


@dataclass(frozen=True)
class StoredDecided:
    """Input: decided batches read back from our own records for peer `replica`'s catch-up
    (answer of a `DecidedFromStore`): trusted, they are what we persisted."""

    replica: int
    batches: tuple[replica_pb2.DecidedBatch, ...]


@dataclass(frozen=True)
class Rejected:
    """Reply: a client request was refused (reason is an ErrorReason-style name)."""

    request_id: bytes
    reason: str


@dataclass(frozen=True)
class Decided:
    """Output: the batch decided at `sequence`, in sequence order, with its commit certificate.

    `requests` is the batch exactly as agreed (the digest covers it); `fresh` are those of its
    requests not decided at an earlier sequence (a faulty primary may repeat a request; every
    correct replica filters identically).
    """

    view: int
    sequence: int
    digest: bytes
    requests: tuple[bytes, ...]
    commits: tuple[Envelope, ...]
    fresh: tuple[bytes, ...]
    request_ids: tuple[bytes, ...] = ()  # `request_id` of each of `requests` when known, else ()


@dataclass(frozen=True)
class ViewRecord:
    """Persisted: the replica entered `view` (changing=True while the view is not installed)."""

    view: int
    changing: bool


@dataclass(frozen=True)
class VoteRecord:
    """Persisted before it is sent: one of our own pre-prepares, prepares or commits."""

    envelope: Envelope


@dataclass(frozen=True)
class PreparedRecord:
    """Persisted before our commit is sent: the prepared certificate it rests on."""

    certificate: replica_pb2.PreparedCertificate


@dataclass(frozen=True)
class DecidedRecord:
    """Persisted before the batch is delivered: a decided batch with its commit certificate."""

    batch: replica_pb2.DecidedBatch


@dataclass(frozen=True)
class StableRecord:
    """Persisted: a checkpoint became stable; everything at or below `sequence` may be dropped."""

    sequence: int
    state_digest: bytes
    proof: tuple[Envelope, ...]


@dataclass(frozen=True)
class JumpRecord:
    """Persisted: execution jumped to `sequence` over externally verified blocks (see `jump`).

    Holds what a restart needs to resume there: the chained state digest at `sequence`, the
    digests at the checkpoint multiples jumped over, and the request ids executed by the jump's
    last `decided_retain` sequences (what de-duplication remembers: `recent.Recent`).
    """

    sequence: int
    state_digest: bytes
    checkpoint_states: tuple[tuple[int, bytes], ...]
    request_ids: tuple[bytes, ...]


Record = ViewRecord | VoteRecord | PreparedRecord | DecidedRecord | StableRecord | JumpRecord


Outgoing = Envelope | DecidedFromStore  # what a replica sends: to a peer, or to its own store
PbftEffects = Effects[Record, Decided, Outgoing, Rejected]
