"""Local callers waiting for a core's reply, by the token their input carried.

A core answers under opaque tokens (`core.effects.Token`); the role keeps, per token, the
futures of the callers waiting for that answer — one (a notary chunk, a solo submission) or
several (every submission of one PBFT request, every watcher of one tx_id). A caller that gives
up (a deadline) discards its future; a stop or a failed loop refuses everyone still waiting, so
no caller waits for an answer that cannot come.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Hashable, Sequence
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class Waiters(Generic[K, V]):
    """Futures waiting for a reply, by token."""

    def __init__(self) -> None:
        self._by_key: dict[K, list[asyncio.Future[V]]] = {}

    def add(self, key: K) -> asyncio.Future[V]:
        """A new future answered by the reply for `key` (register BEFORE the input is queued)."""
        future: asyncio.Future[V] = asyncio.get_running_loop().create_future()
        self._by_key.setdefault(key, []).append(future)
        return future

    def discard(self, key: K, future: asyncio.Future[V]) -> None:
        """Forget a future whose caller stopped waiting (idempotent)."""
        futures = self._by_key.get(key)
        if futures is None:
            return
        with contextlib.suppress(ValueError):
            futures.remove(future)
        if not futures:
            del self._by_key[key]

    def resolve(self, key: K, value: V) -> None:
        """Answer every caller waiting for `key`."""
        for future in self._by_key.pop(key, ()):
            if not future.done():
                future.set_result(value)

    def fail(self, key: K, error: BaseException) -> None:
        """Refuse every caller waiting for `key`."""
        for future in self._by_key.pop(key, ()):
            if not future.done():
                future.set_exception(error)

    def fail_all(self, error: BaseException) -> None:
        """Refuse everyone still waiting (a stop, a failed loop)."""
        waiting, self._by_key = self._by_key, {}
        for futures in waiting.values():
            for future in futures:
                if not future.done():
                    future.set_exception(error)

    def __contains__(self, key: K) -> bool:
        return key in self._by_key

    def __bool__(self) -> bool:
        return bool(self._by_key)


async def settled(
    futures: Sequence[asyncio.Future[V]], timeout_s: float
) -> list[V | BaseException]:
    """Each future's result or exception, in order, or a `TimeoutError` for one not done within
    `timeout_s` of the call: one deadline for the whole group, and no task per future (a
    `wait_for` each made a task, a shielding future and a timer per transaction on the PBFT
    primary). The futures are never cancelled: the caller discards the ones it gave up on."""
    if futures:
        await asyncio.wait(futures, timeout=timeout_s)
    out: list[V | BaseException] = []
    for future in futures:
        if not future.done():
            out.append(TimeoutError())
        elif future.cancelled():
            out.append(asyncio.CancelledError())
        else:
            error = future.exception()
            out.append(future.result() if error is None else error)
    return out
