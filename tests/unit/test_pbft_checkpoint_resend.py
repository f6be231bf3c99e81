"""A lost checkpoint vote never strands the group: a stalled replica sends its votes again.

A checkpoint vote was sent once, when its sequence executed. With one replica silent and the
votes between the others lost once (a link that dropped them, a crash right before the send),
no replica held 2f+1 matching votes: nothing proven, every replica at the top of its window
for good. `Checkpoints.resend_checkpoints` sends our votes from the low watermark up again
when we stalled with work waiting (`probe_if_stalled`), as PBFT retransmits its checkpoint
messages.
"""

from __future__ import annotations

from pbft_messages import KEYS

from dltmw.core.pbft import ClientRequest, Envelope, PbftConfig, Record, Replica
from dltmw.v1 import replica_pb2

CONFIG = PbftConfig(
    n=4, checkpoint_interval=2, batch_size_max=2, probe_ticks=5, request_timeout_ticks=1000
)
REQS = [KEYS.make_request(0, i) for i in range(16)]
LOSSY = {(0, 1), (0, 2), (1, 0), (2, 0)}


def replica(me: int, records: list[Record] | None = None) -> Replica:
    if records is not None:
        return Replica.restore(
            CONFIG, me, KEYS.signer(me), KEYS.verify, records, request_ok=KEYS.request_ok
        )
    return Replica(CONFIG, me, KEYS.signer(me), KEYS.verify, request_ok=KEYS.request_ok)


def kind(envelope: Envelope) -> str:
    return str(replica_pb2.ReplicaMessage.FromString(envelope.payload).WhichOneof("body"))


class Cluster:
    """Four replicas wired directly; replica 3 silent (cut); on the links between replica 0
    and replicas 1 and 2 the first copy of each checkpoint vote is lost."""

    def __init__(self) -> None:
        self.replicas = [replica(i) for i in range(4)]
        self.storage: list[list[Record]] = [[] for _ in range(4)]
        self.queue: list[tuple[int, int, Envelope]] = []
        self.lost: set[tuple[int, int, bytes]] = set()

    def flush(self, i: int) -> None:
        out = self.replicas[i].ready()
        self.storage[i].extend(out.persist)
        if i != 3:
            self.queue.extend((i, dst, env) for dst, env in out.send)

    def settle(self) -> None:
        for _ in range(20_000):
            if not self.queue:
                return
            src, dst, env = self.queue.pop(0)
            if dst == 3:
                continue
            if (src, dst) in LOSSY and kind(env) == "checkpoint":
                key = (src, dst, env.payload)
                if key not in self.lost:
                    self.lost.add(key)
                    continue
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
            for i in range(3):
                self.replicas[i].tick(self.replicas[i].now + 1)
                self.flush(i)
            self.settle()


def test_votes_lost_once_are_sent_again_and_the_group_moves_past_its_window() -> None:
    """Replica 3 silent, the first copy of every vote between replica 0 and replicas 1, 2
    lost: each correct replica holds two votes per checkpoint, so the group stops at the top
    of its window (sequence 4 with interval 2). Stalled with requests waiting, each replica
    sends its votes again: checkpoints are proven, the window moves and everything submitted
    executes. Red without `resend_checkpoints`: stable checkpoint 0, next sequence 5 for
    good."""
    cluster = Cluster()
    cluster.submit(REQS[:12])
    cluster.tick(2)
    assert all(r.next_exec == 5 and r.stable_seq == 0 for r in cluster.replicas[:3])
    cluster.tick(6 * CONFIG.probe_ticks)
    for r in cluster.replicas[:3]:
        assert r.next_exec == 7, "the 12 requests (6 batches) executed"
        assert r.stable_seq >= 4
        assert r.counters["checkpoint-vote-resent"] > 0


def test_a_vote_lost_in_a_crash_right_before_its_send_is_cast_after_the_restart() -> None:
    """A restart replays what the replica executed without voting: the vote its crash lost is
    cast when it stalls (with nothing of its own in hand, it signs it), and then counts."""
    cluster = Cluster()
    cluster.submit(REQS[:8])
    cluster.tick(2)
    restarted = replica(0, cluster.storage[0])
    assert restarted.next_exec == 5 and not restarted.checkpoints
    restarted.step(ClientRequest(REQS[8]))
    restarted.ready()
    restarted.tick(CONFIG.probe_ticks)  # the first periodic probe: no earlier mark
    restarted.ready()
    restarted.tick(2 * CONFIG.probe_ticks)
    sent = restarted.ready().send
    votes = {
        replica_pb2.ReplicaMessage.FromString(e.payload).checkpoint.sequence
        for _peer, e in sent
        if kind(e) == "checkpoint"
    }
    assert votes == {2, 4}
    assert sorted(restarted.checkpoints[4]) == [0]


def resent(r: Replica) -> list[int]:
    """Sequences of the checkpoint votes the replica's next effects send (one per peer)."""
    sent = [e for _p, e in r.ready().send if kind(e) == "checkpoint"]
    return [replica_pb2.ReplicaMessage.FromString(e.payload).checkpoint.sequence for e in sent]


def test_the_primary_left_below_gets_the_votes_of_its_idle_peers() -> None:
    """Only the first copy of replica 0's votes to replicas 1 and 2 is lost: they prove the
    checkpoint with its vote resent and are then idle (what they were given executed), while
    replica 0, the primary, still lacks their votes and is stuck at its window's top with
    requests waiting. The idle replicas resend with their backed-off probes, and replica 0
    proves it and goes on. Red without the idle replicas' resend: replica 0 stays at 5."""
    cluster = Cluster()
    cluster.submit(REQS[:12])
    cluster.tick(2)
    primary, backups = cluster.replicas[0], cluster.replicas[1:3]
    for period in (1, 2):  # only the primary ticks: at its second probe it resends its votes
        primary.tick(period * CONFIG.probe_ticks)
        cluster.flush(0)
        cluster.settle()
    assert all(b.stable_seq == 4 and not b.pending for b in backups)
    assert primary.stable_seq == 0
    cluster.tick(10 * CONFIG.probe_ticks)
    assert primary.stable_seq >= 4 and primary.next_exec == 7


def test_only_a_stalled_replica_resends_and_an_idle_one_only_with_its_probes() -> None:
    """A replica that executed since the previous probe period sends its votes once, as
    before (even one proven behind, which probes all the same); an idle one resends only with
    the probes it still makes (1, 2 and 4 idle periods in, then every 8th); none at the first
    probe (no period observed before it)."""
    every = CONFIG.probe_ticks
    cluster = Cluster()
    backup = cluster.replicas[1]
    backup.tick(every)  # the first probe tick: nothing observed before it
    assert resent(backup) == []
    cluster.submit(REQS[:4])
    assert backup.next_exec == 3 and not backup.pending and backup.low == 0
    backup.note_behind()  # as if it executed fetched batches: it probes, but it progressed
    backup.tick(2 * every)
    sent = [kind(e) for _p, e in backup.ready().send]
    assert sent == ["state_request"] * 3
    resent_at = []
    for period in range(3, 20):
        backup.tick(period * every)
        if resent(backup):
            resent_at.append(period)
    assert resent_at == [3, 4, 6, 10, 18]  # idle periods 1, 2, 4, 8, 16


def test_a_jumped_replica_resends_no_vote_at_or_above_its_jump() -> None:
    """The abstention after a jump (`send_checkpoint`) holds for the resend too (`jumped_upto`
    set by hand here; a real jump, and the checkpoints inside it: test_pbft_jump_abstain.py)."""
    cluster = Cluster()
    cluster.submit(REQS[:12])
    cluster.tick(2)
    stuck = cluster.replicas[1]
    stuck.jumped_upto = 4  # as if sequences up to 4 were jumped over
    stuck.resend_checkpoints()
    assert resent(stuck) == [2, 2, 2]


def test_the_resend_at_low_sends_only_our_vote_for_it_from_a_peers_proof() -> None:
    """A proof taken from a peer's state reply is checked for 2f+1 matching votes only: a
    byzantine peer can put any envelope of ours in it, e.g. an old state request. The resend
    at `low` broadcasts only our checkpoint vote at `low` for its digest (here: none of ours
    in the proof, so it signs one). Red without `_our_vote`: the state request goes out."""
    cluster = Cluster()
    cluster.submit(REQS[:12])
    cluster.tick(6 * CONFIG.probe_ticks)
    source, behind = cluster.replicas[0], cluster.replicas[3]  # 3: silent, executed nothing
    assert source.stable_seq == source.low >= 4 and behind.next_exec == 1
    behind.probe()
    (own_probe,) = {e.payload: e for _p, e in behind.ready().send}.values()
    assert kind(own_probe) == "state_request"
    reply = replica_pb2.StateReply(
        batches=[source.decided[s] for s in range(1, source.low + 1)],
        stable_sequence=source.low,
        stable_proof=[own_probe, *source.low_proof],
    )
    behind.on_state_reply(1, reply)
    behind.ready()
    assert behind.stable_seq == source.low and behind.low_proof[0] == own_probe
    behind.resend_checkpoints()
    sent = [replica_pb2.ReplicaMessage.FromString(e.payload) for _p, e in behind.ready().send]
    assert [m.WhichOneof("body") for m in sent] == ["checkpoint"] * 3
    assert {(m.checkpoint.sequence, m.checkpoint.state_digest) for m in sent} == {
        (source.low, source.low_digest)
    }
