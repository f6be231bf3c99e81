"""How long a channel's submissions wait for their first orderer before the gateway widens them.

The ordering deadline (`orderer_choice.py`) tells a silent orderer from a busy one by time
alone. A correct PBFT-lite primary working through a backlog answers late too: the backups'
request timers allow it a request timeout per executed batch, not per request, so on an
overloaded channel a transaction may wait in the primary's queue far longer than the
configured deadline, and a fixed deadline then sent a share of every submission to a second
orderer (19 % of 4,000 at 1,024 in flight on bft-four: `benchmarks/RESULTS.md`), each copy
relayed to every replica — load added to a channel that had too much already.

So the deadline follows what the channel shows: `FACTOR` times the typical time an accepted
envelope took to be answered (an exponentially weighted mean, weight `ALPHA` per answer), never
less than the configured `limits.ordering_deadline_s` and never more than `CAP` times it. A
primary that censors everything answers nothing, so the typical time stays what it was; one that
censors some transactions cannot raise it beyond what the others take; and the cap bounds what
an overloaded channel that also loses its primary costs a client (the SDK's Submit waits 30 s).
"""

from __future__ import annotations

from dataclasses import dataclass

FACTOR = 3.0  # a deadline is this many typical answer times
ALPHA = 0.02  # weight of one answer in the typical time (~50 answers to follow a change)
CAP = 4.0  # the deadline never exceeds this many times the configured one


@dataclass
class Patience:
    """The typical answer time of one channel's orderers, and the deadline it allows."""

    typical_s: float = 0.0

    def deadline_s(self, configured_s: float) -> float:
        """The deadline of the next submission (`configured_s`: limits.ordering_deadline_s)."""
        return min(CAP * configured_s, max(configured_s, FACTOR * self.typical_s))

    def answered(self, seconds: float) -> None:
        """An accepted envelope was answered `seconds` after it was first sent."""
        self.typical_s += ALPHA * (seconds - self.typical_s)
