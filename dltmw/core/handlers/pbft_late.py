"""Which late block signatures a PBFT-lite orderer answers with its own (`SignatureOf`).

A signature of a block this replica committed already is "late". Before, every late signature
was answered with ours (at most once per RESIGN_EVERY_TICKS per replica and block), in case its
sender still lacked ours. In the normal run that answer is redundant: every replica broadcasts
its signature the moment it builds a block, so the slowest replica's own broadcast crosses the
others' — they committed with 2f+1 without it and answered it with a signature it already had
(or would have a moment later). Measured at n = 4 under load (benchmarks/RESULTS.md, branch
`slot`): 1.2 to 1.7 such answers per block per replica, ~12 % of the replica messages a backup
sends, each a stream write, a receipt, a verification and a driver step at the other end.

The rule: a late signature is answered unless it is the FIRST heard from that replica for a
block we committed less than `window` ticks ago (a signature that counted towards our own
quorum was heard: its resend is answered). Why nothing is lost:
- our signature of that block was broadcast when we built it, a moment ago;
- a replica still collecting signatures resends its own every RESIGN_EVERY_TICKS
  (`PbftOrdererCore.tick`), so if ours was lost the sender's next resend is heard a second time
  (or after the window) and answered as before — one resend period later at most when both
  first messages were lost;
- a signature of an older block (a replica catching up, a resend after the window) is
  answered at once, as before.
The memory is bounded: only blocks committed within the window are remembered (at most the
blocks committed in `window` ticks), and signatures of those blocks or of blocks not committed
yet that the assembler took (at most n per block it holds).
Pure: the caller passes its tick (`now`).
"""

from __future__ import annotations


class LateSignatures:
    """Remembers recent commits and first-heard late signatures (see the module docstring)."""

    def __init__(self, window: int) -> None:
        self._window = window
        self._committed_at: dict[int, int] = {}  # block number -> tick we committed it
        self._heard: set[tuple[int, int]] = set()  # (replica, block) heard once, not answered

    def committed(self, number: int, now: int) -> None:
        """Block `number` committed here at tick `now`."""
        self._committed_at[number] = now

    def heard(self, replica: int, number: int) -> None:
        """A signature of block `number` (not committed yet) from `replica` was taken."""
        self._heard.add((replica, number))

    def answer(self, replica: int, number: int, now: int) -> bool:
        """Should a late signature of block `number` from `replica`, heard at `now`, be
        answered with ours? (False only for the first one of a recently committed block.)"""
        committed = self._committed_at.get(number)
        if committed is None or now - committed >= self._window:
            return True
        key = (replica, number)
        if key in self._heard:
            return True  # heard twice: a resend, so ours did not arrive
        self._heard.add(key)
        return False

    def forget_old(self, now: int, height: int) -> None:
        """Drop the blocks committed `window` ticks ago or more, and what was heard of them
        or of any other block below `height` (the next block to commit)."""
        for number in [n for n, t in self._committed_at.items() if now - t >= self._window]:
            del self._committed_at[number]
        recent = self._committed_at
        self._heard = {key for key in self._heard if key[1] >= height or key[1] in recent}

    def clear(self) -> None:
        """Forget everything (a new replica group: its block signatures start afresh)."""
        self._committed_at.clear()
        self._heard.clear()

    def __len__(self) -> int:
        """Remembered entries (blocks and signatures), for tests of the bound."""
        return len(self._committed_at) + len(self._heard)
