"""Availability certificates: f+1 signed acks that a batch is stored — pure functions.

With dissemination (`dissemination.py`) PBFT-lite orders certificates, not envelopes. A
certificate names a batch (origin, batch_sequence, digest) and carries f+1 signed `BatchAck`s of
distinct replicas of the group over exactly that triple. At most f replicas are faulty, so at
least one correct replica stored the batch durably and serves it to anyone resolving the
certificate (`assembly.py`): a certificate that holds proves the batch *available*, which is all
ordering needs — what the envelopes say is judged by the peers, who validate every envelope of
every block anyway.

Rules a reader must keep:
- An ack counts only if it opens (`Checker.open`: the signer is of the group, the signature
  verifies over the payload, the epoch is ours) and names exactly the certificate's triple.
- Distinct signers only: one replica acking twice counts once.
- `alone` (one envelope that must be ordered in a block of its own: a config update) and
  `formed_at` (the slots in which the certificate can be assembled, `assembly.live_in`) are part
  of what each ack signs; a correct replica acks a batch only after checking it (and refuses a
  batch mixing a lone envelope with others), so a certificate's `alone` is true.
- f+1 is availability, not uniqueness. A faulty origin that sends two batches under one
  (origin, batch_sequence) can get a certificate for each (its own ack plus one correct replica
  for each digest): both batches are available, so ordering both is safe; the assembly takes
  only the first one ordered (`assembly.BatchResolver`), so an equivocation gets at most one of
  them into the chain.
- `AvailabilityRule` is the `request_ok` of the `Replica` that orders certificates: a pre-prepare
  naming one certificate that does not hold is refused whole (`Checker.batch_error`), so no
  correct backup prepares an unavailable or forged batch, and the slot is never decided.
- A *carried* certificate (`carried`: the primary's own batch, docs/ordering.md) holds the
  origin's own ack only. The rule accepts it (the origin formed that batch); its availability
  is proven elsewhere, by the slot: a correct backup prepares a pre-prepare naming it only if
  the pre-prepare's sender is the origin and the current primary and it stored the batch
  first (`disseminating.DisseminatingReplica`'s gate), so 2f+1 prepares imply f+1 correct
  holders. Every other place that judges a carried certificate (a prepared certificate in a
  view change, a decided batch) comes with such 2f+1 votes. Only where the group carries
  (`PbftConfig.carried`, the channel's `batch.pbft_carried_batches`): elsewhere the field is
  ignored and a carried certificate needs f+1 acks like any other, as a release that predates
  the field judges it (it cannot read the field), so mixed releases decide alike.
"""

from __future__ import annotations

from dataclasses import dataclass

from google.protobuf.message import DecodeError

from dltmw.core.pbft.certs import Checker
from dltmw.core.pbft.types import Envelope, request_id
from dltmw.v1 import replica_pb2

# Certificates remembered as checked (each is checked at intake and prepare, a few slots apart):
# two generations of `CACHE_GENERATION`, the newest 2,048 to 4,096 (see `AvailabilityRule`).
CACHE_GENERATION = 2048


def expiry_slots(decided_retain: int) -> int:
    """E: a certificate formed at assembled height F can be assembled only in a slot S with
    F < S <= F + E (`live_in`). Half the de-duplication window (`PbftConfig.decided_retain`,
    the same on every replica of a group), so that everything the rules below need to
    remember of the chain lies inside what every replica remembers, running, restarted or
    after a jump."""
    return max(1, decided_retain // 2)


def live_in(formed_at: int, slot: int, expiry: int) -> bool:
    """Can a certificate of a batch formed at assembled height `formed_at` be assembled in
    `slot`? Why both bounds (docs/ordering.md, "Certificate expiry"): a batch is in the chain
    at most once, and a correct replica knows that by its key only if it remembers the slot
    that took it. An honest origin forms a batch after slot `formed_at` was committed, so no
    slot at or below it can take the batch; a slot more than `expiry` above it is more than
    `expiry` slots after any earlier slot that took the batch — past what a replica remembers
    of the chain's batch keys (`assembly.BatchResolver.included`). A faulty origin's stamp
    changes nothing: outside the bounds every replica skips the certificate alike."""
    return formed_at < slot <= formed_at + expiry


@dataclass(frozen=True)
class BatchKey:
    """Names one batch: its origin replica and the origin's batch counter."""

    origin: int
    batch_sequence: int


def ack_message(
    origin: int, batch_sequence: int, digest: bytes, alone: bool = False, formed_at: int = 0
) -> replica_pb2.ReplicaMessage:
    """The (unsigned) ack of a stored batch (`alone`: it is one lone envelope; `formed_at`:
    the origin's assembled height when it formed the batch, as the batch says)."""
    ack = replica_pb2.BatchAck(
        origin=origin,
        batch_sequence=batch_sequence,
        digest=digest,
        alone=alone,
        formed_at=formed_at,
    )
    return replica_pb2.ReplicaMessage(batch_ack=ack)


def parse_certificate(data: bytes) -> replica_pb2.AvailabilityCertificate | None:
    """The certificate in `data`, or None when it does not parse."""
    cert = replica_pb2.AvailabilityCertificate()
    try:
        cert.ParseFromString(data)
    except DecodeError:
        return None
    return cert


def ack_signers(checker: Checker, cert: replica_pb2.AvailabilityCertificate) -> set[int]:
    """Distinct replicas whose valid ack names exactly the certificate's batch."""
    triple = (cert.origin, cert.batch_sequence, cert.digest, cert.alone, cert.formed_at)
    signers: set[int] = set()
    for envelope in cert.acks:
        message = checker.open(envelope)
        if message is None or message.WhichOneof("body") != "batch_ack":
            continue
        ack = message.batch_ack
        if (ack.origin, ack.batch_sequence, ack.digest, ack.alone, ack.formed_at) == triple:
            signers.add(envelope.replica)
    return signers


def certificate_error(checker: Checker, cert: replica_pb2.AvailabilityCertificate) -> str | None:
    """Why the certificate does not prove its batch available (a drop-counter name), or None."""
    if cert.origin >= checker.config.n or cert.batch_sequence < 1 or len(cert.digest) != 32:
        return "certificate-malformed"
    signers = ack_signers(checker, cert)
    if cert.carried and checker.config.carried:
        if cert.alone or cert.origin not in signers:
            return "carried-certificate-malformed"
        return None  # availability: the slot's prepares (`carried_held`)
    if len(signers) < checker.config.f + 1:
        return "certificate-without-f+1-acks"
    return None


def make_certificate(
    origin: int,
    batch_sequence: int,
    digest: bytes,
    count: int,
    acks: list[Envelope],
    alone: bool = False,
    formed_at: int = 0,
    carried: bool = False,
) -> bytes:
    """The canonical certificate bytes from acks (sorted by signer, as the origin forms it);
    `carried`: the primary's own batch, `acks` its own ack only."""
    cert = replica_pb2.AvailabilityCertificate(
        origin=origin,
        batch_sequence=batch_sequence,
        digest=digest,
        count=count,
        acks=sorted(acks, key=lambda e: e.replica),
        alone=alone,
        formed_at=formed_at,
        carried=carried,
    )
    return cert.SerializeToString()


def carried_keys(
    pre_prepare: replica_pb2.PrePrepare, carrying: bool = True
) -> list[tuple[replica_pb2.AvailabilityCertificate, BatchKey]]:
    """The carried certificates a pre-prepare names, with their batch keys; none when the
    group does not carry (`carrying`: `PbftConfig.carried`, the field is then ignored)."""
    out: list[tuple[replica_pb2.AvailabilityCertificate, BatchKey]] = []
    if not carrying:
        return out
    for request in pre_prepare.requests:
        cert = parse_certificate(request)
        if cert is not None and cert.carried:
            out.append((cert, BatchKey(cert.origin, cert.batch_sequence)))
    return out


def certificate_alone(request: bytes) -> bool:
    """The `alone` predicate of a replica ordering certificates: the certificate says its batch
    is one lone envelope (a config update), which its f+1 acks (one correct) checked."""
    cert = parse_certificate(request)
    return cert is not None and cert.alone


class AvailabilityRule:
    """`request_ok` for a replica that orders certificates (see the module docstring).

    `enforce=False` is the simulator's negative control only: it accepts any certificate that
    parses, so a faulty primary can get an unavailable batch decided — the checkers must then
    go red. Results are cached by the certificate's SHA-256 (bounded, oldest first out): the
    same certificate is checked when a backup admits it and again in the pre-prepare. Two
    generations of verdicts, the older dropped whole when the newer holds `CACHE_GENERATION`
    (as `core/identity.VerifiedMemo`, and why): an insertion-ordered dict dropping its oldest
    keeps the dropped entries' slots in its table until it resizes (~0.35 MB at 4,096 entries,
    benchmarks/RESULTS.md "mem2"). A dropped verdict costs one check again, never a wrong one.
    """

    def __init__(self, checker: Checker, enforce: bool = True) -> None:
        self.checker = checker
        self.enforce = enforce
        self._new: dict[bytes, bool] = {}
        self._old: dict[bytes, bool] = {}

    def __call__(self, request: bytes) -> bool:
        key = request_id(request)
        known = self._new.get(key)
        if known is None:
            known = self._old.get(key)
        if known is not None:
            return known
        cert = parse_certificate(request)
        ok = cert is not None and (
            not self.enforce or certificate_error(self.checker, cert) is None
        )
        if len(self._new) >= CACHE_GENERATION:
            self._old, self._new = self._new, {}
        self._new[key] = ok
        return ok

    def __len__(self) -> int:
        """Verdicts remembered."""
        return len(self._new) + len(self._old)
