"""`rpc/open_streams.OpenStreams`: which cancellation is the node's stop, which is the caller's."""

from __future__ import annotations

import asyncio

import pytest

from dltmw.core.errors import TransientError
from dltmw.rpc.open_streams import OpenStreams


async def _subscription(streams: OpenStreams, started: asyncio.Event) -> str:
    try:
        with streams.held():
            started.set()
            await asyncio.Event().wait()  # a subscription with nothing more to send
    except asyncio.CancelledError:
        if not streams.ended_here():
            raise
        await asyncio.sleep(0)  # the report can still be awaited (cancel request withdrawn)
        return "shutting down"
    return "ended"


def test_end_turns_open_subscriptions_into_a_report_and_refuses_new_ones() -> None:
    async def scenario() -> None:
        streams, started = OpenStreams(), asyncio.Event()
        task = asyncio.ensure_future(_subscription(streams, started))
        await started.wait()
        assert streams.end() == 1
        assert await task == "shutting down"
        with pytest.raises(TransientError, match="SHUTTING_DOWN"), streams.held():
            pass

    asyncio.run(scenario())


def test_a_caller_cancelling_is_not_taken_for_the_stop() -> None:
    async def scenario() -> None:
        streams, started = OpenStreams(), asyncio.Event()
        task = asyncio.ensure_future(_subscription(streams, started))
        await started.wait()
        task.cancel()  # what grpc does when the caller leaves
        with pytest.raises(asyncio.CancelledError):
            await task
        assert streams.end() == 0  # it was no longer held

    asyncio.run(scenario())


def test_a_write_in_progress_is_not_cancelled_and_sees_the_end_after_it() -> None:
    """A cancel inside grpc's write leaves its send operation in flight, and the abort that
    would report SHUTTING_DOWN then fails: `end()` leaves a writing task alone, and the task
    finds `ended` once its write is done."""

    async def scenario() -> None:
        streams, writing, release = OpenStreams(), asyncio.Event(), asyncio.Event()

        async def subscription() -> str:
            with streams.held():
                with streams.writing():
                    writing.set()
                    await release.wait()  # the write, in flight
                return "ended after the write" if streams.ended else "went on"

        task = asyncio.ensure_future(subscription())
        await writing.wait()
        assert streams.end() == 1
        await asyncio.sleep(0.01)
        assert not task.done(), "the writing task was cancelled mid-write"
        release.set()
        assert await task == "ended after the write"

    asyncio.run(scenario())
