"""Dissemination: availability certificates, batch storing and acking, assembly, restart."""

from __future__ import annotations

import cProfile
import pstats
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pbft_messages import KEYS, CountingLone, garbled, pre_prepare, signed

from dltmw.core.pbft import ClientRequest, Decided, Envelope, PbftConfig, batch_digest, request_id
from dltmw.core.pbft.assembly import AssembledRecord, compact_assembled
from dltmw.core.pbft.availability import (
    AvailabilityRule,
    BatchKey,
    ack_message,
    expiry_slots,
    make_certificate,
    parse_certificate,
)
from dltmw.core.pbft.certs import Checker
from dltmw.core.pbft.disseminating import DisseminatingReplica
from dltmw.core.pbft.dissemination import (
    BatchFromStore,
    BatchRecord,
    DisseminationConfig,
    Disseminator,
)
from dltmw.core.pbft.recent import Recent
from dltmw.core.pbft.recovery import compaction_floor
from dltmw.v1 import replica_pb2

CONFIG = PbftConfig(n=4, checkpoint_interval=4, batch_size_max=4, carried=True)
CHECKER = Checker(CONFIG, KEYS.verify, batch_digest, lambda _r: True)
DIS = DisseminationConfig(batch_count_max=2, batch_wait_ticks=2, retransmit_ticks=5)
REQS = [KEYS.make_request(0, i) for i in range(6)]
DIGEST = batch_digest(REQS[:2])


def ack(by: int, origin: int = 1, seq: int = 1, digest: bytes = DIGEST) -> Envelope:
    return signed(by, ack_message(origin, seq, digest))


def cert(acks: list[Envelope], origin: int = 1, seq: int = 1, digest: bytes = DIGEST) -> bytes:
    return make_certificate(origin, seq, digest, 2, acks)


def core(
    me: int, records: list[Any] | None = None, config: PbftConfig = CONFIG
) -> DisseminatingReplica:
    sign = KEYS.signer(me)
    if records is None:
        return DisseminatingReplica(config, me, sign, KEYS.verify, DIS, KEYS.request_ok)
    return DisseminatingReplica.restore(
        config, me, sign, KEYS.verify, DIS, records, KEYS.request_ok
    )


def kinds(effects_send: tuple[tuple[int, Envelope], ...]) -> list[tuple[int, str | None]]:
    out = []
    for peer, envelope in effects_send:
        message = replica_pb2.ReplicaMessage()
        message.ParseFromString(envelope.payload)
        out.append((peer, message.WhichOneof("body")))
    return out


def batch_message(
    origin: int, seq: int, envelopes: list[bytes], digest: bytes | None = None, formed_at: int = 0
) -> Envelope:
    body = replica_pb2.Batch(
        batch_sequence=seq,
        digest=batch_digest(envelopes) if digest is None else digest,
        envelopes=envelopes,
        formed_at=formed_at,
    )
    return signed(origin, replica_pb2.ReplicaMessage(batch=body))


# -- availability certificates -------------------------------------------------------------


@pytest.mark.parametrize(
    ("acks", "ok"),
    [
        ([ack(1), ack(2)], True),
        ([ack(1), ack(2), ack(3)], True),
        ([ack(1)], False),
        ([ack(1), ack(1)], False),
        ([ack(1), garbled(ack(2))], False),
        ([ack(1), ack(2, digest=batch_digest(REQS[2:4]))], False),
        ([ack(1), ack(2, seq=2)], False),
        ([ack(1), ack(2, origin=3)], False),
        ([ack(1), Envelope(payload=ack(1).payload, replica=2, signature=ack(1).signature)], False),
    ],
    ids=[
        "f+1-distinct-acks-prove-availability",
        "more-than-f+1-acks-too",
        "f-acks-do-not",
        "one-signer-twice-counts-once",
        "a-garbled-ack-does-not-count",
        "an-ack-of-another-digest-does-not-count",
        "an-ack-of-another-batch-sequence-does-not-count",
        "an-ack-of-another-origin-does-not-count",
        "an-ack-claiming-another-signer-does-not-count",
    ],
)
def test_availability_certificate(acks: list[Envelope], ok: bool) -> None:
    assert AvailabilityRule(CHECKER)(cert(acks)) is ok


def test_an_ack_of_another_epoch_does_not_count() -> None:
    other = replica_pb2.ReplicaMessage()
    other.CopyFrom(ack_message(1, 1, DIGEST))
    other.epoch = 7
    assert not AvailabilityRule(CHECKER)(cert([ack(1), signed(2, other)]))


def test_junk_is_not_a_certificate() -> None:
    rule = AvailabilityRule(CHECKER)
    assert not rule(b"\xff\xff not a certificate")
    assert not rule(make_certificate(9, 1, DIGEST, 2, [ack(1), ack(2)]))  # unknown origin


SIGNERS = st.lists(
    st.tuples(st.integers(0, 3), st.sampled_from(["good", "garbled", "other-digest"])),
    max_size=6,
)


@settings(max_examples=200, deadline=None)
@given(SIGNERS)
def test_certificate_check_matches_a_naive_count(acks: list[tuple[int, str]]) -> None:
    """Property: accepted iff at least f+1 distinct replicas sent a good ack (naive model)."""
    envelopes = []
    for by, how in acks:
        if how == "good":
            envelopes.append(ack(by))
        elif how == "garbled":
            envelopes.append(garbled(ack(by)))
        else:
            envelopes.append(ack(by, digest=bytes(32)))
    expected = len({by for by, how in acks if how == "good"}) >= CONFIG.f + 1
    assert AvailabilityRule(CHECKER)(cert(envelopes)) is expected


# -- forming, storing, acking --------------------------------------------------------------


def test_an_origin_signs_a_full_batch_once_persists_it_and_sends_it_to_every_other() -> None:
    origin = core(1)
    for request in REQS[:2]:
        origin.step(ClientRequest(request))
    effects = origin.ready()
    assert [type(r) for r in effects.persist] == [BatchRecord]
    assert sorted(kinds(effects.send)) == [(0, "batch"), (2, "batch"), (3, "batch")]


def test_a_replica_acks_a_batch_only_with_it_persisted_and_only_one_digest_per_key() -> None:
    replica = core(2)
    replica.step(batch_message(1, 1, REQS[:2]))
    first = replica.ready()
    assert [type(r) for r in first.persist] == [BatchRecord]  # durable before the ack leaves
    assert kinds(first.send) == [(1, "batch_ack")]
    replica.step(batch_message(1, 1, REQS[2:4]))  # the origin equivocates
    second = replica.ready()
    assert kinds(second.send) == []
    assert replica.counters["equivocating-batch"] == 1
    replica.step(batch_message(1, 1, REQS[:2]))  # the first again: acked again (ack lost?)
    assert kinds(replica.ready().send) == [(1, "batch_ack")]


@pytest.mark.parametrize(
    "bad",
    [
        garbled(batch_message(1, 1, REQS[:2])),
        batch_message(1, 1, REQS[:2], digest=batch_digest(REQS[2:4])),
        batch_message(1, 0, REQS[:2]),
        batch_message(1, 1, REQS[:3]),  # above batch_count_max
    ],
    ids=["bad-signature", "digest-mismatch", "batch-sequence-zero", "too-many-envelopes"],
)
def test_a_forged_or_malformed_batch_is_neither_stored_nor_acked(bad: Envelope) -> None:
    replica = core(2)
    replica.step(bad)
    effects = replica.ready()
    assert (effects.persist, effects.send) == ((), ())


def test_f_plus_1_acks_make_a_certificate_that_the_replica_forwards_to_the_primary() -> None:
    origin = core(1)
    for request in REQS[:2]:
        origin.step(ClientRequest(request))
    sent = origin.ready().send
    batch = next(e for peer, e in sent if peer == 2)
    store = core(2)
    store.step(batch)
    ack_env = store.ready().send[0][1]
    origin.step(ack_env)
    effects = origin.ready()
    forwarded = [e for peer, e in effects.send if peer == 0]
    assert forwarded, "the certificate goes to the primary"
    message = replica_pb2.ReplicaMessage()
    message.ParseFromString(forwarded[0].payload)
    certificate = parse_certificate(message.forwarded.requests[0])
    assert certificate is not None
    assert sorted(e.replica for e in certificate.acks) == [1, 2]
    assert b"".join(REQS[:2]) not in forwarded[0].payload  # digests travel, not envelopes


def test_a_restarted_origin_never_reuses_a_batch_sequence() -> None:
    origin = core(1)
    for request in REQS[:2]:
        origin.step(ClientRequest(request))
    records = list(origin.ready().persist)
    again = core(1, records)
    for request in REQS[2:4]:
        again.step(ClientRequest(request))
    sent = again.ready().send
    seqs = set()
    for _peer, envelope in sent:
        message = replica_pb2.ReplicaMessage()
        message.ParseFromString(envelope.payload)
        if message.WhichOneof("body") == "batch" and set(message.batch.envelopes) == set(REQS[2:4]):
            seqs.add(message.batch.batch_sequence)
    assert seqs == {2}


def test_assembly_takes_each_batch_key_once_and_each_envelope_once() -> None:
    replica = core(2)
    replica.step(batch_message(1, 1, REQS[:2]))
    replica.step(batch_message(3, 1, [REQS[1], REQS[2]]))
    replica.ready()
    c1 = cert([ack(1), ack(2)])
    c1b = cert([ack(1), ack(3)])  # the same batch, another certificate
    d3 = batch_digest([REQS[1], REQS[2]])
    c3 = make_certificate(3, 1, d3, 2, [ack(3, 3, 1, d3), ack(2, 3, 1, d3)])
    got = replica.resolver
    from dltmw.core.pbft import Decided

    got.push(Decided(0, 1, b"d", (c1, c1b, c3), (), (c1, c1b, c3)))
    out = got.resolve(replica.disseminator.stored)
    assert [d.requests for _r, d in out] == [(REQS[0], REQS[1], REQS[2])]
    assert isinstance(out[0][0], AssembledRecord)
    assert [b[:2] for b in out[0][0].batches] == [(1, 1), (3, 1)]


def test_a_missing_batch_is_fetched_from_a_replica_that_acked_it() -> None:
    replica = core(0)
    from dltmw.core.pbft import Decided

    c1 = cert([ack(2), ack(3)])
    replica.resolver.push(Decided(0, 1, b"d", (c1,), (), (c1,)))
    assert replica.resolver.resolve(replica.disseminator.stored) == []
    fetches = replica.resolver.take_fetches()
    assert [(peer, m.WhichOneof("body")) for peer, m in fetches] == [(2, "batch_fetch")]
    server = core(2)
    server.step(batch_message(1, 1, REQS[:2]))
    server.ready()
    fetch = signed(0, fetches[0][1])
    server.step(fetch)
    answer = server.ready().send
    assert kinds(answer) == [(0, "batch")]
    replica.step(answer[0][1])
    effects = replica.ready()
    assert [d.requests for d in effects.decided] == [tuple(REQS[:2])]


def test_a_missing_batch_is_fetched_from_the_ackers_then_from_every_other_replica() -> None:
    """The ackers may have compacted the batch while this replica was behind, and a replica
    that never acked it may hold it: after the ackers, every other replica is asked. (Asking
    the ackers alone, two replicas each waited for good for the batch the other held.)"""
    from dltmw.core.pbft import Decided

    replica = core(0)
    c1 = cert([ack(2), ack(3)])
    replica.resolver.push(Decided(0, 1, b"d", (c1,), (), (c1,)))
    assert replica.resolver.resolve(replica.disseminator.stored) == []
    asked = [peer for peer, _m in replica.resolver.take_fetches()]
    for _ in range(3):
        replica.resolver.retry()
        asked += [peer for peer, _m in replica.resolver.take_fetches()]
    assert asked == [2, 3, 1, 2]


def test_a_batch_in_the_chain_leaves_memory_and_its_fetch_is_answered_from_the_store() -> None:
    """With `chain_batches_from_store` (the runtime's setting) a batch the chain took keeps
    neither its envelopes nor its signed message in memory, and a fetch of it becomes a
    `BatchFromStore` for the executor (which reads the record store) instead of a send; a
    batch not in the chain yet is still answered from memory. A restarted replica holds the
    batches of its retained slots the same way."""
    dis = replace(DIS, chain_batches_from_store=True)
    server = DisseminatingReplica(CONFIG, 2, KEYS.signer(2), KEYS.verify, dis, KEYS.request_ok)
    server.step(batch_message(1, 1, REQS[:2]))
    server.step(batch_message(3, 1, REQS[2:4]))
    records = list(server.ready().persist)
    c1 = cert([ack(1), ack(2)])
    server.resolver.push(Decided(0, 1, b"d", (c1,), (), (c1,)))
    effects = server.ready()
    assert [d.requests for d in effects.decided] == [tuple(REQS[:2])]
    records += effects.persist
    key = (BatchKey(1, 1), DIGEST)
    assert server.disseminator.stored[key].envelope is None
    assert server.disseminator.stored[key].envelopes == ()
    fetch = replica_pb2.ReplicaMessage(
        batch_fetch=replica_pb2.BatchFetch(origin=1, batch_sequence=1, digest=DIGEST)
    )
    server.step(signed(0, fetch))
    server.step(signed(0, fetch))  # asked twice in one step: read once
    assert server.ready().send == ()
    assert server.take_from_store() == [BatchFromStore(0, BatchKey(1, 1), DIGEST)]
    assert server.take_from_store() == []
    d3 = batch_digest(REQS[2:4])  # not in the chain: served from memory as before
    server.step(
        signed(
            0,
            replica_pb2.ReplicaMessage(
                batch_fetch=replica_pb2.BatchFetch(origin=3, batch_sequence=1, digest=d3)
            ),
        )
    )
    assert kinds(server.ready().send) == [(0, "batch")]
    restarted = DisseminatingReplica.restore(
        CONFIG, 2, KEYS.signer(2), KEYS.verify, dis, records, KEYS.request_ok
    )
    assert restarted.disseminator.stored[key].envelope is None
    assert restarted.disseminator.stored[(BatchKey(3, 1), d3)].envelope is not None


LONE = KEYS.make_request(0, 50, lone=True)


def lone_core(me: int) -> DisseminatingReplica:
    sign = KEYS.signer(me)
    return DisseminatingReplica(
        CONFIG, me, sign, KEYS.verify, DIS, KEYS.request_ok, alone=KEYS.lone
    )


def test_a_batch_mixing_a_lone_envelope_with_others_is_never_acked() -> None:
    replica = lone_core(2)
    replica.step(batch_message(1, 1, [REQS[0], LONE]))
    assert kinds(replica.ready().send) == []
    assert replica.counters["batch-mixes-a-lone-request"] == 1


def test_a_lone_envelope_is_batched_alone_and_its_certificate_says_so() -> None:
    origin = lone_core(1)
    for request in (REQS[0], LONE, REQS[1]):
        origin.step(ClientRequest(request))
    origin.tick(DIS.batch_wait_ticks)
    sent = origin.ready().send
    batches = {}
    for peer, envelope in sent:
        message = replica_pb2.ReplicaMessage()
        message.ParseFromString(envelope.payload)
        if peer == 2 and message.WhichOneof("body") == "batch":
            batches[message.batch.batch_sequence] = (list(message.batch.envelopes), envelope)
    assert [b[0] for _s, b in sorted(batches.items())] == [[REQS[0]], [LONE], [REQS[1]]]
    store = lone_core(2)
    store.step(batches[2][1])
    origin.step(store.ready().send[0][1])
    effects = origin.ready()
    message = replica_pb2.ReplicaMessage()
    message.ParseFromString(next(e for peer, e in effects.send if peer == 0).payload)
    certificate = parse_certificate(message.forwarded.requests[0])
    assert certificate is not None and certificate.alone
    assert AvailabilityRule(CHECKER)(certificate.SerializeToString())
    certificate.alone = False  # a faulty origin denies it: the acks no longer match
    assert not AvailabilityRule(CHECKER)(certificate.SerializeToString())


# -- the de-duplication window (`recent.Recent`) --------------------------------------------

WINDOW = 2
NEW = KEYS.make_request(0, 60)
SLOTS = [(1, 1, REQS[0:2]), (3, 1, REQS[2:4]), (1, 2, REQS[4:6]), (2, 1, [REQS[0], NEW])]


def windowed_core(me: int, records: list[Any] | None = None) -> DisseminatingReplica:
    return core(me, records, replace(CONFIG, decided_retain=WINDOW))


def slot_of(
    seq: int, origin: int, batch_seq: int, envelopes: list[bytes], formed_at: int | None = None
) -> Decided:
    """Slot `seq` ordering one certificate; its batch formed at `formed_at` (default: the slot
    before, so that it is live in `seq` whatever the expiry)."""
    formed = seq - 1 if formed_at is None else formed_at
    digest = batch_digest(envelopes)
    voters = [origin, next(r for r in (1, 2, 3) if r != origin)]
    acks = [signed(r, ack_message(origin, batch_seq, digest, False, formed)) for r in voters]
    certificate = make_certificate(origin, batch_seq, digest, len(envelopes), acks, False, formed)
    return Decided(0, seq, b"d", (certificate,), (), (certificate,))


def test_assembly_forgets_alike_running_or_restarted_from_the_windows_records() -> None:
    """An envelope the chain took more than `decided_retain` slots ago is in a later block
    again, on a replica that ran throughout and on one rebuilt from the records compaction
    keeps alike: block content stays a function of the chain. (With an unbounded memory the
    running replica skipped it and the restarted one did not: two different blocks.)"""
    running = windowed_core(0)
    for formed, (origin, batch_seq, envelopes) in enumerate(SLOTS):
        running.step(batch_message(origin, batch_seq, envelopes, formed_at=formed))
    records = list(running.ready().persist)
    blocks: list[tuple[bytes, ...]] = []
    for seq, (origin, batch_seq, envelopes) in enumerate(SLOTS[:3], start=1):
        running.resolver.push(slot_of(seq, origin, batch_seq, envelopes))
        assembled = running.resolver.resolve(running.disseminator.stored)
        records.extend(record for record, _done in assembled)
        blocks.extend(done.requests for _record, done in assembled)
    assert blocks == [tuple(REQS[0:2]), tuple(REQS[2:4]), tuple(REQS[4:6])]
    floor = compaction_floor(stable_seq=3, delivered=3, retain=WINDOW)
    kept = compact_assembled(records, floor, expiry_slots(WINDOW))
    restarted = windowed_core(0, kept)
    last = slot_of(4, *SLOTS[3])
    got = []
    for replica in (running, restarted):
        replica.resolver.push(last)
        ((_record, done),) = replica.resolver.resolve(replica.disseminator.stored)
        got.append(done.requests)
    assert got[0] == got[1] == (REQS[0], NEW)


def test_a_new_groups_blocks_do_not_depend_on_what_each_replica_knew_of_the_old_group() -> None:
    """At a replica-set change the new group's replica takes what the old group's replica here
    knew to be in the chain (`carry`); a replica that restarted after the boundary, or joined
    the group by fetching blocks, knows none of it. An old envelope that a new batch carries
    again is in the new group's block on both alike (the peers mark that copy DUPLICATE_TXID),
    and the replica it was carried to still knows it in the chain: resubmitted, it is answered
    as executed and not batched again. Goes red with `carry` feeding assembly's window (what
    `executed_ids.add(0, ...)` did before): the replica that ran through skips REQS[0], the
    other does not — two blocks, no quorum (cfg-pbft-members-dissemination, seed 1)."""
    old = Recent[bytes](WINDOW)
    old.add(7, [request_id(REQS[0]), request_id(REQS[5])])
    ran_through, joined = windowed_core(0), windowed_core(0)
    ran_through.carry(old)
    blocks = []
    for replica in (ran_through, joined):
        replica.step(batch_message(1, 1, [REQS[0], NEW], formed_at=0))
        replica.resolver.push(slot_of(1, 1, 1, [REQS[0], NEW]))
        ((_record, done),) = replica.resolver.resolve(replica.disseminator.stored)
        blocks.append(done.requests)
    assert blocks[0] == blocks[1] == (REQS[0], NEW)
    assert request_id(REQS[5]) in ran_through.executed_ids
    assert request_id(REQS[5]) not in joined.executed_ids
    for replica in (ran_through, joined):
        replica.step(ClientRequest(REQS[5]))
    assert request_id(REQS[5]) not in ran_through.disseminator.intake
    assert request_id(REQS[5]) in joined.disseminator.intake


def test_a_jump_records_the_windows_slots_and_a_restart_knows_them() -> None:
    """Slots jumped over are assembled slots without batches: the window holds their
    envelopes, before and after a restart."""
    replica = windowed_core(0)
    batches = [(seq, tuple(envelopes)) for seq, (_o, _b, envelopes) in enumerate(SLOTS, 1)]
    assert replica.jump(batches)
    persisted = list(replica.ready().persist)
    jumped = [r for r in persisted if isinstance(r, AssembledRecord)]
    assert [(r.sequence, r.batches) for r in jumped] == [(3, ()), (4, ())]
    expected = {request_id(e) for e in [*REQS[4:6], REQS[0], NEW]}
    assert set(replica.executed_ids) == expected
    assert set(windowed_core(0, persisted).executed_ids) == expected


def test_assembly_behind_execution_moves_over_fetched_blocks_alone() -> None:
    """Execution can run ahead of assembly: a slot's certificate executed, its batch compacted
    by every replica before this one fetched it. Fetched blocks then move assembly alone (the
    agreeing replica is not jumped again); before, the jump was refused because execution was
    past them, and this replica never assembled a slot again."""
    from dltmw.core.pbft import Decided

    replica = core(0)
    c1 = cert([ack(2), ack(3)])  # batch 1/1, which replica 0 never got
    assert replica.replica.jump([(1, (c1,))])  # its certificate executed (state transfer)
    replica.resolver.push(Decided(0, 1, b"d", (c1,), (), (c1,)))
    assert replica.resolver.resolve(replica.disseminator.stored) == []
    replica.ready()
    assert (replica.next_exec, replica.next_block) == (2, 1)
    assert not replica.jump([(2, tuple(REQS[2:4]))])  # not the next block: refused
    assert replica.jump([(1, tuple(REQS[:2]))])
    assert (replica.next_exec, replica.next_block) == (2, 2)
    assert not replica.resolver.queue and replica.replica.counters["jumped"] == 1
    assert {request_id(e) for e in REQS[:2]} <= set(replica.executed_ids)
    persisted = replica.ready().persist
    assert [(r.sequence, r.batches) for r in persisted if isinstance(r, AssembledRecord)] == [
        (1, ())
    ]


# -- Nagle's rule: a short batch leaves when none of the origin's own is in flight ---------


def batches_sent(effects_send: tuple[tuple[int, Envelope], ...]) -> list[list[bytes]]:
    """The envelopes of each batch sent to replica 2 (every batch goes to every other)."""
    out = []
    for peer, envelope in effects_send:
        message = replica_pb2.ReplicaMessage.FromString(envelope.payload)
        if peer == 2 and message.WhichOneof("body") == "batch":
            out.append(list(message.batch.envelopes))
    return out


def test_drained_cuts_a_short_batch_at_once_only_while_none_of_ours_is_in_flight() -> None:
    """Every batch costs a whole slot whatever its size, so a short one leaves on the drained
    event only when the origin has nothing in flight; the envelopes that come meanwhile wait
    for the batch in flight to reach the chain and then leave together."""
    origin = core(1)
    origin.step(ClientRequest(REQS[0]))
    assert batches_sent(origin.ready().send) == []  # below the batch size
    origin.drained()
    assert batches_sent(origin.ready().send) == [[REQS[0]]]  # nothing in flight: at once
    origin.step(ClientRequest(REQS[1]))
    origin.drained()
    assert batches_sent(origin.ready().send) == []  # batch 1 is in flight: REQS[1] waits
    origin.step(ClientRequest(REQS[2]))  # two waiting: a full batch leaves at once anyway
    assert batches_sent(origin.ready().send) == [[REQS[1], REQS[2]]]
    origin.step(ClientRequest(REQS[3]))
    origin.disseminator.included(BatchKey(1, 1), [request_id(REQS[0])], batch_digest(REQS[:1]))
    origin.drained()
    assert batches_sent(origin.ready().send) == []  # batch 2 is still in flight
    origin.disseminator.included(
        BatchKey(1, 2), [request_id(r) for r in REQS[1:3]], batch_digest(REQS[1:3])
    )
    origin.drained()
    assert batches_sent(origin.ready().send) == [[REQS[3]]]  # all in the chain: at once


def test_a_short_batch_still_leaves_on_the_timer_while_one_of_ours_is_in_flight() -> None:
    """Liveness: a batch in flight that never reaches the chain (its certificate lost, the
    primary slow) does not hold the next envelopes beyond the batch timeout."""
    origin = core(1)
    origin.step(ClientRequest(REQS[0]))
    origin.drained()
    assert batches_sent(origin.ready().send) == [[REQS[0]]]
    origin.step(ClientRequest(REQS[1]))
    origin.tick(DIS.batch_wait_ticks - 1)
    assert batches_sent(origin.ready().send) == []
    origin.tick(DIS.batch_wait_ticks)
    assert batches_sent(origin.ready().send) == [[REQS[1]]]


# -- cutting without a pass over the intake per envelope ------------------------------------


def naive_cut(
    intake: list[bytes], config: DisseminationConfig, full_only: bool, waited: bool
) -> list[list[bytes]]:
    """The cutting rule as first written (one pass over the whole intake per call, `alone`
    judged in each pass): the reference the incremental `Disseminator.cut` must equal."""
    out = []
    while intake:
        batch: list[bytes] = []
        size = 0
        for envelope in intake:
            lone = KEYS.lone(envelope)
            if batch and (
                lone
                or len(batch) >= config.batch_count_max
                or size + len(envelope) > config.batch_bytes_max
            ):
                break
            batch.append(envelope)
            size += len(envelope)
            if lone:
                break
        full = len(batch) < len(intake) or len(batch) >= config.batch_count_max
        full = full or (len(batch) == 1 and KEYS.lone(batch[0]))
        if not full and (full_only or not waited):
            break
        del intake[: len(batch)]
        out.append(batch)
    return out


@settings(max_examples=200, deadline=None)
@given(
    ops=st.lists(
        st.one_of(
            st.tuples(st.just("submit"), st.booleans(), st.integers(0, 40)),
            st.tuples(st.just("wait"), st.booleans(), st.just(0)),
            st.tuples(st.just("now"), st.booleans(), st.just(0)),
            st.tuples(st.just("delivered"), st.booleans(), st.integers(0, 40)),
        ),
        max_size=60,
    ),
    count_max=st.integers(1, 5),
    bytes_max=st.integers(60, 200),
)
def test_incremental_cutting_forms_the_batches_of_the_per_pass_rule(
    ops: list[tuple[str, bool, int]], count_max: int, bytes_max: int
) -> None:
    """Batches formed by the intake's running bytes and lone ids equal those of the rule that
    re-read the whole intake on every envelope (sizes near the bytes bound, lone envelopes,
    the timer and `now` cuts, and envelopes leaving the intake for the chain interleaved)."""
    config = DisseminationConfig(
        batch_count_max=count_max, batch_bytes_max=bytes_max, batch_wait_ticks=1
    )
    checker = Checker(CONFIG, KEYS.verify, batch_digest, lambda _r: True)
    d = Disseminator(checker, 1, KEYS.signer(1), config, lambda _e: True, KEYS.lone)
    formed: list[list[bytes]] = []

    def form(envelopes: tuple[bytes, ...], ids: tuple[bytes, ...]) -> None:
        assert ids == tuple(request_id(e) for e in envelopes)  # the intake's ids, in order
        formed.append(list(envelopes))

    d._form = form  # type: ignore[method-assign]
    model: list[bytes] = []
    expected: list[list[bytes]] = []
    for i, (op, lone, pad) in enumerate(ops):
        if op == "submit":
            envelope = KEYS.make_request(0, i, lone=lone) + b"x" * pad
            d.submit(envelope, lambda _e: False)
            if len(envelope) <= bytes_max:  # a larger one is refused
                model.append(envelope)
            d.cut(full_only=True)
            expected += naive_cut(model, config, full_only=True, waited=False)
        elif op == "wait":
            d.now += 1  # the oldest waited a tick: batch_wait_ticks
            d.cut(full_only=False)
            expected += naive_cut(model, config, full_only=False, waited=True)
        elif op == "delivered":  # another replica's batch took one: it leaves the intake
            if model:
                gone = model.pop(pad % len(model))
                d.delivered([request_id(gone)])
                d.cut(full_only=True)
                expected += naive_cut(model, config, full_only=True, waited=False)
        else:
            d.cut(full_only=False, now=True)
            expected += naive_cut(model, config, full_only=False, waited=True)
        assert formed == expected
        assert list(d.intake.values()) == model
        assert d.intake_bytes == sum(len(e) for e in model)


def test_alone_is_judged_once_per_envelope_however_long_it_waits() -> None:
    """The origin judged every waiting envelope again (`alone` parses its header) on every
    envelope it admitted: ~n^2/2 parses per batch of n (the primary's hottest code at n = 4)."""
    alone = CountingLone()

    config = DisseminationConfig(batch_count_max=100, batch_wait_ticks=4)
    origin = DisseminatingReplica(
        CONFIG, 1, KEYS.signer(1), KEYS.verify, config, KEYS.request_ok, alone=alone
    )
    requests = [KEYS.make_request(0, 100 + i) for i in range(100)]
    for request in requests:
        origin.step(ClientRequest(request))
    assert batches_sent(origin.ready().send) == [requests]
    assert alone.calls <= len(requests) + 1  # + the formed batch's own lone check


# -- certificate expiry (docs/ordering.md, "Certificate expiry") ---------------------------

EXPIRING = replace(CONFIG, decided_retain=8)  # a certificate is live 4 slots after forming
OTHERS = [KEYS.make_request(0, 100 + i) for i in range(8)]  # the rest of the chain's traffic


def expiring_core(me: int, records: list[Any] | None = None) -> DisseminatingReplica:
    return core(me, records, EXPIRING)


def test_a_certificate_is_assembled_only_in_the_slots_after_its_batch_was_formed() -> None:
    """Formed at height F, a batch's certificate is live in slots F+1 .. F+E: elsewhere every
    replica skips it, and nothing is fetched for it (no replica may hold it any more). A live
    one whose batch is missing is fetched as before."""
    assert expiry_slots(EXPIRING.decided_retain) == 4
    replica = expiring_core(0)
    replica.resolver.assembled_upto = 4
    expired = slot_of(5, 1, 1, REQS[0:2], formed_at=0)  # 0 + 4 < 5
    ahead = slot_of(6, 1, 2, REQS[2:4], formed_at=6)  # stamped at or after its slot
    for decided in (expired, ahead):
        replica.resolver.push(decided)
    done = [d.requests for _r, d in replica.resolver.resolve(replica.disseminator.stored)]
    assert done == [(), ()]
    assert replica.resolver.take_fetches() == []
    replica.resolver.push(slot_of(7, 1, 3, REQS[4:6], formed_at=3))  # live: 3 < 7 <= 3 + 4
    assert replica.resolver.resolve(replica.disseminator.stored) == []
    assert [m.WhichOneof("body") for _p, m in replica.resolver.take_fetches()] == ["batch_fetch"]


def test_after_a_jump_a_certificate_formed_before_the_jumped_slots_waits_for_the_block() -> None:
    """A replica that jumped over blocks does not know which batches those slots took. A live
    certificate formed before the last jumped slot may be one of them (the others skip it): the
    replica neither assembles nor fetches it, and takes the others' block instead. Before, it
    assembled the batch again and its block differed. The jumped slots are marked in the
    records, so a restart waits alike; certificates formed after the jump assemble as usual."""
    replica = expiring_core(0)
    assert replica.jump([(s, (OTHERS[s],)) for s in (1, 2, 3)])
    persisted = list(replica.ready().persist)
    assert all(r.jumped for r in persisted if isinstance(r, AssembledRecord))
    assert expiring_core(0, persisted).resolver.blind_upto == 3
    replica.step(batch_message(1, 1, REQS[0:2], formed_at=1))
    replica.ready()
    replica.resolver.push(slot_of(4, 1, 1, REQS[0:2], formed_at=1))
    assert replica.resolver.resolve(replica.disseminator.stored) == []
    assert replica.resolver.uncertain == 4 and replica.resolver.take_fetches() == []
    assert replica.jump([(4, tuple(REQS[0:2]))])  # the others' block 4
    assert replica.resolver.uncertain is None and replica.next_block == 5
    replica.step(batch_message(2, 1, REQS[2:4], formed_at=4))
    replica.ready()
    replica.resolver.push(slot_of(5, 2, 1, REQS[2:4], formed_at=4))
    ((_record, done),) = replica.resolver.resolve(replica.disseminator.stored)
    assert done.requests == tuple(REQS[2:4])


def test_an_own_batch_the_chain_did_not_take_in_time_is_batched_again() -> None:
    """An origin whose batch was not in the chain within its expiry gives the envelopes back to
    its intake; they leave in a new batch (a new key) formed at the current height. Without
    it they would wait in a batch no slot can take."""
    origin = expiring_core(1)
    for request in REQS[0:2]:
        origin.step(ClientRequest(request))
    assert batches_sent(origin.ready().send)[0] == REQS[0:2]  # batch 1, formed at 0
    assert origin.jump([(s, (OTHERS[s],)) for s in (1, 2, 3, 4)])  # the chain, without it
    assert origin.disseminator.own == {} and list(origin.disseminator.intake.values()) == REQS[0:2]
    assert origin.counters["own-batch-expired"] == 1
    origin.tick(DIS.batch_wait_ticks)
    sent = origin.ready().send
    message = replica_pb2.ReplicaMessage.FromString(sent[0][1].payload)
    assert list(message.batch.envelopes) == REQS[0:2]
    assert (message.batch.batch_sequence, message.batch.formed_at) == (2, 4)


def test_expired_acks_are_forgotten_and_a_key_at_or_below_them_is_never_acked_again() -> None:
    """The one digest acked per key is kept only while the batch can still be ordered: the
    acks of a long run stay bounded. Then the origin's batches at or below that key are
    refused (an honest origin formed them earlier, so they expired too), so a key is still
    acked once; an unordered batch that expired leaves the store."""
    store = expiring_core(2)
    store.step(batch_message(1, 1, REQS[0:2], formed_at=0))
    assert kinds(store.ready().send) == [(1, "batch_ack")]
    assert store.jump([(s, (OTHERS[s],)) for s in (1, 2, 3, 4)])
    assert BatchKey(1, 1) not in store.disseminator.acked
    assert store.disseminator.floor == {1: 1} and store.disseminator.stored == {}
    assert store.counters["stored-batch-expired"] == 1
    store.step(batch_message(1, 1, REQS[2:4], formed_at=4))  # the same key, another digest
    assert acks_sent(store) == []
    assert store.counters["batch-expired"] == 1
    store.step(batch_message(1, 2, REQS[2:4], formed_at=4))
    assert acks_sent(store) == [(1, "batch_ack")]


def acks_sent(replica: DisseminatingReplica) -> list[tuple[int, str | None]]:
    return [k for k in kinds(replica.ready().send) if k[1] == "batch_ack"]


# -- intake: what the node's client boundary judged already ----------------------------------


def test_an_envelope_the_boundary_admitted_is_not_judged_again_and_others_still_are() -> None:
    """Broadcast ran the ordering rule (with the clock) on the replica a client reached; the
    core judged every envelope again on the event loop (~0.15 ms each on the primary). An
    envelope not marked admitted (a caller that did not check it) is still judged, and refused
    when inadmissible."""
    judged: list[bytes] = []

    def request_ok(request: bytes) -> bool:
        judged.append(request)
        return KEYS.request_ok(request)

    config = DisseminationConfig(batch_count_max=4, batch_wait_ticks=4)
    origin = DisseminatingReplica(CONFIG, 1, KEYS.signer(1), KEYS.verify, config, request_ok)
    admitted = [KEYS.make_request(0, 200 + i) for i in range(3)]
    for request in admitted:
        origin.step(ClientRequest(request, admitted=True, request_id=request_id(request)))
    assert judged == []
    unjudged = KEYS.make_request(0, 300)
    origin.step(ClientRequest(unjudged))
    assert judged == [unjudged]
    assert batches_sent(origin.ready().send) == [[*admitted, unjudged]]
    junk = b"\x00 not a request"
    origin.step(ClientRequest(junk))
    assert [r.reason for _rid, r in origin.ready().replies] == ["INVALID_REQUEST"]


def test_the_certificate_verdicts_are_two_generations_the_newest_always_kept(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Decision (availability.AvailabilityRule): verdicts in two generations of
    `CACHE_GENERATION`: never more than two generations held, the newest generation always
    answered from memory (a certificate is checked at intake and again at prepare), an older
    one dropped whole and checked again when it comes back — with the same verdict."""
    from dltmw.core.pbft import availability

    monkeypatch.setattr(availability, "CACHE_GENERATION", 8)
    checks: list[int] = []
    real = availability.certificate_error

    def counted(checker: Checker, c: replica_pb2.AvailabilityCertificate) -> str | None:
        checks.append(c.batch_sequence)
        return real(checker, c)

    monkeypatch.setattr(availability, "certificate_error", counted)
    rule = AvailabilityRule(CHECKER)
    certs = [cert([ack(1, seq=s), ack(2, seq=s)], seq=s) for s in range(1, 41)]
    bad = cert([ack(1, seq=99)], seq=99)  # f acks only
    for i, c in enumerate(certs):
        assert rule(c)
        assert len(rule) <= 2 * 8
        for newer in certs[max(0, i - 7) : i + 1]:  # the newest 8: answered, not checked
            before = len(checks)
            assert rule(newer) and len(checks) == before
    assert not rule(bad) and not rule(bad) and checks.count(99) == 1
    assert rule(certs[0]) and checks.count(1) == 2  # dropped long ago: checked again, same verdict


def _parses(call: Any) -> int:
    """Protobuf parses (`ParseFromString`, any message) made while `call()` runs."""
    profile = cProfile.Profile()
    profile.runcall(call)
    stats = pstats.Stats(profile).stats  # type: ignore[attr-defined]
    return sum(s[0] for (_f, _l, name), s in stats.items() if "ParseFromString" in name)


def test_a_replica_parses_an_arriving_batch_once() -> None:
    """A batch is the largest replica message (up to a block's envelopes): routing it by kind
    and opening it share one parse of its payload."""
    replica = core(2)
    message = batch_message(1, 1, REQS[:2])
    assert _parses(lambda: replica.step(message)) == 1
    assert kinds(replica.ready().send) == [(1, "batch_ack")]  # and it was taken


# -- one certificate per slot (the block bound) ---------------------------------------------


@pytest.mark.parametrize(
    ("slot_max", "certificates", "prepared"),
    [(1, 1, True), (1, 2, False), (0, 2, True)],
    ids=[
        "one-certificate-is-prepared",
        "two-certificates-are-refused-where-a-slot-orders-one",
        "two-certificates-pass-where-no-slot-bound-is-set",
    ],
)
def test_a_backup_prepares_no_slot_naming_more_certificates_than_the_slot_bound(
    slot_max: int, certificates: int, prepared: bool
) -> None:
    """The runtime's disseminating replicas order one certificate per slot (a block is one
    batch, at most `max_tx_count` envelopes): a faulty primary's pre-prepare naming several
    valid certificates — a block of several batches, above the channel's bound — is refused
    by a correct backup (`PbftConfig.slot_requests_max`). Red without the bound in
    `Checker.batch_error`: the second case prepares."""
    config = replace(CONFIG, slot_requests_max=slot_max)
    second = batch_digest(REQS[2:4])
    certs = [
        cert([ack(1), ack(2)]),
        cert([ack(3, origin=3, digest=second), ack(2, origin=3, digest=second)], 3, 1, second),
    ][:certificates]
    backup = core(2, config=config)
    backup.step(pre_prepare(0, 1, certs, by=0))
    effects = backup.ready()
    assert ("prepare" in {kind for _peer, kind in kinds(effects.send)}) is prepared
    assert (backup.counters["batch-too-large"] == 0) is prepared


def test_real_nodes_bound_a_disseminating_slot_to_one_certificate() -> None:
    """The runtime's protocol parameters: one certificate per slot with dissemination, no
    extra bound on the envelope path (its slots are bounded by `batch_size_max`)."""
    from dltmw.runtime.roles.orderer.pbft import replica_config

    assert replica_config(4, 100, dissemination=True).slot_requests_max == 1
    assert replica_config(4, 100).slot_requests_max == 0
