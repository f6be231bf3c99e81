"""When a notary cluster's primary proposes a slot that is not full: at its tick under load,
at once on a quiet cluster (Nagle's rule, with a tick of quiet as the "nothing unacked").

PBFT-lite's primary proposes a FULL batch (`batch_size_max` wraps) as soon as it has one, and
anything less only on its tick (`Replica.tick` -> `propose(full_only=False)`). A member's cost
is mostly per slot, so under load slots should be full; but a long tick alone would make a
lone request on an idle cluster wait for it. Measured (benchmarks/RESULTS.md, 2026-12-03,
branch ncl5): with a 50 ms tick ~35 % of the slots under load carried one wrap (the tick, not
the work, paced them); proposing whatever was pending whenever nothing was in flight (plain
Nagle) made it worse (the window empties between slots, ~55 % one-wrap slots); a 200 ms tick
made ~70 % of them full and the slots ~35 % fewer.

`NagleCut` wraps the `Replica` for the one driver (`runtime/driver.py` calls `drained()` when
its intake is empty after a step). The cluster is QUIET when fewer than `batch_size_max` wraps
(one full slot) executed during the last tick; then, with nothing proposed still unexecuted,
what is pending is proposed in the step that brought it (Nagle: a lone request, or a trickle,
never waits for the tick). Under load only full batches and the tick cut slots, so wraps
gather. Only WHEN the primary proposes changes: what a batch may hold, the window and every
check a backup makes are the Replica's own, so safety is untouched. "drained", ticks and
executed batches are inputs and outputs of the steps (`core/effects.Drains`), so a replay with
the same inputs, ticks and drain events decides the same.
"""

from __future__ import annotations

from dltmw.core.pbft import Replica
from dltmw.core.pbft.types import PbftEffects


class NagleCut:
    """A `Replica` whose primary proposes a non-full batch at once when the cluster is quiet."""

    def __init__(self, replica: Replica) -> None:
        self.replica = replica
        self._executed = 0  # wraps executed since the last tick
        self.quiet = True  # fewer than a full slot of wraps executed during the last tick

    @property
    def view(self) -> int:
        """The replica's view."""
        return self.replica.view

    def step(self, message: object) -> None:
        """Feed the replica (`Replica.step`)."""
        self.replica.step(message)

    def tick(self, now: int) -> None:
        """Time passed (`Replica.tick`: timers, and the tick's cut of non-full batches); the
        cluster was quiet if less than a full slot of wraps executed since the previous tick."""
        self.quiet = self._executed < self.replica.config.batch_size_max
        self._executed = 0
        self.replica.tick(now)

    def drained(self) -> None:
        """The intake is empty: on a quiet cluster with nothing in flight, propose what is
        pending now."""
        replica = self.replica
        if self.quiet and replica.next_exec == replica.next_seq:
            replica.propose(full_only=False)

    def ready(self) -> PbftEffects:
        """The replica's effects (`Replica.ready`), counting the wraps it executed."""
        effects = self.replica.ready()
        self._executed += sum(len(d.requests) for d in effects.decided)
        return effects
