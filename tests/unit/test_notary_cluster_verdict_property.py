"""Property of the notary cluster's client-side verdict (`core/notary_cluster.verdict`): an
outcome needs f+1 DISTINCT members agreeing, each member counted once (its first answer),
whatever the mix, order and repetition of answers. Issue 18 item 2: a faulty member answering
twice — or twins sharing its key — must never stand in for a second member.

Negative control: the same property against a verdict that counts answers instead of members
(the distinct check removed) finds a counterexample.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from controls import counterexample
from hypothesis import given
from hypothesis import strategies as st

from dltmw.core.notary_cluster import ReplicaAnswer, Verdict, verdict

N, F = 7, 2
CONSUMED = 10  # an ErrorReason value; only its equality matters here

answers_st = st.lists(
    st.one_of(
        st.builds(
            lambda r, s: ReplicaAnswer(r, signature=bytes([s])),
            st.integers(0, N - 1),
            st.integers(1, 3),
        ),
        st.builds(
            lambda r, h: ReplicaAnswer(r, reason=CONSUMED, conflict_hashes=(bytes([h]),)),
            st.integers(0, N - 1),
            st.integers(0, 1),
        ),
    ),
    max_size=12,
)

Verdicts = Callable[[Sequence[ReplicaAnswer], int], Verdict | None]


def _violates(decide: Verdicts, answers: Sequence[ReplicaAnswer]) -> bool:
    """Does `decide` reach an outcome without f+1 distinct members whose first answer it is?"""
    first: dict[int, ReplicaAnswer] = {}
    for answer in answers:
        first.setdefault(answer.replica, answer)
    outcome = decide(answers, F)
    if outcome is None:
        signers = sum(1 for a in first.values() if a.signature)
        return signers >= F + 1  # f+1 distinct signers must suffice
    if outcome.signed:
        members = set(outcome.signatures)
        agreeing = {r for r, a in first.items() if a.signature and not a.reason}
        return len(members) < F + 1 or not members <= agreeing
    backing = {
        r
        for r, a in first.items()
        if a.reason == outcome.reason and a.conflict_hashes == outcome.conflict_hashes
    }
    return len(backing) < F + 1


@given(answers_st)
def test_a_verdict_needs_f_plus_1_distinct_members_and_counts_each_once(
    answers: list[ReplicaAnswer],
) -> None:
    assert not _violates(verdict, answers)


def _counting_answers(answers: Sequence[ReplicaAnswer], f: int) -> Verdict | None:
    """BROKEN: the production verdict with each answer counted as a member of its own."""
    relabelled = [  # each answer a member of its own
        ReplicaAnswer(k, a.signature, a.reason, a.conflict_hashes, a.proof)
        for k, a in enumerate(answers)
    ]
    out = verdict(relabelled, f)
    if out is None or not out.signed:
        return out
    return Verdict({answers[k].replica: s for k, s in out.signatures.items()})


def test_negative_control_counting_answers_not_members_is_caught() -> None:
    found = counterexample(answers_st, lambda a: _violates(_counting_answers, a))
    assert len({a.replica for a in found}) < len(found)  # a member answered twice
