"""A replica that jumped votes no checkpoint its jump chained, on any path, until adopted.

A jump chains its state digest over what the fetched blocks show; with dissemination that is
not what the group chained, at every checkpoint inside the jump as well as at its end. Were a
correct replica to vote such a digest (the stalled replica's resend, `resend_checkpoints`, found
no vote of its own inside the jump and signed one), two jumped replicas and one byzantine vote
would prove a digest no correct replica computed (review of probe60). `JumpRecord` names those
checkpoints; `Checkpoints.send_checkpoint` abstains at each of them (`jump_chained`) until the
low watermark passes it or an adoption re-chains it — live, after `adopt_vouched`, and after a
restart that replays the jump.
"""

from __future__ import annotations

from dltmw.core.pbft import ClientRequest, Envelope, PbftConfig, Record, Replica
from dltmw.core.pbft.types import ZERO_DIGEST, batch_digest, chain_state
from dltmw.sim.keys import Keys
from dltmw.v1 import replica_pb2

# Seven replicas (f = 2): f+1 others' votes and ours are one short of a quorum, so an adoption
# by `adopt_vouched` proves nothing by itself and the jump's checkpoints stay above `low`.
KEYS = Keys(7, 1)
ME = 6
CONFIG = PbftConfig(n=7, checkpoint_interval=2, batch_size_max=2, probe_ticks=5)
# What blocks show (with dissemination: envelopes, not the certificates the group chained).
SHOWN = [(s, (KEYS.make_request(0, 100 + s),)) for s in range(1, 7)]
GROUP = b"g" * 32  # the group's digest at 6 (any other than the jump's)


def replica(
    records: list[Record] | None = None,
    keys: Keys = KEYS,
    config: PbftConfig = CONFIG,
    me: int = ME,
) -> Replica:
    if records is not None:
        return Replica.restore(
            config, me, keys.signer(me), keys.verify, records, request_ok=keys.request_ok
        )
    return Replica(config, me, keys.signer(me), keys.verify, request_ok=keys.request_ok)


def checkpoint_vote(sender: int, sequence: int, digest: bytes, keys: Keys = KEYS) -> Envelope:
    vote = replica_pb2.Checkpoint(sequence=sequence, state_digest=digest)
    payload = replica_pb2.ReplicaMessage(checkpoint=vote).SerializeToString()
    return Envelope(payload=payload, replica=sender, signature=keys.signer(sender)(payload))


def votes_sent(r: Replica, records: list[Record] | None = None) -> set[tuple[int, bytes]]:
    """(sequence, digest) of the checkpoint votes the replica's next effects send."""
    out = r.ready()
    if records is not None:
        records.extend(out.persist)
    messages = [replica_pb2.ReplicaMessage.FromString(e.payload) for _p, e in out.send]
    return {
        (m.checkpoint.sequence, m.checkpoint.state_digest)
        for m in messages
        if m.WhichOneof("body") == "checkpoint"
    }


def stall(r: Replica, periods: int) -> set[tuple[int, bytes]]:
    """Tick `periods` probe periods with a request waiting (each one stalled): the votes sent."""
    r.step(ClientRequest(KEYS.make_request(0, 999)))  # (no primary: it waits)
    sent: set[tuple[int, bytes]] = set()
    for _ in range(periods):
        r.tick(r.now + r.config.probe_ticks)
        sent |= votes_sent(r)
    return sent


def jumped(records: list[Record] | None = None) -> Replica:
    """Replica 6, low watermark 0, jumped over 1..6: checkpoints 2, 4 and 6 chained by it."""
    r = replica()
    assert r.jump(SHOWN)
    assert r.low == 0 and r.jumped_upto == 6 and sorted(r.state_at) == [2, 4, 6]
    assert votes_sent(r, records) == set()
    return r


def vouch(r: Replica) -> None:
    """f+1 = 3 others vote the group's digest at the jump's end: `adopt_vouched` takes it
    (and with its own vote, four of the five a proof needs: `low` stays 0)."""
    for sender in (0, 1, 2):
        r.step(checkpoint_vote(sender, 6, GROUP))
    assert r.jumped_upto == 0 and r.state_at[6] == GROUP and r.low == 0
    assert r.counters["jump-state-vouched"] == 1


def test_a_stalled_jumped_replica_resends_no_vote_inside_its_jump() -> None:
    """Two (here three) stalled periods after a jump from low 0: the resend casts no vote at
    2 or 4 (nor 6: the jump's end, `jumped_upto`). Red without `jump_chained` in
    `send_checkpoint` / `resend_checkpoints`: votes at 2 and 4 with the jump's digests."""
    r = jumped()
    assert stall(r, 3) == set()
    assert not r.counters["checkpoint-vote-resent"]


def test_send_checkpoint_itself_abstains_inside_the_jump() -> None:
    """Every path that votes goes through `send_checkpoint`: it abstains there. Red without
    its `jump_chained` check (a vote at 2 with the jump's digest)."""
    r = jumped()
    r.send_checkpoint(2)
    r.send_checkpoint(4)
    assert votes_sent(r) == set()


def test_after_adopt_vouched_only_the_adopted_checkpoint_is_voted() -> None:
    """`adopt_vouched` re-chains from the adopted sequence (6) on and clears `jumped_upto`: the
    checkpoints below it (2, 4) are still the jump's, and stay unvoted while the replica
    stalls; the adopted one is voted and resent. Red without `jump_chained`: the resend votes
    2 and 4 with the jump's digests (nothing guarded them once `jumped_upto` was 0)."""
    r = jumped()
    vouch(r)
    assert votes_sent(r) == {(6, GROUP)}
    assert stall(r, 3) == {(6, GROUP)}


def test_a_vouched_digest_equal_to_the_jumps_is_voted_at_the_jump_end_only() -> None:
    """Without dissemination a jump chains the group's digests: f+1 others voting our own
    digest at the jump's end confirm it there (`adopt_vouched`), and we vote it; the ones
    below stay unvoted (harmless: the low watermark passes them once a later one is proven).
    Red without `adopt_vouched` taking the sequence out of `jump_chained`: no vote at 6."""
    r = jumped()
    ours = r.state_at[6]
    for sender in (0, 1, 2):
        r.step(checkpoint_vote(sender, 6, ours))
    assert r.jumped_upto == 0 and r.low == 0
    assert votes_sent(r) == {(6, ours)}
    assert stall(r, 3) == {(6, ours)}


def test_a_restart_that_replays_the_jump_keeps_the_abstention() -> None:
    """After a restart from the log (`restore_jump` replays the `JumpRecord`), the jump's
    checkpoints are unvoted again, even those an adoption before the crash had re-chained (it
    is not recorded: the others' votes come again). Red without `restore_jump` filling
    `jump_chained`: votes at 2 and 4 with the jump's digests."""
    records: list[Record] = []
    before = jumped(records)
    vouch(before)
    votes_sent(before, records)
    r = replica(records)
    assert r.jumped_upto == 6 and r.next_exec == 7
    assert stall(r, 3) == set()


def test_the_low_watermark_passing_a_jumped_checkpoint_releases_it() -> None:
    """An entry leaves `jump_chained` when the low watermark reaches it (no vote there counts
    any more): the set is bounded by the window."""
    r = jumped()
    proof = tuple(checkpoint_vote(i, 4, GROUP) for i in range(5))
    r.learn_checkpoint(4, GROUP, proof)
    assert r.jump_chained == {6}


def _decided(sequence: int) -> replica_pb2.DecidedBatch:
    """A batch executed normally (with a certificate) at `sequence`."""
    requests = [KEYS.make_request(0, 500 + sequence)]
    return replica_pb2.DecidedBatch(
        sequence=sequence, digest=batch_digest(requests), requests=requests
    )


def _shown(first: int, last: int) -> list[tuple[int, tuple[bytes, ...]]]:
    return [(s, (KEYS.make_request(0, 100 + s),)) for s in range(first, last + 1)]


def test_a_checkpoint_executed_after_the_jump_is_not_voted_once_a_later_one_is_adopted() -> None:
    """Jump over 1..5, then 6..8 executed normally — their digests are chained over the
    jump's, so still not the group's; f+1 others vouch the group's digest at 8 (the votes at 6
    lost): `_adopt` re-chains from 8 and clears `jumped_upto`, and nothing guarded 6 any more.
    The stalled replica must resend only its vote at 8. Red without adding the checkpoints
    executed while `jumped_upto` is set to `jump_chained` in `Replica.apply` (a vote at 6 with
    the jump-chained digest; review of probe60b)."""
    r = replica()
    assert r.jump(_shown(1, 5))
    assert votes_sent(r) == set()
    for sequence in range(6, 9):
        r.apply(_decided(sequence))
    assert votes_sent(r) == set()  # (abstains at 6 and 8: `jumped_upto`)
    for sender in (0, 1, 2):
        r.step(checkpoint_vote(sender, 8, GROUP))
    assert r.jumped_upto == 0 and r.state_at[8] == GROUP and r.low == 0
    assert votes_sent(r) == {(8, GROUP)}
    assert stall(r, 3) == {(8, GROUP)}


def test_a_checkpoint_between_two_jumps_is_not_voted_live_or_after_a_restart() -> None:
    """Jump over 1..5, 6..7 executed normally, a second jump over 8..11: `jumped_upto` is 11
    and 6 (chained over the first jump) is below it — it must stay unvoted, and again after a
    restart that replays the records. Red without the `Replica.apply` rule (a vote at 6)."""
    records: list[Record] = []
    r = replica()
    assert r.jump(_shown(1, 5))
    votes_sent(r, records)
    for sequence in (6, 7):
        r.apply(_decided(sequence))
    votes_sent(r, records)
    assert r.jump(_shown(8, 11))
    votes_sent(r, records)
    assert r.jumped_upto == 11 and 6 in r.jump_chained
    assert stall(r, 3) == set()
    restarted = replica(records)
    assert restarted.jumped_upto == 11 and 6 in restarted.jump_chained
    assert stall(restarted, 3) == set()


# Four plain replicas (no dissemination: a jump chains the group's digests), replica 3 crashed,
# replica 2 jumped: its votes are needed for every quorum.
KEYS4 = Keys(4, 1)
CONFIG4 = PbftConfig(n=4, checkpoint_interval=2, batch_size_max=2, probe_ticks=5)


def _requests4(sequence: int) -> list[bytes]:
    return [KEYS4.make_request(0, 100 + sequence)]


def _group4() -> dict[int, bytes]:
    """The group's digest at each checkpoint of sequences 1..8 (what replicas 0 and 1 chain)."""
    digests, state = {}, ZERO_DIGEST
    for sequence in range(1, 9):
        state = chain_state(state, batch_digest(_requests4(sequence)))
        if sequence % 2 == 0:
            digests[sequence] = state
    return digests


def _jumped4(last: int, upto: int) -> Replica:
    """Replica 2 jumped over 1..`last`, then executed `last`+1..`upto` (a state reply)."""
    r = replica(keys=KEYS4, config=CONFIG4, me=2)
    assert r.jump([(s, tuple(_requests4(s))) for s in range(1, last + 1)])
    votes_sent(r)
    for sequence in range(last + 1, upto + 1):
        requests = _requests4(sequence)
        r.apply(
            replica_pb2.DecidedBatch(
                sequence=sequence, digest=batch_digest(requests), requests=requests
            )
        )
    return r


def test_a_jump_whose_digest_is_proven_the_groups_votes_what_it_executed_after() -> None:
    """Jump over 1..4 ending at the group's low (4), 5..8 executed from a state reply, the
    stable proof at 4 handled after: `maybe_stable` finds our digest the group's, clears
    `jumped_upto` — and must vote 6 and 8 (chained over the group's digest), the votes replicas
    0 and 1 wait for at the top of their window (3 crashed). Red without dropping the entries
    above low from `jump_chained` there: no vote at 6 or 8 for good, the group stalled (review
    3 of the session's PBFT changes)."""
    group = _group4()
    r = _jumped4(4, 8)
    proof = tuple(checkpoint_vote(x, 4, group[4], KEYS4) for x in (0, 1, 3))
    r.learn_checkpoint(4, group[4], proof)
    assert r.low == 4 and r.jumped_upto == 0
    assert r.state_at[6] == group[6] and r.state_at[8] == group[8]
    assert votes_sent(r) == {(6, group[6]), (8, group[8])}


def test_a_jump_vouched_as_the_groups_votes_what_it_executed_after() -> None:
    """Jump over 1..5, 6..9 executed: f+1 others vouch our own digest at 6 — from 6 on it is
    the group's, so 8 is voted at once (not one checkpoint interval later, when the group
    proves past its old top). Red without dropping the entries at and above 6 in
    `adopt_vouched`'s equal branch (no vote at 8)."""
    r = _jumped4(5, 9)
    d6, d8 = r.state_at[6], r.state_at[8]
    votes_sent(r)
    for sender in (0, 1):
        r.step(checkpoint_vote(sender, 6, d6, KEYS4))
    assert r.jumped_upto == 0
    assert votes_sent(r) == {(6, d6), (8, d8)}
