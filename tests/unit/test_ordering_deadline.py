"""Deadlines as FIFOs (`aio/deadlines.py`) and the gateway's ordering deadline
(`runtime/roles/gateway/orderer_choice.py`), on virtual time (`sim/vloop.py`): no sleeping.

The deadline FIFO: futures expire in the order of their deadlines, with `make()`; a settled or
cancelled future is left alone; one timer per timeout value, not per future; `close` disarms.
The ordering deadline: an orderer that does not answer in time gets `widen` more orderers asked
for the same envelope, and the first answer wins, the first orderer's included; without a
deadline (solo, or switched off) the gateway waits for the first orderer for ever.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import pytest

from dltmw.aio.deadlines import COMPACT_MIN, FifoDeadlines, bucket
from dltmw.core.errors import TransientError
from dltmw.runtime.config_file import ORDERING_DEADLINE_S
from dltmw.runtime.roles.gateway.orderer_choice import (
    Result,
    Widening,
    first_accepting,
    widening_for,
)
from dltmw.runtime.roles.gateway.patience import Patience
from dltmw.runtime.roles.orderer.pbft import TICK_S, replica_config
from dltmw.sim import vloop
from dltmw.v1 import config_pb2, errors_pb2

T = TypeVar("T")
OK = Result(accepted=True)
R = errors_pb2


def _virtual(main: Callable[[], Coroutine[Any, Any, T]]) -> T:
    return vloop.run(0, main)


class Expired(Exception):
    pass


def _expired(name: str) -> Callable[[], BaseException]:
    return lambda: Expired(name)


# --- the deadline FIFO --------------------------------------------------------------------------


def test_futures_expire_in_deadline_order_each_with_its_own_error() -> None:
    async def main() -> list[tuple[str, float]]:
        loop = asyncio.get_running_loop()
        deadlines = FifoDeadlines()
        start = loop.time()
        seen: list[tuple[str, float]] = []
        futures = []
        for name, timeout_s in [("a", 1.0), ("b", 1.0), ("c", 0.5), ("d", 1.0)]:
            future: asyncio.Future[None] = loop.create_future()
            deadlines.add(future, timeout_s, _expired(name))
            futures.append(future)
            await asyncio.sleep(0.1)

        async def watch(f: asyncio.Future[None]) -> None:
            with pytest.raises(Expired) as caught:
                await f
            seen.append((str(caught.value), round(loop.time() - start, 6)))

        await asyncio.gather(*(watch(f) for f in futures))
        return seen

    assert _virtual(main) == [("c", 0.7), ("a", 1.0), ("b", 1.1), ("d", 1.3)]


def test_a_settled_or_cancelled_future_is_left_alone_and_costs_no_timer_of_its_own() -> None:
    async def main() -> tuple[int, int, object, bool]:
        loop = asyncio.get_running_loop()
        deadlines = FifoDeadlines()
        futures: list[asyncio.Future[int]] = []
        for k in range(1000):
            future: asyncio.Future[int] = loop.create_future()
            deadlines.add(future, 2.0, _expired(str(k)))
            futures.append(future)
        timers = deadlines.timers  # one for all 1000
        for k, future in enumerate(futures[:-1]):
            if k % 2:
                future.set_result(k)
            else:
                future.cancel()
        await asyncio.sleep(1.0)
        late: asyncio.Future[int] = loop.create_future()
        deadlines.add(late, 2.0, _expired("late"))  # expires at 3.0
        held = len(deadlines)  # the settled front was dropped on add
        await asyncio.sleep(1.5)
        deadlines.close()
        return timers, held, futures[-1].exception(), late.done()

    timers, held, last, late_done = _virtual(main)
    assert timers == 1
    assert held == 2  # the one still waiting, and the new one
    assert isinstance(last, Expired) and not late_done


def test_one_answer_that_does_not_come_holds_no_pile_of_settled_entries_behind_it() -> None:
    async def main() -> tuple[int, int]:
        loop = asyncio.get_running_loop()
        deadlines = FifoDeadlines()
        stuck: asyncio.Future[int] = loop.create_future()
        deadlines.add(stuck, 60.0, _expired("stuck"))
        most = 0
        for k in range(20_000):
            future: asyncio.Future[int] = loop.create_future()
            deadlines.add(future, 60.0, _expired(str(k)))
            future.set_result(k)  # answered at once, behind the stuck one
            most = max(most, len(deadlines))
        await asyncio.sleep(61)
        return most, len(deadlines)

    most, after = _virtual(main)
    assert most <= COMPACT_MIN + 2, most
    assert after == 0


def test_varying_timeouts_share_a_few_timers_and_fire_never_early_at_most_a_64th_late() -> None:
    async def main() -> tuple[int, list[tuple[float, float]]]:
        loop = asyncio.get_running_loop()
        deadlines = FifoDeadlines()
        start = loop.time()
        asked: list[tuple[asyncio.Future[None], float]] = []
        for k in range(1000):  # what is left of a 30 s budget, 29..30 s
            future: asyncio.Future[None] = loop.create_future()
            timeout_s = 29.0 + k / 1000
            deadlines.add(future, timeout_s, _expired(str(k)))
            asked.append((future, timeout_s))
        timers = deadlines.timers
        fired: list[tuple[float, float]] = []
        for future, timeout_s in asked:
            with pytest.raises(Expired):
                await future
            fired.append((timeout_s, loop.time() - start))
        return timers, fired

    timers, fired = _virtual(main)
    assert timers <= 5, timers
    assert all(t <= at <= t * (1 + 1 / 64) for t, at in fired)
    assert [bucket(t) for t in (0.5, 2.0, 4.0, 10.0, 30.0, 60.0)] == [
        0.5,
        2.0,
        4.0,
        10.0,
        30.0,
        60.0,
    ]


def test_close_disarms_every_timer() -> None:
    async def main() -> tuple[bool, int, int]:
        loop = asyncio.get_running_loop()
        deadlines = FifoDeadlines()
        future: asyncio.Future[None] = loop.create_future()
        deadlines.add(future, 1.0, _expired("x"))
        deadlines.add(loop.create_future(), 3.0, _expired("y"))
        deadlines.close()
        deadlines.close()  # idempotent
        await asyncio.sleep(5)
        return future.done(), deadlines.timers, len(deadlines)

    assert _virtual(main) == (False, 0, 0)


# --- the ordering deadline ----------------------------------------------------------------------

ORDERERS = ("o0", "o1", "o2", "o3")


class Orderers:
    """Fake orderers: each answers what `answers` says after `after_s` (None: never)."""

    def __init__(self, answers: dict[str, tuple[float | None, Result | Exception]]) -> None:
        self.answers = answers
        self.asked: list[tuple[str, float]] = []

    def send(self, orderer_id: str) -> asyncio.Future[Result]:
        loop = asyncio.get_running_loop()
        self.asked.append((orderer_id, round(loop.time(), 6)))
        future: asyncio.Future[Result] = loop.create_future()
        after_s, answer = self.answers.get(orderer_id, (None, OK))
        if after_s is not None:
            if isinstance(answer, Exception):
                loop.call_later(after_s, future.set_exception, answer)
            else:
                loop.call_later(after_s, future.set_result, answer)
        return future


def _race(
    orderers: Orderers, widening: Widening, give_up_s: float = 100.0
) -> tuple[object, float, list[int]]:
    async def main() -> tuple[object, float, list[int]]:
        loop = asyncio.get_running_loop()
        widened: list[int] = []
        try:
            outcome: object = await asyncio.wait_for(
                first_accepting(
                    ORDERERS, 0, orderers.send, widening, FifoDeadlines(), widened.append
                ),
                give_up_s,
            )
        except TimeoutError:
            outcome = "no answer"
        return outcome, round(loop.time(), 6), widened

    return _virtual(main)


def test_a_silent_first_orderer_gets_company_at_the_deadline_and_the_first_answer_wins() -> None:
    orderers = Orderers({"o0": (None, OK), "o1": (3.0, Result(accepted=True, tx_id="from-o1"))})
    outcome, took, widened = _race(orderers, Widening(4.0, 1))
    assert orderers.asked == [("o0", 0.0), ("o1", 4.0)]
    assert outcome == (1, Result(accepted=True, tx_id="from-o1")) and took == 7.0
    assert widened == [1]


def test_the_first_orderers_late_answer_is_not_lost() -> None:
    """Widened at 4 s; o0 answers at 5 s, before o1 (which never does)."""
    orderers = Orderers({"o0": (5.0, Result(accepted=True, tx_id="o0")), "o1": (None, OK)})
    outcome, took, _ = _race(orderers, Widening(4.0, 1))
    assert outcome == (0, Result(accepted=True, tx_id="o0")) and took == 5.0


def test_each_further_deadline_widens_again_until_every_orderer_was_asked() -> None:
    orderers = Orderers({"o0": (None, OK), "o1": (None, OK), "o2": (None, OK), "o3": (1.0, OK)})
    outcome, took, widened = _race(orderers, Widening(2.0, 1))
    assert [a for a, _ in orderers.asked] == ["o0", "o1", "o2", "o3"]
    assert [t for _, t in orderers.asked] == [0.0, 2.0, 4.0, 6.0]
    assert outcome == (3, OK) and took == 7.0 and widened == [1, 1, 1]


def test_widen_asks_that_many_more_at_once() -> None:
    orderers = Orderers({"o0": (None, OK), "o1": (None, OK), "o2": (0.5, OK)})
    outcome, _took, widened = _race(orderers, Widening(1.0, 2))
    assert orderers.asked == [("o0", 0.0), ("o1", 1.0), ("o2", 1.0)]
    assert outcome == (2, OK) and widened == [2]


def test_an_answer_within_the_deadline_asks_nobody_else() -> None:
    orderers = Orderers({"o0": (3.9, OK)})
    outcome, took, widened = _race(orderers, Widening(4.0, 1))
    assert orderers.asked == [("o0", 0.0)] and outcome == (0, OK) and widened == []
    assert took == 3.9


def test_a_refusal_of_the_transaction_is_final_even_while_others_wait() -> None:
    bad = Result(accepted=False, reason=R.ERROR_REASON_MALFORMED, message="bad")
    orderers = Orderers({"o0": (None, OK), "o1": (0.5, bad)})
    outcome, took, _ = _race(orderers, Widening(1.0, 1))
    assert outcome == (1, bad) and took == 1.5


STALE = Result(
    accepted=False, reason=R.ERROR_REASON_CONFIG_SEQUENCE_STALE, message="the channel is at 2"
)


def test_a_stale_update_from_a_copy_waits_for_the_first_orderers_acceptance() -> None:
    """The config update o0 took is applied at o1 before o0 answers; o1 judges the copy sent at
    the deadline stale. The submission was ordered: o0's acceptance is the answer."""
    orderers = Orderers({"o0": (6.0, Result(accepted=True, tx_id="o0")), "o1": (0.5, STALE)})
    outcome, took, widened = _race(orderers, Widening(4.0, 1))
    assert outcome == (0, Result(accepted=True, tx_id="o0")) and took == 6.0
    assert [a for a, _ in orderers.asked] == ["o0", "o1"] and widened == [1]


def test_a_held_stale_refusal_is_returned_after_one_more_deadline_without_widening() -> None:
    """o0 never answers: the refusal comes one deadline after it was held (not never), and no
    third orderer is asked meanwhile."""
    orderers = Orderers({"o0": (None, OK), "o1": (0.5, STALE), "o2": (0.1, OK)})
    outcome, took, widened = _race(orderers, Widening(4.0, 1))
    assert outcome == (1, STALE) and took == 8.5
    assert [a for a, _ in orderers.asked] == ["o0", "o1"] and widened == [1]


def test_a_stale_update_with_nobody_else_asked_is_refused_at_once() -> None:
    orderers = Orderers({"o0": (0.5, STALE)})
    outcome, took, widened = _race(orderers, Widening(4.0, 1))
    assert outcome == (0, STALE) and took == 0.5 and widened == []


def test_a_widened_orderer_that_fails_is_replaced_and_the_last_trouble_is_retryable() -> None:
    down = TransientError(R.ERROR_REASON_PEER_UNAVAILABLE, "down")
    orderers = Orderers({o: (0.1, down) for o in ORDERERS[1:]} | {"o0": (None, OK)})
    outcome, took, _ = _race(orderers, Widening(1.0, 1), give_up_s=50.0)
    # o1 fails at 1.1 -> o2 at once, fails at 1.2 -> o3, fails at 1.3; o0 still silent
    assert [t for _, t in orderers.asked] == [0.0, 1.0, 1.1, 1.2]
    assert outcome == "no answer" and took == 50.0  # o0 may still answer: nothing to raise yet


def test_without_a_deadline_a_silent_orderer_holds_the_submission() -> None:
    """The stall the deadline removes (and the negative control of the tests above)."""
    orderers = Orderers({"o0": (None, OK)})
    outcome, took, widened = _race(orderers, Widening(None), give_up_s=600.0)
    assert orderers.asked == [("o0", 0.0)] and outcome == "no answer" and widened == []
    assert took == 600.0


def test_a_deadline_that_grew_meanwhile_is_waited_out_instead_of_widening() -> None:
    """The channel's answers slowed down while this submission waited (patience.py): at the
    first deadline (4 s) the deadline in force is 8 s, so o0's answer at 6 s wins alone."""
    orderers = Orderers({"o0": (6.0, OK)})

    async def main() -> tuple[object, list[int]]:
        loop = asyncio.get_running_loop()
        start = loop.time()

        def stretch(deadline_s: float) -> float:
            return deadline_s if loop.time() - start < 3.0 else 2 * deadline_s

        widened: list[int] = []
        outcome = await first_accepting(
            ORDERERS, 0, orderers.send, Widening(4.0, 1), FifoDeadlines(), widened.append, stretch
        )
        return outcome, widened

    outcome, widened = _virtual(main)
    assert outcome == (0, OK) and widened == [] and orderers.asked == [("o0", 0.0)]


@pytest.mark.parametrize(
    ("ordering", "n", "deadline_s", "expected"),
    [
        (config_pb2.ORDERING_TYPE_NONE, 1, 4.0, Widening()),
        (config_pb2.ORDERING_TYPE_PBFT, 4, 0.0, Widening()),
        (config_pb2.ORDERING_TYPE_PBFT, 4, 4.0, Widening(4.0, 1)),
        (config_pb2.ORDERING_TYPE_PBFT, 7, 4.0, Widening(4.0, 2)),
        (config_pb2.ORDERING_TYPE_PBFT, 13, 4.0, Widening(4.0, 4)),
        (config_pb2.ORDERING_TYPE_JETSTREAM, 3, 4.0, Widening(4.0, 1)),
        (config_pb2.ORDERING_TYPE_JETSTREAM, 1, 4.0, Widening()),
    ],
    ids=["solo", "off", "pbft-4", "pbft-7", "pbft-13", "jetstream-3", "jetstream-1"],
)
def test_which_channels_widen_and_how_far(
    ordering: int, n: int, deadline_s: float, expected: Widening
) -> None:
    assert widening_for(ordering, n, deadline_s) == expected


def test_the_default_deadline_leaves_a_correct_primary_its_request_timeout_twice() -> None:
    request_timeout_s = replica_config(4, 100).request_timeout_ticks * TICK_S
    assert 2 * request_timeout_s <= ORDERING_DEADLINE_S


# --- patience: the deadline follows the channel's answer times ----------------------------------


@pytest.mark.parametrize(
    ("answers_s", "expected_s"),
    [
        ([], 4.0),  # nothing seen yet: the configured deadline
        ([0.5] * 500, 4.0),  # a healthy channel: never below the configured one
        ([2.0] * 500, 6.0),  # a loaded one: three typical answer times
        ([10.0] * 500, 16.0),  # an overloaded one: capped at four times the configured one
    ],
    ids=["fresh", "healthy", "loaded", "overloaded-capped"],
)
def test_the_deadline_follows_the_typical_answer_time_within_bounds(
    answers_s: list[float], expected_s: float
) -> None:
    patience = Patience()
    for seconds in answers_s:
        patience.answered(seconds)
    assert patience.deadline_s(4.0) == pytest.approx(expected_s, rel=1e-3)


def test_answers_that_do_not_come_leave_the_deadline_as_it_was() -> None:
    """A primary that censors answers nothing: it cannot lengthen its own deadline; a few slow
    answers (the censored ones, answered after the view change) move it little."""
    patience = Patience()
    for _ in range(200):
        patience.answered(0.3)
    before = patience.deadline_s(4.0)
    for _ in range(8):
        patience.answered(7.0)
    assert before == 4.0 and patience.deadline_s(4.0) == 4.0
