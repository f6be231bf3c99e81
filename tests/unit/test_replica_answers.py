"""When an ExchangeStream answers (`rpc/replica.Answers`): one answer per `answer_every`
batches, the first and every refusal at once, each answer counting what it stands for."""

from __future__ import annotations

from dltmw.rpc.replica import ANSWER_EVERY_MAX, Answers
from dltmw.v1 import errors_pb2, replica_pb2

BAD = errors_pb2.ERROR_REASON_BAD_SIGNATURE


def _feed(answers: Answers, counts: list[int]) -> list[replica_pb2.ExchangeStreamResponse]:
    out = [answers.accepted(c) for c in counts]
    return [a for a in out if a is not None]


def test_the_first_batch_is_answered_at_once_then_one_answer_per_every_batches() -> None:
    got = _feed(Answers(4), [1, 2, 3, 4, 5, 6, 7, 8, 9, 10])
    assert [(a.answers, a.accepted) for a in got] == [
        (1, 1),
        (4, 2 + 3 + 4 + 5),
        (4, 6 + 7 + 8 + 9),
    ]
    assert not any(a.refused for a in got)


def test_a_refused_batch_is_answered_at_once_with_the_accepted_ones_owed_before_it() -> None:
    answers = Answers(4)
    assert _feed(answers, [1, 1, 1]) == [replica_pb2.ExchangeStreamResponse(answers=1, accepted=1)]
    refused = answers.refused(BAD, "bad")
    assert (refused.answers, refused.accepted, refused.refused) == (3, 2, BAD)
    assert refused.refused_detail == "bad"
    # nothing is owed after it: the next answer counts from there
    assert [a.answers for a in _feed(answers, [1, 1, 1, 1])] == [4]


def test_an_older_sender_gets_one_answer_per_batch_in_the_old_form() -> None:
    for every in (0, 1):
        answers = Answers(every)
        got = _feed(answers, [2, 3, 4])
        assert got == [replica_pb2.ExchangeStreamResponse(accepted=c) for c in (2, 3, 4)]
        refused = answers.refused(BAD, "bad")
        assert (refused.answers, refused.accepted, refused.refused) == (0, 0, BAD)


def test_a_sender_cannot_ask_for_fewer_answers_than_the_bound() -> None:
    answers = Answers(10**6)
    got = _feed(answers, [1] * (1 + 2 * ANSWER_EVERY_MAX))
    assert [a.answers for a in got] == [1, ANSWER_EVERY_MAX, ANSWER_EVERY_MAX]
