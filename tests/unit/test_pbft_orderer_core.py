"""The PBFT orderer's core: block signatures and fetched blocks are core inputs (no runtime
dispatch); blocks are built, signed, committed with 2f+1 signatures and acknowledged; a replica
still collecting a committed block's signatures is answered; the catch-up schedule fetches from
one peer at a time, moving on and backing off."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
from pbft_messages import KEYS

from dltmw.core.block import block_hash, content_hashes
from dltmw.core.handlers.pbft_blocks import BlockAssembler
from dltmw.core.handlers.pbft_orderer import (
    BEHIND_TICKS,
    CATCHUP_CHECK_TICKS,
    RESIGN_EVERY_TICKS,
    FetchBlocks,
    FetchedBlocks,
    OrdererEffects,
    Outbound,
    PbftOrdererCore,
    SignatureOf,
)
from dltmw.core.hashing import ZERO_HASH
from dltmw.core.pbft import ClientRequest, Envelope, JumpRecord, PbftConfig, Replica, request_id
from dltmw.core.pbft.disseminating import DisseminatingReplica
from dltmw.core.pbft.dissemination import DisseminationConfig
from dltmw.v1 import block_pb2, replica_pb2

CONFIG = PbftConfig(n=4, checkpoint_interval=2, batch_size_max=2, request_timeout_ticks=50)
IDS = [f"orderer{i}".encode() for i in range(4)]
REQS = [KEYS.make_request(0, i) for i in range(4)]


def core(
    i: int, by_limits_only: bool = False, disseminating: bool = False, carry: bool = True
) -> PbftOrdererCore:
    replica: Replica | DisseminatingReplica
    if disseminating:
        dis = DisseminationConfig(batch_count_max=CONFIG.batch_size_max, batch_wait_ticks=4)
        replica = DisseminatingReplica(CONFIG, i, KEYS.signer(i), KEYS.verify, dis, KEYS.request_ok)
        replica.cut_max = 1
    else:
        replica = Replica(CONFIG, i, KEYS.signer(i), KEYS.verify, request_ok=KEYS.request_ok)
    assembler = BlockAssembler("ch", i, CONFIG.quorum, IDS, KEYS.verify)
    return PbftOrdererCore(
        replica,
        assembler,
        KEYS.signer(i),
        1,
        ZERO_HASH,
        by_limits_only=by_limits_only,
        carry_signatures=carry,
    )


class Group:
    """Four cores wired directly; `cut` replicas receive nothing. `carry=False`: block
    signatures only in messages of their own (`pbft_speculative`), for the tests of that path."""

    def __init__(
        self, by_limits_only: bool = False, disseminating: bool = False, carry: bool = True
    ) -> None:
        self.cores = [core(i, by_limits_only, disseminating, carry) for i in range(4)]
        self.cut: set[int] = set()
        self.queue: list[tuple[int, Outbound]] = []
        self.committed: list[list[block_pb2.Block]] = [[] for _ in range(4)]
        self.acked: list[set[bytes]] = [set() for _ in range(4)]
        self.other: list[list[tuple[int, Outbound]]] = [[] for _ in range(4)]

    def flush(self, i: int) -> OrdererEffects:
        out = self.cores[i].ready()
        self.committed[i].extend(c.block for c in out.decided)
        self.acked[i].update(rid for rid, r in out.replies if r is None)  # type: ignore[misc]
        for destination, message in out.send:
            if isinstance(message, Envelope | replica_pb2.BlockSignature):
                self.queue.append((destination, message))
            else:
                self.other[i].append((destination, message))
        return out

    def step(self, i: int, message: object) -> None:
        self.cores[i].step(message)  # type: ignore[arg-type]
        self.flush(i)

    def settle(self) -> None:
        for _ in range(10_000):
            if not self.queue:
                return
            destination, message = self.queue.pop(0)
            if destination not in self.cut:
                self.step(destination, message)
        raise AssertionError("messages never settled")


def test_decided_batches_become_signed_blocks_committed_and_acknowledged_everywhere() -> None:
    group = Group()
    for request in REQS[:2]:
        group.step(0, ClientRequest(request))
    group.settle()
    for i in range(4):
        (block,) = group.committed[i]
        assert block.header.number == 1 and list(block.data.envelopes) == REQS[:2]
        signers = {s.signer for s in block.metadata.signatures}
        assert len(signers) >= CONFIG.quorum and signers <= set(IDS)
        assert group.acked[i] == {request_id(r) for r in REQS[:2]}
        assert group.cores[i].height == 2


def _answers(effects: OrdererEffects) -> list[tuple[int, Outbound]]:
    return [(d, m) for d, m in effects.send if isinstance(m, SignatureOf)]


def test_in_a_normal_run_no_late_signature_is_answered() -> None:
    """Every replica broadcast its signature when it built the block: the slowest one's
    broadcast crosses the others' and needs no answer (`pbft_late`); before, 3 of them here."""
    group = Group()
    for request in REQS[:2]:
        group.step(0, ClientRequest(request))
    group.settle()
    assert all(len(c) == 1 for c in group.committed)
    assert [m for other in group.other for m in other if isinstance(m[1], SignatureOf)] == []


def test_a_resent_signature_of_a_committed_block_is_answered_with_ours() -> None:
    group = Group()
    for request in REQS[:2]:
        group.step(0, ClientRequest(request))
    group.settle()
    late = replica_pb2.BlockSignature(number=1, block_hash=b"d" * 32, replica=2, signature=b"s")
    core0 = group.cores[0]
    core0.step(late)  # replica 2's signature was heard already (it made the quorum): a resend
    assert _answers(core0.ready()) == [(2, SignatureOf(1))]


def test_a_first_late_signature_waits_for_a_resend_or_the_window() -> None:
    """A late signature heard for the first time within RESIGN_EVERY_TICKS of our commit is
    not answered; its resend is, and so is any one after the window."""
    group = Group()
    group.cut.add(3)  # replica 3 builds nothing: its signature is never heard
    for request in REQS[:2]:
        group.step(0, ClientRequest(request))
    group.settle()
    core0 = group.cores[0]
    late = replica_pb2.BlockSignature(number=1, block_hash=b"d" * 32, replica=3, signature=b"s")
    core0.step(late)
    assert _answers(core0.ready()) == []
    core0.step(late)
    assert _answers(core0.ready()) == [(3, SignatureOf(1))]
    core1 = group.cores[1]
    core1.tick(RESIGN_EVERY_TICKS)  # block 1 committed at tick 0 ...
    core1.ready()
    core1.step(late)  # ... its first late signature heard a window later: answered at once
    assert _answers(core1.ready()) == [(3, SignatureOf(1))]


def test_a_replica_that_lost_every_other_signature_commits_after_its_resend() -> None:
    """Liveness of the rule: replica 3 never receives the others' broadcast signatures of
    block 1; its resend (tick RESIGN_EVERY_TICKS) is their second hearing of it, so each
    answers with its own signature, and replica 3 commits the block. (Signatures in
    messages of their own: carried by Commits, they arrive with the votes.)"""
    group = Group(carry=False)
    for request in REQS[:2]:
        group.step(0, ClientRequest(request))
    for _ in range(10_000):
        if not group.queue:
            break
        destination, message = group.queue.pop(0)
        if destination == 3 and isinstance(message, replica_pb2.BlockSignature):
            continue  # lost
        group.step(destination, message)
    assert [len(c) for c in group.committed] == [1, 1, 1, 0]
    group.cores[3].tick(RESIGN_EVERY_TICKS)
    group.flush(3)
    group.settle()
    answered = [m for i in range(3) for m in group.other[i] if isinstance(m[1], SignatureOf)]
    assert sorted(answered) == [(3, SignatureOf(1))] * 3
    # the runtime turns each SignatureOf into our signature of block 1 (executor memo)
    for i in range(3):
        (block,) = group.committed[i]
        own = next(s for s in block.metadata.signatures if s.signer == IDS[i])
        signature = replica_pb2.BlockSignature(
            number=1, block_hash=block_hash(block), replica=i, signature=own.signature
        )
        group.step(3, signature)
    assert [len(c) for c in group.committed] == [1, 1, 1, 1]


def test_fetched_blocks_are_committed_and_the_replica_jumps_over_them() -> None:
    group = Group()
    group.cut.add(3)
    for request in REQS:
        group.step(0, ClientRequest(request))
    group.settle()
    blocks = group.committed[0]
    assert [b.header.number for b in blocks] == [1, 2] and not group.committed[3]
    lagging = group.cores[3]
    lagging.catchup.fetching = True
    lagging.step(FetchedBlocks("orderer0", tuple(blocks)))
    out = lagging.ready()
    assert [c.block for c in out.decided] == blocks
    assert lagging.height == 3 and lagging.replica.next_exec == 3
    assert any(isinstance(r, JumpRecord) for r in out.persist)
    assert {rid for rid, _ in out.replies} == {request_id(r) for r in REQS}
    assert not lagging.catchup.fetching
    lagging.step(FetchedBlocks("orderer1", tuple(blocks)))  # old news: nothing happens
    assert not lagging.ready().decided


def test_a_fetch_that_stopped_at_its_byte_bound_is_followed_at_once_by_the_next() -> None:
    """A fetch holds its blocks in memory until they are committed, so it stops at a byte bound
    (`pbft_catchup.FETCH_BYTES_MAX`); the replica then asks the same peer again at once — at
    its next check instead, a far-behind replica would catch up a few MB every few seconds.
    A fetch that reached the peer's head (`more` false) is not followed."""
    group = Group()
    group.cut.add(3)
    for request in REQS:
        group.step(0, ClientRequest(request))
    group.settle()
    blocks = group.committed[0]
    lagging = group.cores[3]

    def fetched(blocks: list[block_pb2.Block], more: bool) -> list[int]:
        lagging.catchup.fetching, lagging.catchup.peer = True, 0
        lagging.step(FetchedBlocks("orderer0", tuple(blocks), more))
        return [d for d, m in lagging.ready().send if isinstance(m, FetchBlocks)]

    assert fetched(blocks[:1], more=True) == [0]
    assert lagging.height == 2 and lagging.catchup.fetching
    assert fetched(blocks[1:], more=False) == []
    assert lagging.height == 3 and not lagging.catchup.fetching


def test_catch_up_fetches_from_one_peer_at_a_time_then_the_next_with_backoff() -> None:
    lone = core(1)

    def fetches_until(tick: int, start: int) -> list[tuple[int, int]]:
        out = []
        for now in range(start, tick + 1):
            lone.tick(now)
            out += [(now, d) for d, m in lone.ready().send if isinstance(m, FetchBlocks)]
        return out

    check = CATCHUP_CHECK_TICKS
    assert fetches_until(2 * check, 1) == [(2 * check, 0)]  # no progress since the first check
    assert fetches_until(8 * check, 2 * check + 1) == []  # still fetching: no second fetch
    lone.step(FetchedBlocks("orderer0", ()))  # nothing newer there
    assert fetches_until(10 * check, 8 * check + 1) == [(10 * check, 2)]  # the next peer


def test_catch_up_follows_the_ledger_height_not_execution() -> None:
    """With dissemination a replica can execute certificates whose blocks it cannot build
    (their batches gone everywhere, or assembled differently): execution moves, the ledger
    does not. The schedule watches the ledger, so it still fetches; watching execution, it
    never did while the channel had traffic."""
    lone = core(1)
    check = CATCHUP_CHECK_TICKS
    sent = []
    for now in range(1, 2 * check + 1):
        lone.replica.next_exec += 1  # execution moves on; no block is built
        lone.tick(now)
        sent += [(now, d) for d, m in lone.ready().send if isinstance(m, FetchBlocks)]
    assert sent == [(2 * check, 0)] and lone.height == 1


def signature(number: int, replica: int) -> replica_pb2.BlockSignature:
    return replica_pb2.BlockSignature(number=number, block_hash=b"d" * 32, replica=replica)


def test_a_replica_is_behind_once_f_plus_1_others_signed_two_blocks_past_its_head() -> None:
    group = Group()
    group.cut.add(3)
    for request in REQS:
        group.step(0, ClientRequest(request))
    group.settle()
    lagging, fresh = group.cores[3], group.cores[0]
    assert (lagging.height, fresh.height) == (1, 3)  # the cluster committed blocks 1 and 2
    assert fresh.behind() is None and lagging.behind() is None  # nothing heard yet
    lagging.step(signature(1, 0))
    assert lagging.behind() is None  # one block past its head: normal pipelining
    lagging.step(signature(2, 0))
    assert lagging.behind() is None  # one replica's word (f = 1): it may be the faulty one
    lagging.step(signature(2, 3))
    assert lagging.behind() is None  # its own index: not another replica's word
    lagging.step(signature(2, 1))
    assert lagging.behind() == 3  # f+1 = 2 others signed block 2: blocks 0..2 exist
    lagging.tick(1)
    lagging.step(FetchedBlocks("orderer0", tuple(group.committed[0])))
    lagging.ready()
    assert lagging.height == 3
    assert lagging.behind() == 4, "the jump proved it behind: still catching up"
    lagging.tick(BEHIND_TICKS)
    assert lagging.behind() is not None
    lagging.tick(BEHIND_TICKS + 1)  # the proof aged out, and nobody signed past block 3
    assert lagging.behind() is None


def test_signatures_heard_but_not_yet_stepped_count_towards_behind() -> None:
    """While the driver executes a long step (a stalled commit), signatures queue unstepped:
    readiness passes those it heard, and they count as the core's own claims do."""
    lagging = core(3)
    assert lagging.height == 1
    assert lagging.behind({0: 2}) is None  # one replica's word (f = 1)
    assert lagging.behind({0: 2, 3: 9}) is None  # its own index: not another replica's word
    assert lagging.behind({0: 1, 1: 1}) is None  # one block past its head: normal pipelining
    assert lagging.behind({0: 5, 1: 2}) == 3, "f+1 = 2 others signed block 2"
    lagging.step(signature(6, 2))  # stepped claims and heard ones combine
    assert lagging.behind({0: 5}) == 6
    assert lagging.behind() is None  # its own claims alone: one replica's word


def test_a_recent_proof_of_lag_means_catching_up() -> None:
    lone = core(2)
    lone.tick(5)
    lone.replica.note_behind()
    assert lone.behind() == lone.height + 1
    lone.tick(5 + BEHIND_TICKS - 1)
    assert lone.behind() is not None
    lone.tick(5 + BEHIND_TICKS)
    assert lone.behind() is None


def pre_prepares(group: Group) -> list[int]:
    """Sequences of the pre-prepares waiting in the group's queue (once per sequence)."""
    seqs = set()
    for _, message in group.queue:
        if isinstance(message, Envelope):
            body = replica_pb2.ReplicaMessage.FromString(message.payload)
            if body.WhichOneof("body") == "pre_prepare":
                seqs.add(body.pre_prepare.sequence)
    return sorted(seqs)


def drain(group: Group, i: int) -> None:
    group.cores[i].drained()
    group.flush(i)


def test_drained_primary_proposes_at_once_then_waits_while_a_batch_is_in_flight() -> None:
    """Adaptive cutting: a lone request (below batch_size_max) is proposed on the drained event,
    with no tick; a second one waits until the first batch executed (Nagle's rule); every
    replica commits the same blocks (they take the primary's cut)."""
    group = Group()
    group.step(0, ClientRequest(REQS[0]))
    assert pre_prepares(group) == []  # below the batch size: before, only a tick proposed it
    drain(group, 1)  # a backup's drained event cuts nothing
    assert pre_prepares(group) == []
    drain(group, 0)
    assert pre_prepares(group) == [1]
    group.step(0, ClientRequest(REQS[1]))
    drain(group, 0)
    assert pre_prepares(group) == [1]  # sequence 1 is in flight: REQS[1] waits
    group.settle()
    drain(group, 0)  # sequence 1 executed: nothing in flight
    group.settle()
    for i in range(4):
        assert [list(b.data.envelopes) for b in group.committed[i]] == [[REQS[0]], [REQS[1]]]


def test_drained_is_ignored_when_cutting_by_limits_only() -> None:
    group = Group(by_limits_only=True)
    group.step(0, ClientRequest(REQS[0]))
    drain(group, 0)
    assert pre_prepares(group) == []
    group.cores[0].tick(1)
    group.flush(0)
    assert pre_prepares(group) == [1]  # the tick still cuts, as before


def test_with_dissemination_a_backup_that_a_client_reached_cuts_its_batch_on_drained() -> None:
    """With dissemination the origin of a batch is whichever replica a client reached, so the
    drained event cuts a short batch on a backup too (Nagle's rule on its own batches), not
    only on the primary with nothing proposed in flight."""
    dis = DisseminationConfig(batch_count_max=2, batch_wait_ticks=4)
    replica = DisseminatingReplica(CONFIG, 2, KEYS.signer(2), KEYS.verify, dis, KEYS.request_ok)
    replica.cut_max = 1
    assembler = BlockAssembler("ch", 2, CONFIG.quorum, IDS, KEYS.verify)
    backup = PbftOrdererCore(replica, assembler, KEYS.signer(2), 1, ZERO_HASH)
    backup.step(ClientRequest(REQS[0]))
    assert backup.ready().send == ()
    backup.drained()
    sent = [
        (peer, replica_pb2.ReplicaMessage.FromString(m.payload).WhichOneof("body"))
        for peer, m in backup.ready().send
        if isinstance(m, Envelope)
    ]
    assert sorted(sent) == [(0, "batch"), (1, "batch"), (3, "batch")]


def test_with_dissemination_each_replica_hashes_an_envelope_once_from_intake_to_commit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A replica hashed each envelope ~6 times on its way (batch digest, assembly twice, the
    chain feedback, the block's content hashes, the replies; 2 more on the origin): now once
    where it enters the replica (a received batch; the origin: Broadcast's runtime computes
    the id and hands it in), and the id travels on. Blocks and acknowledgements unchanged."""
    group = Group(disseminating=True)
    hashed: dict[bytes, int] = {}
    sha256 = hashlib.sha256

    def counting(data: Any = b"", *args: Any, **kwargs: Any) -> Any:
        if isinstance(data, bytes) and data in REQS:
            hashed[data] = hashed.get(data, 0) + 1
        return sha256(data, *args, **kwargs)

    ids = [request_id(r) for r in REQS[:2]]
    monkeypatch.setattr(hashlib, "sha256", counting)
    for request, rid in zip(REQS[:2], ids, strict=True):
        group.step(0, ClientRequest(request, admitted=True, request_id=rid))
    group.cores[0].drained()
    group.flush(0)
    group.settle()
    monkeypatch.undo()
    assert hashed == {r: 3 for r in REQS[:2]}  # by each of the 3 replicas that received it
    for i in range(4):
        (block,) = group.committed[i]
        assert list(block.data.envelopes) == REQS[:2]
        assert block.header.data_hash == content_hashes(REQS[:2])[0]
        assert group.acked[i] == set(ids)
