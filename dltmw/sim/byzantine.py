"""Byzantine behaviours: wrappers around real cores that alter what a faulty replica sends.

A faulty replica knows only its own secret, so it can re-sign anything as itself but cannot
forge another replica's signature; its "forgeries" are messages claiming another signer, which
must be refused. Twins are two honest cores sharing one index and key. `Colluding` breaks the
n >= 3f+1 assumption on purpose (two faulty replicas in n = 4): it is the negative control that
proves the checkers can fail.
"""

from __future__ import annotations

import hashlib

from dltmw.core.pbft import Envelope, batch_digest
from dltmw.sim.node import Node
from dltmw.sim.world import Behaviour, World
from dltmw.v1 import replica_pb2


def parse(envelope: Envelope) -> replica_pb2.ReplicaMessage:
    """The message inside an envelope (our own, so it parses)."""
    message = replica_pb2.ReplicaMessage()
    message.ParseFromString(envelope.payload)
    return message


def resign(world: World, index: int, message: replica_pb2.ReplicaMessage) -> Envelope:
    """Sign `message` with replica `index`'s key (a faulty replica signing as itself)."""
    payload = message.SerializeToString()
    return Envelope(payload=payload, replica=index, signature=world.keys.signer(index)(payload))


def alternative(requests: list[bytes]) -> list[bytes]:
    """A different well-formed batch of the same requests (reversed, or empty)."""
    return list(reversed(requests)) if len(requests) >= 2 else []


class Silent(Behaviour):
    """Replica 0, primary of view 0, sends nothing at all."""

    faulty = frozenset({0})

    def outgoing(self, world: World, node: Node, destination: int, envelope: Envelope) -> None:
        if node.index not in self.faulty:
            world.net.send(node.index, destination, envelope)


class EquivocatingPrimary(Behaviour):
    """Replica 0 sends a different batch to odd-numbered replicas for every pre-prepare."""

    faulty = frozenset({0})

    def outgoing(self, world: World, node: Node, destination: int, envelope: Envelope) -> None:
        if node.index in self.faulty and destination % 2:
            message = parse(envelope)
            if message.WhichOneof("body") == "pre_prepare":
                pp = message.pre_prepare
                alt = alternative(list(pp.requests))
                del pp.requests[:]
                pp.requests.extend(alt)
                pp.digest = batch_digest(alt)
                envelope = resign(world, node.index, message)
        world.net.send(node.index, destination, envelope)


class ForgedSignatures(Behaviour):
    """Replica 1 garbles signatures, claims other signers, forges pre-prepares as the primary."""

    faulty = frozenset({1})

    def outgoing(self, world: World, node: Node, destination: int, envelope: Envelope) -> None:
        if node.index not in self.faulty:
            world.net.send(node.index, destination, envelope)
            return
        choice = world.rng.randrange(4)
        if choice == 0:
            garbled = bytes([envelope.signature[0] ^ 1]) + envelope.signature[1:]
            envelope = Envelope(payload=envelope.payload, replica=1, signature=garbled)
        elif choice == 1:
            other = world.rng.choice([0, 2, 3])
            envelope = Envelope(
                payload=envelope.payload, replica=other, signature=envelope.signature
            )
        elif choice == 2:
            message = parse(envelope)
            kind = message.WhichOneof("body")
            if kind in ("prepare", "commit"):
                vote = getattr(message, str(kind))
                pp = replica_pb2.PrePrepare(
                    view=vote.view, sequence=vote.sequence, digest=batch_digest([]), requests=[]
                )
                forged = resign(world, 1, replica_pb2.ReplicaMessage(pre_prepare=pp))
                primary = world.config.primary(vote.view)
                world.net.send(
                    1,
                    destination,
                    Envelope(payload=forged.payload, replica=primary, signature=forged.signature),
                )
        world.net.send(node.index, destination, envelope)


class WrongViewOrSequence(Behaviour):
    """Replica 1 re-signs its messages with shifted views and sequences (half the time)."""

    faulty = frozenset({1})

    def outgoing(self, world: World, node: Node, destination: int, envelope: Envelope) -> None:
        if node.index in self.faulty and world.rng.random() < 0.5:
            message = parse(envelope)
            kind = message.WhichOneof("body")
            body = getattr(message, str(kind))
            rng = world.rng
            if kind in ("pre_prepare", "prepare", "commit"):
                if rng.random() < 0.5:
                    body.view = max(0, body.view + rng.choice([-1, 1, 3, 1000]))
                else:
                    body.sequence = max(0, body.sequence + rng.choice([-1, 1, 16, 10**6]))
            elif kind == "checkpoint":
                body.sequence += world.config.checkpoint_interval * rng.choice([1, 5])
            elif kind == "view_change":
                body.new_view += rng.choice([1, 2, 500])
            envelope = resign(world, node.index, message)
        world.net.send(node.index, destination, envelope)


class ReplayOld(Behaviour):
    """Replica 0 records traffic, goes quiet after tick 40 and replays old messages instead."""

    faulty = frozenset({0})
    quiet_after = 40
    memory_max = 400

    def __init__(self) -> None:
        self.recorded: list[Envelope] = []

    def _record(self, world: World, envelope: Envelope) -> None:
        if len(self.recorded) < self.memory_max:
            self.recorded.append(envelope)
        else:
            self.recorded[world.rng.randrange(self.memory_max)] = envelope

    def outgoing(self, world: World, node: Node, destination: int, envelope: Envelope) -> None:
        if node.index in self.faulty:
            self._record(world, envelope)
            if world.now > self.quiet_after:
                return
        world.net.send(node.index, destination, envelope)

    def incoming(self, world: World, node: Node, envelope: Envelope) -> None:
        if node.index in self.faulty:
            self._record(world, envelope)

    def tick(self, world: World) -> None:
        if world.now > self.quiet_after and self.recorded:
            for _ in range(3):
                old = world.rng.choice(self.recorded)
                world.net.send(0, world.rng.randrange(1, world.config.n), old)


class DoubleVote(Behaviour):
    """Replica 1 votes for two digests at once: a second digest to a random half of its peers."""

    faulty = frozenset({1})

    def outgoing(self, world: World, node: Node, destination: int, envelope: Envelope) -> None:
        if node.index in self.faulty:
            message = parse(envelope)
            kind = message.WhichOneof("body")
            if kind in ("prepare", "commit", "checkpoint") and world.rng.random() < 0.5:
                body = getattr(message, kind)
                field = "state_digest" if kind == "checkpoint" else "digest"
                setattr(body, field, hashlib.sha256(getattr(body, field)).digest())
                world.net.send(node.index, destination, resign(world, node.index, message))
                if world.rng.random() < 0.5:
                    return
        world.net.send(node.index, destination, envelope)


class JunkPrimary(Behaviour):
    """Replica 0 slips an invented request (no client made it) into each of its pre-prepares and
    forwards invented requests to every replica: correct replicas must refuse to prepare such a
    batch and drop such a forward, never decide an invented request, and replace the primary
    (request timer) whenever it is the primary again."""

    faulty = frozenset({0})

    def junk(self, tag: int) -> bytes:
        """An invented request; one per tag, so every replica is shown the same batch (this
        is not equivocation, which another behaviour covers)."""
        return b"c0.%d|no-client-made-this" % tag

    def outgoing(self, world: World, node: Node, destination: int, envelope: Envelope) -> None:
        if node.index in self.faulty:
            message = parse(envelope)
            if message.WhichOneof("body") == "pre_prepare":
                pp = message.pre_prepare
                junk = self.junk(10**6 + pp.view * 10**4 + pp.sequence)
                batch = [*pp.requests[: world.config.batch_size_max - 1], junk]
                del pp.requests[:]
                pp.requests.extend(batch)
                pp.digest = batch_digest(batch)
                envelope = resign(world, node.index, message)
        world.net.send(node.index, destination, envelope)

    def tick(self, world: World) -> None:
        if world.now % 10 == 0:
            forwarded = replica_pb2.ForwardedRequests(requests=[self.junk(world.now)])
            junk = resign(world, 0, replica_pb2.ReplicaMessage(forwarded=forwarded))
            for destination in range(1, world.config.n):
                world.net.send(0, destination, junk)


class Twins(Behaviour):
    """Two honest cores run as replica 0 with the same key (each proposes its own batches)."""

    faulty = frozenset({0})
    twins = frozenset({0})


class Colluding(Behaviour):
    """NEGATIVE CONTROL (f+1 faulty): primary 0 and replica 1 show replica 3 another batch.

    Replica 2 sees batch A and votes from 0 and 1 for A; replica 3 sees batch B and votes from
    0 and 1 for B — each honest replica gathers 2f+1 commits for a different batch.
    """

    faulty = frozenset({0, 1})
    victim = 3

    def __init__(self) -> None:
        self.alt_digest: dict[bytes, bytes] = {}

    def outgoing(self, world: World, node: Node, destination: int, envelope: Envelope) -> None:
        if node.index in self.faulty and destination == self.victim:
            message = parse(envelope)
            kind = message.WhichOneof("body")
            if kind == "pre_prepare":
                pp = message.pre_prepare
                alt = alternative(list(pp.requests))
                self.alt_digest[pp.digest] = batch_digest(alt)
                del pp.requests[:]
                pp.requests.extend(alt)
                pp.digest = batch_digest(alt)
                envelope = resign(world, node.index, message)
            elif kind in ("prepare", "commit"):
                vote = getattr(message, kind)
                if vote.digest in self.alt_digest:
                    vote.digest = self.alt_digest[vote.digest]
                    envelope = resign(world, node.index, message)
        world.net.send(node.index, destination, envelope)


class MixingPrimary(Behaviour):
    """Replica 0 puts a lone request (a config update's stand-in) into a batch with another of
    its pending requests whenever it proposes it alone: correct backups must refuse the batch
    (`batch-mixes-a-lone-request`), and the request timer replaces the primary."""

    faulty = frozenset({0})

    def outgoing(self, world: World, node: Node, destination: int, envelope: Envelope) -> None:
        if node.index in self.faulty and node.replica is not None:
            message = parse(envelope)
            pp = message.pre_prepare
            if message.WhichOneof("body") == "pre_prepare" and len(pp.requests) == 1:
                lone = pp.requests[0]
                others = [p.request for p in node.replica.pending.values() if p.request != lone]
                if world.keys.lone(lone) and others:
                    pp.requests.append(others[0])
                    pp.digest = batch_digest(list(pp.requests))
                    envelope = resign(world, node.index, message)
        world.net.send(node.index, destination, envelope)


class LostCheckpointVotes(Behaviour):
    """Checkpoint votes lost: replica 3 sends nothing (a byzantine replica that withholds its
    checkpoint votes and the proofs its view changes would carry, or one down for good), and
    the links between replica 0 and replicas 1 and 2 lose the first copy of every checkpoint
    vote they carry, either way (a fair-loss link: the same vote sent again gets through). No
    replica then holds 2f+1 matching votes of a checkpoint — replicas 1 and 2 hold theirs,
    replica 0 its own — unless a vote is sent again, and a view change carries no newer proof
    (nobody has one): before votes were resent (`Checkpoints.resend_checkpoints`) every run
    stopped at the top of its first window for good."""

    faulty = frozenset({3})
    lossy = frozenset({(0, 1), (0, 2), (1, 0), (2, 0)})

    def __init__(self) -> None:
        self.lost: set[tuple[int, int, int]] = set()  # (source, destination, sequence) lost once

    def outgoing(self, world: World, node: Node, destination: int, envelope: Envelope) -> None:
        if node.index in self.faulty:
            return
        message = parse(envelope)
        if message.WhichOneof("body") == "checkpoint":
            key = (node.index, destination, message.checkpoint.sequence)
            if (node.index, destination) in self.lossy and key not in self.lost:
                self.lost.add(key)
                world.log(f"checkpoint vote r{node.index}->r{destination} seq={key[2]} lost")
                return
        world.net.send(node.index, destination, envelope)


BEHAVIOURS: dict[str, type[Behaviour]] = {
    "network": Behaviour,
    "silent-primary": Silent,
    "equivocating-primary": EquivocatingPrimary,
    "forged-signatures": ForgedSignatures,
    "wrong-view-or-sequence": WrongViewOrSequence,
    "replay-old-view": ReplayOld,
    "double-vote": DoubleVote,
    "junk-primary": JunkPrimary,
    "twins": Twins,
    "mixing-primary": MixingPrimary,
    "lost-checkpoint-votes": LostCheckpointVotes,
    "colluding": Colluding,
}
