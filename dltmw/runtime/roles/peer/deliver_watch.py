"""A Deliver stream gone quiet while the peer is asked for a block it lacks is dialled again.

A peer hears of new blocks only on its Deliver stream. A stream can stop delivering without
ending: the orderer replica it follows is cut off from the others (it has no newer block to
serve, yet answers the peer), a block is lost in transit (the simulator drops Deliver messages;
a proxy can), an orderer withholds blocks. While the channel is busy the next block shows the
gap and the committer refuses it, which re-opens the stream; on an idle channel nothing does,
and the peer stays behind for good. It is worse than idle: a gateway asks such a peer to endorse
at the newer block, it cannot, every transaction then fails endorsement, no new block is cut,
and so none ever shows the gap (found by the whole-network simulator, `cfg-pbft`: a peer
following a replica cut off from the others made every endorsement mismatch until the heal).

What does tell the peer it is behind is a request that needs a block it lacks
(`PeerChannel.reach`: an endorsement at a `min_block_number`). If that block is not committed
within `STALL_S`, every block the stream brought is committed, and neither a block arrived nor
one was committed for as long, the stream is cancelled and the follower dials the next orderer
from the peer's own height (`PeerChannel._follow`). A peer still committing what it was given
(a slow disk: the storage retries of `ledger/retry.py`) is busy, not behind a quiet stream: a
first version re-dialled it there, in the middle of a commit (`tests/integration/
test_operations.py`, the catch-up stall).
A request may name any block (a client's claim is not checked), so a re-dial happens at most
once per `REDIAL_EVERY_S`.

On a channel with more than one orderer a second signal exists: another orderer shows a verified
header of a block the stream has not delivered for longer than the censorship timeout
(`censor_watch.py`, run by `header_monitor.py`). `censored` cancels the stream then, under the
same once-per-`REDIAL_EVERY_S` bound, and names that orderer as the next to dial.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Protocol

STALL_S = 0.5  # a block the orderer holds reaches a following peer in milliseconds
REDIAL_EVERY_S = 1.0


class Cancellable(Protocol):
    def cancel(self) -> bool: ...


class DeliverWatch:
    """The current Deliver call of one channel, when it last delivered, and its re-dials."""

    def __init__(self, clock: Callable[[], float] | None = None) -> None:
        self._clock = clock
        self._call: Cancellable | None = None
        self._last_s = 0.0  # the last block delivered or committed
        self._last_number: int | None = None  # the highest block number the stream brought
        self._redial_s: float | None = None
        self._stalled = False
        self._next_source: str | None = None  # the orderer to dial next (it showed the block)
        self.redials = 0

    def _now(self) -> float:
        return self._clock() if self._clock is not None else asyncio.get_running_loop().time()

    def opened(self, call: Cancellable) -> None:
        """A new Deliver stream (it counts as fresh)."""
        self._call, self._last_s, self._stalled = call, self._now(), False
        self._last_number = None

    def delivered(self, number: int) -> None:
        """Block `number` arrived on the stream."""
        self._last_s = self._now()
        if self._last_number is None or number > self._last_number:
            self._last_number = number

    def committed(self) -> None:
        """A block was committed (the peer is making progress)."""
        self._last_s = self._now()

    def closed(self) -> None:
        """The stream ended (or failed): nothing to cancel until the next one opens."""
        self._call = None

    def wanted(self, height: int) -> bool:
        """A block beyond the head was wanted and not committed within `STALL_S` (`height`: the
        peer's ledger height now): cancel the stream if everything it brought is committed, it
        has been quiet as long, and no re-dial happened within `REDIAL_EVERY_S`. True if it was
        cancelled."""
        now = self._now()
        if self._call is None or now - self._last_s < STALL_S:
            return False
        if self._last_number is not None and height <= self._last_number:
            return False  # still committing what the stream brought: busy, not behind
        return self._redial(now)

    def censored(self, teller: str) -> bool:
        """`teller` holds a block the stream withheld past the censorship timeout: cancel the
        stream and dial `teller` next, unless a re-dial happened within `REDIAL_EVERY_S`. True
        if it was cancelled."""
        if self._call is None or not self._redial(self._now()):
            return False
        self._next_source = teller
        return True

    def _redial(self, now: float) -> bool:
        if self._call is None:
            return False
        if self._redial_s is not None and now - self._redial_s < REDIAL_EVERY_S:
            return False
        self._redial_s, self._stalled = now, True
        self.redials += 1
        self._call.cancel()
        self._call = None
        return True

    def take_next_source(self) -> str | None:
        """The orderer a censorship re-dial named (once), else None."""
        source, self._next_source = self._next_source, None
        return source

    def take_stalled(self) -> bool:
        """Whether the stream that just ended was cancelled here (once)."""
        stalled, self._stalled = self._stalled, False
        return stalled
