"""Block-level catch-up in the PBFT-lite core: `Replica.jump` over externally verified batches.

The jump must refuse to go backwards or skip a sequence, persist a record a restart resumes
from, keep executed requests suppressed, and leave the replica able to take part again (learn
the next stable checkpoint and decide new batches with its peers). The runtime only hands it
blocks that continue its chain and carry 2f+1 distinct valid orderer signatures.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from pbft_messages import KEYS

from dltmw.core.block import block_hash, make_block
from dltmw.core.hashing import ZERO_HASH
from dltmw.core.pbft import ClientRequest, Envelope, JumpRecord, PbftConfig, Record, Replica
from dltmw.core.pbft.types import request_id
from dltmw.ledger.pbft_store import RecordStore
from dltmw.runtime.roles.orderer.pbft_catchup import verified_prefix
from dltmw.v1 import block_pb2, replica_pb2

CONFIG = PbftConfig(n=4, checkpoint_interval=2, batch_size_max=2, probe_ticks=5)
REQS = [KEYS.make_request(0, i) for i in range(16)]
IDENTITIES = [f"orderer{i}".encode() for i in range(4)]


def replica(me: int, records: list[Record] | None = None) -> Replica:
    if records is not None:
        return Replica.restore(
            CONFIG, me, KEYS.signer(me), KEYS.verify, records, request_ok=KEYS.request_ok
        )
    return Replica(CONFIG, me, KEYS.signer(me), KEYS.verify, request_ok=KEYS.request_ok)


class Cluster:
    """Four replicas wired directly; replicas in `cut` neither send nor receive."""

    def __init__(self) -> None:
        self.replicas = [replica(i) for i in range(4)]
        self.storage: list[list[Record]] = [[] for _ in range(4)]
        self.decided: list[dict[int, bytes]] = [{} for _ in range(4)]
        self.queue: list[tuple[int, Envelope]] = []
        self.cut: set[int] = set()

    def flush(self, i: int) -> None:
        out = self.replicas[i].ready()
        self.storage[i].extend(out.persist)
        self.decided[i].update((d.sequence, d.digest) for d in out.decided)
        if i not in self.cut:
            self.queue.extend(out.send)

    def settle(self) -> None:
        for _ in range(20_000):
            if not self.queue:
                return
            dst, env = self.queue.pop(0)
            if dst not in self.cut:
                self.replicas[dst].step(env)
                self.flush(dst)
        raise AssertionError("messages never settled")

    def submit(self, requests: list[bytes]) -> None:
        for request in requests:
            self.replicas[0].step(ClientRequest(request))
            self.flush(0)
        self.settle()

    def tick(self, ticks: int) -> None:
        for _ in range(ticks):
            for i in range(4):
                self.replicas[i].tick(self.replicas[i].now + 1)
                self.flush(i)
            self.settle()


def verified_batches(source: Replica) -> list[tuple[int, tuple[bytes, ...]]]:
    """What the runtime hands to `jump`: (sequence, requests) of 2f+1-signed blocks."""
    return [(s, tuple(b.requests)) for s, b in sorted(source.decided.items())]


def lagging_cluster() -> Cluster:
    """Replica 3 cut off while the others decide 4 batches (two stable checkpoints)."""
    cluster = Cluster()
    cluster.cut.add(3)
    cluster.submit(REQS[:8])
    cluster.tick(2)
    assert cluster.replicas[0].next_exec == 5 and cluster.replicas[3].next_exec == 1
    return cluster


def test_jump_executes_verified_batches_and_persists_a_record() -> None:
    cluster = lagging_cluster()
    lagging, source = cluster.replicas[3], cluster.replicas[0]
    assert lagging.jump(verified_batches(source))
    assert lagging.next_exec == source.next_exec
    assert lagging.state_digest == source.state_digest
    assert lagging.state_at[4] == source.state_at[4]
    assert {request_id(r) for r in REQS[:8]} <= set(lagging.executed_ids)
    out = lagging.ready()
    assert not out.decided, "jumped batches are already blocks: nothing to deliver again"
    (record,) = [r for r in out.persist if isinstance(r, JumpRecord)]
    assert record.sequence == 4 and len(record.request_ids) == 8
    assert out.persist.index(record) == 0 and out.send, "persisted before the probe is sent"


def test_jump_refuses_backwards_and_gaps_and_changes_nothing() -> None:
    cluster = lagging_cluster()
    lagging, batches = cluster.replicas[3], verified_batches(cluster.replicas[0])
    assert not lagging.jump(batches[1:]), "a gap at next_exec must be refused"
    assert not lagging.jump([batches[0], batches[2]]), "a hole must be refused"
    assert lagging.next_exec == 1 and not lagging.executed_ids
    assert lagging.jump(batches[:2])
    assert not lagging.jump(batches[:2]), "a jump backwards must be refused"
    assert lagging.next_exec == 3
    assert lagging.counters["jump-refused"] == 3
    assert lagging.jump(batches), "already executed batches are skipped, the rest applied"
    assert lagging.next_exec == 5


def test_duplicates_stay_suppressed_after_the_jump() -> None:
    cluster = lagging_cluster()
    lagging = cluster.replicas[3]
    lagging.jump(verified_batches(cluster.replicas[0]))
    lagging.ready()
    lagging.step(ClientRequest(REQS[0]))
    assert request_id(REQS[0]) not in lagging.pending
    assert not lagging.ready().send, "an executed request is neither kept nor forwarded"


async def test_restart_resumes_after_the_jump(tmp_path: Path) -> None:
    cluster = lagging_cluster()
    lagging, source = cluster.replicas[3], cluster.replicas[0]
    lagging.jump(verified_batches(source))
    records = [*cluster.storage[3], *lagging.ready().persist]
    store = await RecordStore.open(tmp_path / "records.sqlite")
    try:
        await store.append(records)
        loaded = await store.load()
    finally:
        await store.close()
    assert loaded == records
    restored = replica(3, loaded)
    assert restored.next_exec == 5 and restored.state_digest == source.state_digest
    assert {request_id(r) for r in REQS[:8]} <= set(restored.executed_ids)
    restored.step(ClientRequest(REQS[1]))
    assert request_id(REQS[1]) not in restored.pending


def test_jumped_replica_takes_part_again() -> None:
    cluster = lagging_cluster()
    lagging = cluster.replicas[3]
    lagging.jump(verified_batches(cluster.replicas[0]))
    cluster.flush(3)
    cluster.cut.clear()
    cluster.submit(REQS[8:12])
    cluster.tick(3 * CONFIG.probe_ticks)
    assert lagging.stable_seq >= 6, "learnt and matched the next stable checkpoint"
    # Now one of the others is cut: the three left (incl. the jumped one) must still decide.
    cluster.cut.add(1)
    cluster.submit(REQS[12:16])
    cluster.tick(3)
    assert lagging.next_exec == cluster.replicas[0].next_exec == 9
    assert cluster.decided[3][8] == cluster.decided[0][8]


def _signed_chain(count: int, signers: tuple[int, ...] = (0, 1, 2)) -> list[block_pb2.Block]:
    """Blocks 1..count of channel "ch" after a zero-hash block 0, signed by `signers`."""
    blocks, previous = [], ZERO_HASH
    for number in range(1, count + 1):
        block = make_block("ch", number, previous, [REQS[number]])
        previous = block_hash(block)
        for i in signers:
            block.metadata.signatures.add(signer=IDENTITIES[i], signature=KEYS.signer(i)(previous))
        blocks.append(block)
    return blocks


def _prefix(blocks: list[block_pb2.Block], height: int = 1) -> list[block_pb2.Block]:
    return verified_prefix(blocks, "ch", height, ZERO_HASH, IDENTITIES, 3, KEYS.verify)


def test_fetched_blocks_need_the_chain_and_2f1_distinct_valid_signatures() -> None:
    good = _signed_chain(4)
    assert _prefix(good) == good
    assert _prefix(good, height=2) == [], "a block that does not continue our head is refused"
    two = _signed_chain(4, signers=(0, 1))
    assert _prefix(two) == [], "2f signatures are not enough"
    repeated = _signed_chain(4, signers=(0, 1, 1))
    assert _prefix(repeated) == [], "one signer counted once"
    forged = _signed_chain(4)
    forged[2].metadata.signatures[2].signature = b"x" * 64
    assert _prefix(forged) == good[:2], "the prefix stops at the first unproven block"
    tampered = _signed_chain(4)
    tampered[1].data.envelopes.append(b"injected")
    assert _prefix(tampered) == good[:1], "data must match the signed header"


def test_a_jump_leaves_no_executed_request_pending_and_records_only_the_window() -> None:
    """Requests waiting here that the jumped-over batches executed stop being pending, those
    older than the de-duplication window too; the record keeps only the window's ids."""
    config = replace(CONFIG, decided_retain=2)
    lagging = Replica(config, 3, KEYS.signer(3), KEYS.verify, request_ok=KEYS.request_ok)
    for request in REQS[:8]:
        lagging.on_request(request, forward=False)
    assert len(lagging.pending) == 8
    batches = [(seq, tuple(REQS[2 * seq - 2 : 2 * seq])) for seq in range(1, 5)]
    assert lagging.jump(batches)
    assert not lagging.pending
    (record,) = [r for r in lagging.ready().persist if isinstance(r, JumpRecord)]
    assert record.request_ids == tuple(request_id(r) for r in REQS[4:8])


def test_a_replica_whose_jump_chained_other_digests_adopts_the_next_proven_checkpoint() -> None:
    """With dissemination the replicas order certificates, and the blocks a lagging replica
    fetches show envelopes: its jump chains digests its peers never chained (here: other
    bytes than the decided requests). It must take the first proven checkpoint at or above
    its jump as its state, so that its checkpoints become stable again (its decided batches
    pruned) and its votes count: with one other replica cut, the checkpoint after needs it.
    Red without `Checkpoints.adopt_proven`: its stable checkpoint stays 0, `decided` keeps
    every batch, and the three left never prove checkpoint 8."""
    cluster = lagging_cluster()
    lagging = cluster.replicas[3]
    shown = [(s, (b"envelopes of %d" % s,)) for s, _ in verified_batches(cluster.replicas[0])]
    assert lagging.jump(shown)
    assert lagging.state_digest != cluster.replicas[0].state_digest
    cluster.flush(3)
    cluster.cut.clear()
    cluster.submit(REQS[8:12])
    cluster.tick(3 * CONFIG.probe_ticks)
    assert lagging.stable_seq >= 6, "took the proven checkpoint after its jump"
    assert lagging.state_digest == cluster.replicas[0].state_digest
    assert lagging.counters["jump-state-adopted"] == 1
    assert min(lagging.decided) > lagging.stable_seq - lagging.config.kept
    cluster.cut.add(1)
    cluster.submit(REQS[12:16])
    cluster.tick(3)
    assert lagging.next_exec == cluster.replicas[0].next_exec == 9
    assert cluster.replicas[0].stable_seq == lagging.stable_seq == 8, "its vote counted"
    assert not lagging.counters["checkpoint-state-diverged"]


def test_only_a_digest_a_jump_chained_is_replaced() -> None:
    """A proven checkpoint's digest is taken only at or above the last jumped sequence: a
    divergence with no jump below it (this replica executed something else), or a checkpoint
    below the jump (its digests after it were chained over what the blocks show), is not."""
    cluster = lagging_cluster()
    lagging, source = cluster.replicas[3], cluster.replicas[0]
    assert lagging.jump([(s, (b"other %d" % s,)) for s, _ in verified_batches(source)])
    lagging.low, lagging.low_digest = 4, source.state_at[4]
    for jumped_upto in (0, 5):
        lagging.jumped_upto = jumped_upto
        assert not lagging.adopt_proven()
        assert lagging.state_digest != source.state_digest
    lagging.jumped_upto = 4
    assert lagging.adopt_proven() and lagging.state_digest == source.state_digest


def test_a_replica_that_jumped_takes_the_digest_f_plus_1_others_vote_and_votes_it() -> None:
    """When two replicas of four jumped over the same blocks, only two correct votes are cast
    per checkpoint and nothing is proven (`adopt_proven` never runs). A jumped replica takes
    the digest f+1 OTHER replicas voted at a checkpoint at or above its jump and votes it
    itself, so the checkpoint gets its quorum. Red without `adopt_vouched`: the digest stays
    the jump's and no vote is sent."""
    cluster = lagging_cluster()
    lagging, source = cluster.replicas[3], cluster.replicas[0]
    assert lagging.jump([(s, (b"other %d" % s,)) for s, _ in verified_batches(source)])
    lagging.ready()
    assert source.low == 4 and len(source.low_proof) == 3
    for vote in source.low_proof[:2]:  # f+1 = 2 others' votes for checkpoint 4
        lagging.step(vote)
    assert lagging.state_digest == source.state_digest
    assert lagging.counters["jump-state-vouched"] == 1
    out = [e for _, e in lagging.ready().send if isinstance(e, Envelope)]
    sent = [replica_pb2.ReplicaMessage.FromString(e.payload) for e in out]
    votes = [m.checkpoint for m in sent if m.WhichOneof("body") == "checkpoint"]
    assert [(v.sequence, v.state_digest) for v in votes][:1] == [(4, source.state_at[4])]
    assert lagging.stable_seq == 4, "its own vote made the third"


def test_others_votes_that_came_before_the_jumped_replica_executed_count_at_its_own_vote() -> None:
    """The f+1 others' votes for a checkpoint may reach a jumped replica before it executed
    that sequence (a vote is resent only once its sender stalls): its own vote, cast when it
    executes, finds them."""
    cluster = lagging_cluster()
    lagging, source = cluster.replicas[3], cluster.replicas[0]
    batches = [(s, (b"other %d" % s,)) for s, _ in verified_batches(source)]
    assert lagging.jump(batches[:3])  # up to 3: checkpoint 4 not executed yet
    lagging.ready()
    for vote in source.low_proof[:2]:
        lagging.step(vote)
    assert lagging.counters["jump-state-vouched"] == 0 and lagging.stable_seq == 0
    decided = source.decided[4]
    lagging.jumped_upto = 3
    lagging.apply(decided)  # executes 4 (as state transfer would), votes its checkpoint
    assert lagging.counters["jump-state-vouched"] == 1
    assert lagging.state_at[4] == source.state_at[4] and lagging.stable_seq == 4


def test_a_jump_whose_digests_match_the_group_disarms_the_adoption() -> None:
    """A jump that chained the group's own digests (no dissemination: the blocks show what was
    decided) is confirmed by the first stable checkpoint at or above it: from then on the
    replica adopts nothing, so a later divergence is reported, not replaced. Red without
    `maybe_stable` clearing `jumped_upto` (it stays 4 for good)."""
    cluster = lagging_cluster()
    lagging, source = cluster.replicas[3], cluster.replicas[0]
    assert lagging.jump(verified_batches(source))
    assert lagging.jumped_upto == 4
    cluster.flush(3)
    cluster.cut.clear()
    cluster.submit(REQS[8:12])
    cluster.tick(3 * CONFIG.probe_ticks)
    assert lagging.stable_seq >= 6 and not lagging.counters["jump-state-adopted"]
    assert lagging.jumped_upto == 0
    lagging.low, lagging.low_digest = lagging.stable_seq, b"x" * 32
    assert not lagging.adopt_proven()


def test_a_jumped_replica_votes_no_checkpoint_of_its_own_jump() -> None:
    """Its digest from a jump on may be no one else's (dissemination): it casts no checkpoint
    vote at or above the jump until it took the group's digest, so that f+1 matching votes of
    others always include a replica that executed normally (two jumped replicas' votes and a
    byzantine one could otherwise prove the jump's digest and shut the others out). Red
    without the abstention in `send_checkpoint` (checkpoint 4 voted with the jump's digest)."""
    cluster = lagging_cluster()
    lagging, source = cluster.replicas[3], cluster.replicas[0]
    batches = [(s, (b"other %d" % s,)) for s, _ in verified_batches(source)]
    assert lagging.jump(batches[:3])
    lagging.ready()
    lagging.apply(source.decided[4])  # executes checkpoint 4 with no one's vote yet
    assert lagging.next_exec == 5 and lagging.state_at[4] != source.state_at[4]
    sent = [
        replica_pb2.ReplicaMessage.FromString(e.payload)
        for _, e in lagging.ready().send
        if isinstance(e, Envelope)
    ]
    assert not [m for m in sent if m.WhichOneof("body") == "checkpoint"]
    assert not lagging.checkpoints.get(4)
    for vote in source.low_proof[:2]:  # then f+1 others' votes: it takes theirs and votes
        lagging.step(vote)
    assert lagging.state_at[4] == source.state_at[4] and lagging.stable_seq == 4


def _is_checkpoint_of(envelope: object, sender: int) -> bool:
    if not isinstance(envelope, Envelope) or envelope.replica != sender:
        return False
    body = replica_pb2.ReplicaMessage.FromString(envelope.payload).WhichOneof("body")
    return body == "checkpoint"


def _losing_checkpoint_votes_of(cluster: Cluster, sender: int) -> list[bool]:
    """`cluster.flush` drops `sender`'s checkpoint votes while the returned flag is set."""
    flush, dropping = cluster.flush, [True]

    def lossy(i: int) -> None:
        flush(i)
        if dropping[0]:
            kept = [(d, e) for d, e in cluster.queue if not _is_checkpoint_of(e, sender)]
            cluster.queue[:] = kept

    cluster.flush = lossy  # type: ignore[method-assign]
    return dropping


def test_a_jump_ending_on_a_checkpoint_counts_the_votes_that_came_before_it() -> None:
    """Replica 2's checkpoint votes are lost and then it crashes; replicas 0 and 1 voted
    checkpoint 4 (the top of their window) and replica 3 got their votes before it jumped to
    exactly 4. Its jump digest is not theirs (dissemination): it must take theirs from the votes
    it holds and vote, or the three stop for good. Red without `check_vouched` in `jump`
    (next_exec stays 5)."""
    cluster = Cluster()
    cluster.cut.add(3)
    _losing_checkpoint_votes_of(cluster, 2)
    cluster.submit(REQS[:8])
    cluster.tick(2)
    source, lagging = cluster.replicas[0], cluster.replicas[3]
    for vote in source.checkpoints[4].values():
        lagging.step(vote)
    lagging.ready()
    assert lagging.jump([(s, (b"other %d" % s,)) for s, _ in verified_batches(source)][:4])
    cluster.cut = {2}
    cluster.flush(3)
    cluster.submit(REQS[8:12])
    cluster.tick(6 * CONFIG.probe_ticks)
    assert [cluster.replicas[i].next_exec > 5 for i in (0, 1, 3)] == [True] * 3
    assert lagging.counters["jump-state-vouched"] == 1 and lagging.jumped_upto == 0
