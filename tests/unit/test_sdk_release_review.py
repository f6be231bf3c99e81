"""The review findings on sdk60b's fail-over rules (sdk60c), over the fake gateways of
test_sdk_reference_failover.py (below the I/O boundary).

A gateway left while slow is closed apart from the call that ended last on it (its close's
time, failure or cancel never reach that call); a status wait longer than the gateway call's
own timeout does not fail over a healthy gateway; `blocks()` counts as a call in flight and
resumes on the next gateway when its stream is cut under it; `close()` names no task that has
ended. Each test says what it is red without.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any

import grpc
import pytest
from test_sdk_reference_failover import CH, Gateway, Orderer, client
from test_sdk_submit_async import alone

from dltmw.sdk import client as sdk_client
from dltmw.sdk.client import Client
from dltmw.v1 import gateway_service_pb2 as G


class ClosesSlowlyAndFails(Gateway):
    """A gateway whose close waits for `gate`, then fails."""

    def __init__(self, orderer: Orderer) -> None:
        super().__init__(orderer, 0, dies=False)
        self.gate = asyncio.Event()
        self.closing = self.closed = 0

    def seen_block(self, channel_id: str) -> int:
        return 0

    async def close(self) -> None:
        self.closing += 1
        await self.gate.wait()
        self.closed += 1
        raise RuntimeError("the channel's close failed")


async def test_a_deferred_close_runs_apart_from_the_call_that_ended_last(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A call in flight on A when another call leaves A as slow: when it ends, A is closed —
    but not in its task: the call returns its result at once although the close is still
    running and then fails; the failure is logged, and `close()` waits for the close. Red
    with `_release` awaiting the close (the call waits on the close: the timeout fires; or the
    close's failure replaces its result)."""
    orderer = Orderer()
    a, b = ClosesSlowlyAndFails(orderer), ClosesSlowlyAndFails(orderer)
    c = client(a, b, 5.0)
    c._lock, c._seen = asyncio.Lock(), {}
    c._gateway = a  # type: ignore[assignment]

    async def left_under_it(gateway: Any) -> str:
        await Client._fail_over(c, gateway, slow=True)  # (another call's share ran out)
        return "answer"

    deadline = asyncio.get_running_loop().time() + 5.0
    async with asyncio.timeout(1.0):
        answer = await c._attempt(deadline, left_under_it)
    assert answer == "answer" and c._closers and not c._left
    await asyncio.sleep(0)  # (the close under way, not done)
    assert a.closing == 1 and a.closed == 0
    with caplog.at_level(logging.WARNING, logger="dltmw.sdk.client"):
        a.gate.set()
        await c.close()
    assert a.closed == 1 and not c._closers
    assert "the channel's close failed" in caplog.text


async def test_a_caller_cancelled_while_the_deferred_close_runs_leaks_no_channel() -> None:
    """The caller is cancelled while the left gateway's close is under way: the close still
    completes (its task is the client's). Red with `_release` awaiting the close in the
    caller's task (cancelled there: A is closed by nobody, in neither `_left` nor in use)."""
    orderer = Orderer()
    a = ClosesSlowlyAndFails(orderer)
    c = alone(a)  # type: ignore[arg-type]
    c._lock, c._seen = asyncio.Lock(), {}
    c._gateway = a  # type: ignore[assignment]
    c._busy[a] = 1  # type: ignore[index]
    await Client._fail_over(c, a, slow=True)  # type: ignore[arg-type]

    async def ends_its_call() -> None:
        try:
            await asyncio.sleep(3600)
        finally:
            result = c._release(a)  # type: ignore[arg-type, func-returns-value]
            if asyncio.iscoroutine(result):  # (the awaited form, for the red run)
                await result

    caller = asyncio.create_task(ends_its_call())
    await asyncio.sleep(0)
    caller.cancel()
    await asyncio.sleep(0.01)
    caller.cancel()  # (the caller's cancel reaches it while the close is under way)
    await asyncio.wait({caller})
    a.gate.set()
    await asyncio.sleep(0.01)
    assert a.closed == 1


def deadline_exceeded() -> grpc.aio.AioRpcError:
    """What `GatewayClient.commit_status`'s own 60 s timeout raises."""
    meta = grpc.aio.Metadata()
    return grpc.aio.AioRpcError(
        grpc.StatusCode.DEADLINE_EXCEEDED, meta, meta, "Deadline Exceeded", None
    )


async def test_a_status_wait_beyond_the_calls_own_timeout_stays_on_a_healthy_gateway(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`commit_status(wait_s)` longer than the gateway call's own timeout: that call ends with
    DEADLINE_EXCEEDED while A is healthy (answers a health check). A is asked again for the
    rest of the wait and its later answer returned; B is never asked and A not failed over.
    Red with DEADLINE_EXCEEDED read as `Unavailable` (A failed over, B asked)."""
    monkeypatch.setattr(sdk_client, "STATUS_RTT_S", 0.01)
    orderer = Orderer()
    a, b = Gateway(orderer, 0, dies=False), Gateway(orderer, 0, dies=False)
    asked: list[str] = []

    async def call_times_out_then_answers(channel_id: str, tx_id: str) -> Any:
        asked.append("a")
        await asyncio.sleep(0.02)  # (the call's own timeout, shorter than the wait)
        if len(asked) < 3:
            raise deadline_exceeded()
        return G.CommitStatusResponse(result=0, block_number=4)

    async def never(channel_id: str, tx_id: str) -> Any:
        raise AssertionError("B was asked")

    failed_over: list[object] = []
    c = client(a, b, 5.0)
    plain = c._fail_over

    async def fail_over(failed: Any, slow: bool = False) -> None:
        failed_over.append(failed)
        await plain(failed, slow)

    c._fail_over = fail_over  # type: ignore[method-assign]
    a.commit_status = call_times_out_then_answers  # type: ignore[method-assign]
    b.commit_status = never  # type: ignore[method-assign]
    status = await c.commit_status(CH, "t" * 64, wait_s=2.0)
    assert status is not None and status.block_number == 4
    assert asked == ["a"] * 3 and failed_over == []
    # at the end of the wait, a healthy gateway's DEADLINE_EXCEEDED is "not yet": None

    async def call_times_out(channel_id: str, tx_id: str) -> Any:
        raise deadline_exceeded()

    a.commit_status = call_times_out  # type: ignore[method-assign]
    assert await c.commit_status(CH, "t" * 64, wait_s=0.0) is None and failed_over == []


class Streams(Gateway):
    """A gateway whose Events stream yields blocks from `start` up to `cut` (exclusive), then
    is cancelled under the consumer (its channel closed by another call's fail-over)."""

    def __init__(self, orderer: Orderer, cut: int | None) -> None:
        super().__init__(orderer, 0, dies=False)
        self.cut, self.starts = cut, list[int]()

    async def events(self, channel_id: str, start: int, *_: Any) -> AsyncIterator[Any]:
        self.starts.append(start)
        for number in range(start, start + 3):
            if number == self.cut:
                raise asyncio.CancelledError
            yield G.EventsResponse(block_number=number)


async def test_blocks_resumes_on_the_next_gateway_when_cut_under_and_counts_as_busy() -> None:
    """A's stream is cancelled under the consumer (not the consumer's own cancel) after block
    1: it resumes on B from block 2 — no block twice, none skipped — and while it streams it
    counts as a call in flight on its gateway. Red without `blocks()`'s stray-cancellation
    rule (a bare CancelledError ends the consumer's iteration) or without its `_busy` count."""
    orderer = Orderer()
    a, b = Streams(orderer, cut=2), Streams(orderer, cut=None)
    c = client(a, b, 5.0)
    seen: list[int] = []
    busy: list[dict[Any, int]] = []
    async with aclosing(c.blocks(CH, 0)) as blocks:
        async for block in blocks:
            seen.append(block.number)
            busy.append(dict(c._busy))
            if len(seen) == 4:
                break
    assert seen == [0, 1, 2, 3] and a.starts == [0] and b.starts == [2]
    assert busy == [{a: 1}, {a: 1}, {b: 1}, {b: 1}] and c._busy == {}


async def test_blocks_ends_on_the_consumers_own_cancel() -> None:
    """The consumer's own cancel still ends the stream (it is not taken for a cut): red with
    `blocks()` failing over on every CancelledError."""
    orderer = Orderer()
    never = asyncio.Event()

    class Waits(Streams):
        async def events(self, channel_id: str, start: int, *_: Any) -> AsyncIterator[Any]:
            self.starts.append(start)
            await never.wait()
            yield G.EventsResponse(block_number=start)

    a, b = Waits(orderer, None), Waits(orderer, None)
    c = client(a, b, 5.0)

    async def consume() -> None:
        async for _ in c.blocks(CH, 0):
            pass

    consumer = asyncio.create_task(consume())
    await asyncio.sleep(0.01)
    consumer.cancel()
    async with asyncio.timeout(1.0):  # (red: it goes on streaming from B)
        with pytest.raises(asyncio.CancelledError):
            await consumer
    assert a.starts == [0] and b.starts == [] and c._busy == {}


async def test_close_names_no_task_that_ended(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A transaction's task ended but is still in the client's set (its done-callback, which
    removes it, runs in a later turn): `close()` does not warn that it "did not stop". Red
    without the `done()` check (the warning names it)."""
    monkeypatch.setattr(sdk_client, "STOP_WAIT_S", 0.05)
    orderer = Orderer()
    c = alone(Gateway(orderer, 0, dies=False))

    async def ended() -> Any:
        return None

    task = asyncio.create_task(ended(), name="t-ended")
    await task
    c._tasks.add(task)  # (as in the turn it ended: not yet removed)
    with caplog.at_level(logging.WARNING, logger="dltmw.sdk.client"):
        await c.close()
    assert "t-ended" not in caplog.text, caplog.text
