"""Notary cluster, pure parts and store: wrapping, stamps, the batch decision, recovery, the
client's f+1 verdict, the spent-set store's batch transaction, and cluster declarations."""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path

import pytest

from dltmw.core.handlers.notary import Decision, Spent, hash_tx_id, signed
from dltmw.core.notary import NotarisationAsk
from dltmw.core.notary_batch import signed_message
from dltmw.core.notary_cluster import (
    ClusterDecider,
    OpenedBatch,
    Part,
    ReplicaAnswer,
    Unpacked,
    decide_batch,
    parts_of,
    stamp_fresh,
    unapplied,
    unwrap,
    verdict,
    wrap,
    wrap_parts,
)
from dltmw.core.utxo.model import Ref, Window
from dltmw.ledger.cluster_notary_store import ClusterNotaryStore
from dltmw.net.netmap import check_clusters
from dltmw.sim.notary_cluster import SpentSet
from dltmw.v1 import errors_pb2, identity_pb2, notary_cluster_pb2

R = errors_pb2
S = [Ref(hashlib.sha256(b"genesis").hexdigest(), i) for i in range(4)]


def sign(data: bytes) -> bytes:
    return b"sig:" + data


def signs(decision: Decision) -> bool:
    """The decision carries the fake signature over what its proof says was signed."""
    return decision.signature == sign(signed_message(decision.tx_id, decision.proof))


ANY_TIME = Window()


def ask(tx_id: str, *inputs: Ref, window: Window = ANY_TIME) -> NotarisationAsk:
    return NotarisationAsk(tx_id, tuple(inputs), (), window, b"")


# -- wrapping -----------------------------------------------------------------------------------


def test_wrap_round_trips_and_is_deterministic() -> None:
    raw = wrap([b"a", b"b"], 123, 2)
    assert raw == wrap([b"a", b"b"], 123, 2)
    opened = unwrap(raw, 4)
    assert opened is not None
    assert (list(opened.requests), opened.stamp_ns, opened.stamper) == ([b"a", b"b"], 123, 2)


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(b"\xff\xff", id="garbage"),
        pytest.param(wrap([], 1, 0), id="no-requests"),
        pytest.param(wrap([b"a"], 0, 0), id="no-stamp"),
        pytest.param(wrap([b"a"], 1, 4), id="stamper-outside-cluster"),
        pytest.param(wrap([b"a"] * 1001, 1, 0), id="too-many-requests"),
    ],
)
def test_unwrap_refuses_malformed_requests(raw: bytes) -> None:
    assert unwrap(raw, 4) is None


SIG = identity_pb2.Signature(signer=b"c", signature=b"s")


def _mixed() -> bytes:
    message = notary_cluster_pb2.ClusterNotaryRequest(requests=[b"a"], stamp_ns=1)
    message.parts.add(requests=[b"b"])
    return message.SerializeToString()


def _unsigned_hashes() -> bytes:
    message = notary_cluster_pb2.ClusterNotaryRequest(stamp_ns=1)
    message.parts.add(requests=[b"a"], batch_payload_hashes=[b"h" * 32])
    return message.SerializeToString()


def test_a_wrap_of_parts_round_trips_in_part_order() -> None:
    raw = wrap_parts([Part([b"a", b"b"]), Part([b"c"], SIG, [b"h" * 32])], 123, 2)
    opened = unwrap(raw, 4)
    assert opened is not None
    assert [list(p.requests) for p in parts_of(opened)] == [[b"a", b"b"], [b"c"]]
    assert parts_of(opened)[1].batch_signature == SIG
    legacy = unwrap(wrap([b"a"], 1, 0), 4)
    assert legacy is not None and [list(p.requests) for p in parts_of(legacy)] == [[b"a"]]


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(_mixed(), id="parts-and-top-level-requests"),
        pytest.param(wrap_parts([Part([b"a"]), Part([])], 1, 0), id="empty-part"),
        pytest.param(wrap_parts([Part([b"a"], SIG)], 1, 0), id="signed-part-without-hashes"),
        pytest.param(_unsigned_hashes(), id="hashes-without-signature"),
        pytest.param(wrap_parts([Part([b"a"] * 600)] * 2, 1, 0), id="too-many-over-parts"),
    ],
)
def test_unwrap_refuses_malformed_parts(raw: bytes) -> None:
    assert unwrap(raw, 4) is None


@pytest.mark.parametrize(
    ("stamp", "fresh"),
    [
        pytest.param(1000, True, id="equal"),
        pytest.param(1002, True, id="ahead-within-skew"),
        pytest.param(1003, False, id="ahead-beyond-skew"),
        pytest.param(990, True, id="behind-within-age"),
        pytest.param(989, False, id="older-than-age"),
    ],
)
def test_stamp_freshness_bounds(stamp: int, fresh: bool) -> None:
    assert stamp_fresh(stamp, 1000, skew_ns=2, age_ns=10) is fresh


# -- the batch decision -------------------------------------------------------------------------


def test_first_spend_in_agreed_order_wins_and_conflicts_name_only_the_hash() -> None:
    view = SpentSet()
    batch = [Unpacked(10, (ask("A", S[0]), ask("B", S[0], S[1]))), Unpacked(10, (ask("C", S[1]),))]
    out = decide_batch(batch, view, sign)
    a, b = out.decisions[0]
    (c,) = out.decisions[1]
    assert signs(a) and signs(c) and a.proof and c.proof
    assert a.signature == c.signature  # one batch, one signature over the root of A and C
    assert b.reason == R.ERROR_REASON_INPUT_CONSUMED
    assert [x.consuming_tx_id_hash for x in b.conflicts] == [hash_tx_id("A")]
    assert dict(out.spent.consumed) == {S[0]: "A", S[1]: "C"}


def test_time_window_is_judged_at_the_stamp_and_admission_refusals_pass_through() -> None:
    refused = Decision("", reason=R.ERROR_REASON_BAD_SIGNATURE, message="bad")
    late = ask("L", S[2], window=Window(until_ns=10))
    batch = [Unpacked(10, (late, refused)), Unpacked(9, (ask("M", S[2], window=Window(None, 10)),))]
    out = decide_batch(batch, SpentSet(), sign)
    assert out.decisions[0][0].reason == R.ERROR_REASON_TIME_WINDOW_INVALID
    assert out.decisions[0][1] is refused
    assert signs(out.decisions[1][0])


def test_applying_a_batch_again_changes_nothing_and_answers_the_same() -> None:
    view = SpentSet()
    batch = [Unpacked(10, (ask("A", S[0]), ask("B", S[0])))]
    first = decide_batch(batch, view, sign)
    view.consumed.update(first.spent.consumed)
    view.signed.update(first.spent.attestations())
    again = decide_batch(batch, view, sign)
    assert again.spent.consumed == () and again.spent.batches == ()
    assert again.decisions == first.decisions


def test_unapplied_lists_retained_batches_and_refuses_a_gap() -> None:
    assert unapplied({1: (), 2: (), 3: ()}, 1) == [2, 3]
    assert unapplied({1: ()}, 1) == []
    with pytest.raises(ValueError, match="no longer retained"):
        unapplied({5: (), 6: ()}, 3)


# -- the client's verdict -----------------------------------------------------------------------

CONFLICT = (b"h" * 32,)


@pytest.mark.parametrize(
    ("answers", "expected"),
    [
        pytest.param([ReplicaAnswer(0, b"s0"), ReplicaAnswer(2, b"s2")], "signed", id="f+1-sigs"),
        pytest.param([ReplicaAnswer(0, b"s0"), ReplicaAnswer(0, b"s0")], None, id="same-member"),
        pytest.param(
            [ReplicaAnswer(0, b"s0"), ReplicaAnswer(1, reason=9, conflict_hashes=CONFLICT)],
            None,
            id="sig-and-refusal-do-not-mix",
        ),
        pytest.param(
            [ReplicaAnswer(i, reason=9, conflict_hashes=CONFLICT) for i in (1, 3)],
            "refused",
            id="f+1-matching-refusals",
        ),
        pytest.param(
            [
                ReplicaAnswer(1, reason=9, conflict_hashes=CONFLICT),
                ReplicaAnswer(3, reason=9, conflict_hashes=(b"x" * 32,)),
            ],
            None,
            id="refusals-naming-different-consumers",
        ),
    ],
)
def test_verdict_needs_f_plus_1_matching_members(
    answers: list[ReplicaAnswer], expected: str | None
) -> None:
    out = verdict(answers, f=1)
    assert (None if out is None else "signed" if out.signed else "refused") == expected


# -- the decider and the store ------------------------------------------------------------------


def apply(
    store: ClusterNotaryStore, sequence: int, batch: list[Unpacked]
) -> tuple[tuple[Decision, ...], ...]:
    """One step of the decider's driver, by hand (a decider restored from the store each time,
    as after a restart): load the rows, step, record what was spent, return the answers."""
    asks = [i for u in batch for i in u.items if isinstance(i, NotarisationAsk)]
    decider = ClusterDecider(sign, store.applied())
    ids = tuple(bytes([i]) for i in range(len(batch)))
    decider.step(OpenedBatch(sequence, ids, tuple(batch), store.rows_for(asks)))
    effects = decider.ready()
    for spent in effects.decided:
        store.record(spent)
    assert [rid for rid, _ in effects.replies] == list(ids)
    return tuple(answers for _, answers in effects.replies)


def test_decider_sees_earlier_batches_of_one_step_and_spends_a_sequence_once() -> None:
    decider = ClusterDecider(sign, applied=1)
    view = SpentSet()
    decider.step(OpenedBatch(1, (b"r1",), (Unpacked(10, (ask("A", S[0]),)),), view))
    decider.step(OpenedBatch(2, (b"r2",), (Unpacked(10, (ask("B", S[0]),)),), view))
    decider.step(OpenedBatch(3, (b"r3",), (Unpacked(10, (ask("C", S[0]),)),), view))
    effects = decider.ready()
    assert [s.sequence for s in effects.decided] == [2, 3]  # batch 1 was applied already
    assert dict(effects.decided[0].consumed) == {S[0]: "B"}
    assert effects.decided[1].consumed == ()
    (_, (a,)), (_, (b,)), (_, (c,)) = effects.replies
    assert a.signature and b.signature  # the view never learnt of A: re-applied, both sign
    assert c.reason == R.ERROR_REASON_INPUT_CONSUMED  # B's spend of this step is seen
    assert decider.applied == 3 and decider.ready().is_empty()


def test_store_commits_a_batch_with_its_sequence_once(tmp_path: Path) -> None:
    store = ClusterNotaryStore(tmp_path / "n.sqlite", sign)
    store.open()
    try:
        batch = [Unpacked(10, (ask("A", S[0]), ask("B", S[0])))]
        first = store.run(lambda: apply(store, 1, batch))
        assert store.run(store.applied) == 1
        again = store.run(lambda: apply(store, 1, batch))  # replay after a crash: no INSERT fails
        assert again == first
        later = store.run(lambda: apply(store, 2, [Unpacked(11, (ask("C", S[0]),))]))
        assert later[0][0].conflicts[0].consuming_tx_id_hash == hash_tx_id("A")
        assert store.run(store.applied) == 2
        # the role answers already-signed tx_ids from here without ordering them again
        stored = store.run(lambda: store.signatures_of(["A", "B", "C"]))
        assert list(stored) == ["A"] and signs(signed("A", stored["A"]))
    finally:
        store.close()


def test_a_decider_step_of_several_batches_commits_them_in_one_transaction(
    tmp_path: Path,
) -> None:
    """Group commit (`DECIDER_BATCH_MAX`): the batches of one decider step are written all or
    none, with the last one's sequence; a batch that cannot be written (here a double spend the
    primary key refuses) takes the earlier batches of its step with it, so `applied` never
    claims a batch whose rows are missing and the restart re-applies the whole step."""
    store = ClusterNotaryStore(tmp_path / "n.sqlite", sign)
    store.open()
    try:
        decider = ClusterDecider(sign, applied=0)
        view = store.run(lambda: store.rows_for([]))
        for seq, (tx, ref) in enumerate([("A", S[0]), ("B", S[1]), ("C", S[2])], start=1):
            decider.step(OpenedBatch(seq, (bytes([seq]),), (Unpacked(10, (ask(tx, ref),)),), view))
        effects = decider.ready()
        assert [s.sequence for s in effects.decided] == [1, 2, 3]
        store.run(lambda: store.record_all(effects.decided))
        assert store.run(store.applied) == 3
        assert list(store.run(lambda: store.signatures_of(["A", "B", "C"]))) == ["A", "B", "C"]
        # a step whose second batch spends S[0] again (a wrong decision): nothing of it lands
        fresh = Spent(((S[3], "D"),), (), 4)
        double = Spent(((S[0], "E"),), (), 5)
        with pytest.raises(sqlite3.IntegrityError):
            store.run(lambda: store.record_all((fresh, double)))
        assert store.run(store.applied) == 3
        rows = store.run(lambda: store.rows_for([ask("x", S[3])]))
        assert rows.consumer_of(S[3]) is None  # batch 4 rolled back with batch 5
    finally:
        store.close()


# -- declarations -------------------------------------------------------------------------------


def _raw(members: list[str], roles: list[str] | None = None) -> dict[str, object]:
    nodes = [{"id": f"n{i}", "org": "O", "roles": roles or ["notary"]} for i in range(5)]
    return {"nodes": nodes, "notary_clusters": [{"id": "cl", "members": members}]}


@pytest.mark.parametrize(
    ("members", "roles", "message"),
    [
        pytest.param(["n0", "n1", "n2"], None, "3f\\+1", id="three-members"),
        pytest.param(["n0", "n1", "n2", "n3", "n4"], None, "3f\\+1", id="five-members"),
        pytest.param(["n0", "n0", "n1", "n2"], None, "3f\\+1", id="repeated-member"),
        pytest.param(["n0", "n1", "n2", "n3"], ["peer"], "not a free notary", id="not-notaries"),
        pytest.param(["n0", "n1", "n2", "x"], None, "not a free notary", id="unknown-node"),
    ],
)
def test_bad_cluster_declarations_are_refused(
    members: list[str], roles: list[str] | None, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        check_clusters(_raw(members, roles))


def test_a_cluster_id_must_not_be_a_channel_id() -> None:
    raw = _raw(["n0", "n1", "n2", "n3"])
    raw["channels"] = [{"id": "cl"}]
    with pytest.raises(ValueError, match="channel"):
        check_clusters(raw)


def test_a_good_cluster_declaration_passes() -> None:
    check_clusters(_raw(["n0", "n1", "n2", "n3"]))


def test_a_retry_in_a_later_batch_of_one_step_gets_the_same_signature_and_proof() -> None:
    """A tx_id signed by an earlier batch of the same step (not yet in the durable view) is
    answered again with that batch's signature and proof, and spends nothing new."""
    decider = ClusterDecider(sign, applied=0)
    view = SpentSet()
    decider.step(OpenedBatch(1, (b"r1",), (Unpacked(10, (ask("A", S[0]), ask("B", S[1]))),), view))
    decider.step(OpenedBatch(2, (b"r2",), (Unpacked(10, (ask("B", S[1]),)),), view))
    effects = decider.ready()
    (_, (_, first)), (_, (again,)) = effects.replies
    assert again.signature and (again.signature, again.proof) == (first.signature, first.proof)
    assert effects.decided[1].consumed == () and effects.decided[1].batches == ()
