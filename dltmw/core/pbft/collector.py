"""The vote collector: PBFT-lite's normal case with O(n) messages per slot (issue 18).

All-to-all PBFT sends every prepare and commit to every replica: ~3n^2 signed messages per
slot, each sent, verified and stepped, which at n = 13 on shared cores is the whole cost of a
slot (benchmarks/RESULTS.md, lanes pbft4/pbft5). With `PbftConfig.collector` (SBFT-style) the
view's primary collects instead:

- a backup sends its Prepare and its Commit to the primary only (`ReplicaState.send_vote`);
- the primary, once prepared (its pre-prepare and 2f matching prepares), sends every backup
  that prepared certificate; a backup validates it (`Checker.prepared_votes`: distinct
  signers, same view/sequence/digest, the view's primary's pre-prepare) and takes its prepares
  as if they had reached it directly: it is prepared exactly as in PBFT, persists the
  certificate it builds and sends its Commit;
- the primary, once the slot is committed (2f+1 matching commits) and executed, sends every
  backup the decided batch with those commits: the commit certificate, which decides the slot
  at a backup as a decided batch does in catch-up (`Checker.committed`), and carries the
  commits' block signatures.

Safety is PBFT's: a certificate is only a bundle of the same signed votes, each checked as if
it came alone, so a backup is prepared or committed exactly when PBFT would let it be; the
prepared certificates a view change carries are the same objects. A faulty primary can only
withhold or spoil certificates, which correct backups refuse: the slot does not progress, the
request timer expires and a view change replaces the primary. Retransmission: a backup resends
its votes to the primary; the primary resends its prepared certificate to backups whose Commit
it lacks, and answers a late Commit with the commit certificate of that (executed) slot.
"""

from __future__ import annotations

from dltmw.core.pbft.checkpoints import Checkpoints
from dltmw.core.pbft.state import Slot
from dltmw.core.pbft.types import Envelope
from dltmw.v1 import replica_pb2

CERTIFICATES = frozenset({"prepared_certificate", "commit_certificate"})


class Collector(Checkpoints):
    """The collector's and the backups' side of certificates (see the module docstring)."""

    @property
    def collecting(self) -> bool:
        """Are we the collector of the current view?"""
        return self.config.collector and self.primary() == self.me

    # -- the backups' side -----------------------------------------------------------------

    def on_certificate(self, envelope: Envelope, message: replica_pb2.ReplicaMessage) -> None:
        """Dispatch a collector's certificate (refused when this group has no collector)."""
        if not self.config.collector:
            self.drop("certificate-without-collector")
        elif message.WhichOneof("body") == "prepared_certificate":
            self.on_prepared_certificate(envelope, message.prepared_certificate)
        else:
            self.on_commit_certificate(envelope, message.commit_certificate)

    def on_prepared_certificate(
        self, envelope: Envelope, cert: replica_pb2.PreparedCertificate
    ) -> None:
        """Take the primary's prepared certificate's prepares as our own view of them."""
        accepted = self._accepted(cert.pre_prepare)
        proven = self.checker.prepared_votes(cert, accepted)
        if proven is None:
            self.drop("bad-prepared-certificate")
            return
        pp, prepares = proven
        if not self._judge_now(envelope, pp.view):
            return
        if pp.sequence < self.next_exec:
            self.drop("late-certificate")
            return
        slot = self.slots.get(pp.sequence)
        if slot is None or slot.pre_prepare is None or slot.digest != pp.digest:
            # Its pre-prepare, lost on the way or conflicting (an equivocating primary: the
            # pre-prepare path starts the view change), is judged as if it came alone.
            self.on_pre_prepare(cert.pre_prepare, pp)
            slot = self.slots.get(pp.sequence)
        if slot is None or slot.pre_prepare is None or slot.digest != pp.digest:
            self.drop("prepared-certificate-not-accepted")
            return
        for signer, vote in prepares.items():
            slot.prepares.setdefault(signer, (pp.digest, vote))
        self.advance(pp.sequence)

    def on_commit_certificate(self, envelope: Envelope, batch: replica_pb2.DecidedBatch) -> None:
        """A valid commit certificate of the current view decides its slot."""
        if not self._judge_now(envelope, batch.view):
            return
        if batch.sequence < self.next_exec:
            self.drop("late-certificate")
            return
        if not self.in_window(batch.sequence):
            self.drop("outside-watermarks")
            return
        slot = self.slots.setdefault(batch.sequence, Slot())
        # A batch we accepted in the pre-prepare is not judged again (with dissemination that
        # is every availability certificate's acks once more): the same requests suffice.
        known = slot.pre_prepare is not None and slot.digest == batch.digest
        known = known and tuple(batch.requests) == slot.requests
        if not known and not self.checker.batch_ok(batch.digest, batch.requests):
            self.drop("bad-commit-certificate")
            return
        commits = self.checker.commit_votes(batch)
        if len(commits) < self.config.quorum:
            self.drop("bad-commit-certificate")
            return
        for signer, (_envelope, vote) in commits.items():
            if signer != self.me:
                self.block_signed_by(signer, vote)
        slot.decided = batch
        self.execute()

    def _accepted(self, pre_prepare: Envelope) -> replica_pb2.PrePrepare | None:
        """The (view, sequence, digest) of a slot whose pre-prepare we accepted and that is
        exactly `pre_prepare` (then it needs no second verification), or None."""
        for seq, slot in self.slots.items():
            mine = slot.pre_prepare
            if (
                mine is not None
                and mine.signature == pre_prepare.signature
                and mine.replica == pre_prepare.replica
                and mine.payload == pre_prepare.payload
            ):
                return replica_pb2.PrePrepare(view=self.view, sequence=seq, digest=slot.digest)
        return None

    def _judge_now(self, envelope: Envelope, view: int) -> bool:
        """Is a certificate of `view` one to judge now? A later view's waits (buffered), an
        older view's is dropped; only the view's primary collects, and it judges none."""
        if view > self.view or (view == self.view and self.changing):
            self.buffer_future(envelope)
            return False
        if view < self.view:
            self.drop("old-view")
            return False
        if envelope.replica != self.primary() or self.primary() == self.me:
            self.drop("certificate-not-from-collector")
            return False
        return True

    # -- the collector's side --------------------------------------------------------------

    def send_prepared_certificate(self, slot: Slot, cert: replica_pb2.PreparedCertificate) -> None:
        """As collector: send the slot's prepared certificate to every backup."""
        if self.collecting:
            message = replica_pb2.ReplicaMessage(prepared_certificate=cert)
            slot.certificate = self.sign(message)
            self.broadcast(slot.certificate)

    def send_commit_certificate(self, batch: replica_pb2.DecidedBatch) -> None:
        """As collector: send a slot we just executed, with its commits, to every backup."""
        if not self.collecting:
            return
        envelope = self.sign(replica_pb2.ReplicaMessage(commit_certificate=batch))
        self.broadcast(envelope)
        self.commit_certificates[batch.sequence] = (envelope, self.now)
        floor = batch.sequence - self.config.window
        for seq in [s for s in self.commit_certificates if s <= floor]:
            del self.commit_certificates[seq]

    def answer_late_commit(self, replica: int, sequence: int) -> None:
        """As collector: a backup resent its Commit of a slot we executed: it lacks the commit
        certificate (lost); send it again if we still hold it (else catch-up serves it).

        Only once the certificate is half a retransmission pass old: the Commits of the
        slowest backups (n - 2f - 1 of them per slot) arrive after the slot executed without
        being resent, and the certificate sent to them a moment ago is on its way; a backup
        resends its Commit a pass after sending it at the earliest."""
        sent = self.commit_certificates.get(sequence)
        if self.collecting and sent is not None:
            envelope, at = sent
            if self.now - at >= self.config.retransmit_ticks // 2:
                self.send_to(replica, envelope)

    def resend_prepared_certificate(self, sequence: int, slot: Slot) -> None:
        """As collector: resend the slot's prepared certificate to the backups whose Commit we
        lack (rebuilt after a restart from the certificate we persisted)."""
        if slot.certificate is None:
            cert = self.prepared.get(sequence)
            if cert is None or not slot.commit_sent:
                return
            message = replica_pb2.ReplicaMessage(prepared_certificate=cert)
            slot.certificate = self.sign(message)
        voted = {r for r, (d, _e) in slot.commits.items() if d == slot.digest}
        for replica in range(self.config.n):
            if replica != self.me and replica not in voted:
                self._send.append((replica, slot.certificate))

    # -- provided by replica.Replica --------------------------------------------------------

    def on_pre_prepare(self, envelope: Envelope, pp: replica_pb2.PrePrepare) -> None:
        """Judge a pre-prepare."""
        raise NotImplementedError

    def block_signed_by(self, replica: int, vote: replica_pb2.Vote) -> None:
        """Hand a block signature a verified Commit carried to the orderer."""
        raise NotImplementedError
