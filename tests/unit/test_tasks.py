"""Stopping a task that swallows its cancellation must not hang the stop."""

from __future__ import annotations

import asyncio
import time

from dltmw.aio.tasks import cancel_and_wait


async def test_a_task_that_swallows_cancellation_does_not_hang_the_stop() -> None:
    swallowed = asyncio.Event()

    async def stubborn() -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            swallowed.set()  # like a retry loop treating a local CANCELLED as a peer failure
        await asyncio.sleep(3600)

    task = asyncio.create_task(stubborn())
    await asyncio.sleep(0)
    started = time.monotonic()
    await cancel_and_wait(task, timeout_s=0.2)
    assert swallowed.is_set()
    assert time.monotonic() - started < 2.0
    assert not task.done()
    task.cancel()  # the second cancel reaches the sleep; clean up
    await asyncio.wait({task}, timeout=1)


async def test_a_cooperative_task_is_cancelled_and_awaited() -> None:
    task = asyncio.create_task(asyncio.sleep(3600))
    await asyncio.sleep(0)
    await cancel_and_wait(task, timeout_s=1.0)
    assert task.cancelled()
    await cancel_and_wait(None)  # nothing to stop
