"""`waiters.settled`: one deadline for a group of waiting futures, without a task per future."""

from __future__ import annotations

import asyncio

from dltmw.runtime.waiters import settled


async def test_each_future_gives_its_result_its_error_or_a_timeout_in_order() -> None:
    loop = asyncio.get_running_loop()
    ok, failed, never = loop.create_future(), loop.create_future(), loop.create_future()
    loop.call_soon(ok.set_result, "ordered")
    loop.call_soon(failed.set_exception, ValueError("refused"))
    results = await settled([ok, failed, never], 0.05)
    assert results[0] == "ordered"
    assert isinstance(results[1], ValueError)
    assert isinstance(results[2], TimeoutError)
    assert not never.cancelled()  # the caller discards it: an answer may still come
    assert await settled([], 0.05) == []


async def test_a_group_waits_as_one_task_whatever_its_size() -> None:
    """The PBFT primary waited for each submitted envelope with `wait_for(shield(f))` under
    `gather`: a task, a shielding future and a timer per transaction. The group is one wait."""
    loop = asyncio.get_running_loop()
    futures = [loop.create_future() for _ in range(200)]
    seen: list[int] = []

    def look() -> None:
        seen.append(len(asyncio.all_tasks()))
        for future in futures:
            future.set_result(None)

    loop.call_later(0.01, look)
    assert await settled(futures, 5.0) == [None] * 200
    assert seen == [1]  # this test's own task only
