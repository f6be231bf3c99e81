"""Block cutting: when does a batch of ordered envelopes become a block?

Fabric's rule, in ticks: cut when the batch reaches `max_tx_count` envelopes or would exceed
`max_bytes`, or when `timeout_ticks` ticks have passed since its first envelope arrived. An
envelope larger than `max_bytes` on its own is cut as a block of one (it was admitted by the size
limit of the RPC layer, so it must still be ordered). The cutter is pure: the orderer's driver
calls `tick()` on a timer and `add()` as envelopes are admitted.

Adaptive cutting (the default; `by_limits_only` turns it off): the driver also calls `drained()`
when the orderer's intake is empty — it has stepped everything that was queued — and the
pending batch is cut then. Waiting longer would only make the transactions already here wait
for ones that may never come (at 100 tx/s a 100-tx block waits for its timeout, ~200 ms, for
nothing). Under load blocks still grow, without a timer: while the driver writes one block, the
arrivals queue in its inbox, and the next step takes them all at once (group commit, Nagle's
rule with "the previous block is written" as the acknowledgement). The limits stay upper bounds.
Same input sequence and same drain events give the same blocks: the cutter reads no clock and
no queue; "drained" is an input like any other.

Reordering (`reorder`, the channel's `BatchConfig.reorder`): every cut batch leaves in the
order `core/reorder.py` gives it (readers before the writers of what they read, Fabric++) — a
pure function of the batch's bytes, so a restart that restores the same envelopes cuts the same
blocks.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from dltmw.core.reorder import reorder


@dataclass
class BlockCutter:
    """Accumulates envelopes and says when a batch is complete."""

    max_tx_count: int
    max_bytes: int
    timeout_ticks: int
    by_limits_only: bool = False
    reorder: bool = False
    _pending: list[bytes] = field(default_factory=list)
    _pending_bytes: int = 0
    _age_ticks: int = 0

    def __post_init__(self) -> None:
        if self.max_tx_count < 1 or self.max_bytes < 1 or self.timeout_ticks < 1:
            raise ValueError("batch limits must be positive")

    @property
    def pending(self) -> tuple[bytes, ...]:
        """Envelopes waiting for the next cut."""
        return tuple(self._pending)

    def add(self, envelope: bytes) -> list[list[bytes]]:
        """Admit one envelope; returns the batches this completes (zero, one or two)."""
        batches: list[list[bytes]] = []
        size = len(envelope)
        if self._pending and self._pending_bytes + size > self.max_bytes:
            batches.append(self._cut())
        if size > self.max_bytes:
            batches.append([envelope])
            return batches
        self._pending.append(envelope)
        self._pending_bytes += size
        if len(self._pending) >= self.max_tx_count:
            batches.append(self._cut())
        return batches

    def add_alone(self, envelope: bytes) -> list[list[bytes]]:
        """Admit an envelope that must be a block by itself (a config update: every node applies
        it between two blocks): the pending batch, if any, then the envelope alone."""
        batches = [self._cut()] if self._pending else []
        batches.append([envelope])
        return batches

    def tick(self) -> list[bytes] | None:
        """Advance time by one tick; returns a batch when the pending one timed out."""
        if not self._pending:
            return None
        self._age_ticks += 1
        if self._age_ticks >= self.timeout_ticks:
            return self._cut()
        return None

    def drained(self) -> list[bytes] | None:
        """The intake is empty right now: the pending batch, unless cutting by limits only."""
        if self.by_limits_only or not self._pending:
            return None
        return self._cut()

    def flush(self) -> list[bytes] | None:
        """Cut the pending batch now, whatever the limits say (a time-to-cut marker of a
        replicated log, `core/handlers/jetstream.py`), or None when nothing is pending."""
        return self._cut() if self._pending else None

    def _cut(self) -> list[bytes]:
        batch, self._pending = self._pending, []
        self._pending_bytes = 0
        self._age_ticks = 0
        return reorder(batch) if self.reorder else batch
