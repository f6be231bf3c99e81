"""Byzantine behaviours against dissemination (withheld, forged and equivocating batches).

As in `byzantine.py`, a faulty replica holds only its own key: it can sign anything as itself,
and anything it claims of another replica fails that replica's signature check.

- `WithheldBatch`: replica 0 sends its batches to nobody (fewer than f+1 stores: no certificate
  can form), and, primary of view 0, adds to every pre-prepare a certificate of a
  batch it never sent, acked by itself alone. Correct backups refuse those pre-prepares whole;
  the request timers move the view on. With the certificate check disabled (the negative
  control) the slot is decided and no correct replica can assemble it.
- `ForgedBatch`: replica 1 garbles the signatures of its batches, claims another origin, or
  swaps the envelopes under the signed digest; and it forwards certificates whose acks claim
  other replicas. Every one is refused.
- `EquivocatingBatch`: replica 1 sends odd-numbered replicas another batch under the same batch
  sequence, collects the acks of that one too and forwards a certificate for each: both are
  available, at most one gets into the chain.
- `WithheldCarried`: `WithheldBatch` whose invented certificate is a carried one (docs/ordering.md,
  "The primary's own batch"): the origin's ack is valid, so only the backups' gate (the batch
  stored before the prepare) stops it. With the gate removed, the slot is decided and no
  correct replica can assemble it (the gate's negative control).
- `CarriedMismatch`: replica 0, primary of view 0, sends its carried batches with other
  envelopes under the signed digest: no backup stores them, so none prepares its pre-prepares.
- `CarriedEquivocation`: replica 0, primary of view 0, sends odd-numbered replicas another batch
  under the same batch sequence and a pre-prepare naming that one's carried certificate:
  one slot, two batches; at most one is prepared, and only with f+1 correct holders.
- `SeveralCertificates`: in a group that orders one certificate per slot (`PbftConfig.
  slot_requests_max` = 1, as real nodes' disseminating channels: a slot is one block of at most
  `max_tx_count`), replica 0, primary of view 0, adds to each pre-prepare another valid
  certificate it holds pending: correct backups refuse the pre-prepare (`batch-too-large`) and
  the request timers move the view on. With the bound off (the negative control) such slots
  are decided and assemble several batches.
- `LostCheckpointVotes` (`byzantine.py`, the agreement's checkpoint votes): replica 3 silent and
  the first copy of each vote between replica 0 and replicas 1, 2 lost; a run is live only
  because stalled replicas send their votes again (`Checkpoints.resend_checkpoints`).
"""

from __future__ import annotations

import hashlib

from dltmw.core.pbft import Envelope, batch_digest
from dltmw.core.pbft.availability import ack_message, make_certificate, parse_certificate
from dltmw.core.pbft.disseminating import DisseminatingReplica
from dltmw.sim.byzantine import LostCheckpointVotes, alternative, parse, resign
from dltmw.sim.node import Node
from dltmw.sim.world import Behaviour, World
from dltmw.v1 import replica_pb2


def _forward(world: World, index: int, certificate: bytes) -> None:
    """Replica `index` forwards a certificate to every other replica as a request."""
    message = replica_pb2.ReplicaMessage(
        forwarded=replica_pb2.ForwardedRequests(requests=[certificate])
    )
    envelope = resign(world, index, message)
    for destination in range(world.config.n):
        if destination != index:
            world.net.send(index, destination, envelope)


def _own_ack(
    world: World, index: int, batch_sequence: int, digest: bytes, formed_at: int = 0
) -> Envelope:
    return resign(world, index, ack_message(index, batch_sequence, digest, False, formed_at))


class WithheldBatch(Behaviour):
    """Replica 0 withholds its batches and, as primary, proposes certificates without f+1
    acks."""

    faulty = frozenset({0})
    carried = False  # the invented certificate is a carried one (`WithheldCarried`)

    def outgoing(self, world: World, node: Node, destination: int, envelope: Envelope) -> None:
        message = parse(envelope)
        kind = message.WhichOneof("body")
        if node.index == 0 and kind == "batch":
            return
        if node.index == 0 and kind == "pre_prepare" and message.pre_prepare.requests:
            pp = message.pre_prepare
            fake = hashlib.sha256(b"withheld" + pp.digest).digest()
            seq = 1_000_000 + pp.sequence
            ack = _own_ack(world, 0, seq, fake)
            cert = make_certificate(0, seq, fake, 1, [ack], carried=self.carried)
            requests = [*pp.requests, cert]
            del pp.requests[:]
            pp.requests.extend(requests)
            pp.digest = batch_digest(requests)
            envelope = resign(world, 0, message)
        world.net.send(node.index, destination, envelope)


class ForgedBatch(Behaviour):
    """Replica 1 forges batches and certificates (see the module docstring)."""

    faulty = frozenset({1})

    def outgoing(self, world: World, node: Node, destination: int, envelope: Envelope) -> None:
        if node.index in self.faulty and parse(envelope).WhichOneof("body") == "batch":
            choice = world.rng.randrange(3)
            if choice == 0:
                garbled = bytes([envelope.signature[0] ^ 1]) + envelope.signature[1:]
                envelope = Envelope(payload=envelope.payload, replica=1, signature=garbled)
            elif choice == 1:
                envelope = Envelope(
                    payload=envelope.payload, replica=2, signature=envelope.signature
                )
            else:
                message = parse(envelope)
                invented = [b"c0.999|forged", b"c1.999|forged"]
                del message.batch.envelopes[:]
                message.batch.envelopes.extend(invented)
                envelope = resign(world, 1, message)
        world.net.send(node.index, destination, envelope)

    def tick(self, world: World) -> None:
        if world.now % 7:
            return
        seq = 2_000_000 + world.now
        digest = batch_digest([b"c0.998|forged"])
        acks = [_own_ack(world, 1, seq, digest)]
        for claimed in (2, 3):
            signed = resign(world, 1, ack_message(1, seq, digest))
            acks.append(
                Envelope(payload=signed.payload, replica=claimed, signature=signed.signature)
            )
        _forward(world, 1, make_certificate(1, seq, digest, 1, acks[1:]))


class EquivocatingBatch(Behaviour):
    """Replica 1 sends two batches under one batch sequence and certifies both."""

    faulty = frozenset({1})

    def __init__(self) -> None:
        self.alt: dict[int, tuple[bytes, int]] = {}  # batch seq -> (alt digest, count)
        self.acks: dict[int, dict[int, Envelope]] = {}
        self.done: set[int] = set()

    def outgoing(self, world: World, node: Node, destination: int, envelope: Envelope) -> None:
        if node.index in self.faulty and destination % 2:
            message = parse(envelope)
            if message.WhichOneof("body") == "batch":
                batch = message.batch
                alt = alternative(list(batch.envelopes))
                if alt:
                    del batch.envelopes[:]
                    batch.envelopes.extend(alt)
                    batch.digest = batch_digest(alt)
                    self.alt[batch.batch_sequence] = (bytes(batch.digest), len(alt))
                    envelope = resign(world, 1, message)
        world.net.send(node.index, destination, envelope)

    def incoming(self, world: World, node: Node, envelope: Envelope) -> None:
        if node.index not in self.faulty:
            return
        message = parse(envelope)
        if message.WhichOneof("body") != "batch_ack":
            return
        ack = message.batch_ack
        alt = self.alt.get(ack.batch_sequence)
        if alt is None or ack.digest != alt[0] or ack.batch_sequence in self.done:
            return
        got = self.acks.setdefault(ack.batch_sequence, {})
        got[envelope.replica] = envelope
        if len(got) >= world.config.f:
            seq = ack.batch_sequence
            mine = _own_ack(world, 1, seq, alt[0])
            cert = make_certificate(1, seq, alt[0], alt[1], [mine, *got.values()])
            self.done.add(seq)
            _forward(world, 1, cert)


class WithheldCarried(WithheldBatch):
    """`WithheldBatch` with carried certificates (see the module docstring)."""

    carried = True


class CarriedMismatch(Behaviour):
    """Replica 0's batches (carried as primary) do not hash to their signed digest."""

    faulty = frozenset({0})

    def outgoing(self, world: World, node: Node, destination: int, envelope: Envelope) -> None:
        if node.index in self.faulty:
            message = parse(envelope)
            if message.WhichOneof("body") == "batch" and len(message.batch.envelopes) >= 2:
                swapped = alternative(list(message.batch.envelopes))[1:]
                del message.batch.envelopes[:]
                message.batch.envelopes.extend(swapped)
                envelope = resign(world, 0, message)
        world.net.send(node.index, destination, envelope)


class CarriedEquivocation(Behaviour):
    """Replica 0 carries two batches under one batch sequence in one slot (module docstring)."""

    faulty = frozenset({0})

    def __init__(self) -> None:
        self.alt: dict[int, bytes] = {}  # batch sequence -> the other batch's certificate

    def outgoing(self, world: World, node: Node, destination: int, envelope: Envelope) -> None:
        if node.index in self.faulty and destination % 2:
            message = parse(envelope)
            kind = message.WhichOneof("body")
            if kind == "batch" and len(message.batch.envelopes) >= 2:
                batch = message.batch
                alt = alternative(list(batch.envelopes))
                del batch.envelopes[:]
                batch.envelopes.extend(alt)
                batch.digest = batch_digest(alt)
                seq, formed = batch.batch_sequence, batch.formed_at
                ack = _own_ack(world, 0, seq, bytes(batch.digest), formed)
                self.alt[seq] = make_certificate(
                    0, seq, bytes(batch.digest), len(alt), [ack], False, formed, carried=True
                )
                envelope = resign(world, 0, message)
            elif kind == "pre_prepare":
                pp = message.pre_prepare
                requests = [self._swap(r) for r in pp.requests]
                if requests != list(pp.requests):
                    del pp.requests[:]
                    pp.requests.extend(requests)
                    pp.digest = batch_digest(requests)
                    envelope = resign(world, 0, message)
        world.net.send(node.index, destination, envelope)

    def _swap(self, request: bytes) -> bytes:
        cert = parse_certificate(request)
        if cert is None or not cert.carried:
            return request
        return self.alt.get(cert.batch_sequence, request)


class SeveralCertificates(Behaviour):
    """Replica 0, primary of view 0, names two certificates per slot (module docstring)."""

    faulty = frozenset({0})
    slot_requests_max = 1  # the group's bound (`run_dissemination`)

    def outgoing(self, world: World, node: Node, destination: int, envelope: Envelope) -> None:
        message = parse(envelope)
        if node.index in self.faulty and message.WhichOneof("body") == "pre_prepare":
            pp = message.pre_prepare
            extra = self._another(node, list(pp.requests))
            if pp.requests and extra is not None:
                pp.requests.append(extra)
                pp.digest = batch_digest(list(pp.requests))
                envelope = resign(world, 0, message)
        world.net.send(node.index, destination, envelope)

    @staticmethod
    def _another(node: Node, named: list[bytes]) -> bytes | None:
        """A certificate pending at the faulty primary that `named` does not hold, if any."""
        if not isinstance(node.replica, DisseminatingReplica):
            return None
        for pending in node.replica.replica.pending.values():
            if pending.request not in named:
                return pending.request
        return None


DISSEMINATION_BEHAVIOURS: dict[str, type[Behaviour]] = {
    "honest": Behaviour,
    "withheld-batch": WithheldBatch,
    "forged-batch": ForgedBatch,
    "equivocating-batch": EquivocatingBatch,
    "withheld-carried": WithheldCarried,
    "carried-mismatch": CarriedMismatch,
    "carried-equivocation": CarriedEquivocation,
    "several-certificates": SeveralCertificates,
    "lost-checkpoint-votes": LostCheckpointVotes,  # the agreement's messages: as without
}
