"""A Coalescer's background task that dies is seen by the node's TaskOwner (no silent failure).

The drain task fails here through `size` raising (a bug in a caller's size function): the only
way in, below any I/O. Before the Coalescer took an `owner`, its task was a bare `create_task`:
the failure reached nobody and the caller waited forever.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from dltmw.aio.coalesce import Coalescer
from dltmw.aio.tasks import TaskOwner


class Broken(RuntimeError):
    """Not transient (a bug): fatal for the owner."""


def _size(item: int) -> int:
    raise Broken(f"size of {item}")


async def _double(items: Sequence[int]) -> Sequence[int | BaseException]:
    return [2 * i for i in items]


def test_dying_drain_task_is_fatal_for_the_owner_and_fails_the_callers() -> None:
    async def go() -> None:
        fatal: list[tuple[str, BaseException | None]] = []

        async def on_fatal(name: str, exc: BaseException | None) -> None:
            fatal.append((name, exc))

        owner = TaskOwner(on_fatal=on_fatal)
        c: Coalescer[int, int] = Coalescer(_double, name="t", size=_size, size_max=10, owner=owner)
        future = c.submit(1)
        done, _ = await asyncio.wait({future}, timeout=2.0)
        assert done, "the caller waited although the drain task died"
        assert isinstance(future.exception(), Broken)
        for _ in range(10):  # the owner's hook runs as the task ends
            if fatal:
                break
            await asyncio.sleep(0.01)
        assert [name for name, _ in fatal] == ["coalesce-t"]
        assert isinstance(fatal[0][1], Broken)
        assert owner.failed == "coalesce-t"
        await c.close()

    asyncio.run(go())


def test_healthy_coalescer_under_an_owner_is_not_fatal() -> None:
    async def go() -> None:
        fatal: list[str] = []

        async def on_fatal(name: str, exc: BaseException | None) -> None:
            fatal.append(name)

        owner = TaskOwner(on_fatal=on_fatal)
        c: Coalescer[int, int] = Coalescer(_double, name="ok", max_concurrent=2, owner=owner)
        assert await asyncio.gather(*(c.call(i) for i in range(5))) == [0, 2, 4, 6, 8]
        await c.close()
        owner.close()
        assert fatal == []

    asyncio.run(go())
