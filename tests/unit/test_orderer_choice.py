"""The gateway's choice of orderer (`runtime/roles/gateway/orderer_choice.py`): an orderer that
cannot order now (link down, or ORDERING_UNAVAILABLE: removed replica, JetStream orderer cut off
from its servers) moves the submission on to the next; a refusal of the transaction itself does
not; when none can, the caller gets a retryable error."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

import pytest

from dltmw.core.errors import ClientError, TransientError
from dltmw.runtime.roles.gateway.orderer_choice import Result, first_accepting
from dltmw.v1 import errors_pb2

R = errors_pb2
T = TypeVar("T")
ORDERERS = ("o0", "o1", "o2")


def _run(answers: dict[str, Result | Exception], start: int = 0) -> tuple[list[str], object]:
    asked: list[str] = []

    def send(orderer_id: str) -> asyncio.Future[Result]:
        asked.append(orderer_id)
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        answer = answers[orderer_id]
        if isinstance(answer, Exception):
            future.set_exception(answer)
        else:
            future.set_result(answer)
        return future

    async def main() -> tuple[int, Result]:
        return await first_accepting(ORDERERS, start, send)

    try:
        outcome: object = asyncio.run(main())
    except (ClientError, TransientError) as exc:
        outcome = exc
    return asked, outcome


OK = Result(accepted=True)
UNAVAILABLE = Result(accepted=False, reason=R.ERROR_REASON_ORDERING_UNAVAILABLE, message="cut off")
MALFORMED = Result(accepted=False, reason=R.ERROR_REASON_MALFORMED, message="bad bytes")
DOWN = TransientError(R.ERROR_REASON_PEER_UNAVAILABLE, "link down")


def test_an_orderer_that_cannot_order_now_moves_the_submission_on() -> None:
    asked, outcome = _run({"o0": UNAVAILABLE, "o1": OK, "o2": OK})
    assert asked == ["o0", "o1"]
    assert outcome == (1, OK)


def test_an_orderer_that_held_it_for_its_whole_wait_moves_it_on() -> None:
    """WAIT_TIMEOUT (a PBFT-lite replica that never got it ordered) is about the orderer: the
    next one is asked, not a final refusal handed to the client."""
    late = Result(accepted=False, reason=R.ERROR_REASON_WAIT_TIMEOUT, message="not ordered")
    asked, outcome = _run({"o0": late, "o1": OK, "o2": OK})
    assert asked == ["o0", "o1"]
    assert outcome == (1, OK)


def test_a_broken_link_moves_it_on_too_starting_from_the_last_that_worked() -> None:
    asked, outcome = _run({"o0": OK, "o1": DOWN, "o2": UNAVAILABLE}, start=1)
    assert asked == ["o1", "o2", "o0"]
    assert outcome == (0, OK)


def test_a_refusal_of_the_transaction_itself_is_final_and_asks_no_other() -> None:
    asked, outcome = _run({"o0": MALFORMED, "o1": OK, "o2": OK})
    assert asked == ["o0"]
    assert outcome == (0, MALFORMED)


@pytest.mark.parametrize("last", [UNAVAILABLE, DOWN], ids=["refused", "down"])
def test_when_none_can_order_the_caller_gets_a_retryable_error(last: object) -> None:
    asked, outcome = _run({"o0": UNAVAILABLE, "o1": DOWN, "o2": last})  # type: ignore[dict-item]
    assert asked == list(ORDERERS)  # each asked once
    assert isinstance(outcome, TransientError)
    expected = (
        R.ERROR_REASON_ORDERING_UNAVAILABLE
        if last is UNAVAILABLE
        else R.ERROR_REASON_PEER_UNAVAILABLE
    )
    assert outcome.reason == expected


def test_a_channel_without_orderers_is_a_retryable_error_not_a_crash() -> None:
    def send(orderer_id: str) -> asyncio.Future[Result]:
        raise AssertionError("nothing to ask")

    with pytest.raises(TransientError):
        asyncio.run(first_accepting((), 0, send))


def test_a_full_queue_moves_it_on_like_a_broken_link() -> None:
    asked: list[str] = []

    def send(orderer_id: str) -> asyncio.Future[Result]:
        asked.append(orderer_id)
        if orderer_id == "o0":
            raise TransientError(R.ERROR_REASON_OVERLOADED, "queue full")
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        future.set_result(OK)
        return future

    outcome = asyncio.run(_main(first_accepting(ORDERERS, 0, send)))
    assert asked == ["o0", "o1"] and outcome == (1, OK)


async def _main(coroutine: Coroutine[Any, Any, T]) -> T:
    return await coroutine
