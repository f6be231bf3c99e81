"""A peer is not held stale by one orderer that withholds blocks: the censorship decision.

A peer pulls blocks from ONE orderer's Deliver stream (`PeerChannel._follow`). On a PBFT-lite
channel that orderer may withhold blocks while answering the stream (a byzantine replica), or
have none to give (a replica cut off from the others): the stream stays open and silent, and a
peer that is only queried (no endorsement asks it for a newer block, which would re-dial it:
`deliver_watch.py`) kept serving old state, old events and no commit statuses for as long as
that lasted. Fabric 3's BFT deliverer answers it with a censorship monitor: besides the block
stream the peer follows block HEADERS of other orderers, and when one shows a valid header beyond
what the block source delivered, and the source does not deliver that block within a timeout
(`BlockCensorshipTimeout`, 20 s by default in Fabric's blocksprovider), the peer switches source.
Here the timeout is `limits.censorship_timeout_s` (3 s; 0 switches the monitor off).

This is that decision, without I/O (the clock is injected; `header_monitor.py` runs the streams):

- `opened`/`delivered`: where the block stream is (the next block number it owes us);
- `header(teller, block)`: a header another orderer showed. One beyond the stream opens a
  suspicion at once — unverified: checking signatures per header would cost 2f+1 verifications
  per block per watched orderer under load, and nearly every header is overtaken by its block
  within milliseconds; a suspicion is cleared as soon as the stream delivers that block, and
  its timer starts again at each block the stream delivers before (a peer catching up from far
  behind is moving, not withheld from: switching it every timeout only re-sent blocks and warned
  for nothing), up to `PATIENCE` timeouts in all (a source that trickles blocks to stay chosen);
- `due_in`/`suspicion`: a suspicion older than the timeout is due; only then are its header's
  orderer signatures checked (the peer's commit rule, `committer.check_orderer_signatures`:
  2f+1 of distinct configured orderers), once;
- `verdict`: a valid header names the orderer to switch to (it holds the block); a forged one
  (bad or missing signatures) makes its teller distrusted for the rest of this block stream —
  its headers are ignored, it is counted and named in a warning — so forged headers never cause
  a switch, and each teller costs at most one failed check per stream.

The switch itself is `DeliverWatch.censored`: at most one re-dial per `REDIAL_EVERY_S`, shared
with the quiet-stream re-dial.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from dltmw.v1 import block_pb2

# A stream that keeps delivering (a peer catching up from far behind) is not left for being
# behind; one that trickles blocks to stay chosen is left after this many timeouts all the same.
PATIENCE = 10


@dataclass(frozen=True)
class Suspicion:
    """Block `header.header.number` (or an earlier one) is held back: `teller` showed its
    header at `first_s`, and the block stream has not delivered it; `since_s`: its last progress
    (a block delivered since), or `first_s`."""

    header: block_pb2.Block
    teller: str
    since_s: float
    first_s: float

    @property
    def number(self) -> int:
        return self.header.header.number


class CensorWatch:
    """The censorship decision of one channel's block stream (see the module docstring)."""

    def __init__(self, timeout_s: float, clock: Callable[[], float]) -> None:
        self.timeout_s = timeout_s
        self._clock = clock
        self._next = 0  # the next block number the block stream owes us
        self._suspicion: Suspicion | None = None
        self._distrusted: set[str] = set()
        self.forged = 0  # headers that failed their signature check
        self.switches = 0  # verified suspicions (the source withheld a block)

    @property
    def next_number(self) -> int:
        """The next block number the block stream owes us."""
        return self._next

    @property
    def enabled(self) -> bool:
        return self.timeout_s > 0

    def opened(self, next_number: int) -> None:
        """A new block stream from `next_number` on: no suspicion, every orderer trusted."""
        self._next = next_number
        self._suspicion = None
        self._distrusted.clear()

    def delivered(self, number: int) -> None:
        """The block stream delivered block `number` (clears a suspicion it answers)."""
        progress = number >= self._next
        if progress:
            self._next = number + 1
        current = self._suspicion
        if current is not None and number >= current.number:
            self._suspicion = None
        elif current is not None and progress:  # behind, but moving: a peer catching up
            self._suspicion = replace(current, since_s=self._clock())

    def distrusts(self, teller: str) -> bool:
        """Did `teller` show a forged header on this stream?"""
        return teller in self._distrusted

    def header(self, teller: str, header: block_pb2.Block) -> bool:
        """`teller` showed `header` (not verified yet). True when it opened a suspicion."""
        number = header.header.number
        if not self.enabled or number < self._next or teller in self._distrusted:
            return False
        current = self._suspicion
        if current is None:
            now = self._clock()
            self._suspicion = Suspicion(header, teller, now, now)
            return True
        if teller == current.teller and number > current.number:  # newer evidence, same start
            self._suspicion = replace(current, header=header)
        return False

    @property
    def suspicion(self) -> Suspicion | None:
        return self._suspicion

    def due_in(self) -> float | None:
        """Seconds until the open suspicion is due (<= 0: due now); None: none open."""
        if self._suspicion is None:
            return None
        s = self._suspicion
        due_s = min(s.since_s + self.timeout_s, s.first_s + PATIENCE * self.timeout_s)
        return due_s - self._clock()

    def verdict(self, suspicion: Suspicion, error: str) -> str | None:
        """The outcome of checking `suspicion`'s header (`error` "" when its signatures
        suffice): the orderer to switch to, or None (forged; or the stream moved meanwhile)."""
        current = self._suspicion
        if error:  # whatever the stream did meanwhile: the teller forged a header
            self._distrusted.add(suspicion.teller)
            self.forged += 1
            if current is not None and current.teller == suspicion.teller:
                self._suspicion = None
            return None
        if current is not suspicion:
            return None  # the stream delivered (the block, or progress) while the check ran
        self._suspicion = None
        self.switches += 1
        return suspicion.teller
