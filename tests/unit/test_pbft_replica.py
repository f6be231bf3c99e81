"""PBFT-lite replica state machine: refusals, watermarks, persist-before-send, restart."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from pbft_messages import KEYS, CountingLone, garbled, pre_prepare, signed, vote

from dltmw.core.pbft import (
    ClientRequest,
    Envelope,
    PbftConfig,
    PbftEffects,
    Record,
    Replica,
    StableRecord,
    ViewRecord,
    VoteRecord,
    batch_digest,
    request_id,
)
from dltmw.core.pbft.recovery import compact
from dltmw.ledger.pbft_store import RecordStore
from dltmw.v1 import replica_pb2

CONFIG = PbftConfig(n=4, checkpoint_interval=2, batch_size_max=2, request_timeout_ticks=5)
REQS = [KEYS.make_request(0, i) for i in range(8)]


def replica(me: int, records: list[Record] | None = None) -> Replica:
    if records is not None:
        return Replica.restore(
            CONFIG, me, KEYS.signer(me), KEYS.verify, records, request_ok=KEYS.request_ok
        )
    return Replica(CONFIG, me, KEYS.signer(me), KEYS.verify, request_ok=KEYS.request_ok)


class Cluster:
    """Four replicas wired directly (no faults) for message-level tests."""

    def __init__(self) -> None:
        self.replicas = [replica(i) for i in range(4)]
        self.storage: list[list[Record]] = [[] for _ in range(4)]
        self.decided: list[list[bytes]] = [[] for _ in range(4)]
        self.queue: list[tuple[int, Envelope]] = []

    def flush(self, i: int) -> PbftEffects:
        out = self.replicas[i].ready()
        self.storage[i].extend(out.persist)
        self.decided[i].extend(d.digest for d in out.decided)
        self.queue.extend(out.send)
        return out

    def settle(self, limit: int = 10_000) -> None:
        for _ in range(limit):
            if not self.queue:
                return
            dst, env = self.queue.pop(0)
            self.replicas[dst].step(env)
            self.flush(dst)
        raise AssertionError("messages never settled")

    def tick(self, ticks: int = 1) -> None:
        for _ in range(ticks):
            for i in range(4):
                self.replicas[i].tick(self.replicas[i].now + 1)
                self.flush(i)
            self.settle()


def test_normal_case_decides_the_same_batches_everywhere() -> None:
    cluster = Cluster()
    for i, request in enumerate(REQS[:5]):
        cluster.replicas[i % 4].step(ClientRequest(request))
        cluster.flush(i % 4)
    cluster.settle()
    cluster.tick(2)
    assert len(cluster.decided[0]) >= 3
    assert cluster.decided[0] == cluster.decided[1] == cluster.decided[2] == cluster.decided[3]
    assert all(r.stable_seq >= 2 for r in cluster.replicas)


def test_own_votes_are_persisted_before_they_are_sent() -> None:
    backup = replica(1)
    backup.step(pre_prepare(0, 1, REQS[:2]))
    out = backup.ready()
    persisted = [r.envelope.payload for r in out.persist if isinstance(r, VoteRecord)]
    assert out.send and all(env.payload in persisted for _, env in out.send)


NOT_PRIMARY = pre_prepare(0, 1, REQS[:2], by=2)


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        (garbled(pre_prepare(0, 1, REQS[:2])), "bad-signature-or-malformed"),
        (Envelope(payload=b"\xff\x01junk", replica=0, signature=b""), "bad-signature-or-malformed"),
        (Envelope(payload=b"", replica=9, signature=b""), "bad-signature-or-malformed"),
        (NOT_PRIMARY, "pre-prepare-not-from-primary"),
        (pre_prepare(0, 9, REQS[:2]), "outside-watermarks"),
        (pre_prepare(0, 0, REQS[:2]), "outside-watermarks"),
        (vote("prepare", 0, 0, 1, b"d" * 32), "prepare-from-primary"),
        (vote("commit", 2, 0, 5, b"d" * 32), "outside-watermarks"),
    ],
    ids=[
        "garbled-signature",
        "malformed-payload",
        "unknown-signer",
        "pre-prepare-from-a-backup",
        "sequence-above-high-watermark",
        "sequence-zero",
        "prepare-from-the-primary",
        "commit-above-high-watermark",
    ],
)
def test_bad_messages_are_dropped_and_counted(message: Envelope, reason: str) -> None:
    backup = replica(1)
    backup.step(message)
    assert backup.ready().is_empty()
    assert backup.counters[reason] == 1


def test_old_view_messages_are_dropped_and_future_ones_buffered() -> None:
    backup = replica(1, [ViewRecord(1, False)])
    backup.ready()
    backup.step(pre_prepare(0, 1, REQS[:2]))
    assert backup.counters["old-view"] == 1
    backup.step(vote("prepare", 2, 5, 1, b"d" * 32))
    assert sum(len(q) for q in backup.future.values()) == 1
    assert backup.ready().is_empty()


def test_equivocating_primary_triggers_a_view_change() -> None:
    backup = replica(1)
    backup.step(pre_prepare(0, 1, REQS[:2]))
    backup.ready()
    backup.step(pre_prepare(0, 1, REQS[2:4]))
    out = backup.ready()
    assert backup.view == 1 and backup.changing
    assert ViewRecord(1, True) in out.persist


def test_restarted_replica_never_prepares_a_second_digest_for_one_slot() -> None:
    backup = replica(1)
    backup.step(pre_prepare(0, 1, REQS[:2]))
    records = list(backup.ready().persist)
    restarted = replica(1, records)
    restarted.ready()
    restarted.step(pre_prepare(0, 1, REQS[2:4]))
    out = restarted.ready()
    assert not any(isinstance(r, VoteRecord) for r in out.persist)
    assert restarted.counters["pre-prepare-conflicts-with-own-prepare"] == 1


def view_change(replica: int, view: int) -> Envelope:
    """An empty ViewChange (nothing prepared, no checkpoint) of `replica` for `view`."""
    return signed(
        replica, replica_pb2.ReplicaMessage(view_change=replica_pb2.ViewChange(new_view=view))
    )


def test_request_timeout_starts_a_view_change_and_only_a_quorum_arms_the_next() -> None:
    """PBFT's rule: the timer that moves on to view v+2 starts once 2f+1 asked for v+1. A
    replica alone in a view change stays at v+1 (retransmitting), so the others' next view
    change finds it there; moving on alone it climbed views nobody else reached."""
    backup = replica(2)
    backup.step(ClientRequest(REQS[0]))
    backup.ready()
    for _ in range(CONFIG.request_timeout_ticks):
        backup.tick(backup.now + 1)
    assert (backup.view, backup.changing) == (1, True)
    resent = 0
    for _ in range(20 * CONFIG.view_change_timeout_ticks):  # alone: it waits, it does not climb
        backup.tick(backup.now + 1)
        resent += sum(1 for _, e in backup.ready().send if _is_view_change(e, 1))
    assert (backup.view, backup.changing) == (1, True) and resent > 0
    for other in (0, 3):  # two more ask for view 1 (its primary, replica 1, never answers)
        backup.step(view_change(other, 1))
    backup.ready()
    first = backup.vc_deadline - backup.now  # type: ignore[operator]
    for _ in range(first):
        backup.tick(backup.now + 1)
    assert backup.view == 2 and backup.vc_deadline is None  # alone again at view 2
    for other in (0, 3):
        backup.step(view_change(other, 2))
    backup.ready()
    assert backup.vc_deadline - backup.now == 2 * first  # type: ignore[operator]


def test_a_replica_alone_in_a_higher_view_still_gets_its_clients_requests_decided() -> None:
    """Replica 2 alone in a view change (the others order on in view 0 and never join it:
    that lasts until their next view change) relays a client request to every replica; the
    primary of view 0 orders it, and replica 2 learns the decision by state transfer. Before,
    a replica in a view change kept its clients' requests to itself: they waited for a view
    change nobody else needed (a notary-cluster member answered nothing for 30 s)."""
    cluster = Cluster()
    lone = cluster.replicas[2]
    lone.start_view_change(1)
    cluster.flush(2)
    cluster.settle()
    assert [(r.view, r.changing) for r in cluster.replicas] == [
        (0, False),
        (0, False),
        (1, True),
        (0, False),
    ]
    lone.step(ClientRequest(REQS[0]))
    cluster.flush(2)
    cluster.settle()
    cluster.tick(CONFIG.probe_ticks)
    digest = batch_digest([REQS[0]])
    assert all(cluster.decided[i] == [digest] for i in range(4)), cluster.decided
    assert (lone.view, lone.changing) == (1, True) and not lone.pending
    assert [r.view for r in cluster.replicas if r is not lone] == [0, 0, 0]


def _decide_at(backup: Replica, seq: int, requests: list[bytes]) -> None:
    """Replica 0 (primary of view 0) proposes `requests` at `seq`; every other votes."""
    digest = batch_digest(requests)
    backup.step(pre_prepare(0, seq, requests))
    for other in (1, 3):
        backup.step(vote("prepare", other, 0, seq, digest))
    for other in (0, 1, 3):
        backup.step(vote("commit", other, 0, seq, digest))


def test_the_request_timer_starts_again_when_the_request_it_timed_executes() -> None:
    """A backlog is not a silent primary: three requests arrive at once and the primary
    decides one every timeout - 1 ticks, in order. Each request executes within the timeout of
    the one before it, so nobody asks for a view change (timed from arrival, the third waited
    twice the timeout and the replica left a correct primary). Once nothing executes, the
    timer runs out as before."""
    backup = replica(2)
    for request in REQS[:3]:
        backup.step(ClientRequest(request))
    backup.ready()
    step = CONFIG.request_timeout_ticks - 1
    for seq in (1, 2, 3):
        for _ in range(step):
            backup.tick(backup.now + 1)
        assert (backup.view, backup.changing) == (0, False), f"view change before seq {seq}"
        _decide_at(backup, seq, [REQS[seq - 1]])
        backup.ready()
    assert not backup.pending and backup.next_exec == 4
    backup.step(ClientRequest(REQS[3]))
    backup.ready()
    for _ in range(CONFIG.request_timeout_ticks):
        backup.tick(backup.now + 1)
    assert (backup.view, backup.changing) == (1, True)


def test_a_stale_request_leaves_pending_and_is_not_admitted_again() -> None:
    """A request no slot from `next_exec` on can use (an expired certificate, `stale`) leaves
    `pending` once the chain passes it, decided or jumped over: a primary would otherwise
    order it, one slot each, ahead of live ones (with dissemination, every certificate then
    expired behind dead ones and the channel made slots forever), and the request timer would
    time it. It is not admitted again either."""
    backup = replica(2)
    backup.stale = lambda request, next_exec: request == REQS[0] and next_exec > 2
    backup.step(ClientRequest(REQS[0]))
    backup.step(ClientRequest(REQS[1]))
    backup.ready()
    _decide_at(backup, 1, [REQS[2]])
    assert set(backup.pending) == {request_id(REQS[0]), request_id(REQS[1])}
    _decide_at(backup, 2, [REQS[3]])
    assert set(backup.pending) == {request_id(REQS[1])}
    backup.step(ClientRequest(REQS[0]))
    assert set(backup.pending) == {request_id(REQS[1])}
    assert backup.counters["stale-request"] == 2
    jumped = replica(3)
    jumped.stale = backup.stale
    jumped.step(ClientRequest(REQS[0]))
    assert jumped.jump([(1, (REQS[4],)), (2, (REQS[5],))])
    assert not jumped.pending


def test_a_pre_prepare_is_resent_only_to_replicas_that_have_not_voted_for_it() -> None:
    """The primary's retransmission of a slot not executed yet: its pre-prepare (the slot's
    requests, the large message) goes only to replicas without a prepare or commit for its
    digest; its votes still go to every replica. Before, the whole pre-prepare went to all of
    them on every retransmission while any lagged (~770 KB per slot in a notary cluster)."""
    patient = replace(CONFIG, request_timeout_ticks=10 * CONFIG.retransmit_ticks)
    primary = Replica(patient, 0, KEYS.signer(0), KEYS.verify, request_ok=KEYS.request_ok)
    primary.step(ClientRequest(REQS[0]))
    primary.step(ClientRequest(REQS[1]))
    primary.ready()
    digest = batch_digest(REQS[:2])
    primary.step(vote("prepare", 1, 0, 1, digest))
    primary.step(vote("commit", 2, 0, 1, digest))
    primary.step(vote("prepare", 3, 0, 1, b"x" * 32))  # another digest proves nothing
    primary.ready()
    primary.tick(CONFIG.retransmit_ticks)  # the pre-prepare is younger than a pass: not yet
    primary.ready()
    primary.tick(2 * CONFIG.retransmit_ticks)
    sent: dict[str, set[int]] = {}
    for peer, envelope in primary.ready().send:
        kind = replica_pb2.ReplicaMessage.FromString(envelope.payload).WhichOneof("body")
        sent.setdefault(str(kind), set()).add(peer)
    assert sent["pre_prepare"] == {3}


def sent_kinds(replica: Replica) -> list[tuple[int, str]]:
    """(peer, body kind) of every message the replica's next effects send."""
    out = []
    for peer, envelope in replica.ready().send:
        kind = replica_pb2.ReplicaMessage.FromString(envelope.payload).WhichOneof("body")
        out.append((peer, str(kind)))
    return out


def test_a_vote_sent_since_the_last_retransmission_pass_waits_for_the_next() -> None:
    """Retransmission is for lost messages: a vote younger than one pass is on its way, and
    resending it cost every other replica a verification and a step (at n = 13 under load,
    1-4 extra prepares per slot). It goes again at the pass after, and every pass after that
    while its slot is undecided."""
    patient = replace(CONFIG, request_timeout_ticks=10 * CONFIG.retransmit_ticks)
    backup = Replica(patient, 1, KEYS.signer(1), KEYS.verify, request_ok=KEYS.request_ok)
    every = CONFIG.retransmit_ticks
    backup.tick(every - 1)
    backup.ready()
    backup.step(pre_prepare(0, 1, REQS[:2]))
    assert "prepare" in {k for _p, k in sent_kinds(backup)}  # voted at tick every - 1
    backup.tick(every)  # one tick old: not resent
    assert [k for _p, k in sent_kinds(backup) if k == "prepare"] == []
    backup.tick(2 * every)
    assert sorted(p for p, k in sent_kinds(backup) if k == "prepare") == [0, 2, 3]
    backup.tick(3 * every)  # still undecided: again
    assert sorted(p for p, k in sent_kinds(backup) if k == "prepare") == [0, 2, 3]


def probes(replica: Replica) -> list[int]:
    """Peers the replica's next effects send a catch-up probe (StateRequest) to."""
    return sorted(p for p, k in sent_kinds(replica) if k == "state_request")


def test_a_replica_that_executed_since_the_last_probe_tick_does_not_probe() -> None:
    """The periodic probe is for a replica that stopped: one that executed since the previous
    probe tick learns decisions from the normal case (at n = 13 the probes were ~5 of a
    backup's ~32 messages per slot, and as many received). Once it executes nothing for a
    whole probe period, it probes again, to every peer."""
    patient = replace(CONFIG, request_timeout_ticks=10 * CONFIG.probe_ticks)
    backup = Replica(patient, 2, KEYS.signer(2), KEYS.verify, request_ok=KEYS.request_ok)
    every = CONFIG.probe_ticks
    backup.tick(every)
    assert probes(backup) == [0, 1, 3]  # the first probe tick: no earlier mark, it probes
    _decide_at(backup, 1, REQS[:2])
    assert backup.next_exec == 2
    backup.tick(2 * every)
    assert probes(backup) == []  # it executed since the previous probe tick
    backup.tick(3 * every)
    assert probes(backup) == [0, 1, 3]  # stalled for a whole period: it probes


def test_an_idle_replica_backs_off_its_probe_and_one_with_work_waiting_does_not() -> None:
    """With nothing executed and nothing pending a replica probes at its first probe period,
    then 1, 2 and 4 periods of idleness later, then every 8th (an idle 13-replica channel
    verified ~12 probes a second per replica, ~23 ms of CPU a second each); a pending request
    puts it back to one probe every period."""
    patient = replace(CONFIG, request_timeout_ticks=100 * CONFIG.probe_ticks)
    backup = Replica(patient, 2, KEYS.signer(2), KEYS.verify, request_ok=KEYS.request_ok)
    every = CONFIG.probe_ticks
    probed = []
    for period in range(1, 27):
        backup.tick(period * every)
        if probes(backup):
            probed.append(period)
    assert probed == [1, 2, 3, 5, 9, 17, 25]
    backup.step(ClientRequest(REQS[0]))
    backup.ready()
    for period in range(27, 31):
        backup.tick(period * every)
        assert probes(backup) == [0, 1, 3]


def test_a_replica_proven_behind_keeps_probing_while_it_executes() -> None:
    """Catching up executes fetched batches, which is progress too: a replica proven behind
    since the previous probe tick (`note_behind`) probes at the next one all the same, or it
    would fetch one reply's worth of batches and then wait a period per reply."""
    patient = replace(CONFIG, request_timeout_ticks=10 * CONFIG.probe_ticks)
    backup = Replica(patient, 2, KEYS.signer(2), KEYS.verify, request_ok=KEYS.request_ok)
    every = CONFIG.probe_ticks
    backup.tick(every)
    backup.ready()
    _decide_at(backup, 1, REQS[:2])
    backup.tick(every + 1)
    backup.note_behind()  # e.g. it executed batches a state reply fetched
    backup.tick(2 * every)
    assert probes(backup) == [0, 1, 3]


def test_a_primary_that_leaves_the_oldest_request_out_still_meets_the_timer() -> None:
    """Executing other requests does not restart the timer of the one it times: a primary
    that decides everything but the oldest request is left within the timeout."""
    backup = replica(2)
    for request in REQS[:3]:
        backup.step(ClientRequest(request))
    backup.ready()
    for seq, request in ((1, REQS[1]), (2, REQS[2])):
        for _ in range(2):
            backup.tick(backup.now + 1)
        _decide_at(backup, seq, [request])
        backup.ready()
    assert list(backup.pending) == [request_id(REQS[0])]
    while backup.now < CONFIG.request_timeout_ticks:
        backup.tick(backup.now + 1)
    assert (backup.view, backup.changing) == (1, True)


def _is_view_change(envelope: Envelope, view: int) -> bool:
    if not isinstance(envelope, replica_pb2.SignedReplicaMessage):
        return False
    message = replica_pb2.ReplicaMessage.FromString(envelope.payload)
    return message.HasField("view_change") and message.view_change.new_view == view


def test_invalid_client_request_is_rejected_and_not_forwarded() -> None:
    backup = replica(1)
    backup.step(ClientRequest(b"c0.1|not-a-valid-mac"))
    out = backup.ready()
    assert [r.reason for _, r in out.replies] == ["INVALID_REQUEST"] and not out.send


def test_state_transfer_accepts_only_certified_batches() -> None:
    digest = batch_digest(REQS[:2])
    commits = [vote("commit", r, 0, 1, digest) for r in (0, 1, 2)]
    good = replica_pb2.DecidedBatch(
        view=0, sequence=1, digest=digest, requests=REQS[:2], commits=commits
    )
    forged = replica_pb2.DecidedBatch()
    forged.CopyFrom(good)
    del forged.commits[2]
    lagging = replica(3)
    reply = replica_pb2.ReplicaMessage(state_reply=replica_pb2.StateReply(batches=[forged]))
    lagging.step(signed(0, reply))
    assert not lagging.ready().decided and lagging.counters["bad-commit-certificate"] == 1
    reply = replica_pb2.ReplicaMessage(state_reply=replica_pb2.StateReply(batches=[good]))
    lagging.step(signed(0, reply))
    assert [d.sequence for d in lagging.ready().decided] == [1]


def _history() -> list[Record]:
    """Records of a backup that decided 8 requests (several stable checkpoints)."""
    cluster = Cluster()
    for i, request in enumerate(REQS):
        cluster.replicas[i % 4].step(ClientRequest(request))
        cluster.flush(i % 4)
    cluster.settle()
    cluster.tick(3)
    assert cluster.replicas[1].stable_seq >= 4
    return cluster.storage[1]


def _state(r: Replica) -> tuple[object, ...]:
    return (
        r.view,
        r.changing,
        r.next_exec,
        r.state_digest,
        r.low,
        r.stable_seq,
        set(r.executed_ids),
    )


def test_restart_from_a_compacted_log_restores_the_same_state() -> None:
    full = _history()
    stable = max(r.sequence for r in full if isinstance(r, StableRecord))
    compacted = compact(full, stable, stable - 1)
    assert len(compacted) < len(full)
    restored_full, restored_compacted = replica(1, full), replica(1, compacted)
    assert _state(restored_compacted)[:6] == _state(restored_full)[:6]
    assert restored_full.next_exec == len(REQS) // CONFIG.batch_size_max + 1


async def test_record_store_compacts_exactly_like_the_simulator(tmp_path: Path) -> None:
    full = _history()
    stable = max(r.sequence for r in full if isinstance(r, StableRecord))
    store = await RecordStore.open(tmp_path / "records.sqlite")
    try:
        await store.append(full)
        await store.compact(stable, stable - 1)
        assert await store.load() == compact(full, stable, stable - 1)
    finally:
        await store.close()


def test_the_primary_judges_alone_once_per_request_however_long_it_waits() -> None:
    """As primary, every admitted request runs `propose`, which looked at every waiting
    request's `alone` (a parse of its header) again: ~n^2/2 parses per batch of n."""
    alone = CountingLone()

    config = PbftConfig(n=4, batch_size_max=100)
    primary = Replica(
        config, 0, KEYS.signer(0), KEYS.verify, request_ok=KEYS.request_ok, alone=alone
    )
    requests = [KEYS.make_request(0, 100 + i) for i in range(100)]
    for request in requests:
        primary.step(ClientRequest(request))
    (pp,) = [m for _peer, m in primary.ready().send if _peer == 1]
    body = replica_pb2.ReplicaMessage.FromString(pp.payload).pre_prepare
    assert list(body.requests) == requests
    assert alone.calls <= len(requests)
