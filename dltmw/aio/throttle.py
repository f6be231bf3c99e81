"""Rate-limited logging: at most one line per key per interval, counting what was suppressed.

A failure that repeats (a store locked for a minute, a peer down, a client sending junk, a
faulty orderer proposing junk) must be visible at once but must not flood the log — the log must
never be an attacker's amplifier. The first line for a key goes out immediately and the next one
says how many were suppressed in between. This is the one throttle of the code base: the task
owner, the store retry, the stream clients, the request boundary's malformed-input log and the
PBFT-lite request admission all use it.

Memory is bounded: at most `keys_max` keys are remembered; a new key beyond that forgets the key
logged longest ago (forgetting only makes that key's next line come sooner).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

LOG_EVERY_S = 10.0
KEYS_MAX = 1024


class LogThrottle:
    """At most one log line per key per `interval_s` (the first at once); thread-safe.

    `clock` (monotonic seconds) is injected so tests need not wait.
    """

    def __init__(
        self,
        interval_s: float = LOG_EVERY_S,
        keys_max: int = KEYS_MAX,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._interval_s = interval_s
        self._keys_max = keys_max
        self._clock = clock
        self._state: dict[object, tuple[float, int]] = {}  # key -> (last logged, suppressed since)
        self._lock = threading.Lock()

    def admit(self, key: object) -> int | None:
        """None: stay quiet; else log now, mentioning the returned number of suppressed lines."""
        now = self._clock()
        with self._lock:
            seen = self._state.get(key)
            if seen is not None and now - seen[0] < self._interval_s:
                self._state[key] = (seen[0], seen[1] + 1)
                return None
            if seen is None and len(self._state) >= self._keys_max:
                del self._state[next(iter(self._state))]  # the key logged longest ago
            self._state.pop(key, None)  # re-inserted last: the dict stays in logging order
            self._state[key] = (now, 0)
            return seen[1] if seen is not None else 0
