"""The virtual-time loop under every simulated network (`dltmw/sim/vloop.py`)."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest

from dltmw.aio.clock import utc_now
from dltmw.aio.entropy import token_bytes
from dltmw.core.verified_memo import IN_PROCESS
from dltmw.sim import vloop
from dltmw.sim.scenarios import run_scenario

from .flow_runs import quiet_nodes


async def _workers() -> list[tuple[float, str, int]]:
    loop = asyncio.get_running_loop()
    log: list[tuple[float, str, int]] = []

    async def worker(name: str) -> None:
        for i in range(4):
            await asyncio.sleep(loop.random())  # type: ignore[attr-defined]
            log.append((loop.time(), name, i))

    async with asyncio.TaskGroup() as group:
        for name in "abc":
            group.create_task(worker(name))
    return log


def test_the_same_seed_gives_the_same_run_and_costs_no_real_time() -> None:
    started = time.monotonic()
    first, again, other = vloop.run(1, _workers), vloop.run(1, _workers), vloop.run(2, _workers)
    assert first == again and first != other and first[-1][0] > 1.0
    assert time.monotonic() - started < 1.0


def test_a_timer_never_fires_before_its_time() -> None:
    """The driver's tick loop compares time() with the deadline it slept for; with asyncio's
    clock resolution a timer 1e-15 s ahead fired early and such a loop spun forever."""

    async def ticks() -> int:
        loop = asyncio.get_running_loop()
        deadline, turns = loop.time() + 2.0, 0
        while loop.time() < deadline:
            turns += 1
            await asyncio.sleep(max(0.0, deadline - loop.time()) + 1e-15)
        return turns

    assert vloop.run(0, ticks) == 1


def test_nothing_ready_and_no_timer_is_a_deadlock() -> None:
    async def stuck() -> None:
        await asyncio.get_running_loop().create_future()

    with pytest.raises(vloop.Deadlock):
        vloop.run(0, stuck)


def test_executor_jobs_run_inline_and_answer_on_the_next_turn() -> None:
    pool = ThreadPoolExecutor(max_workers=2)

    async def main() -> list[str]:
        loop = asyncio.get_running_loop()
        order: list[str] = []
        future = loop.run_in_executor(pool, lambda: order.append("job") or threading.get_ident())
        order.append("after submit")
        assert await future == threading.get_ident()
        order.append(str(await asyncio.to_thread(lambda: "to_thread")))
        return order

    threads = threading.active_count()
    assert vloop.run(0, main) == ["job", "after submit", "to_thread"]
    assert threading.active_count() == threads
    pool.shutdown()


class Interrupt(BaseException):
    """What pytest-timeout's signal method raises wherever the run is (`pytest.fail`)."""


_HELD: list[asyncio.Task[None]] = []


def _raise_interrupt() -> None:
    raise Interrupt("timeout")


async def _interrupted_in_a_task() -> str:
    async def doomed() -> None:
        await asyncio.sleep(1.0)
        _raise_interrupt()

    # Held (as a node's TaskOwner holds its tasks) and never awaited: no "exception never
    # retrieved" report comes (from the task's collection) before the run ends.
    _HELD.append(asyncio.get_running_loop().create_task(doomed()))
    await asyncio.sleep(5.0)
    return "finished"


async def _interrupted_in_a_callback() -> str:
    asyncio.get_running_loop().call_later(1.0, _raise_interrupt)
    await asyncio.sleep(5.0)
    return "finished"


async def _interrupted_in_an_executor_job() -> str:
    async def swallowing() -> None:  # code that cleans up on anything and goes on
        with contextlib.suppress(BaseException):
            await asyncio.get_running_loop().run_in_executor(None, _raise_interrupt)

    asyncio.get_running_loop().create_task(swallowing())
    await asyncio.sleep(5.0)
    return "finished"


@pytest.mark.parametrize(
    "main",
    [_interrupted_in_a_task, _interrupted_in_a_callback, _interrupted_in_an_executor_job],
    ids=["task", "callback", "executor-job"],
)
def test_an_interrupt_wherever_it_lands_ends_the_run(main) -> None:  # type: ignore[no-untyped-def]
    """A test's timeout raised mid-run must end the run, not stay in the task or callback it
    landed in (asyncio keeps it there): that killed one node's task and the run ended with a
    violation of a seed that was never wrong. Red without `VirtualLoop.interrupted`."""
    with pytest.raises(Interrupt, match="timeout"):
        vloop.run(0, main)
    _HELD.clear()


def test_errors_and_cancellations_are_not_interrupts() -> None:
    async def main() -> str:
        async def failing() -> None:
            raise ValueError("a node's bug: its TaskOwner's business, not the loop's")

        loop = asyncio.get_running_loop()
        task = loop.create_task(failing())
        loop.create_task(asyncio.sleep(9.0)).cancel()
        await asyncio.sleep(1.0)
        assert isinstance(task.exception(), ValueError)
        return "finished"

    assert vloop.run(0, main) == "finished"


def test_wall_clock_and_randomness_come_from_the_loop() -> None:
    async def main() -> tuple[object, bytes]:
        await asyncio.sleep(90.0)
        return utc_now(), token_bytes(8)

    (now, noise), (_, again) = vloop.run(3, main), vloop.run(3, main)
    assert (now - vloop.EPOCH).total_seconds() == pytest.approx(90.0)  # type: ignore[operator]
    assert noise == again and len(noise) == 8


def test_a_dead_owner_s_store_executor_refuses_work() -> None:
    owner = vloop.Owner("n#1")
    executor = vloop.InlineExecutor(owner, "ledger")
    assert executor.run(lambda: 7) == 7
    owner.alive = False
    with pytest.raises(vloop.OwnerDead):
        executor.run(lambda: 7)


def test_a_simulated_run_reads_no_wall_clock_that_steers_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Node code measures time with the loop and dates with `utc_now`: a whole run of scenario
    (a) reads the OS clock only to space out log lines (`aio/throttle.py`), to time a store
    write's retry budget (tenacity, in `ledger/retry.py`: it only matters once a write fails
    with a transient error, which no simulated store does unless failpoints are armed) and to
    stamp a metric series' creation time (prometheus_client's `_created`: metrics are only
    read by scrapers, never by the node, `runtime/metrics.py`)."""
    readers: Counter[str] = Counter()

    def spy(real: object) -> object:
        def read() -> float:
            readers[sys._getframe(1).f_globals.get("__name__", "?")] += 1
            return real()  # type: ignore[operator,no-any-return]

        return read

    monkeypatch.setattr(time, "time", spy(time.time))
    monkeypatch.setattr(time, "monotonic", spy(time.monotonic))
    with quiet_nodes():
        result = run_scenario("eov-solo", 4)
    monkeypatch.undo()
    assert result.ok
    assert set(readers) <= {"dltmw.aio.throttle", "tenacity", "prometheus_client.metrics"}, readers


def test_a_run_gives_back_every_node_s_share_of_the_process_memo() -> None:
    """A simulated run ends by killing its nodes (no `Node.stop`): each kill must give back the
    node's count in the process memo (`Node.killed`), or the memo stayed shared for the rest of
    the process and the next lone node of it (an embedded network's, a test's) kept it."""
    assert not IN_PROCESS.shared
    assert run_scenario("eov-solo", 4).ok
    assert not IN_PROCESS.shared
