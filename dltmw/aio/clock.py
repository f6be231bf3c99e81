"""The clocks of node and SDK code: wall time from the running event loop's world.

Node and SDK code reads wall-clock time only through `utc_now()` (timestamps in signed headers,
certificate validity, time windows) and measures durations with the event loop's `time()`.
Both come from the running loop, so a loop that carries its own clock — the simulator's
virtual-time loop (`dltmw/sim`) exposes `wall_clock()` — runs the same code on virtual time
without threading a clock object through every constructor. Outside a loop (a verify-pool
thread, a plain script) it is the system's clock.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, datetime


def utc_now() -> datetime:
    """Current wall-clock time, timezone-aware: the loop's own clock if it has one."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return datetime.now(UTC)
    wall_clock = getattr(loop, "wall_clock", None)
    if wall_clock is not None:
        return wall_clock()  # type: ignore[no-any-return]
    return datetime.now(UTC)


def duration_clock() -> Callable[[], float]:
    """A monotonic clock in seconds that any thread may call (a reader thread polling a
    deadline): the running loop's own when it carries a virtual clock (the simulator), else
    `time.monotonic` (uvloop's `time()` updates the loop's cached time: not for other threads).
    Call it on the event loop."""
    loop = asyncio.get_running_loop()
    if getattr(loop, "wall_clock", None) is not None:
        return loop.time
    return time.monotonic
