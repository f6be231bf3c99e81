"""Notary cluster (pure parts): n = 3f+1 notary replicas that decide uniqueness identically.

How a cluster replicates the single notary's decision (`handlers/notary.py`):
- A replica that receives client requests admits them statelessly (`core/notary.admit`), then
  wraps the raw signed requests into ONE opaque PBFT request together with its clock reading
  (`stamp_ns`) and its replica index; several client messages that waited may share a wrap, one
  `Part` each (`wrap_parts`: each keeps its own requester batch signature and payload hashes).
  PBFT-lite orders these requests into batches.
- On every decided batch each replica steps its `ClusterDecider` core: every wrapped request is
  re-admitted with the stamp as "now" (so membership and certificate validity are judged at the
  same instant everywhere; the runtime does that, on its verify pool, as the driver's load) and
  the admitted asks go through `SingleNotary` with `now_ns = stamp_ns` (`decide_batch`). The
  decision therefore depends only on the agreed batch and the spent-set, which every correct
  replica built from the same earlier batches: correct replicas consume the same states for the
  same tx_ids and each signs with its own key.
- Time: the stamp of the replica that admitted the request is the decision time. A backup
  refuses to prepare a pre-prepare carrying a stamp too far from its own clock (`stamp_fresh`,
  applied by the runtime to incoming pre-prepares only: decided batches fetched in catch-up and
  re-proposals after a view change are legitimately old). A faulty replica can thus move a
  decision time by at most the tolerated skew — the same bound a single notary's clock has.
- A client accepts an outcome once f+1 distinct members agree (`verdict`): f+1 signatures over
  the tx_id include one from a correct replica, which signs only what the agreed order allows,
  and all correct replicas agree; 2f+1 would add nothing to uniqueness and would stall the
  client whenever f replicas are slow or down. The members and their keys come from the signed
  network map, never from a responder.
- Recovery: the spent-set store records the last applied sequence in the same transaction as
  the batch's effects; after a restart `unapplied` lists the decided batches (kept by the PBFT
  record log) to apply again. Applying a batch twice changes nothing (signed tx_ids keep their
  signature; consumers are unchanged), so the order "persist PBFT records, then apply" is safe.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from google.protobuf.message import DecodeError

from dltmw.core.effects import Effects, Token
from dltmw.core.handlers.notary import (
    Ask,
    Decide,
    Decision,
    SignTree,
    SingleNotary,
    Spent,
    SpentView,
)
from dltmw.core.merkle import Proof
from dltmw.core.notary import NotarisationAsk
from dltmw.core.notary_batch import SignedBatch, encode
from dltmw.core.utxo.model import Ref
from dltmw.v1 import identity_pb2, notary_cluster_pb2

Item = NotarisationAsk | Decision
REQUESTS_PER_WRAP_MAX = 1000


@dataclass(frozen=True)
class Unpacked:
    """One ordered PBFT request opened for the decision: its stamp and, per wrapped request,
    the admitted ask or the (deterministic) refusal."""

    stamp_ns: int
    items: tuple[Item, ...]


@dataclass(frozen=True)
class BatchOutcome:
    """What one batch spent (to make durable in one transaction) and the decision of every
    wrapped request, grouped per PBFT request of the batch, in order."""

    spent: Spent
    decisions: tuple[tuple[Decision, ...], ...]


def wrap(
    requests: Sequence[bytes],
    stamp_ns: int,
    stamper: int,
    batch_signature: identity_pb2.Signature | None = None,
    batch_hashes: Sequence[bytes] = (),
) -> bytes:
    """The opaque PBFT request for raw signed NotarisationRequests admitted by `stamper` (for a
    part of a batch-signed client message: with its batch signature and all its payload
    hashes, `core/request_batch.py`)."""
    message = notary_cluster_pb2.ClusterNotaryRequest(
        requests=list(requests), stamp_ns=stamp_ns, stamper=stamper
    )
    if batch_signature is not None:
        message.batch_signature.CopyFrom(batch_signature)
        message.batch_payload_hashes.extend(batch_hashes)
    return message.SerializeToString(deterministic=True)


@dataclass(frozen=True)
class Part:
    """One client message's share of a wrap: raw requests and, when batch-signed, the
    requester batch signature with all the message's payload hashes."""

    requests: Sequence[bytes]
    batch_signature: identity_pb2.Signature | None = None
    batch_hashes: Sequence[bytes] = ()


def wrap_parts(parts: Sequence[Part], stamp_ns: int, stamper: int) -> bytes:
    """The opaque PBFT request for the requests of several client messages admitted by
    `stamper`, merged so that one PBFT slot carries more of them; decided part by part."""
    message = notary_cluster_pb2.ClusterNotaryRequest(stamp_ns=stamp_ns, stamper=stamper)
    for part in parts:
        out = message.parts.add(requests=list(part.requests))
        if part.batch_signature is not None:
            out.batch_signature.CopyFrom(part.batch_signature)
            out.batch_payload_hashes.extend(part.batch_hashes)
    return message.SerializeToString(deterministic=True)


WrapPart = notary_cluster_pb2.ClusterNotaryRequest | notary_cluster_pb2.ClusterNotaryPart


def parts_of(message: notary_cluster_pb2.ClusterNotaryRequest) -> Sequence[WrapPart]:
    """The parts of a well-formed wrap, in decision order: its `parts`, or the wrap itself
    when it carries one client message's requests directly (the older form)."""
    return list(message.parts) if message.parts else [message]


def _part_ok(part: WrapPart) -> bool:
    """A part holds requests, and names its message's payloads iff it is batch-signed."""
    return bool(part.requests) and part.HasField("batch_signature") == bool(
        part.batch_payload_hashes
    )


def unwrap(request: bytes, n: int) -> notary_cluster_pb2.ClusterNotaryRequest | None:
    """The wrapped request if it is well formed for a cluster of `n` (the PBFT `request_ok`:
    structural only, so that old decided batches stay valid in catch-up), else None."""
    message = notary_cluster_pb2.ClusterNotaryRequest()
    try:
        message.ParseFromString(request)
    except DecodeError:
        return None
    if message.parts and (message.requests or message.HasField("batch_signature")):
        return None  # one form or the other
    parts = parts_of(message)
    count = sum(len(p.requests) for p in parts)
    if not 0 < count <= REQUESTS_PER_WRAP_MAX or message.stamper >= n:
        return None
    if message.parts and message.batch_payload_hashes:
        return None
    if not all(_part_ok(p) for p in parts):
        return None  # a signed part names the batch's payloads; an unsigned one none
    return message if message.stamp_ns > 0 else None


def stamp_fresh(stamp_ns: int, local_ns: int, skew_ns: int, age_ns: int) -> bool:
    """May a backup prepare a batch stamped `stamp_ns` at its own time `local_ns`? Not from
    the future beyond the skew, not older than `age_ns` (queueing at the primary included)."""
    return local_ns - age_ns <= stamp_ns <= local_ns + skew_ns


def decide_batch(
    unpacked: Sequence[Unpacked],
    view: SpentView,
    sign: Callable[[bytes], bytes],
    tree_signer: SignTree | None = None,
) -> BatchOutcome:
    """Decide one agreed batch (its requests opened in order) against the spent-set `view`
    (`tree_signer`: `SingleNotary`'s simulation seam)."""
    core = SingleNotary(sign, tree_signer)
    slots: list[list[Decision | None]] = []
    asks: list[Ask] = []
    for i, opened in enumerate(unpacked):
        row: list[Decision | None] = []
        for j, item in enumerate(opened.items):
            if isinstance(item, Decision):
                row.append(item)
            else:
                row.append(None)
                asks.append(Ask(item, opened.stamp_ns, (i, j)))
        slots.append(row)
    core.step(Decide(tuple(asks), view))
    effects = core.ready()
    for (i, j), decision in ((_slot(token), d) for token, d in effects.replies):
        slots[i][j] = decision
    decisions = tuple(tuple(d for d in row if d is not None) for row in slots)
    return BatchOutcome(effects.decided[0] if effects.decided else Spent(), decisions)


def _slot(token: Token) -> tuple[int, int]:
    if not isinstance(token, tuple):
        raise TypeError("a batch decision's token is its (request, item) position")
    return int(token[0]), int(token[1])


@dataclass(frozen=True)
class OpenedBatch:
    """Input of the decider: the batch decided at `sequence`, each of its PBFT requests (by
    request id) opened at its stamp, and the durable spent rows its asks touch."""

    sequence: int
    request_ids: tuple[bytes, ...]
    unpacked: tuple[Unpacked, ...]
    view: SpentView


ClusterEffects = Effects[None, Spent, None, tuple[Decision, ...]]


class _Layered:
    """The spent-set as the next batch sees it: this step's decisions over the durable view.
    A tx_id signed earlier in this step is found by (batch, leaf); its attestation is encoded
    only when asked for (a retry within one step: rare), not for every tx_id signed."""

    def __init__(
        self,
        consumed: dict[Ref, str],
        signed: dict[str, tuple[SignedBatch, int]],
        view: SpentView,
    ):
        self._consumed, self._signed, self._view = consumed, signed, view

    def consumer_of(self, ref: Ref) -> str | None:
        return self._consumed.get(ref) or self._view.consumer_of(ref)

    def signature_of(self, tx_id: str) -> bytes | None:
        mine = self._signed.get(tx_id)
        if mine is None:
            return self._view.signature_of(tx_id)
        batch, leaf = mine
        return encode(batch.signature, batch.proofs()[leaf])


class ClusterDecider:
    """The decision of one cluster replica over agreed batches: a
    `Core[OpenedBatch, ClusterEffects]`. A batch at or below `applied` (re-applied after a
    restart) is decided again for its answers but spends nothing new. `tree_signer`: the
    simulator's byzantine members replace the signing step through it (`SingleNotary`)."""

    def __init__(
        self, sign: Callable[[bytes], bytes], applied: int, tree_signer: SignTree | None = None
    ) -> None:
        self.applied = applied
        self._sign = sign
        self._tree_signer = tree_signer
        self._consumed: dict[Ref, str] = {}
        self._signed: dict[str, tuple[SignedBatch, int]] = {}
        self._decided: list[Spent] = []
        self._replies: list[tuple[Token, tuple[Decision, ...]]] = []

    def step(self, message: OpenedBatch) -> None:
        """Decide one agreed batch."""
        view = _Layered(self._consumed, self._signed, message.view)
        outcome = decide_batch(message.unpacked, view, self._sign, self._tree_signer)
        spent = outcome.spent
        if message.sequence > self.applied:
            self.applied = message.sequence
            self._decided.append(Spent(spent.consumed, spent.batches, message.sequence))
            self._consumed.update(spent.consumed)
            self._signed.update(
                (tx_id, (batch, leaf))
                for batch in spent.batches
                for leaf, tx_id in enumerate(batch.tx_ids)
            )
        self._replies.extend(zip(message.request_ids, outcome.decisions, strict=True))

    def tick(self, now: int) -> None:
        """Nothing is time-driven here (PBFT-lite is)."""

    def ready(self) -> ClusterEffects:
        """Drain: what each batch spent (with its sequence), then the answers per request."""
        out: ClusterEffects = Effects(decided=tuple(self._decided), replies=tuple(self._replies))
        self._consumed, self._signed, self._decided, self._replies = {}, {}, [], []
        return out


def unapplied(decided: Mapping[int, Sequence[bytes]], applied_seq: int) -> list[int]:
    """Sequences of retained decided batches above `applied_seq`, in order; ValueError when the
    log no longer holds the next one (the spent-set would skip a batch)."""
    todo = sorted(seq for seq in decided if seq > applied_seq)
    if todo and todo[0] != applied_seq + 1:
        raise ValueError(f"decided batch {applied_seq + 1} is no longer retained (next {todo[0]})")
    return todo


@dataclass(frozen=True)
class ReplicaAnswer:
    """What one cluster member answered for a tx_id (its signature already verified)."""

    replica: int
    signature: bytes = b""
    reason: int = 0
    conflict_hashes: tuple[bytes, ...] = ()
    proof: Proof | None = None


@dataclass(frozen=True)
class Verdict:
    """The cluster's outcome as a client sees it: signatures by member, or a refusal."""

    signatures: Mapping[int, bytes]
    reason: int = 0
    conflict_hashes: tuple[bytes, ...] = ()
    proofs: Mapping[int, Proof | None] = field(default_factory=dict)

    @property
    def signed(self) -> bool:
        """True when the cluster notarised the transaction."""
        return not self.reason


def verdict(answers: Sequence[ReplicaAnswer], f: int) -> Verdict | None:
    """The outcome once f+1 distinct members agree, else None (ask more members). An answer
    counts once per member (its first); a signed answer and a refusal never mix."""
    first: dict[int, ReplicaAnswer] = {}
    for answer in answers:
        first.setdefault(answer.replica, answer)
    signatures = {r: a.signature for r, a in first.items() if a.signature and not a.reason}
    if len(signatures) >= f + 1:
        return Verdict(signatures, proofs={r: first[r].proof for r in signatures})
    refusals: dict[tuple[int, tuple[bytes, ...]], int] = {}
    for answer in first.values():
        if answer.reason:
            key = (answer.reason, answer.conflict_hashes)
            refusals[key] = refusals.get(key, 0) + 1
            if refusals[key] >= f + 1:
                return Verdict({}, answer.reason, answer.conflict_hashes)
    return None
