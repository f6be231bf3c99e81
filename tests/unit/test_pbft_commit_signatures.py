"""Block signatures carried by Commits (`core/handlers/pbft_speculative.py`): in a normal run
every replica's block signature rides on its Commit and no separate signature is sent; a
faulty replica's Commit carrying a signature of another block does not count (every committed
block holds only valid signatures over its own hash); after a view change (view > 0) Commits
carry none and blocks still commit with signatures sent after execution."""

from __future__ import annotations

import hashlib

import pytest
from pbft_messages import KEYS
from test_pbft_orderer_core import CONFIG, IDS, REQS, Group, core, signature

from dltmw.core.block import block_hash
from dltmw.core.handlers.pbft_orderer import OrdererEffects
from dltmw.core.pbft import ClientRequest, Envelope
from dltmw.v1 import block_pb2, replica_pb2


class Watched(Group):
    """A `Group` that records every replica message sent, and lets one replica rewrite its
    own outgoing messages (`rewrite`: a faulty replica re-signs what it changes as itself)."""

    def __init__(self, disseminating: bool = False, faulty: int | None = None) -> None:
        super().__init__(disseminating=disseminating)
        self.sent: list[tuple[int, object]] = []
        self.faulty = faulty
        self.lost_kinds: set[str] = set()  # replica messages of these kinds in view 0 are lost

    def settle(self) -> None:
        for _ in range(10_000):
            if not self.queue:
                return
            destination, message = self.queue.pop(0)
            if destination not in self.cut and not self._lost(message):
                self.step(destination, message)
        raise AssertionError("messages never settled")

    def _lost(self, message: object) -> bool:
        if not self.lost_kinds or not isinstance(message, Envelope):
            return False
        body = replica_pb2.ReplicaMessage.FromString(message.payload)
        kind = body.WhichOneof("body")
        return kind in self.lost_kinds and getattr(body, kind).view == 0

    def flush(self, i: int) -> OrdererEffects:
        before = len(self.queue)
        out = super().flush(i)
        for k in range(before, len(self.queue)):
            destination, message = self.queue[k]
            if i == self.faulty and isinstance(message, Envelope):
                message = wrong_block_signature(i, message)
                self.queue[k] = (destination, message)
            self.sent.append((i, message))
        return out


def wrong_block_signature(i: int, envelope: Envelope) -> Envelope:
    """Replica i's Commit with its block signature replaced by a valid signature of i over
    another block's hash, re-signed by i."""
    message = replica_pb2.ReplicaMessage.FromString(envelope.payload)
    if message.WhichOneof("body") != "commit":
        return envelope
    other = hashlib.sha256(b"another block" + message.commit.block_hash).digest()
    message.commit.block_hash = other
    message.commit.block_signature = KEYS.signer(i)(other)
    payload = message.SerializeToString()
    return Envelope(payload=payload, replica=i, signature=KEYS.signer(i)(payload))


def commits(group: Watched) -> list[replica_pb2.Vote]:
    out = []
    for _i, message in group.sent:
        if isinstance(message, Envelope):
            body = replica_pb2.ReplicaMessage.FromString(message.payload)
            if body.WhichOneof("body") == "commit":
                out.append(body.commit)
    return out


def separate_signatures(group: Watched) -> list[object]:
    return [m for _i, m in group.sent if isinstance(m, replica_pb2.BlockSignature)]


def assert_valid_signatures(block: block_pb2.Block) -> set[bytes]:
    """Every signature in the block verifies over its hash; returns the signers."""
    digest = block_hash(block)
    for sig in block.metadata.signatures:
        assert KEYS.verify(IDS.index(sig.signer), digest, sig.signature)
    return {s.signer for s in block.metadata.signatures}


def run(group: Watched, requests: list[bytes], disseminating: bool) -> None:
    for request in requests:
        group.step(0, ClientRequest(request))
        if disseminating:
            group.cores[0].drained()
            group.flush(0)
        group.settle()


@pytest.mark.parametrize("disseminating", [False, True])
def test_in_a_normal_run_every_block_signature_rides_on_a_commit(disseminating: bool) -> None:
    group = Watched(disseminating=disseminating)
    requests = REQS[:2] if disseminating else REQS[:4]
    run(group, requests, disseminating)
    blocks = group.committed[0]
    assert [b.header.number for b in blocks] == list(range(1, len(blocks) + 1))
    assert [e for b in blocks for e in b.data.envelopes] == requests
    for i in range(4):
        assert [block_hash(b) for b in group.committed[i]] == [block_hash(b) for b in blocks]
        for block in group.committed[i]:
            assert len(assert_valid_signatures(block)) >= CONFIG.quorum
    carried = commits(group)
    assert carried and all(c.block_signature for c in carried)
    assert separate_signatures(group) == []


@pytest.mark.parametrize("disseminating", [False, True])
def test_a_commit_signing_another_block_does_not_count(disseminating: bool) -> None:
    """Replica 3 is faulty: each of its Commits carries its valid signature of a block that
    is not the slot's. The three others commit the same blocks, with their own signatures
    only — before the assembler matched carried signatures against its block, 3's wrong one
    was counted (negative control: the hash check in `BlockAssembler._add` removed)."""
    group = Watched(disseminating=disseminating, faulty=3)
    requests = REQS[:2] if disseminating else REQS[:4]
    run(group, requests, disseminating)
    blocks = group.committed[0]
    assert [e for b in blocks for e in b.data.envelopes] == requests
    for i in range(3):
        assert [block_hash(b) for b in group.committed[i]] == [block_hash(b) for b in blocks]
        for block in group.committed[i]:
            signers = assert_valid_signatures(block)
            assert signers == set(IDS[:3])


def test_after_a_view_change_commits_carry_no_block_signature() -> None:
    """The primary of view 0 hears nothing; the backups time its requests out and move to
    view 1, where their Commits carry no block signature (signatures of different views do
    not add up to a decision, `pbft_speculative`): each signs after execution, separately,
    and the block commits with 2f+1 of those (negative control: the view-0 condition in
    `Replica.advance` removed — view-1 Commits then carry signatures)."""
    group = Watched()
    group.cut.add(0)
    for i in (1, 2, 3):
        group.step(i, ClientRequest(REQS[0]))
        group.step(i, ClientRequest(REQS[1]))
    group.settle()
    for now in range(1, 400):
        for i in (1, 2, 3):
            group.cores[i].tick(now)
            group.flush(i)
        group.settle()
        if all(group.committed[i] for i in (1, 2, 3)):
            break
    assert all(group.cores[i].replica.view >= 1 for i in (1, 2, 3))
    for i in (1, 2, 3):
        (block,) = group.committed[i]
        assert list(block.data.envelopes) == REQS[:2]
        assert len(assert_valid_signatures(block)) >= CONFIG.quorum
    late = [c for c in commits(group) if c.view >= 1]
    assert late and not any(c.block_signature for c in late)
    assert separate_signatures(group)


def test_speculative_signatures_then_a_view_change_commit_one_block_everywhere() -> None:
    """Every replica prepares slot 1 in view 0 and signs its block into its Commit, but no
    Commit arrives: nothing is decided in view 0. The request timer moves the group to view
    1, which carries the prepared slot over; every replica commits the same block, each
    signature in it valid over its hash, and each replica sends its signature separately
    (its view-0 Commit carried it to nobody who counted it: at once since the slot was
    decided in view 1, or at its next resend — this test does not tell the two apart)."""
    group = Watched()
    group.lost_kinds.add("commit")
    for request in REQS[:2]:
        group.step(0, ClientRequest(request))
    group.settle()
    assert all(not c for c in group.committed)
    assert all(c.block_signature for c in commits(group))  # signed in view 0 ...
    for now in range(1, 400):
        for i in range(4):
            group.cores[i].tick(now)
            group.flush(i)
        group.settle()
        if all(group.committed):
            break
    assert all(core.replica.view >= 1 for core in group.cores)
    (block,) = group.committed[0]
    assert list(block.data.envelopes) == REQS[:2]
    for i in range(4):
        assert [block_hash(b) for b in group.committed[i]] == [block_hash(block)]
        assert len(assert_valid_signatures(group.committed[i][0])) >= CONFIG.quorum
    separately = {m.replica for m in separate_signatures(group)}  # type: ignore[attr-defined]
    assert separately == {0, 1, 2, 3}


def test_a_signature_carried_by_a_commit_claims_the_block_before_it() -> None:
    """`behind()` counts f+1 others' highest claimed blocks. A signature of its own claims its
    block (made after execution); a replica carries its signature of block s in a Commit only
    once it built block s-1, so the carried one claims s-1: a caught-up replica with slots in
    flight does not look behind, and a restarted one still sees the cluster ahead of it when
    blocks are signed only inside Commits (tests/integration/test_operations.py). Negative
    controls: counted as a claim of s (6), or not counted at all (None)."""
    lone = core(0)
    assert lone.replica.block_signed is not None
    for other in (1, 2):
        lone.replica.block_signed(other, 5, b"d" * 32, b"s")
    assert lone.behind() == 5
    for other in (1, 2):
        lone.step(signature(5, other))
    assert lone.behind() == 6


def test_the_claim_of_a_commit_is_read_from_its_bytes_for_the_runtime() -> None:
    """The runtime's readiness reads claims off verified Commits as they arrive (the core may
    be busy committing): a Commit carrying a signature of block epoch+s claims epoch+s-1; a
    Commit without one, another kind of message, or another epoch's message claims nothing."""
    from dltmw.core.handlers.pbft_speculative import carried_claim

    def commit(sequence: int, carried: bool, epoch: int = 0) -> replica_pb2.ReplicaMessage:
        vote = replica_pb2.Vote(view=0, sequence=sequence, digest=b"d" * 32)
        if carried:
            vote.block_hash, vote.block_signature = b"h" * 32, b"s"
        return replica_pb2.ReplicaMessage(commit=vote, epoch=epoch)

    assert carried_claim(commit(5, True), 0) == 4
    assert carried_claim(commit(5, True, epoch=10), 10) == 14
    assert carried_claim(commit(5, True, epoch=10), 0) is None
    assert carried_claim(commit(5, False), 0) is None
    prepare = replica_pb2.ReplicaMessage(prepare=replica_pb2.Vote(view=0, sequence=5))
    assert carried_claim(prepare, 0) is None
