"""Block signatures carried by Commits: a prepared slot's block, built and signed before the
slot is decided.

Without this, a replica sends its Commit of slot s and, once s is decided and executed, its
block signature of block s in a message of its own: ~28 % of the messages a replica sends per
slot (benchmarks/RESULTS.md, "The structural step, sized"), each one received and handled by
every other replica. Here a replica that is prepared for s in view 0 and can build block s at
that moment — block s-1 is built (or committed), and, with dissemination, slot s is the next
to assemble and every batch it takes is held — builds it, signs its hash and puts both in its
Commit (`Vote.block_hash`, `Vote.block_signature`). Receivers hand the signature to their
`BlockAssembler` like a `BlockSignature`: it counts only if it matches the block they build
from the decided slot, so a faulty replica's signature of another block is ignored. A replica
that cannot build the block yet (or is past view 0) signs after execution as before.

Why a speculative signature cannot make a wrong block acceptable to peers (a peer checks 2f+1
orderer signatures over a block's hash, nothing else): block s's hash covers its number, the
previous block's hash (a decided block) and its envelopes, which are a function of the slot's
digest D and the chain below it. 2f+1 signatures over it include f+1 correct replicas', each
prepared for (0, s, D) — a quorum prepared in ONE view, which PBFT's view change carries into
every later view (the new view takes the highest-view prepared certificate, and a quorum of
view-change messages holds one of these f+1): D is decided at s, so the block is the block.

Why only view 0: signatures do not name a view, and prepared certificates of DIFFERENT views
do not add up that way. n = 4, replica F faulty: A prepares D' at s in view 0; C prepares D'
in view 2 (the new view carried A's certificate); in view 3 the view-change quorum {A, B, F}
holds A's view-0 certificate for D' and B's view-1 certificate for D'' — the higher one wins,
D'' is decided at s. A, C and F signed the block of D': 2f+1 valid signatures over a block
that was never decided, which F can hand to peers or to a replica catching up. So a replica
carries a signature in a Commit of view 0 only (`Replica.commit_block`); every correct
speculative signature is then of view 0 and the quorum argument above applies. After a view
change the replica group signs after execution, as before (binding the view into the signed
bytes would lift this, but peers verify block signatures over the bare hash).

Pure: the caller signs and gives the previous block's hash; this keeps the built blocks until
the decided slot is built (`take`) or the chain passes them.
"""

from __future__ import annotations

from dataclasses import dataclass

from google.protobuf.message import DecodeError

from dltmw.core.block import block_hash, make_block
from dltmw.core.pbft.types import Signer
from dltmw.v1 import block_pb2, replica_pb2


def carried_claim(message: replica_pb2.ReplicaMessage, epoch: int) -> int | None:
    """The block a Commit that carries a block signature claims its signer has built, or None.

    A replica carries its signature of block s only once it built block s-1 (`_commit_block`
    in `pbft_orderer`: the previous block built or committed), so the Commit claims s-1 — the
    same claim a block signature of its own makes for its block (readiness, `behind`: f+1 such
    claims two past our head say we are catching up). Block number = epoch + sequence."""
    if message.WhichOneof("body") != "commit" or message.epoch != epoch:
        return None
    vote = message.commit
    return epoch + vote.sequence - 1 if vote.block_signature else None


def certified_claims(
    message: replica_pb2.ReplicaMessage, epoch: int
) -> list[tuple[replica_pb2.SignedReplicaMessage, int]]:
    """The Commits inside a collector's commit certificate (`core/pbft/collector.py`) that
    carry a block signature, each with the block it claims (`carried_claim`): with a collector
    a backup sees its peers' Commits only there. Unverified: the caller verifies a Commit
    before it counts its claim."""
    if message.WhichOneof("body") != "commit_certificate" or message.epoch != epoch:
        return []
    out = []
    for commit in message.commit_certificate.commits:
        inner = replica_pb2.ReplicaMessage()
        try:
            inner.ParseFromString(commit.payload)
        except DecodeError:
            continue
        claim = carried_claim(inner, epoch)
        if claim is not None:
            out.append((commit, claim))
    return out


@dataclass(frozen=True)
class Speculative:
    """Block `number` as built from a prepared slot, and our signature of its hash."""

    envelopes: tuple[bytes, ...]
    ids: tuple[bytes, ...]
    block: block_pb2.Block
    digest: bytes
    signature: bytes


class SpeculativeBlocks:
    """Blocks built and signed for our Commits, by number, until their slot is decided."""

    def __init__(self, channel_id: str) -> None:
        self.channel_id = channel_id
        self._built: dict[int, Speculative] = {}

    def build(
        self,
        number: int,
        previous: bytes,
        envelopes: tuple[bytes, ...],
        ids: tuple[bytes, ...],
        sign: Signer,
    ) -> Speculative:
        """Build and sign block `number` (replacing one built before for another digest)."""
        block = make_block(self.channel_id, number, previous, envelopes, ids)
        digest = block_hash(block)
        built = Speculative(envelopes, ids, block, digest, sign(digest))
        self._built[number] = built
        return built

    def take(
        self, number: int, envelopes: tuple[bytes, ...], ids: tuple[bytes, ...], previous: bytes
    ) -> Speculative | None:
        """The block built for `number` if it is exactly the decided one (same envelopes, ids
        and previous hash); forgotten either way."""
        built = self._built.pop(number, None)
        if built is None or built.block.header.previous_hash != previous:
            return None
        if built.envelopes != envelopes or built.ids != ids:
            return None
        return built

    def forget_below(self, height: int) -> None:
        """Drop blocks the chain has passed (a slot that lost a view change, fetched blocks)."""
        if self._built and min(self._built) < height:
            self._built = {n: b for n, b in self._built.items() if n >= height}

    def clear(self) -> None:
        """Forget everything (a new replica group)."""
        self._built.clear()

    def __len__(self) -> int:
        return len(self._built)
