"""Opening signed messages and validating certificates — pure functions shared by every replica.

Rules a reader must keep:
- A message counts only if its envelope's signature verifies under the key of `envelope.replica`
  over exactly `envelope.payload`; the payload is then parsed, never re-serialised.
- A certificate counts distinct signers only; one signer voting twice counts once.
- A message counts only in its own epoch (`ReplicaMessage.epoch` == `PbftConfig.epoch`): a vote
  signed for one replica group never counts in another (docs/governance.md).
- A prepared certificate needs the pre-prepare of the view's primary and quorum-1 (2f when
  n = 3f+1) prepares from distinct backups (not the primary); a commit certificate needs a
  quorum (2f+1) of commits from distinct replicas; every vote names the same (view, sequence,
  digest) and the digest matches the batch.
- The new-view pre-prepares are a deterministic function of the view changes it carries, so a
  backup recomputes them and accepts only an exact match.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from google.protobuf.message import DecodeError

from dltmw.core.pbft.types import (
    ZERO_DIGEST,
    DigestFn,
    Envelope,
    PbftConfig,
    RequestCheck,
    Verifier,
    request_id,
)
from dltmw.v1 import replica_pb2


@dataclass(frozen=True)
class Checker:
    """Everything needed to validate messages of one replica group."""

    config: PbftConfig
    verify: Verifier
    digest: DigestFn
    request_ok: RequestCheck
    alone: RequestCheck = field(default=lambda _r: False)
    """Requests that must be a batch by themselves (config updates: every node applies one
    between two blocks); a batch holding one with anything else is refused whole."""

    def open(
        self, envelope: Envelope, parsed: replica_pb2.ReplicaMessage | None = None
    ) -> replica_pb2.ReplicaMessage | None:
        """The verified message inside `envelope`, or None (unknown signer, bad signature, junk).

        `parsed`: `envelope.payload` already parsed by the caller (a batch is ~100 KB of
        envelopes: parsing it is a copy of each), used once the signature verifies."""
        if envelope.replica >= self.config.n:
            return None
        if not self.verify(envelope.replica, envelope.payload, envelope.signature):
            return None
        message = parsed
        if message is None:
            message = replica_pb2.ReplicaMessage()
            try:
                message.ParseFromString(envelope.payload)
            except DecodeError:
                return None
        if message.epoch != self.config.epoch:
            return None  # another replica group's: no vote crosses an epoch boundary
        return message if message.WhichOneof("body") else None

    def batch_ok(self, digest: bytes, requests: Sequence[bytes]) -> bool:
        """The batch is well formed: size bounds, admissible requests, no repeats, digest."""
        return self.batch_error(digest, requests) is None

    def batch_error(self, digest: bytes, requests: Sequence[bytes]) -> str | None:
        """Why the batch is not well formed (a drop-counter name), or None.

        Every request must pass `request_ok`, the injected admission rule: a pre-prepare (or a
        certificate) carrying one inadmissible request is refused whole, so a faulty primary's
        junk is never prepared by a correct backup and so never ordered.
        """
        cfg = self.config
        if len(requests) > (cfg.slot_requests_max or cfg.batch_size_max):
            return "batch-too-large"
        if len({request_id(r) for r in requests}) != len(requests):
            return "batch-repeats-a-request"
        if len(requests) > 1 and any(self.alone(r) for r in requests):
            return "batch-mixes-a-lone-request"
        for r in requests:
            if len(r) > cfg.request_bytes_max or not self.request_ok(r):
                return "batch-with-inadmissible-request"
        if self.digest(requests) != digest:
            return "batch-digest-mismatch"
        return None

    def votes(
        self, envelopes: Iterable[Envelope], kind: str, view: int, sequence: int, digest: bytes
    ) -> set[int]:
        """Distinct signers of valid `kind` votes for exactly (view, sequence, digest)."""
        return set(self.vote_envelopes(envelopes, kind, view, sequence, digest))

    def vote_envelopes(
        self, envelopes: Iterable[Envelope], kind: str, view: int, sequence: int, digest: bytes
    ) -> dict[int, tuple[Envelope, replica_pb2.Vote]]:
        """The first valid `kind` vote of each distinct signer for exactly (view, sequence,
        digest), with the vote itself (a collected Commit carries a block signature)."""
        found: dict[int, tuple[Envelope, replica_pb2.Vote]] = {}
        for env in envelopes:
            if env.replica in found:
                continue
            msg = self.open(env)
            if msg is None or msg.WhichOneof("body") != kind:
                continue
            vote = getattr(msg, kind)
            if (vote.view, vote.sequence, vote.digest) == (view, sequence, digest):
                found[env.replica] = (env, vote)
        return found

    def prepared(self, cert: replica_pb2.PreparedCertificate) -> replica_pb2.PrePrepare | None:
        """The pre-prepare a prepared certificate proves, or None if the certificate is invalid."""
        proven = self.prepared_votes(cert)
        return None if proven is None else proven[0]

    def prepared_votes(
        self,
        cert: replica_pb2.PreparedCertificate,
        accepted: replica_pb2.PrePrepare | None = None,
    ) -> tuple[replica_pb2.PrePrepare, dict[int, Envelope]] | None:
        """The pre-prepare a prepared certificate proves and its valid prepares by signer (never
        the primary's), or None if the certificate is invalid. `accepted`: the caller already
        verified and accepted exactly this pre-prepare (its view, sequence and digest): it is
        not verified and its batch not judged again."""
        pp = accepted
        if pp is None:
            msg = self.open(cert.pre_prepare)
            if msg is None or msg.WhichOneof("body") != "pre_prepare":
                return None
            pp = msg.pre_prepare
            if not self.batch_ok(pp.digest, pp.requests):
                return None
        primary = self.config.primary(pp.view)
        if cert.pre_prepare.replica != primary:
            return None
        found = self.vote_envelopes(cert.prepares, "prepare", pp.view, pp.sequence, pp.digest)
        found.pop(primary, None)
        if len(found) < self.config.quorum - 1:
            return None
        return pp, {signer: env for signer, (env, _vote) in found.items()}

    def committed(self, batch: replica_pb2.DecidedBatch) -> bool:
        """A decided batch is proven by 2f+1 distinct commits over its view, sequence, digest."""
        if batch.sequence < 1 or not self.batch_ok(batch.digest, batch.requests):
            return False
        return len(self.commit_votes(batch)) >= self.config.quorum

    def commit_votes(
        self, batch: replica_pb2.DecidedBatch
    ) -> dict[int, tuple[Envelope, replica_pb2.Vote]]:
        """The valid commits of a decided batch by distinct signer (its batch not judged)."""
        return self.vote_envelopes(
            batch.commits, "commit", batch.view, batch.sequence, batch.digest
        )

    def checkpoint(self, sequence: int, proof: Sequence[Envelope]) -> bytes | None:
        """The state digest 2f+1 distinct replicas signed for `sequence`, or None."""
        if sequence == 0:
            return ZERO_DIGEST if not proof else None
        by_digest: dict[bytes, set[int]] = {}
        for env in proof:
            msg = self.open(env)
            if msg is None or msg.WhichOneof("body") != "checkpoint":
                continue
            if msg.checkpoint.sequence == sequence:
                by_digest.setdefault(msg.checkpoint.state_digest, set()).add(env.replica)
        for digest, signers in by_digest.items():
            if len(signers) >= self.config.quorum:
                return digest
        return None

    def view_change(self, envelope: Envelope) -> ViewChangeInfo | None:
        """The validated content of a signed ViewChange, or None."""
        msg = self.open(envelope)
        if msg is None or msg.WhichOneof("body") != "view_change":
            return None
        vc = msg.view_change
        stable_digest = self.checkpoint(vc.stable_sequence, vc.checkpoint_proof)
        if stable_digest is None:
            return None
        prepared: dict[int, replica_pb2.PrePrepare] = {}
        high = vc.stable_sequence + self.config.window
        for cert in vc.prepared:
            pp = self.prepared(cert)
            if pp is None or pp.view >= vc.new_view or pp.sequence in prepared:
                return None
            if not vc.stable_sequence < pp.sequence <= high:
                return None
            prepared[pp.sequence] = pp
        return ViewChangeInfo(
            envelope.replica, vc.new_view, vc.stable_sequence, stable_digest, vc, prepared, envelope
        )


@dataclass(frozen=True)
class ViewChangeInfo:
    """A validated view change."""

    replica: int
    new_view: int
    stable_sequence: int
    stable_digest: bytes
    message: replica_pb2.ViewChange
    prepared: dict[int, replica_pb2.PrePrepare]
    envelope: Envelope


@dataclass(frozen=True)
class NewViewPlan:
    """What a new view must re-propose: the pre-prepares of sequences low+1..high."""

    low: int
    low_digest: bytes
    low_proof: tuple[Envelope, ...]
    batches: tuple[tuple[int, bytes, tuple[bytes, ...]], ...]


def plan_new_view(checker: Checker, infos: Sequence[ViewChangeInfo]) -> NewViewPlan:
    """Deterministic re-proposal from 2f+1 view changes (PBFT's computation of O).

    low = the highest stable checkpoint among them; for every sequence above it up to the highest
    prepared one, re-propose the batch of the highest-view prepared certificate, or a null
    (empty) batch when no certificate exists. Any batch committed in an earlier view was prepared
    by f+1 correct replicas, one of which is in every 2f+1 quorum, so it is carried over.
    """
    infos = sorted(infos, key=lambda i: i.replica)
    best = max(infos, key=lambda i: (i.stable_sequence, -i.replica))
    low = best.stable_sequence
    chosen: dict[int, replica_pb2.PrePrepare] = {}
    for info in infos:
        for seq, pp in info.prepared.items():
            if seq > low and (seq not in chosen or pp.view > chosen[seq].view):
                chosen[seq] = pp
    high = max(chosen, default=low)
    batches = []
    for seq in range(low + 1, high + 1):
        if seq in chosen:
            batches.append((seq, chosen[seq].digest, tuple(chosen[seq].requests)))
        else:
            batches.append((seq, checker.digest(()), ()))
    proof = tuple(best.message.checkpoint_proof)
    return NewViewPlan(low, best.stable_digest, proof, tuple(batches))
