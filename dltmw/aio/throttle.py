"""Rate-limited logging: at most one line per key per interval, counting what was suppressed.

A failure that repeats (a store locked for a minute, a peer down, a client sending junk) must be
visible at once but must not flood the log; the first line goes out immediately and the next one
says how many were suppressed in between.
"""

from __future__ import annotations

import threading
import time

LOG_EVERY_S = 10.0


class LogThrottle:
    """At most one log line per key per `interval_s` (the first at once); thread-safe."""

    def __init__(self, interval_s: float = LOG_EVERY_S, keys_max: int = 1024) -> None:
        self._interval_s = interval_s
        self._keys_max = keys_max
        self._state: dict[str, tuple[float, int]] = {}  # key -> (last logged, suppressed since)
        self._lock = threading.Lock()

    def admit(self, key: str) -> int | None:
        """None: stay quiet; else log now, mentioning the returned number of suppressed lines."""
        now = time.monotonic()
        with self._lock:
            last, suppressed = self._state.get(key, (float("-inf"), 0))
            if now - last < self._interval_s:
                self._state[key] = (last, suppressed + 1)
                return None
            if len(self._state) >= self._keys_max and key not in self._state:
                self._state.clear()  # bounded: forgetting only makes the next line come sooner
            self._state[key] = (now, 0)
            return suppressed
