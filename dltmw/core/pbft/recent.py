"""What the chain took in its last `window` sequences: the replicas' bounded de-duplication.

A replica refuses or skips a request (an envelope) that is already in the chain. Kept for
the whole chain, that memory grew by an entry per transaction forever (~100 bytes each: a
100 MB set after a million transactions, per replica). It is bounded here by a window of
sequences, as Fabric's orderer bounds nothing and leaves duplicates to the peers: an envelope
ordered again more than `window` sequences after its first copy is ordered once more, and every
peer marks that copy DUPLICATE_TXID (`core/validation.py`), so a transaction still takes effect
at most once.

The rule is a function of the chain alone, so every correct replica applies the same one: when
sequence s is executed or assembled, an id counts as known iff it was added at a sequence in
[s - window, s - 1]. That matters where the rule decides block content (dissemination's
assembly, `assembly.py`): a restart must restore the ids of the last `window` sequences, which
is why compaction keeps that many sequences' records (`PbftConfig.decided_retain` is the
window; `recovery.compaction_floor`). Batch keys are windowed too, by the certificates'
expiry (half the window, `availability.live_in`, `assembly.py`).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable, Iterable, Iterator
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)


class Recent(Generic[K]):
    """Keys added at a sequence, forgotten once `window` newer sequences were added."""

    def __init__(self, window: int) -> None:
        if window < 1:
            raise ValueError(f"window must be positive, got {window}")
        self.window = window
        self.upto = 0  # the highest sequence added
        self._at: dict[K, int] = {}  # key -> the latest sequence it was added at
        self._by_seq: deque[tuple[int, tuple[K, ...]]] = deque()

    def __contains__(self, key: object) -> bool:
        return key in self._at

    def __len__(self) -> int:
        return len(self._at)

    def __iter__(self) -> Iterator[K]:
        return iter(self._at)

    def add(self, sequence: int, keys: Iterable[K]) -> None:
        """Keys the chain took at `sequence`; sequences at or below `sequence - window` (of
        the highest added so far) are forgotten. Keys of a sequence already forgotten are not
        kept (a restart replaying older records adds them in order, and they go at once)."""
        self.upto = max(self.upto, sequence)
        horizon = self.upto - self.window
        if sequence > horizon:
            kept = tuple(keys)
            for key in kept:
                if self._at.get(key, 0) <= sequence:
                    self._at[key] = sequence
            self._by_seq.append((sequence, kept))
        self._forget(horizon)

    def _forget(self, horizon: int) -> None:
        by_seq, at = self._by_seq, self._at
        while by_seq and by_seq[0][0] <= horizon:
            sequence, keys = by_seq.popleft()
            for key in keys:
                if at.get(key) == sequence:
                    del at[key]
