"""Deadlines of many waiting futures for one timer per timeout value, not one per future.

Why. A batched stream (`aio/batched_stream.py`) gives every call a deadline. One
`loop.call_later` handle per call, cancelled when the answer comes (almost always), cost ~11 %
of the bench client's GIL time: a heap push, a heap entry left behind, the cancel. But the
callers of one stream pass the same timeout (the gateway's endorser links, its ordering
deadline, an SDK's call timeout): deadlines made with one timeout expire in the order they were
made. So they are FIFO: one deque and ONE timer per timeout value suffice. A caller whose
timeouts vary (what is left of a budget) has them rounded up to 1/64 (`bucket`): a deadline
then fires at most 1/64 of its timeout late, never early, and a few FIFOs serve it.

How. `add(future, timeout_s, make)` appends (deadline, future, make) to the deque of that timeout
and arms its timer if the deque was empty. Settling a future costs nothing here: nobody removes
it. Instead, settled entries are dropped from the front — on every `add` (cheap: answers come
roughly in order, so the front is mostly settled) and when the timer fires, which then fails
every expired, still waiting future with `make()` and re-arms for the first one still waiting.
In the usual case (answers within a fraction of the timeout) the timer fires about once per
timeout, not once per call. One answer that does not come would hold every settled entry behind
it (and their futures' results) until it expires — at a high rate and a long timeout, many — so
a deque that doubled since its last sweep is swept whole for settled entries (amortised O(1)):
it holds at most about twice the futures still waiting, plus `COMPACT_MIN`. A deque whose
entries are all gone is forgotten, so distinct timeouts do not pile up. `close()` cancels
every timer and forgets everything (the futures are the owner's to fail).
"""

from __future__ import annotations

import asyncio
import math
from collections import deque
from collections.abc import Callable
from typing import Any

Make = Callable[[], BaseException]
COMPACT_MIN = 1024  # entries before a FIFO is first swept for settled ones behind its front
_Entry = tuple[float, "asyncio.Future[Any]", Make]


def bucket(timeout_s: float) -> float:
    """`timeout_s` rounded UP to 7 significant bits: at most 1/64 longer, never shorter. Usual
    timeouts are exact (0.5, 2, 4, 10, 30, 60 s); a caller whose timeouts vary (what is left of
    an overall budget, `sdk/client.py`) shares a few FIFOs instead of making one per call."""
    if timeout_s <= 0:
        return 0.0
    mantissa, exponent = math.frexp(timeout_s)  # timeout_s = mantissa * 2**exponent
    return math.ldexp(math.ceil(mantissa * 128) / 128, exponent)


class _Fifo:
    """The deadlines of one timeout value, in expiry order, and their one timer."""

    __slots__ = ("compact_at", "entries", "loop", "timer")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.entries: deque[_Entry] = deque()
        self.loop = loop
        self.timer: asyncio.TimerHandle | None = None
        self.compact_at = COMPACT_MIN

    def compact(self) -> None:
        """Drop every settled entry, wherever it is; the next compaction waits until the deque
        doubled again (amortised O(1) per entry)."""
        self.entries = deque(e for e in self.entries if not e[1].done())
        self.compact_at = max(COMPACT_MIN, 2 * len(self.entries))


class FifoDeadlines:
    """Fail waiting futures at their deadline; one timer per distinct timeout (module docstring)."""

    def __init__(self) -> None:
        self._fifos: dict[float, _Fifo] = {}

    def __len__(self) -> int:
        """Entries held (settled ones not dropped yet included)."""
        return sum(len(f.entries) for f in self._fifos.values())

    @property
    def timers(self) -> int:
        """Timers armed: at most one per timeout value."""
        return sum(1 for f in self._fifos.values() if f.timer is not None)

    def add(self, future: asyncio.Future[Any], timeout_s: float, make: Make) -> None:
        """Fail `future` with `make()` once `timeout_s` passed, unless it is settled by then."""
        timeout_s = bucket(timeout_s)
        fifo = self._fifos.get(timeout_s)
        if fifo is None or fifo.loop is not future.get_loop():
            if fifo is not None and fifo.timer is not None:
                fifo.timer.cancel()  # (a new event loop: the old one's entries are moot)
            fifo = self._fifos[timeout_s] = _Fifo(future.get_loop())
        loop = fifo.loop
        entries = fifo.entries
        while entries and entries[0][1].done():
            entries.popleft()
        if len(entries) >= fifo.compact_at:
            fifo.compact()
            entries = fifo.entries
        entries.append((loop.time() + timeout_s, future, make))
        if fifo.timer is None:
            fifo.timer = loop.call_at(entries[0][0], self._fire, timeout_s)

    def close(self) -> None:
        """Cancel every timer and forget every entry (idempotent)."""
        for fifo in self._fifos.values():
            if fifo.timer is not None:
                fifo.timer.cancel()
        self._fifos.clear()

    def _fire(self, timeout_s: float) -> None:
        fifo = self._fifos.get(timeout_s)
        if fifo is None:
            return
        fifo.timer = None
        loop, entries = fifo.loop, fifo.entries
        now = loop.time()
        while entries:
            deadline, future, make = entries[0]
            if future.done():
                entries.popleft()
            elif deadline <= now:
                entries.popleft()
                future.set_exception(make())
            else:
                fifo.timer = loop.call_at(deadline, self._fire, timeout_s)
                return
        del self._fifos[timeout_s]
