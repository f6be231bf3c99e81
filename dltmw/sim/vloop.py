"""The event loop of a simulated run: virtual time, no threads, seeded randomness.

A simulated network runs the production node and SDK code (asyncio, the servicers, the roles,
the stores) on ONE `VirtualLoop`. What the loop changes, and why each is enough:

* **Time.** `time()` is a virtual clock. When nothing is ready, the loop moves the clock to the
  next timer instead of waiting for it (its selector never waits: there is no I/O). Sleeps,
  timeouts, ticks and backoffs therefore cost no real time, and the order of events depends
  only on the code and the seed. `wall_clock()` is a fixed epoch plus
  the virtual time: `aio/clock.utc_now()` reads it, so signed timestamps, certificate validity
  and time windows are virtual too. Nothing scheduled and no timer means every task waits for
  something that cannot come: `Deadlock`.
* **No threads.** A thread would make the loop look idle and let the clock jump while work is
  still in progress. `run_in_executor` (the verify pool, `asyncio.to_thread`) runs the job at
  once on the loop's thread and hands the result over on the next turn of the loop (as a
  thread's result would arrive), and `store_executor(name)` gives every store
  (`ledger/sqlite_file.py`) an `InlineExecutor`, so each store call is one uninterrupted step.
* **Randomness.** `random_bytes(n)` and `random()` come from the run's seeded `random.Random`:
  `aio/entropy.py` reads them for nonces, private-payload keys and retry jitter. Signing keys
  are Ed25519 (`sim/material.py`), whose signatures are deterministic, so a seed replays a run
  byte for byte.
* **Owners.** Every task records the owner that was current (`OWNER`, a context variable) when
  it was created — tasks inherit it from their creator — and every store executor likewise. A
  simulated crash (`sim/hosts.py`) cancels exactly the tasks of one node incarnation and kills
  its store executors, so whatever its cancelled tasks still try to persist is refused: the
  files keep what was committed before the crash and nothing after, as with kill -9.
* **Interrupts end the run.** A `BaseException` that is neither an `Exception` nor a
  cancellation is not the outcome of node code: it is the process being interrupted — a test's
  timeout (pytest-timeout's signal method raises `Failed` from SIGALRM wherever the run happens
  to be). asyncio keeps it as the exception of the task it landed in, or reports it to
  `call_exception_handler` from a callback, and goes on (only `SystemExit` and
  `KeyboardInterrupt` leave the loop), so a timeout firing mid-run killed one
  node's task and the run went on to a liveness or safety violation of a seed that was never
  wrong (the likely cause of private seed 189's one failure under load 20+: its test's 900 s
  ran out; `tests/sim/test_private_sim.py`). The loop re-raises it on its next turn, out of
  `run`: the run stops with the interrupt, never with a verdict.
"""

from __future__ import annotations

import asyncio
import contextvars
import heapq
import math
import random
import selectors
import weakref
from collections.abc import Callable, Coroutine
from concurrent.futures import Executor, Future
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from _typeshed import FileDescriptorLike

T = TypeVar("T")

EPOCH = datetime(2030, 1, 2, tzinfo=UTC)  # virtual wall clock at time 0 (certificates cover it)
STEPS_MAX = 50_000_000  # loop turns of one run: a livelock fails instead of spinning forever


class Deadlock(RuntimeError):
    """Nothing is ready and no timer is set: every task waits for something that cannot come."""


class Livelock(RuntimeError):
    """The loop kept turning without end (a task that never waits for anything)."""


KillAt = tuple[str, bool, Callable[[], None]]  # (store name, after the job?, kill)


class Owner:
    """Who a task or a store belongs to: one incarnation of a simulated node (or a client)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.alive = True
        self._tasks: weakref.WeakKeyDictionary[asyncio.Task[Any], int] = weakref.WeakKeyDictionary()
        self.kill_at: KillAt | None = None  # armed by `sim/hosts.Host.kill_at`

    def adopt(self, task: asyncio.Task[Any], serial: int) -> None:
        """Record a task made by this owner (`serial`: its creation order)."""
        self._tasks[task] = serial

    def tasks(self) -> list[asyncio.Task[Any]]:
        """Its tasks not yet collected, in creation order."""
        return [t for t, _ in sorted(self._tasks.items(), key=lambda item: item[1])]

    def __repr__(self) -> str:
        return f"Owner({self.name}, {'alive' if self.alive else 'dead'})"


OWNER: contextvars.ContextVar[Owner | None] = contextvars.ContextVar("sim_owner", default=None)


class OwnerDead(RuntimeError):
    """A dead incarnation's code tried to use its store (it was killed: nothing persists)."""


class InlineExecutor(Executor):
    """Runs each job at once on the caller's thread; refuses jobs once its owner is dead."""

    def __init__(self, owner: Owner | None, name: str) -> None:
        self.owner = owner
        self.name = name

    def run(self, fn: Callable[..., T], *args: Any) -> T:
        """`fn(*args)` now, unless the owner was killed — or is to be killed at this store's
        next job (`Owner.kill_at`: before the job, which is then lost, or right after it)."""
        owner = self.owner
        if owner is None:
            return fn(*args)
        if not owner.alive:
            raise OwnerDead(f"{owner.name}: {self.name} used after the node was killed")
        trigger = owner.kill_at
        if trigger is None or trigger[0] != self.name:
            return fn(*args)
        owner.kill_at = None
        _, after, kill = trigger
        if not after:
            kill()
            raise OwnerDead(f"{owner.name}: killed at the start of a {self.name} job")
        result = fn(*args)
        kill()
        return result

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        future: Future[T] = Future()
        try:
            future.set_result(self.run(lambda: fn(*args, **kwargs)))
        except BaseException as exc:
            future.set_exception(exc)
        return future


class _VirtualSelector(selectors.BaseSelector):
    """Registers what asyncio registers (its self-pipe) and never waits: `select(timeout)`
    advances the loop's virtual clock by `timeout` instead."""

    def __init__(self, advance: Callable[[float], None]) -> None:
        self._advance = advance
        self._keys: dict[int, selectors.SelectorKey] = {}

    def register(
        self, fileobj: FileDescriptorLike, events: int, data: Any = None
    ) -> selectors.SelectorKey:
        fd = selectors._fileobj_to_fd(fileobj)  # type: ignore[attr-defined]
        key = selectors.SelectorKey(fileobj, fd, events, data)
        self._keys[fd] = key
        return key

    def unregister(self, fileobj: FileDescriptorLike) -> selectors.SelectorKey:
        return self._keys.pop(selectors._fileobj_to_fd(fileobj))  # type: ignore[attr-defined]

    def modify(
        self, fileobj: FileDescriptorLike, events: int, data: Any = None
    ) -> selectors.SelectorKey:
        self.unregister(fileobj)
        return self.register(fileobj, events, data)

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        if timeout is None:
            raise Deadlock("no task is ready and no timer is set")
        if timeout > 0:
            self._advance(timeout)
        return []

    def get_map(self) -> dict[int, selectors.SelectorKey]:  # type: ignore[override]
        return self._keys

    def close(self) -> None:
        self._keys.clear()


class VirtualLoop(asyncio.SelectorEventLoop):
    """An asyncio loop on virtual time, without threads, with seeded randomness."""

    def __init__(self, seed: int) -> None:
        self._now = 0.0
        self.rng = random.Random(seed)
        self.steps = 0
        self.tasks_made = 0
        self.interrupted: BaseException | None = None  # re-raised by the next `_run_once`
        super().__init__(_VirtualSelector(self._advance))
        self._clock_resolution = 0.0  # a timer is due once the clock has passed it
        self.set_task_factory(_owned_task)  # type: ignore[arg-type]  # (typeshed: no context kw)

    def _advance(self, seconds: float) -> None:
        self._now += seconds

    def time(self) -> float:
        return self._now

    def wall_clock(self) -> datetime:
        """The virtual wall clock (read by `aio/clock.utc_now`)."""
        return EPOCH + timedelta(seconds=self._now)

    def random_bytes(self, n: int) -> bytes:
        """Seeded bytes (read by `aio/entropy.token_bytes`)."""
        return self.rng.randbytes(n)

    def random(self) -> float:
        """A seeded fraction in [0, 1) (read by `aio/entropy.fraction`)."""
        return self.rng.random()

    def store_executor(self, name: str) -> Executor:
        """The executor of a store made by the current owner (`ledger/sqlite_file.py`)."""
        return InlineExecutor(OWNER.get(), name)

    def run_in_executor(  # type: ignore[override]
        self, executor: Executor | None, func: Callable[..., T], *args: Any
    ) -> asyncio.Future[T]:
        future: asyncio.Future[T] = self.create_future()
        try:
            if isinstance(executor, InlineExecutor):
                result = executor.run(func, *args)
            else:
                result = func(*args)
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            if is_interrupt(exc):
                self.interrupted = exc
                raise
            self.call_soon(_settle, future, None, exc)
        else:
            self.call_soon(_settle, future, result, None)
        return future

    def _run_once(self) -> None:
        """One turn of the loop; when nothing is ready, first move the clock to the earliest
        timer. The clock is set just past that timer's time (`_clock_resolution` is 0), so a
        timer never fires before the time it was set for: code that compares `time()` with
        the deadline it scheduled (the driver's tick) always sees it reached — with asyncio's
        usual resolution a timer 1e-15 s ahead fires "now" and such a loop spins forever."""
        self.steps += 1
        if self.steps > STEPS_MAX:
            raise Livelock(f"{STEPS_MAX} loop turns at virtual time {self._now:.3f}s")
        scheduled: list[asyncio.TimerHandle] = self._scheduled  # type: ignore[attr-defined]
        while scheduled and scheduled[0].cancelled():  # what the base loop drops first
            heapq.heappop(scheduled)._scheduled = False  # type: ignore[attr-defined]
            self._timer_cancelled_count -= 1  # type: ignore[attr-defined]
        if not self._ready and scheduled:  # type: ignore[attr-defined]
            head = scheduled[0].when()
            if head >= self._now:
                self._now = math.nextafter(head, math.inf)
        super()._run_once()  # type: ignore[misc]
        if self.interrupted is not None:
            interrupt, self.interrupted = self.interrupted, None
            raise interrupt  # (cleared: `run` still cancels what is left, then closes)

    def call_exception_handler(self, context: dict[str, Any]) -> None:
        """asyncio's report of what a callback raised: an interrupt among them ends the run
        (module docstring, "Interrupts end the run")."""
        exc = context.get("exception")
        if self.interrupted is None and isinstance(exc, BaseException) and is_interrupt(exc):
            self.interrupted = exc
        super().call_exception_handler(context)

    def task_done(self, task: asyncio.Task[Any]) -> None:
        """Every task's done callback: a task that ended with an interrupt ends the run (its
        step keeps the interrupt as the task's exception and reports nothing)."""
        if task.cancelled() or self.interrupted is not None:
            return
        exc = task._exception  # (`exception()` would retrieve it)
        if exc is not None and is_interrupt(exc):
            self.interrupted = exc


def is_interrupt(exc: BaseException) -> bool:
    """Not node code's outcome but the process's: neither an error nor a cancellation."""
    return not isinstance(exc, Exception | asyncio.CancelledError)


def _settle(future: asyncio.Future[T], result: T | None, exc: BaseException | None) -> None:
    if future.cancelled():
        return
    if exc is not None:
        future.set_exception(exc)
    else:
        future.set_result(result)  # type: ignore[arg-type]


def _owned_task(
    loop: asyncio.AbstractEventLoop,
    coro: Coroutine[Any, Any, Any],
    **kwargs: Any,
) -> asyncio.Task[Any]:
    """Every task remembers the owner current where it was created (see the module doc)."""
    context: contextvars.Context | None = kwargs.get("context")
    owner = context.get(OWNER) if context is not None else OWNER.get()
    task = asyncio.Task(coro, loop=loop, **kwargs)
    if isinstance(loop, VirtualLoop):
        task.add_done_callback(loop.task_done)
        if owner is not None:
            loop.tasks_made += 1
            owner.adopt(task, loop.tasks_made)
    return task


def run(seed: int, main: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run `main()` to completion on a fresh virtual loop seeded with `seed`."""
    loop = VirtualLoop(seed)
    try:
        return loop.run_until_complete(main())
    finally:
        _cancel_all(loop)
        loop.close()


def _cancel_all(loop: VirtualLoop) -> None:
    """Cancel what is left (as `asyncio.run` does), so no coroutine is left pending."""
    pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
    for task in pending:
        task.cancel()
    if pending:
        loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
