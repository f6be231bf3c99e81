"""Owning a node's long-lived tasks: nothing dies silently, nothing hangs a stop.

Why. A bare `asyncio.create_task` whose coroutine raises keeps its exception until someone looks —
usually at shutdown. A node whose orderer loop died that way kept answering health checks with
SERVING while ordering nothing, and logged nothing until it was stopped. So every long-lived task
of a node is started through its `TaskOwner` (`NodeContext.tasks`), which watches each one:

* `forever(name, factory)` — a loop that must run as long as the node. An exception that may pass
  (`is_transient`) is logged as a warning (rate-limited) and the loop is started again from its
  factory after a capped, jittered exponential backoff; a loop whose state cannot survive a
  restart passes `restart=False`. Anything else — a broken invariant, a bug, `StorageUnavailable`
  (a store's retry budget spent), too many transient failures in a row, or the loop RETURNING —
  is fatal: logged at once with its traceback, then the owner's `on_fatal` hook runs (the node
  turns health NOT_SERVING for every service at once and exits with `EXIT_FATAL`, see
  `runtime/process.py`; its keeper restarts it).
* `spawn(name, coroutine)` — a task that may end (a stream session, one catch-up fetch): ending
  is fine; a transient failure is a warning; anything else is fatal as above.

Once `close()` was called (the node is stopping), endings and failures are logged, not fatal.
Tasks are still cancelled by the component that started them (`cancel_and_wait`), which stays
responsible for its own orderly stop; `stop()` cancels whatever is left.

`is_transient` is the rule every loop uses (the node passes it extended with the storage faults
that may pass, `runtime/faults.is_transient`, which the stores also retry). It is not a second
classification of failures from other nodes: it asks the one in `aio/rpc_errors.py`, and a
failure may pass unless that says FAIL — a peer that is unavailable, slow or overloaded (RETRY:
gRPC UNAVAILABLE / DEADLINE_EXCEEDED / RESOURCE_EXHAUSTED, `TransientError`, connection-level OS
errors) or another node's misbehaviour (BLAME_PEER: `PeerError`, UNKNOWN / INTERNAL: another
node's fault is never a reason to stop this one).

A cancellation nobody asked for is a failure, not a stop. grpc.aio ends a call with
`asyncio.CancelledError` when the call was cancelled locally — which also happens when another
user of the same cached channel closed it (`NodeContext.forget` after that user saw the other node
restart). Unhandled, that error looked like an orderly stop: a peer's block-following task ended
silently and the peer stayed behind for good. So a `CancelledError` in a task whose own
`cancelling()` count is zero (nobody cancelled the task) is re-raised as `StrayCancellation`,
a transient failure: warned about and restarted like any other.

Stopping without trusting the task: a task may swallow its cancellation (grpc.aio can surface a
locally cancelled call as an `AioRpcError(CANCELLED)` that a retry loop treats as a peer failure),
so `cancel_and_wait` cancels, waits a bounded time, and logs a task that did not finish.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from dltmw.aio.entropy import fraction
from dltmw.aio.rpc_errors import Verdict, classify
from dltmw.aio.throttle import LogThrottle

logger = logging.getLogger(__name__)

STOP_WAIT_S = 3.0
BACKOFF_FIRST_S = 0.1
BACKOFF_MAX_S = 5.0
RESTARTS_MAX = 20  # transient failures in a row (without a healthy run) before it is fatal
HEALTHY_S = 30.0  # a run this long resets the count

Fatal = Callable[[str, BaseException | None], Awaitable[None]]


class StrayCancellation(Exception):
    """A task's awaitable was cancelled although the task itself was not (see the module
    docstring): transient, the task is restarted."""


def was_asked_to_cancel() -> bool:
    """Is the running task being cancelled (rather than one of its calls cancelled under it)?"""
    task = asyncio.current_task()
    return task is None or task.cancelling() > 0


def is_transient(exc: BaseException) -> bool:
    """May the failure `exc` pass, so that trying again later is right (not FAIL, see
    `aio/rpc_errors.classify`)?"""
    return isinstance(exc, StrayCancellation) or classify(exc) is not Verdict.FAIL


def backoff_s(
    failures: int, first_s: float = BACKOFF_FIRST_S, max_s: float = BACKOFF_MAX_S
) -> float:
    """Capped exponential backoff with full jitter (in [cap/2, cap]) before try `failures`+1."""
    cap = min(max_s, first_s * 2.0 ** min(failures - 1, 30))
    return cap / 2 + fraction() * cap / 2


class TaskOwner:
    """Starts and watches the long-lived tasks of one node (see the module docstring)."""

    def __init__(
        self,
        on_fatal: Fatal | None = None,
        restarts_max: int = RESTARTS_MAX,
        transient: Callable[[BaseException], bool] = is_transient,
    ) -> None:
        self._on_fatal = on_fatal
        self._transient = transient
        self._restarts_max = restarts_max
        self._tasks: set[asyncio.Task[Any]] = set()
        self._throttle = LogThrottle()
        self.closing = False
        self.failed: str | None = None  # name of the first task whose failure was fatal

    def forever(
        self, name: str, factory: Callable[[], Awaitable[None]], *, restart: bool = True
    ) -> asyncio.Task[None]:
        """Run `factory()` for the node's life (see the module docstring)."""
        return self._track(asyncio.create_task(self._forever(name, factory, restart), name=name))

    def spawn(self, name: str, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """Run `coro` once; it may end; failures are classified (see the module docstring)."""
        return self._track(asyncio.create_task(self._once(name, coro), name=name))

    def close(self) -> None:
        """The node is stopping: from now on endings and failures are not fatal."""
        self.closing = True

    async def stop(self, timeout_s: float = STOP_WAIT_S) -> None:
        """Close, then cancel every task still running and wait (bounded) for each."""
        self.close()
        for task in list(self._tasks):
            await cancel_and_wait(task, timeout_s)

    @property
    def running(self) -> int:
        """Number of tasks not finished yet."""
        return len(self._tasks)

    def _track(self, task: asyncio.Task[None]) -> asyncio.Task[None]:
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _forever(
        self, name: str, factory: Callable[[], Awaitable[None]], restart: bool
    ) -> None:
        loop = asyncio.get_running_loop()
        failures = 0
        while True:
            started = loop.time()
            try:
                try:
                    await factory()
                except asyncio.CancelledError as exc:
                    if was_asked_to_cancel():
                        raise
                    raise StrayCancellation(f"{name}: a call was cancelled under it") from exc
            except Exception as exc:
                if self.closing or not restart or not self._transient(exc):
                    await self._fail(name, exc)
                    return
                failures = 1 if loop.time() - started >= HEALTHY_S else failures + 1
                if failures > self._restarts_max:
                    await self._fail(name, exc)
                    return
                delay = backoff_s(failures)
                self._warn(name, f"failed ({exc!r}); restarting it in {delay:.2f} s", failures)
                await asyncio.sleep(delay)
            else:
                await self._fail(name, None)
                return

    async def _once(self, name: str, coro: Coroutine[Any, Any, None]) -> None:
        try:
            try:
                await coro
            except asyncio.CancelledError as exc:
                if was_asked_to_cancel():
                    raise
                raise StrayCancellation(f"{name}: a call was cancelled under it") from exc
        except Exception as exc:
            if self._transient(exc) and not self.closing:
                self._warn(name, f"failed: {exc!r}", 1)
            else:
                await self._fail(name, exc)

    def _warn(self, name: str, what: str, attempt: int) -> None:
        suppressed = self._throttle.admit(name)
        if suppressed is not None:
            more = f" ({suppressed} similar warnings suppressed)" if suppressed else ""
            logger.warning("task %s %s (attempt %d)%s", name, what, attempt, more)

    async def _fail(self, name: str, exc: BaseException | None) -> None:
        if self.closing:
            # A failure that would have been retried (a peer already gone, a call cancelled
            # under the task as a shared connection is dropped) is what an orderly stop of a
            # network looks like: one line, no traceback, so ERROR keeps meaning something.
            if exc is not None and self._transient(exc):
                logger.info("task %s ended while stopping: %r", name, exc)
            elif exc is not None:
                logger.error("task %s failed while stopping", name, exc_info=exc)
            return
        if exc is None:
            logger.critical("task %s ended although it must run for the node's life", name)
        else:
            logger.critical("task %s failed; the node stops", name, exc_info=exc)
        if self.failed is not None:
            return
        self.failed = name
        if self._on_fatal is not None:
            await self._on_fatal(name, exc)


async def cancel_and_wait(task: asyncio.Task[Any] | None, timeout_s: float = STOP_WAIT_S) -> None:
    """Cancel `task` and wait up to `timeout_s` for it to end; never raises its outcome."""
    if task is None or task.done():
        return
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=timeout_s)
    if not done:
        logger.error("task %s still running %.1fs after cancel", task.get_name(), timeout_s)
    elif not task.cancelled() and task.exception() is not None:
        logger.debug("task %s ended with %r while stopping", task.get_name(), task.exception())
