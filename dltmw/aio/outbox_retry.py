"""Retrying a durable outbox in the background: the schedule per recipient and the task around it.

Two roles keep a duty to deliver in a table that survives any crash and push it until the
recipient acknowledges: a vault's final transactions (`runtime/roles/vault/outbox.py`, durable
finality) and a private channel's owed payloads (`runtime/roles/privacy/redelivery.py`, queued
delivery). What they send differs; how they retry must not, so both use this module:

* `RetrySchedule` — when each pending key (a row, a node) is next due. A key first seen waits
  `first_delay_s` (whoever queued it may still be delivering it); each failure doubles its
  delay from `backoff_min_s` up to `backoff_max_s`, with jitter, so recipients that come back
  together are not hit by every sender in the same instant. At most `tracked_max` keys are
  remembered (memory stays bounded whatever the table holds; a forgotten key starts over).
  Time is the running loop's clock: virtual in the simulator, which the OS clock would steer
  (tests/sim/test_vloop.py).
* `OutboxTask` — the node's task that runs `one_pass()` again and again: after each pass it
  sleeps for what the pass returned, or until `wake()` (a flow or a Send left work behind). A
  transient fault (a busy store, a peer down) waits `backoff_max_s` and tries again; anything
  else — `StorageUnavailable` once the store's own retries are spent, a bug — propagates to
  the node's `TaskOwner`, which stops the node loudly (health NOT_SERVING), never a log line
  and carry on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Hashable, Iterable
from typing import Generic, TypeVar

from dltmw.aio.entropy import fraction
from dltmw.aio.tasks import TaskOwner, cancel_and_wait

logger = logging.getLogger(__name__)
K = TypeVar("K", bound=Hashable)
PAGE_S = 0.05  # wait before reading the next page of a table larger than one pass


def loop_now() -> float:
    """The running loop's clock (virtual in the simulator)."""
    return asyncio.get_running_loop().time()


class RetrySchedule(Generic[K]):
    """When each pending key is next due (see the module's docstring)."""

    def __init__(
        self,
        *,
        first_delay_s: float,
        backoff_min_s: float,
        backoff_max_s: float,
        tracked_max: int,
    ) -> None:
        self.first_delay_s = first_delay_s
        self.backoff_min_s = backoff_min_s
        self.backoff_max_s = backoff_max_s
        self.tracked_max = tracked_max
        self._next: dict[K, tuple[float, int]] = {}  # key -> (due, failures so far)

    def __len__(self) -> int:
        return len(self._next)

    def due(self, key: K, now: float) -> int | None:
        """The failures so far of `key` if it is due at `now`, else None. A key not seen before
        is scheduled `first_delay_s` from now and is not due yet."""
        entry = self._next.get(key)
        if entry is None:
            self._next[key] = (now + self.first_delay_s, 0)
            return None
        due, failures = entry
        return failures if due <= now else None

    def failed(self, key: K, failures: int, now: float) -> float:
        """Back `key` off after its `failures`+1-th failure; returns the delay chosen."""
        ceiling = min(self.backoff_max_s, self.backoff_min_s * 2.0**failures)
        delay = ceiling * (0.5 + 0.5 * fraction())  # jitter within [ceiling/2, ceiling]
        self._next[key] = (now + delay, failures + 1)
        return delay

    def hurry(self, key: K, now: float, within_s: float, *, add: bool = False) -> bool:
        """`key` was heard from (it answered another call): if it is pending, it is due within
        `within_s` instead of at the end of its backoff (its failures stay counted, so a key
        heard from often while its deliveries keep failing is still tried at most once per
        `within_s`). A key not pending is left alone unless `add` (the caller just queued rows
        for it). True if its due time moved."""
        entry = self._next.get(key)
        if entry is None:
            if not add:
                return False  # nothing owed to it: no entry (a stale one would spin `wait_s`)
            entry = (now + self.first_delay_s, 0)
        due, failures = entry
        if due <= now + within_s:
            return False
        self._next[key] = (now + within_s, failures)
        return True

    def done(self, key: K) -> None:
        """`key` was delivered: forget it."""
        self._next.pop(key, None)

    def keep_only(self, seen: Iterable[K]) -> None:
        """Past `tracked_max` keys, forget every key not in `seen` (this pass's rows)."""
        if len(self._next) > self.tracked_max:
            keep = set(seen)
            self._next = {k: v for k, v in self._next.items() if k in keep}

    def retain(self, seen: Iterable[K]) -> None:
        """A whole pass over the table saw only the keys `seen`: forget the others (their rows
        went: purged, dropped). Kept, a forgotten row's past due time made every later pass
        wait only `PAGE_S` (`wait_s`) while other keys were pending."""
        keep = set(seen)
        self._next = {k: v for k, v in self._next.items() if k in keep}

    def clear(self) -> None:
        """The table is empty: nothing is pending."""
        self._next.clear()

    def wait_s(self, now: float, idle_s: float) -> float:
        """How long to sleep before the next pass: until the soonest due key, at most
        `idle_s` (also the wait when nothing is pending), at least `PAGE_S`."""
        if not self._next:
            return idle_s
        soonest = min(due for due, _ in self._next.values())
        return max(PAGE_S, min(idle_s, soonest - now))


class OutboxTask:
    """A node's task running `one_pass` until stopped (see the module's docstring)."""

    def __init__(
        self,
        name: str,
        one_pass: Callable[[], Awaitable[float]],
        is_transient: Callable[[BaseException], bool],
        retry_after_s: float,
    ) -> None:
        self.name = name
        self._one_pass = one_pass
        self._is_transient = is_transient
        self._retry_after_s = retry_after_s
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self, tasks: TaskOwner) -> None:
        """Start the task under `tasks` (it resumes whatever the table holds); idempotent."""
        if self._task is None:
            self._task = tasks.forever(self.name, self._run)

    async def stop(self) -> None:
        """Stop the task (idempotent); the table's rows stay for the next start."""
        task, self._task = self._task, None
        await cancel_and_wait(task)

    def wake(self) -> None:
        """Look at the table now."""
        self._wake.set()

    async def _run(self) -> None:
        while True:
            try:
                wait = await self._one_pass()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if not self._is_transient(exc):
                    raise
                logger.warning(
                    "%s: pass failed (%s); next pass in %.0f s", self.name, exc, self._retry_after_s
                )
                wait = self._retry_after_s
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self._wake.wait()
