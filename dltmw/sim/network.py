"""A seeded simulated network: delay, drop, duplicate, reorder, partitions (both kinds).

Messages are (source, destination, payload) with a delivery tick drawn from the injected
`random.Random`; reordering follows from random delays. A partition blocks a directed pair of
endpoints (a symmetric partition blocks both directions). Endpoints are ints: replica indices
and, above them, client ids. Nothing here reads a clock.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class Faults:
    """Current network faults (mutable: the scenario changes them over time)."""

    drop: float = 0.0
    duplicate: float = 0.0
    delay_min: int = 1
    delay_max: int = 1
    blocked: set[tuple[int, int]] = field(default_factory=set)


@dataclass(order=True)
class InFlight:
    """One message on the wire."""

    at: int
    order: int
    source: int = field(compare=False)
    destination: int = field(compare=False)
    payload: object = field(compare=False)


class Network:
    """In-flight messages ordered by delivery tick; faults applied at send time."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.faults = Faults()
        self.now = 0
        self._queue: list[InFlight] = []
        self._order = 0
        self.sent = 0
        self.dropped = 0

    def send(self, source: int, destination: int, payload: object) -> None:
        """Put a message on the wire (maybe dropped, duplicated, delayed)."""
        self.sent += 1
        faults = self.faults
        if (source, destination) in faults.blocked or (
            faults.drop and self.rng.random() < faults.drop
        ):
            self.dropped += 1
            return
        copies = 2 if faults.duplicate and self.rng.random() < faults.duplicate else 1
        for _ in range(copies):
            delay = faults.delay_min
            if faults.delay_max > faults.delay_min:
                delay = self.rng.randint(faults.delay_min, faults.delay_max)
            self._order += 1
            heapq.heappush(
                self._queue, InFlight(self.now + delay, self._order, source, destination, payload)
            )

    def due(self) -> list[InFlight]:
        """Messages deliverable now, in delivery order (partitions apply at delivery too)."""
        out = []
        while self._queue and self._queue[0].at <= self.now:
            message = heapq.heappop(self._queue)
            if (message.source, message.destination) in self.faults.blocked:
                self.dropped += 1
                continue
            out.append(message)
        return out

    def pending(self) -> int:
        """Messages still on the wire."""
        return len(self._queue)

    def discard(self, predicate: Callable[[InFlight], bool]) -> int:
        """Drop in-flight messages matching `predicate(message)`; returns how many."""
        kept = [m for m in self._queue if not predicate(m)]
        dropped = len(self._queue) - len(kept)
        heapq.heapify(kept)
        self._queue = kept
        return dropped

    def isolate(self, endpoint: int, others: list[int], one_way: bool = False) -> None:
        """Block traffic from `endpoint` to `others` (and back unless `one_way`)."""
        for other in others:
            self.faults.blocked.add((endpoint, other))
            if not one_way:
                self.faults.blocked.add((other, endpoint))

    def heal(self) -> None:
        """Remove every fault (messages keep flowing with a one-tick delay)."""
        self.faults = Faults()
