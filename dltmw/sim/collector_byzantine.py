"""Byzantine vote collectors: replica 0, primary of view 0, spoils the certificates it sends.

With a vote collector (`core/pbft/collector.py`) backups learn that a slot prepared or
committed only from the primary's certificates, so a faulty primary's power is what it does
with them: withhold them, send ones with too few, duplicated or mismatching votes, or show
backups different ones (`SplitsCommitted`). None of that may break safety (every certificate
is re-verified vote by vote) and every run must stay live (the request timer replaces the
primary, or catch-up fetches what was withheld). `BrokenCheck` is the NEGATIVE CONTROL: its
backups accept any certificate unverified, and a splitting collector must then make honest
replicas disagree.
"""

from __future__ import annotations

from functools import partial

from dltmw.core.pbft import Envelope, batch_digest
from dltmw.core.pbft.certs import Checker
from dltmw.sim.byzantine import alternative, parse, resign
from dltmw.sim.node import Node
from dltmw.sim.world import Behaviour, World
from dltmw.v1 import replica_pb2


class SpoilingCollector(Behaviour):
    """Replica 0 passes each certificate it sends through `spoil(world, message, destination)`
    (which alters the message in place and says whether to send it)."""

    faulty = frozenset({0})

    def spoil(self, world: World, message: replica_pb2.ReplicaMessage, destination: int) -> bool:
        """Alter `message` (a certificate) for `destination`; False: do not send it."""
        raise NotImplementedError

    def outgoing(self, world: World, node: Node, destination: int, envelope: Envelope) -> None:
        if node.index in self.faulty:
            message = parse(envelope)
            if message.WhichOneof("body") in ("prepared_certificate", "commit_certificate"):
                if not self.spoil(world, message, destination):
                    return
                envelope = resign(world, node.index, message)
        world.net.send(node.index, destination, envelope)


class WithholdsPrepared(SpoilingCollector):
    """Never sends a prepared certificate."""

    def spoil(self, world: World, message: replica_pb2.ReplicaMessage, destination: int) -> bool:
        return message.WhichOneof("body") != "prepared_certificate"


class WithholdsCommitted(SpoilingCollector):
    """Never sends a commit certificate."""

    def spoil(self, world: World, message: replica_pb2.ReplicaMessage, destination: int) -> bool:
        return message.WhichOneof("body") != "commit_certificate"


class TooFewVotes(SpoilingCollector):
    """Sends every certificate with one vote fewer than it needs."""

    def spoil(self, world: World, message: replica_pb2.ReplicaMessage, destination: int) -> bool:
        votes = _votes(message)
        del votes[len(votes) - 1 :]
        return True


class DuplicatedVotes(SpoilingCollector):
    """Sends every certificate with its first vote repeated in place of all the others."""

    def spoil(self, world: World, message: replica_pb2.ReplicaMessage, destination: int) -> bool:
        votes = _votes(message)
        first, count = Envelope(), len(votes)
        first.CopyFrom(votes[0])
        del votes[:]
        votes.extend([first] * count)
        return True


class WrongDigest(SpoilingCollector):
    """Sends every certificate for another batch (its own re-signed pre-prepare, or a decided
    batch of other requests) with the votes collected for the real one."""

    def spoil(self, world: World, message: replica_pb2.ReplicaMessage, destination: int) -> bool:
        _retarget(world, message)
        return True


class EquivocatingCollector(SpoilingCollector):
    """Shows odd backups another batch in the pre-prepare, and even backups certificates for
    another batch than the votes in them: backups see different certificates of one slot."""

    def spoil(self, world: World, message: replica_pb2.ReplicaMessage, destination: int) -> bool:
        if destination % 2 == 0:
            _retarget(world, message)
        return True

    def outgoing(self, world: World, node: Node, destination: int, envelope: Envelope) -> None:
        if node.index in self.faulty and destination % 2:
            message = parse(envelope)
            if message.WhichOneof("body") == "pre_prepare":
                _alter_batch(message.pre_prepare)
                envelope = resign(world, node.index, message)
        super().outgoing(world, node, destination, envelope)


class SplitsCommitted(SpoilingCollector):
    """Sends even backups commit certificates for another batch than their votes, odd ones
    the real certificates: backups that took a certificate's word would disagree."""

    def spoil(self, world: World, message: replica_pb2.ReplicaMessage, destination: int) -> bool:
        if destination % 2 == 0 and message.WhichOneof("body") == "commit_certificate":
            _retarget(world, message)
        return True


class BrokenCheck(SplitsCommitted):
    """NEGATIVE CONTROL: `SplitsCommitted` against honest replicas whose certificate check is
    broken (they take any certificate's votes unverified): the checkers must find a safety
    violation."""

    def incoming(self, world: World, node: Node, envelope: Envelope) -> None:
        replica = node.replica
        checker = getattr(getattr(replica, "replica", replica), "checker", None)
        if node.index not in self.faulty and checker is not None:
            object.__setattr__(checker, "prepared_votes", partial(_unchecked_prepared, checker))
            object.__setattr__(checker, "commit_votes", partial(_unchecked_commits, checker))


def _unchecked_prepared(
    self: Checker,
    cert: replica_pb2.PreparedCertificate,
    accepted: replica_pb2.PrePrepare | None = None,
) -> tuple[replica_pb2.PrePrepare, dict[int, Envelope]] | None:
    message = parse(cert.pre_prepare)
    votes = {index: envelope for index, envelope in enumerate(cert.prepares, start=1)}
    return message.pre_prepare, votes


def _unchecked_commits(
    self: Checker, batch: replica_pb2.DecidedBatch
) -> dict[int, tuple[Envelope, replica_pb2.Vote]]:
    vote = replica_pb2.Vote(view=batch.view, sequence=batch.sequence, digest=batch.digest)
    return {index: (envelope, vote) for index, envelope in enumerate(batch.commits)}


def _votes(message: replica_pb2.ReplicaMessage):  # type: ignore[no-untyped-def]
    """The repeated votes of a certificate message."""
    if message.WhichOneof("body") == "prepared_certificate":
        return message.prepared_certificate.prepares
    return message.commit_certificate.commits


def _alter_batch(pp: replica_pb2.PrePrepare | replica_pb2.DecidedBatch) -> None:
    alt = alternative(list(pp.requests))
    del pp.requests[:]
    pp.requests.extend(alt)
    pp.digest = batch_digest(alt)


def _retarget(world: World, message: replica_pb2.ReplicaMessage) -> None:
    """Point a certificate at another batch, keeping the votes collected for the real one."""
    if message.WhichOneof("body") == "prepared_certificate":
        inner = parse(message.prepared_certificate.pre_prepare)
        _alter_batch(inner.pre_prepare)
        message.prepared_certificate.pre_prepare.CopyFrom(resign(world, 0, inner))
    else:
        _alter_batch(message.commit_certificate)


COLLECTOR_BEHAVIOURS: dict[str, type[Behaviour]] = {
    "collector-withholds-prepared": WithholdsPrepared,
    "collector-withholds-committed": WithholdsCommitted,
    "collector-too-few-votes": TooFewVotes,
    "collector-duplicated-votes": DuplicatedVotes,
    "collector-wrong-digest": WrongDigest,
    "collector-equivocates": EquivocatingCollector,
    "collector-splits-committed": SplitsCommitted,
    "collector-broken-check": BrokenCheck,
}
