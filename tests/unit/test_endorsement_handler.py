"""The endorsement collector: tri-state decision over answers grouped by payload hash."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from dltmw.core.handlers.endorsement import (
    Candidate,
    Decision,
    Endorsed,
    EndorsementCollector,
    Failed,
)
from dltmw.core.policy import PolicyResult, Signer, parse_policy

SAT = PolicyResult.SATISFIED
PENDING = PolicyResult.PENDING
UNSAT = PolicyResult.UNSATISFIABLE
H1, H2 = b"\x01" * 32, b"\x02" * 32


def peer(node_id: str, org_id: str) -> Candidate:
    return Candidate(node_id, Signer(node_id.encode(), org_id, frozenset({"peer"})))


P1, P2 = peer("peer0.org1", "Org1"), peer("peer0.org2", "Org2")
P1B = peer("peer1.org1", "Org1")


def collector(policy: str, candidates: Sequence[Candidate] = (P1, P2)) -> EndorsementCollector:
    return EndorsementCollector(parse_policy(policy), candidates)


def run(c: EndorsementCollector, answers: Sequence[Endorsed | Failed]) -> list[Decision]:
    """Decision after each answer."""
    out = []
    for answer in answers:
        c.step(answer)
        out.append(c.decision())
    return out


AND = "AND(Org1.peer, Org2.peer)"
OR = "OR(Org1.peer, Org2.peer)"


@pytest.mark.parametrize(
    ("policy", "candidates", "answers", "results"),
    [
        (AND, (P1, P2), [Endorsed(P1.node_id, H1), Endorsed(P2.node_id, H1)], [PENDING, SAT]),
        (AND, (P1, P2), [Endorsed(P1.node_id, H1), Endorsed(P2.node_id, H2)], [PENDING, UNSAT]),
        (AND, (P1, P2), [Failed(P2.node_id, "down")], [UNSAT]),
        (AND, (P1, P2), [Endorsed(P1.node_id, H1), Failed(P2.node_id, "down")], [PENDING, UNSAT]),
        (OR, (P1, P2), [Endorsed(P2.node_id, H2)], [SAT]),
        (OR, (P1, P2), [Failed(P1.node_id, "x"), Endorsed(P2.node_id, H1)], [PENDING, SAT]),
        (OR, (P1, P2), [Failed(P1.node_id, "x"), Failed(P2.node_id, "y")], [PENDING, UNSAT]),
        (
            AND,
            (P1, P1B, P2),
            [Failed(P1.node_id, "x"), Endorsed(P2.node_id, H1), Endorsed(P1B.node_id, H1)],
            [PENDING, PENDING, SAT],
        ),
        (
            AND,
            (P1, P1B, P2),
            [Endorsed(P1.node_id, H1), Endorsed(P2.node_id, H2), Endorsed(P1B.node_id, H2)],
            [PENDING, PENDING, SAT],
        ),
    ],
    ids=[
        "and-pending-after-one-satisfied-after-both-agree",
        "and-mismatching-payloads-unsatisfiable-once-all-answered",
        "and-failure-of-the-only-org2-peer-is-unsatisfiable-at-once",
        "and-failure-after-one-endorsement-is-unsatisfiable",
        "or-satisfied-after-first-endorsement",
        "or-failure-then-endorsement-satisfied",
        "or-both-failed-unsatisfiable",
        "and-failed-org1-peer-replaced-by-another-org1-peer",
        "and-second-org1-peer-joins-the-org2-payload-group",
    ],
)
def test_collector_decisions(
    policy: str,
    candidates: tuple[Candidate, ...],
    answers: list[Endorsed | Failed],
    results: list[PolicyResult],
) -> None:
    assert [d.result for d in run(collector(policy, candidates), answers)] == results


def test_satisfied_names_payload_hash_and_endorsers() -> None:
    c = collector(AND)
    run(c, [Endorsed(P2.node_id, H1), Endorsed(P1.node_id, H1)])
    assert c.decision() == Decision(SAT, H1, (P2.node_id, P1.node_id))


def test_mismatch_flag_only_when_all_answered_with_different_payloads() -> None:
    c = collector(AND)
    c.step(Endorsed(P1.node_id, H1))
    assert c.decision() == Decision(PENDING)
    c.step(Endorsed(P2.node_id, H2))
    decision = c.decision()
    assert decision.result is UNSAT
    assert decision.mismatch is True
    assert decision.payload_hash == b"" and decision.node_ids == ()


def test_failure_is_unsatisfiable_without_mismatch_and_reports_the_reason() -> None:
    c = collector(AND)
    run(c, [Endorsed(P1.node_id, H1), Failed(P2.node_id, "contract refused")])
    decision = c.decision()
    assert decision.result is UNSAT
    assert decision.mismatch is False
    assert decision.failures == ("peer0.org2: contract refused",)


@pytest.mark.parametrize(
    ("answers", "result"),
    [
        ([Endorsed(P1.node_id, H1), Endorsed(P1.node_id, H1)], PENDING),
        ([Endorsed(P1.node_id, H1), Failed(P1.node_id, "late failure")], PENDING),
        ([Failed(P2.node_id, "down"), Endorsed(P2.node_id, H1)], UNSAT),
        ([Endorsed("peer9.org2", H1), Endorsed(P1.node_id, H1)], PENDING),
        ([Endorsed(P1.node_id, H1), Endorsed(P2.node_id, H2), Endorsed(P2.node_id, H1)], UNSAT),
    ],
    ids=[
        "duplicate-endorsement-counts-once",
        "failure-after-endorsement-from-same-node-ignored",
        "endorsement-after-failure-from-same-node-ignored",
        "unknown-node-answer-ignored",
        "second-answer-cannot-repair-a-mismatch",
    ],
)
def test_duplicate_and_unknown_answers_are_ignored(
    answers: list[Endorsed | Failed], result: PolicyResult
) -> None:
    c = collector(AND)
    decisions = run(c, answers)
    assert decisions[-1].result is result
    assert all(d.result is not SAT for d in decisions)


def test_unknown_node_is_not_reported_as_a_failure() -> None:
    c = collector(AND)
    c.step(Failed("stranger", "x"))
    assert c.decision() == Decision(PENDING)


def test_to_ask_lists_every_candidate_in_order() -> None:
    assert collector(OR, (P2, P1, P1B)).to_ask() == [P2.node_id, P1.node_id, P1B.node_id]


def test_no_candidate_can_satisfy_is_unsatisfiable_before_any_answer() -> None:
    assert collector(AND, (P1, P1B)).decision().result is UNSAT
