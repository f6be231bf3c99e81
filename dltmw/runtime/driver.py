"""The one driver: it feeds any core (`dltmw.core.effects.Core`) and executes its effects.

Every role that decides something runs its pure core through this loop — the solo and PBFT
orderers, the notary (single and cluster), the peer's committer, the private executor — and
only the per-role `Executor` (`runtime/executor.py`) differs. One iteration (etcd raft's
reference loop):

1. wait for input or the next tick (no tick while a `Quiescent` core says none would matter:
   an idle solo orderer sleeps until input instead of waking every 10 ms), then take every
   input already queued, up to `batch_max`, so a burst of requests becomes one step and one
   storage transaction (group commit);
2. `load`: the executor reads what the step needs (the committed versions a block reads, the
   spent rows a batch touches). It runs after the previous iteration's effects are durable, so
   a read never misses an earlier decision;
3. step every input, tick the core when a tick is due (`now` = ticks issued so far); when the
   inbox is empty now and the role's `downstream_idle()` says nothing it handed on is still
   waiting to be taken, tell a core that `Drains` so (`drained()`: the adaptive block cutter
   cuts then, instead of waiting for a timer). A role calls `nudge()` when its downstream
   becomes idle, so that a batch held back meanwhile is cut at once;
4. execute `ready()` strictly in order: persist, apply what was decided, send, reply.

Intake is bounded: `submit` refuses a full inbox with a typed `Overloaded` (RESOURCE_EXHAUSTED
to the caller) and counts it in `overloaded`; internal feeders (a deliver stream, a catch-up
fetch) `put` and wait for room instead. Once `stop` began, both refuse with SHUTTING_DOWN.

One stop rule for every role: stop taking input, let the step in progress finish — never
cancel inside an executor's persist (a cancelled sqlite commit leaves its outcome unknown) —
and end within `grace_s`; a step still running then is cancelled, and a task that does not end
even then is named in the log (`cancel_and_wait`). The loop is owned by the node's `TaskOwner`
(`forever`, not restartable: the core moved past effects that failed), so a failing step is
fatal as every supervised loop's failure is; `on_failure` lets the role refuse its waiters.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Callable, Sequence
from concurrent.futures import Executor as ThreadPool
from typing import Generic

from dltmw.aio.tasks import TaskOwner, cancel_and_wait
from dltmw.core.effects import Core, D, Drains, Effects, M, P, Quiescent, R
from dltmw.core.errors import Overloaded, TransientError
from dltmw.runtime.executor import Executor, In, Msg
from dltmw.runtime.metrics import NodeMetrics
from dltmw.v1 import errors_pb2

logger = logging.getLogger(__name__)
STOP_GRACE_S = 10.0
BATCH_MAX = 1000


class _Wake:
    """Queued by `stop` so an idle loop looks at its stop flag (never stepped)."""


class Driver(Generic[In, Msg, P, D, M, R]):
    """Runs one core (see the module docstring). One run per instance."""

    def __init__(
        self,
        name: str,
        core: Core[Msg, Effects[P, D, M, R]],
        executor: Executor[In, Msg, P, D, M, R],
        tasks: TaskOwner,
        *,
        inbox_max: int,
        tick_s: float | None = None,
        batch_max: int = BATCH_MAX,
        step_in: ThreadPool | None = None,
        on_failure: Callable[[BaseException], None] | None = None,
        metrics: NodeMetrics | None = None,
        downstream_idle: Callable[[], bool] | None = None,
        step_inline: Callable[[Sequence[Msg]], bool] | None = None,
    ) -> None:
        """`step_in`: a worker thread to step the core on, for a core that signs or reads a
        store while it steps (only the driver may touch such a core). `step_inline(messages)`:
        True when stepping these messages (and no tick) touches nothing `step_in` guards, so the
        step runs on the loop instead: a hop to the worker costs a wake-up and a GIL hand-over
        each way (~0.3 ms on a busy 2-core host), more than a step with nothing to do (the
        private executor's step of a block without private transactions, on every peer for
        every block). `metrics`: the node's, which then reports this driver's inbox depth and
        refusals when scraped."""
        self.name = name
        self._core = core
        self._drains = core if isinstance(core, Drains) else None
        self._quiescent = core if isinstance(core, Quiescent) else None
        self._downstream_idle = downstream_idle
        self._executor = executor
        self._tasks = tasks
        self._inbox: asyncio.Queue[In | _Wake] = asyncio.Queue(maxsize=max(1, inbox_max))
        self._tick_s = tick_s
        self._batch_max = max(1, batch_max)
        self._step_in = step_in
        self._step_inline = step_inline
        self._on_failure = on_failure
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._finished = asyncio.Event()  # the loop left its last step
        self.failed: BaseException | None = None
        self.overloaded = 0  # inputs refused because the inbox was full
        self.ticks = 0
        if metrics is not None:
            metrics.watch_driver(self)

    # -- intake --------------------------------------------------------------------------------

    def submit(self, item: In) -> None:
        """Queue one input now, or refuse: `Overloaded` (counted) when the inbox is full."""
        self._check_open()
        try:
            self._inbox.put_nowait(item)
        except asyncio.QueueFull:
            self.overloaded += 1
            raise Overloaded(f"{self.name} queue is full") from None

    def submit_all(self, items: Sequence[In]) -> None:
        """Queue all `items` or none of them (`Overloaded`, counted once per item)."""
        self._check_open()
        if self._inbox.qsize() + len(items) > self._inbox.maxsize:
            self.overloaded += len(items)
            raise Overloaded(f"{self.name} queue is full")
        for item in items:
            self._inbox.put_nowait(item)

    async def put(self, item: In) -> None:
        """Queue one input, waiting for room (internal feeders only: their own loop is bounded)."""
        self._check_open()
        await self._inbox.put(item)

    def nudge(self) -> None:
        """Run one more step even with no input (its downstream became idle): never blocks,
        does nothing when input is queued already (that step will come anyway) or stopping."""
        if self._task is not None and not self._stopping and self._inbox.empty():
            self._inbox.put_nowait(_Wake())

    @property
    def depth(self) -> int:
        """Inputs queued now (read by the metrics)."""
        return self._inbox.qsize()

    @property
    def running(self) -> bool:
        """Started, not stopping, not failed."""
        return self._task is not None and not self._stopping and self.failed is None

    def _check_open(self) -> None:
        if self._stopping or self.failed is not None:
            raise TransientError(errors_pb2.ERROR_REASON_SHUTTING_DOWN, f"{self.name} is stopping")

    # -- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        """Execute what the core holds already (a restore's effects), then run the loop."""
        if self._task is not None or self._stopping:
            raise RuntimeError(f"driver {self.name} runs once")
        await self._execute(self._core.ready())
        self._task = self._tasks.forever(self.name, self._supervised, restart=False)

    async def stop(self, grace_s: float = STOP_GRACE_S) -> None:
        """The stop rule (module docstring); idempotent."""
        self._stopping = True
        task, self._task = self._task, None
        if task is None:
            return
        with contextlib.suppress(asyncio.QueueFull):
            self._inbox.put_nowait(_Wake())  # a full inbox wakes the loop by itself
        if not task.done():
            finished = asyncio.ensure_future(self._finished.wait())
            await asyncio.wait(
                {task, finished}, timeout=grace_s, return_when=asyncio.FIRST_COMPLETED
            )
            finished.cancel()
            if not self._finished.is_set() and not task.done():
                logger.error("%s: step still running %.1f s into the stop", self.name, grace_s)
        await cancel_and_wait(task, grace_s)  # parked (or overdue, after the grace period)

    async def __aenter__(self) -> Driver[In, Msg, P, D, M, R]:
        await self.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.stop()

    # -- the loop ------------------------------------------------------------------------------

    async def _supervised(self) -> None:
        try:
            await self._loop()
        except Exception as exc:
            self.failed = exc
            if self._on_failure is not None:
                self._on_failure(exc)
            raise

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        tick_s = self._tick_s
        quiet = self._quiescent is not None and self._quiescent.quiescent()
        next_tick = math.inf if tick_s is None or quiet else loop.time() + tick_s
        while not self._stopping:
            inputs = await self._take(next_tick - loop.time())
            messages = await self._executor.load(inputs) if inputs else ()
            tick = None
            if tick_s is not None and loop.time() >= next_tick:
                self.ticks = tick = self.ticks + 1
                next_tick = loop.time() + tick_s
            drained = self._drains is not None and self._inbox.empty()
            if drained and self._downstream_idle is not None:
                drained = self._downstream_idle()
            if self._step_in is None or (
                tick is None and self._step_inline is not None and self._step_inline(messages)
            ):
                effects = self._step(messages, tick, drained)
            else:
                step = self._step
                effects = await loop.run_in_executor(self._step_in, step, messages, tick, drained)
            await self._execute(effects)
            if self._quiescent is not None and tick_s is not None:
                # An idle core that says no tick matters sleeps until input (module docstring).
                if self._quiescent.quiescent():
                    next_tick = math.inf
                elif next_tick == math.inf:
                    next_tick = loop.time() + tick_s
        self._finished.set()
        await asyncio.Future()  # parked until stop() cancels it: a returning loop is fatal

    def _step(
        self, messages: Sequence[Msg], tick: int | None, drained: bool
    ) -> Effects[P, D, M, R]:
        for message in messages:
            self._core.step(message)
        if tick is not None:
            self._core.tick(tick)
        if drained and self._drains is not None:
            self._drains.drained()
        return self._core.ready()

    async def _take(self, wait_s: float) -> list[In]:
        """Inputs queued now (waiting up to `wait_s` for the first), at most `batch_max`."""
        # `asyncio.timeout`, not `wait_for`: no task per wait, so an input that arrives wakes
        # the loop in one turn (a lone transaction at low load meets this on every driver).
        try:
            if not self._inbox.empty():
                first = self._inbox.get_nowait()
            elif wait_s == math.inf:
                first = await self._inbox.get()
            else:
                async with asyncio.timeout(max(0.0, wait_s)):
                    first = await self._inbox.get()
        except TimeoutError:
            return []
        taken = [first]
        while len(taken) < self._batch_max and not self._inbox.empty():
            taken.append(self._inbox.get_nowait())
        return [item for item in taken if not isinstance(item, _Wake)]

    async def _execute(self, effects: Effects[P, D, M, R]) -> None:
        executor = self._executor
        if effects.persist:
            await executor.persist(effects.persist)
        if effects.decided:
            await executor.apply(effects.decided)
        if effects.send:
            await executor.send(effects.send)
        if effects.replies:
            await executor.reply(effects.replies)
