"""PBFT-lite certificate rules: quorum sizes, prepared/commit/checkpoint proofs, new-view plans."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pbft_messages import KEYS, garbled, pre_prepare, signed, vote

from dltmw.core.pbft import Envelope, PbftConfig, batch_digest
from dltmw.core.pbft.certs import Checker, plan_new_view
from dltmw.v1 import replica_pb2

CONFIG = PbftConfig(n=4, checkpoint_interval=4, batch_size_max=4)
CHECKER = Checker(CONFIG, KEYS.verify, batch_digest, KEYS.request_ok)
REQS = [KEYS.make_request(0, i) for i in range(3)]
DIGEST = batch_digest(REQS)


@pytest.mark.parametrize(
    ("n", "f", "quorum"),
    [(4, 1, 3), (7, 2, 5), (10, 3, 7)],
    ids=["n4-tolerates-1", "n7-tolerates-2", "n10-tolerates-3"],
)
def test_quorum_sizes(n: int, f: int, quorum: int) -> None:
    config = PbftConfig(n=n)
    assert (config.f, config.quorum, config.primary(n + 1)) == (f, quorum, 1)
    assert config.window == 2 * config.checkpoint_interval


@pytest.mark.parametrize("n", [-1, 0, 1, 2, 3])
def test_group_needs_at_least_four_replicas(n: int) -> None:
    with pytest.raises(ValueError, match="at least 4"):
        PbftConfig(n=n)


@pytest.mark.parametrize("n", range(4, 32))
def test_any_group_size_quorums_intersect_in_a_correct_replica_and_stay_live(n: int) -> None:
    """A replica-set change gives sizes other than 3f+1 (4 -> 5): any two quorums still share
    f+1 replicas (one correct: safety) and the n-f correct replicas alone form one (liveness);
    for n = 3f+1 the quorum is 2f+1 exactly as before."""
    config = PbftConfig(n=n)
    f, q = config.f, config.quorum
    assert 2 * q - n >= f + 1
    assert q <= n - f
    assert (n - 1) % 3 or q == 2 * f + 1


def test_five_replicas_need_four() -> None:
    assert (PbftConfig(n=5).f, PbftConfig(n=5).quorum) == (1, 4)


PREPARES_OK = [vote("prepare", r, 0, 1, DIGEST) for r in (1, 2)]


@pytest.mark.parametrize(
    ("pp", "prepares", "valid"),
    [
        (pre_prepare(0, 1, REQS), PREPARES_OK, True),
        (pre_prepare(0, 1, REQS), PREPARES_OK[:1], False),
        (pre_prepare(0, 1, REQS), [PREPARES_OK[0], PREPARES_OK[0]], False),
        (pre_prepare(0, 1, REQS), [PREPARES_OK[0], vote("prepare", 0, 0, 1, DIGEST)], False),
        (pre_prepare(0, 1, REQS), [PREPARES_OK[0], garbled(PREPARES_OK[1])], False),
        (pre_prepare(0, 1, REQS), [PREPARES_OK[0], vote("prepare", 2, 0, 1, bytes(32))], False),
        (pre_prepare(0, 1, REQS), [PREPARES_OK[0], vote("prepare", 2, 1, 1, DIGEST)], False),
        (pre_prepare(0, 1, REQS, by=1), PREPARES_OK, False),
        (garbled(pre_prepare(0, 1, REQS)), PREPARES_OK, False),
        (pre_prepare(0, 1, [*REQS, b"invented|request"]), PREPARES_OK, False),
    ],
    ids=[
        "pre-prepare-and-2f-backup-prepares-is-prepared",
        "one-prepare-is-not-enough",
        "one-signer-counts-once",
        "primary-prepare-does-not-count",
        "garbled-prepare-signature-does-not-count",
        "prepare-for-another-digest-does-not-count",
        "prepare-of-another-view-does-not-count",
        "pre-prepare-must-come-from-the-primary",
        "garbled-pre-prepare-is-refused",
        "batch-with-a-request-no-client-made-is-refused",
    ],
)
def test_prepared_certificate(pp: Envelope, prepares: list[Envelope], valid: bool) -> None:
    cert = replica_pb2.PreparedCertificate(pre_prepare=pp, prepares=prepares)
    assert (CHECKER.prepared(cert) is not None) == valid


def decided(commits: list[Envelope], requests: list[bytes] = REQS) -> replica_pb2.DecidedBatch:
    return replica_pb2.DecidedBatch(
        view=0, sequence=1, digest=DIGEST, requests=requests, commits=commits
    )


COMMITS = [vote("commit", r, 0, 1, DIGEST) for r in (0, 1, 2)]


@pytest.mark.parametrize(
    ("batch", "valid"),
    [
        (decided(COMMITS), True),
        (decided(COMMITS[:2]), False),
        (decided([*COMMITS[:2], COMMITS[1]]), False),
        (decided([*COMMITS[:2], vote("commit", 3, 1, 1, DIGEST)]), False),
        (decided([*COMMITS[:2], garbled(vote("commit", 3, 0, 1, DIGEST))]), False),
        (decided(COMMITS, requests=REQS[:2]), False),
        (decided(COMMITS, requests=list(reversed(REQS))), False),
    ],
    ids=[
        "2f+1-distinct-commits-prove-the-batch",
        "2f-commits-do-not",
        "a-repeated-signer-counts-once",
        "a-commit-of-another-view-does-not-count",
        "a-forged-commit-does-not-count",
        "requests-must-match-the-digest",
        "request-order-is-part-of-the-digest",
    ],
)
def test_commit_certificate(batch: replica_pb2.DecidedBatch, valid: bool) -> None:
    assert CHECKER.committed(batch) == valid


def checkpoint(replica: int, seq: int, digest: bytes) -> Envelope:
    cp = replica_pb2.Checkpoint(sequence=seq, state_digest=digest)
    return signed(replica, replica_pb2.ReplicaMessage(checkpoint=cp))


@pytest.mark.parametrize(
    ("seq", "proof", "expected"),
    [
        (4, [checkpoint(r, 4, b"s" * 32) for r in (0, 1, 3)], b"s" * 32),
        (4, [checkpoint(r, 4, b"s" * 32) for r in (0, 1)], None),
        (
            4,
            [checkpoint(0, 4, b"s" * 32), checkpoint(1, 4, b"s" * 32), checkpoint(2, 4, b"t" * 32)],
            None,
        ),
        (8, [checkpoint(r, 4, b"s" * 32) for r in (0, 1, 3)], None),
        (0, [], bytes(32)),
    ],
    ids=["2f+1-matching", "2f-matching", "digests-disagree", "other-sequence", "genesis"],
)
def test_checkpoint_proof(seq: int, proof: list[Envelope], expected: bytes | None) -> None:
    assert CHECKER.checkpoint(seq, proof) == expected


def prepared_cert(view: int, seq: int, requests: list[bytes]) -> replica_pb2.PreparedCertificate:
    digest = batch_digest(requests)
    backups = [r for r in range(4) if r != view % 4][:2]
    return replica_pb2.PreparedCertificate(
        pre_prepare=pre_prepare(view, seq, requests),
        prepares=[vote("prepare", r, view, seq, digest) for r in backups],
    )


def view_change(
    replica: int, new_view: int, certs: list[replica_pb2.PreparedCertificate]
) -> Envelope:
    vc = replica_pb2.ViewChange(new_view=new_view, stable_sequence=0, prepared=certs)
    return signed(replica, replica_pb2.ReplicaMessage(view_change=vc))


def test_new_view_keeps_the_highest_view_certificate_and_fills_gaps_with_null() -> None:
    old, newer = [REQS[0]], [REQS[1]]
    infos = [
        CHECKER.view_change(
            view_change(1, 3, [prepared_cert(0, 1, old), prepared_cert(0, 3, REQS)])
        ),
        CHECKER.view_change(view_change(2, 3, [prepared_cert(2, 1, newer)])),
        CHECKER.view_change(view_change(3, 3, [])),
    ]
    assert all(i is not None for i in infos)
    plan = plan_new_view(CHECKER, [i for i in infos if i is not None])
    assert plan.low == 0
    assert [(s, r) for s, _, r in plan.batches] == [(1, tuple(newer)), (2, ()), (3, tuple(REQS))]


@pytest.mark.parametrize(
    "envelope",
    [
        view_change(1, 1, [prepared_cert(1, 1, REQS)]),
        view_change(1, 2, [prepared_cert(0, 1, REQS), prepared_cert(1, 1, REQS)]),
        view_change(1, 2, [prepared_cert(0, 17, REQS)]),
        garbled(view_change(1, 2, [])),
    ],
    ids=[
        "certificate-not-older-than-the-new-view",
        "two-certificates-for-one-sequence",
        "certificate-above-the-high-watermark",
        "bad-signature",
    ],
)
def test_invalid_view_changes_are_refused(envelope: Envelope) -> None:
    assert CHECKER.view_change(envelope) is None


@dataclass(frozen=True)
class Cert:
    replica: int
    seq: int
    view: int


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.builds(Cert, st.integers(1, 3), st.integers(1, 6), st.integers(0, 4)),
        max_size=8,
    )
)
def test_new_view_plan_matches_naive_model(certs: list[Cert]) -> None:
    """Property: per sequence, the plan re-proposes the batch of the highest view seen."""
    per_replica: dict[int, dict[int, Cert]] = {1: {}, 2: {}, 3: {}}
    for c in certs:
        per_replica[c.replica].setdefault(c.seq, c)
    batch_of = {v: [KEYS.make_request(0, 100 + v)] for v in range(5)}
    infos = []
    for replica, by_seq in per_replica.items():
        pcs = [prepared_cert(c.view, c.seq, batch_of[c.view]) for c in by_seq.values()]
        info = CHECKER.view_change(view_change(replica, 5, pcs))
        assert info is not None
        infos.append(info)
    plan = plan_new_view(CHECKER, infos)
    best: dict[int, int] = {}
    for by_seq in per_replica.values():
        for c in by_seq.values():
            best[c.seq] = max(best.get(c.seq, -1), c.view)
    top = max(best, default=0)
    expected = [tuple(batch_of[best[s]]) if s in best else () for s in range(1, top + 1)]
    assert [r for _, _, r in plan.batches] == expected
