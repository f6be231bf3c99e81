"""The one driver (`runtime/driver.py`): effects in order, overload typed and counted, the one
stop rule, supervision, group commit, ticks. A scripted core and executor record what happens;
slow steps are gates the test opens, never sleeps."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Sequence

import pytest

from dltmw.aio.tasks import TaskOwner
from dltmw.core.effects import Drains, Effects, Token
from dltmw.core.errors import Overloaded, TransientError
from dltmw.rpc.status import to_status
from dltmw.runtime.driver import Driver
from dltmw.v1 import errors_pb2

WAIT_S = 10.0  # a bound on waiting for something the test made happen, never a delay
Fx = Effects[str, str, str, str]


class ScriptedCore:
    """Each input `x` becomes persist x, decided x, a send of x to member 0, a reply to x."""

    def __init__(self) -> None:
        self.steps: list[str] = []
        self.ticks: list[int] = []
        self.threads: set[str] = set()
        self.fail_on: str | None = None
        self.ticked = asyncio.Event()
        self._pending: list[str] = []

    def step(self, message: str) -> None:
        self.threads.add(threading.current_thread().name)
        if message == self.fail_on:
            raise RuntimeError(f"core cannot take {message}")
        self.steps.append(message)
        self._pending.append(message)

    def tick(self, now: int) -> None:
        self.ticks.append(now)
        if len(self.ticks) >= 3:
            self.ticked.set()

    def ready(self) -> Fx:
        xs, self._pending = tuple(self._pending), []
        return Effects(xs, xs, tuple((0, x) for x in xs), tuple((x, x) for x in xs))


class Recorder:
    """An executor that logs every call; `gate` holds persist until the test opens it."""

    def __init__(self) -> None:
        self.log: list[str] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.in_persist = asyncio.Event()
        self.replied = asyncio.Event()
        self.persist_cancelled = False
        self.stubborn = False  # persist ignores its first cancellation

    async def load(self, inputs: Sequence[str]) -> Sequence[str]:
        self.log.append(f"load {','.join(inputs)}")
        return inputs

    async def persist(self, records: Sequence[str]) -> None:
        self.log.append(f"persist {','.join(records)}")
        self.in_persist.set()
        try:
            await self.gate.wait()
        except asyncio.CancelledError:
            self.persist_cancelled = True
            if not self.stubborn:
                raise
            await asyncio.Event().wait()  # swallowed the cancel; still never ends

    async def apply(self, decided: Sequence[str]) -> None:
        self.log.append(f"apply {','.join(decided)}")

    async def send(self, messages: Sequence[tuple[int, str]]) -> None:
        self.log.append(f"send {','.join(m for _, m in messages)}")

    async def reply(self, replies: Sequence[tuple[Token, str]]) -> None:
        self.log.append(f"reply {','.join(r for _, r in replies)}")
        self.replied.set()


def driver(
    core: ScriptedCore, executor: Recorder, tasks: TaskOwner, **options: object
) -> Driver[str, str, str, str, str, str]:
    settings: dict[str, object] = {"inbox_max": 8, **options}
    return Driver("test-driver", core, executor, tasks, **settings)  # type: ignore[arg-type]


async def test_effects_run_in_order_persist_apply_send_reply_even_when_persist_is_slow() -> None:
    core, ex, tasks = ScriptedCore(), Recorder(), TaskOwner()
    ex.gate.clear()
    async with driver(core, ex, tasks) as d:
        d.submit("a")
        await asyncio.wait_for(ex.in_persist.wait(), WAIT_S)
        assert ex.log == ["load a", "persist a"], "nothing may follow a persist in progress"
        ex.gate.set()
        await asyncio.wait_for(ex.replied.wait(), WAIT_S)
    assert ex.log == ["load a", "persist a", "apply a", "send a", "reply a"]


async def test_a_full_inbox_refuses_with_a_typed_counted_overload() -> None:
    core, ex, tasks = ScriptedCore(), Recorder(), TaskOwner()
    d = driver(core, ex, tasks, inbox_max=2)  # not started: nothing drains the inbox
    d.submit("a")
    d.submit("b")
    with pytest.raises(Overloaded) as refused:
        d.submit("c")
    assert isinstance(refused.value, TransientError)
    assert refused.value.reason == errors_pb2.ERROR_REASON_OVERLOADED
    assert to_status(refused.value).code == 8  # RESOURCE_EXHAUSTED to the caller
    with pytest.raises(Overloaded):
        d.submit_all(["c", "d"])  # all or nothing
    assert d.overloaded == 3
    async with d:  # the queued inputs are taken, in one step
        await asyncio.wait_for(ex.replied.wait(), WAIT_S)
    assert core.steps == ["a", "b"]


async def test_inputs_queued_together_are_one_step_up_to_the_batch_bound() -> None:
    core, ex, tasks = ScriptedCore(), Recorder(), TaskOwner()
    d = driver(core, ex, tasks, batch_max=2)
    for x in "abcde":
        d.submit(x)
    async with d:
        while "reply e" not in ex.log:
            ex.replied.clear()
            await asyncio.wait_for(ex.replied.wait(), WAIT_S)
    persists = [line for line in ex.log if line.startswith("persist")]
    assert persists == ["persist a,b", "persist c,d", "persist e"]
    assert ex.log.index("load c,d") > ex.log.index("reply a,b"), "load after the last step"


class DrainingCore(ScriptedCore):
    """A core that `Drains`: it records, after which input, the driver said "drained"."""

    def __init__(self) -> None:
        super().__init__()
        self.drains: list[str] = []

    def drained(self) -> None:
        self.drains.append(self.steps[-1] if self.steps else "")


async def test_drained_is_told_only_when_nothing_more_is_queued() -> None:
    """Adaptive cutting's input: after a step of a,b (c,d,e still queued: batch bound) no
    drained event; after c,d neither; after e the inbox is empty: drained."""
    core, ex, tasks = DrainingCore(), Recorder(), TaskOwner()
    d = driver(core, ex, tasks, batch_max=2)
    for x in "abcde":
        d.submit(x)
    async with d:
        while "reply e" not in ex.log:
            ex.replied.clear()
            await asyncio.wait_for(ex.replied.wait(), WAIT_S)
    assert set(core.drains) == {"e"}  # (the stop wakes the idle loop: drained again)
    assert isinstance(core, Drains) and not isinstance(ScriptedCore(), Drains)


async def test_drained_waits_for_an_idle_downstream_and_a_nudge_brings_it() -> None:
    """Nagle's rule: with input all taken but the downstream busy (a block not yet taken by
    every follower) no drained event; once the downstream is idle, `nudge()` runs a step
    without input and the core hears "drained"."""
    core, ex, tasks = DrainingCore(), Recorder(), TaskOwner()
    idle = False
    d = driver(core, ex, tasks, downstream_idle=lambda: idle)
    async with d:
        d.submit("a")
        await asyncio.wait_for(ex.replied.wait(), WAIT_S)
        assert core.drains == []
        idle = True
        steps = len([line for line in ex.log if line.startswith("load")])
        d.nudge()
        for _ in range(100):  # bounded: a few loop turns
            if core.drains:
                break
            await asyncio.sleep(0)
        assert core.drains == ["a"]
        assert len([line for line in ex.log if line.startswith("load")]) == steps  # no input


async def test_stop_finishes_the_step_in_progress_and_never_cancels_inside_persist() -> None:
    core, ex, tasks = ScriptedCore(), Recorder(), TaskOwner()
    ex.gate.clear()
    d = driver(core, ex, tasks)
    await d.start()
    d.submit("a")
    await asyncio.wait_for(ex.in_persist.wait(), WAIT_S)
    stopping = asyncio.create_task(d.stop(grace_s=WAIT_S))
    await asyncio.sleep(0)  # let stop() begin: from here on, intake is refused
    with pytest.raises(TransientError) as refused:
        d.submit("late")
    assert refused.value.reason == errors_pb2.ERROR_REASON_SHUTTING_DOWN
    assert not stopping.done(), "stop waits for the step in progress"
    ex.gate.set()
    await asyncio.wait_for(stopping, WAIT_S)
    assert not ex.persist_cancelled
    assert ex.log == ["load a", "persist a", "apply a", "send a", "reply a"]
    assert core.steps == ["a"]
    await d.stop()  # idempotent
    assert tasks.running == 0


async def test_an_idle_driver_stops_at_once() -> None:
    core, ex, tasks = ScriptedCore(), Recorder(), TaskOwner()
    d = driver(core, ex, tasks)
    await d.start()
    await asyncio.wait_for(d.stop(grace_s=WAIT_S), 2.0)  # no step to finish: no waiting
    assert tasks.running == 0 and tasks.failed is None


async def test_a_step_that_outlives_the_grace_is_cancelled_and_a_task_that_will_not_end_is_named(
    caplog: pytest.LogCaptureFixture,
) -> None:
    core, ex, tasks = ScriptedCore(), Recorder(), TaskOwner()
    ex.gate.clear()
    ex.stubborn = True
    d = driver(core, ex, tasks)
    await d.start()
    d.submit("a")
    await asyncio.wait_for(ex.in_persist.wait(), WAIT_S)
    with caplog.at_level(logging.ERROR):
        await asyncio.wait_for(d.stop(grace_s=0.2), WAIT_S)
    assert ex.persist_cancelled, "after the grace period the step is cancelled"
    named = [r.getMessage() for r in caplog.records if "test-driver" in r.getMessage()]
    assert any("step still running" in m for m in named), named
    assert any("still running" in m and "after cancel" in m for m in named), named
    ex.stubborn = False
    await tasks.stop(timeout_s=WAIT_S)


async def test_a_failing_step_is_fatal_under_the_task_owner_and_refuses_what_follows() -> None:
    fatal: list[tuple[str, BaseException | None]] = []
    reported = asyncio.Event()

    async def on_fatal(name: str, exc: BaseException | None) -> None:
        fatal.append((name, exc))
        reported.set()

    failures: list[BaseException] = []
    core, ex, tasks = ScriptedCore(), Recorder(), TaskOwner(on_fatal=on_fatal)
    core.fail_on = "bad"
    d = driver(core, ex, tasks, on_failure=failures.append)
    await d.start()
    d.submit("bad")
    await asyncio.wait_for(reported.wait(), WAIT_S)
    assert fatal[0][0] == "test-driver" and isinstance(fatal[0][1], RuntimeError)
    assert failures == [fatal[0][1]] and d.failed is fatal[0][1]
    assert not d.running
    with pytest.raises(TransientError, match="stopping"):
        d.submit("next")
    await d.stop()


async def test_ticks_count_up_from_one_and_steps_run_on_the_worker_thread() -> None:
    from concurrent.futures import ThreadPoolExecutor

    core, ex, tasks = ScriptedCore(), Recorder(), TaskOwner()
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="core-thread")
    try:
        async with driver(core, ex, tasks, tick_s=0.001, step_in=pool) as d:
            d.submit("a")
            await asyncio.wait_for(core.ticked.wait(), WAIT_S)
            await asyncio.wait_for(ex.replied.wait(), WAIT_S)
        assert core.ticks[:3] == [1, 2, 3]
        assert core.ticks == list(range(1, len(core.ticks) + 1))
        assert all(name.startswith("core-thread") for name in core.threads), core.threads
    finally:
        pool.shutdown()


async def test_steps_that_need_no_worker_run_on_the_loop_and_the_rest_on_the_worker() -> None:
    # The private executor steps every committed block; one without private transactions
    # only moves a cursor, and a hop to the store thread for it cost a wake-up each way.
    from concurrent.futures import ThreadPoolExecutor

    core, ex, tasks = ScriptedCore(), Recorder(), TaskOwner()
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="core-thread")
    on_loop = threading.current_thread().name
    where: dict[str, str] = {}
    step = core.step

    def recording_step(message: str) -> None:
        where[message] = threading.current_thread().name
        step(message)

    core.step = recording_step  # type: ignore[method-assign]
    try:
        cheap = lambda messages: all(m.startswith("cheap") for m in messages)  # noqa: E731
        async with driver(core, ex, tasks, step_in=pool, step_inline=cheap) as d:
            for x in ("cheap-1", "store-2", "cheap-3"):
                ex.replied.clear()
                d.submit(x)
                await asyncio.wait_for(ex.replied.wait(), WAIT_S)
        assert core.steps == ["cheap-1", "store-2", "cheap-3"]
        assert where["cheap-1"] == on_loop and where["cheap-3"] == on_loop, where
        assert where["store-2"].startswith("core-thread"), where
    finally:
        pool.shutdown()


async def test_a_ticking_driver_waits_for_its_input_without_a_task_per_wait() -> None:
    # A lone input at low load meets every driver's take: a task per wait (`wait_for`) would
    # cost one more loop turn before the step. Count the tasks made while inputs are taken.
    core, ex, tasks = ScriptedCore(), Recorder(), TaskOwner()
    loop = asyncio.get_running_loop()
    made: list[asyncio.Task[object]] = []

    def factory(loop_: asyncio.AbstractEventLoop, coro: object, **kwargs: object) -> object:
        task = asyncio.Task(coro, loop=loop_, **kwargs)  # type: ignore[arg-type]
        made.append(task)
        return task

    async with driver(core, ex, tasks, tick_s=60.0) as d:
        await asyncio.sleep(0)  # the driver waits for input (a minute before its tick)
        loop.set_task_factory(factory)  # type: ignore[arg-type]
        try:
            for x in ("a", "b", "c"):
                ex.replied.clear()
                d.submit(x)
                await asyncio.wait_for(ex.replied.wait(), WAIT_S)
        finally:
            loop.set_task_factory(None)
    assert core.steps == ["a", "b", "c"]
    takes = [t for t in made if getattr(t.get_coro(), "__qualname__", "") == "Queue.get"]
    assert takes == [], "the driver wrapped its inbox wait in a task"


class QuietCore(ScriptedCore):
    """A `Quiescent` core: a tick matters only while an input is waiting for its timeout."""

    def __init__(self) -> None:
        super().__init__()
        self.waiting = 0  # inputs whose timeout has not passed

    def step(self, message: str) -> None:
        super().step(message)
        self.waiting += 1

    def tick(self, now: int) -> None:
        super().tick(now)
        self.waiting = 0  # (one tick is its timeout)

    def quiescent(self) -> bool:
        return self.waiting == 0


async def test_a_quiescent_core_is_not_ticked_until_its_next_input() -> None:
    core, ex, tasks = QuietCore(), Recorder(), TaskOwner()
    async with driver(core, ex, tasks, tick_s=0.001) as d:
        idle = 0
        for _ in range(50):  # ~50 tick periods with nothing pending: not one tick
            await asyncio.sleep(0.001)
            idle = len(core.ticks)
        d.submit("a")
        await asyncio.wait_for(ex.replied.wait(), WAIT_S)
        for _ in range(int(WAIT_S / 0.001)):  # the input makes it tick again (bounded)
            if core.ticks:
                break
            await asyncio.sleep(0.001)
        ticks_after_input = len(core.ticks)
        for _ in range(50):  # quiet again once its one tick passed
            await asyncio.sleep(0.001)
    assert idle == 0, f"{idle} ticks while quiescent"
    assert ticks_after_input >= 1 and core.waiting == 0
    assert len(core.ticks) <= ticks_after_input + 1, core.ticks
