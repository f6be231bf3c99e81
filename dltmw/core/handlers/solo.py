"""The "none" handler: one designated orderer decides the order alone (a solo orderer).

The paper's option of "giving the authority to approve transactions only to a specific node".
Admitted envelopes get a queue position and are persisted before they are acknowledged; blocks
are cut by the `BlockCutter` rules and consume a prefix of that queue, so after a crash the
orderer restores exactly the envelopes that were acknowledged but not yet in a block.

Adaptive cutting (`core/cutter.py`): the driver's `drained()` cuts the pending batch. An
envelope cut into a block in the same step that admitted it is not queued at all: the block's
commit makes it durable, and its acknowledgement comes after that commit (the effects' order),
so a crash before the commit loses only envelopes nobody was told about. At low load this saves
one synchronous write per block.

An envelope NOT cut in its own step is held — neither queued nor acknowledged — until the next
tick, and queued durably then only if no block took it meanwhile. The driver withholds the cut
while a Deliver follower has not yet taken the last block, and an envelope that arrives during a
block's write is stepped right after that commit, before the just-woken followers could take it
(counted, benchmarks/RESULTS.md, lane lat16: ~9 % of lone transactions at 100 tx/s and ~17 % of
envelopes at saturation went through the queue this way, one more fsync'd write each time). The
followers take the block within a millisecond or so and the next step cuts it: the block alone
makes the envelope durable. The acknowledgement still follows durability (block or queue), a
crash loses only unacknowledged envelopes, and a held one waits at most a tick (the driver ticks
while anything is pending) for its queue write when the followers are slow or cutting is by
limits only.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from dltmw.core.block import block_hash, make_block
from dltmw.core.channel import ChannelView
from dltmw.core.config_update import is_config_update
from dltmw.core.cutter import BlockCutter
from dltmw.core.effects import Effects, Token
from dltmw.core.handlers.base import DecidedBlock, PendingEnvelope
from dltmw.core.txcheck import check_transaction
from dltmw.v1 import config_pb2, transaction_pb2

CutterFor = Callable[[config_pb2.BatchConfig], BlockCutter]

SoloEffects = Effects[PendingEnvelope, DecidedBlock, None, None]


@dataclass(frozen=True)
class Submit:
    """An admitted envelope; `(token, None)` is replied once it is durably queued."""

    envelope: bytes
    token: Token


class SoloOrderer:
    """Handler for ordering "none" (a `Core[Submit, SoloEffects]`): persist = the queued
    envelopes, decided = the blocks cut, replies = one acknowledgement per durable submission.

    Config updates (`core/config_update.py`) are cut alone; with `view` and `cutter_for` given,
    the core checks each one as every peer will at commit (`check_transaction`) and, when it is
    valid, cuts every later block under the new config's batch limits.
    """

    def __init__(
        self,
        channel_id: str,
        next_number: int,
        last_hash: bytes,
        cutter: BlockCutter,
        restored: Sequence[PendingEnvelope] = (),
        view: ChannelView | None = None,
        cutter_for: CutterFor | None = None,
    ) -> None:
        self._view = view
        self._cutter_for = cutter_for
        self._channel_id = channel_id
        self._next_number = next_number
        self._last_hash = last_hash
        self._cutter = cutter
        self._next_seq = (restored[-1].seq + 1) if restored else 1
        self._queued_seqs: list[int] = []
        self._persist: list[PendingEnvelope] = []
        self._held: list[tuple[PendingEnvelope, Token]] = []  # not durable, not answered yet
        self._blocks: list[DecidedBlock] = []
        self._replies: list[tuple[Token, None]] = []
        for pending in restored:
            self._queued_seqs.append(pending.seq)
            self._cut(self._add(pending.envelope))

    def step(self, message: Submit) -> None:
        """Admit one Submit."""
        if not isinstance(message, Submit):
            raise TypeError(f"solo orderer cannot step {type(message).__name__}")
        pending = PendingEnvelope(self._next_seq, message.envelope)
        self._next_seq += 1
        self._held.append((pending, message.token))
        self._queued_seqs.append(pending.seq)
        self._cut(self._add(message.envelope))

    def _add(self, envelope: bytes) -> list[list[bytes]]:
        if is_config_update(envelope):
            return self._cutter.add_alone(envelope)
        return self._cutter.add(envelope)

    def tick(self, now: int) -> None:
        """One more tick (the cutter counts them); cuts a block when the batch timeout passes,
        then queues durably (and answers) every envelope still held (module docstring)."""
        batch = self._cutter.tick()
        if batch:
            self._cut([batch])
        for pending, token in self._held:
            self._persist.append(pending)
            self._replies.append((token, None))
        self._held = []

    def quiescent(self) -> bool:
        """Nothing pending: a tick would do nothing until the next envelope (`Quiescent`)."""
        return not self._cutter.pending

    def drained(self) -> None:
        """The driver's intake is empty: cut the pending batch (unless by limits only)."""
        batch = self._cutter.drained()
        if batch:
            self._cut([batch])

    def ready(self) -> SoloEffects:
        """Drain outputs; envelopes already in a block of this step are not queued durably."""
        consumed = self._blocks[-1].consumed_seq if self._blocks else 0
        persist = tuple(p for p in self._persist if p.seq > consumed)
        out: SoloEffects = Effects(
            persist=persist, decided=tuple(self._blocks), replies=tuple(self._replies)
        )
        self._persist, self._blocks, self._replies = [], [], []
        return out

    def _cut(self, batches: list[list[bytes]]) -> None:
        for batch in batches:
            consumed = self._queued_seqs[: len(batch)]
            del self._queued_seqs[: len(batch)]
            block = make_block(self._channel_id, self._next_number, self._last_hash, batch)
            self._blocks.append(DecidedBlock(block, consumed[-1], self._config_of(batch)))
            self._next_number += 1
            self._last_hash = block_hash(block)
            self._release(consumed[-1])

    def _release(self, consumed_seq: int) -> None:
        """Answer the held envelopes a block just took (a prefix: blocks consume the oldest)."""
        taken = 0
        for pending, token in self._held:
            if pending.seq > consumed_seq:
                break
            self._replies.append((token, None))
            taken += 1
        del self._held[:taken]

    def _config_of(self, batch: list[bytes]) -> ChannelView | None:
        """The view a valid config update alone in `batch` leads to; switches to it."""
        if self._view is None or self._cutter_for is None:
            return None
        config = config_after(self._view, batch)
        if config is not None:
            self._view = config
            self._cutter = self._cutter_for(config.config.batch)  # its pending was cut
        return config


def config_after(view: ChannelView, batch: Sequence[bytes]) -> ChannelView | None:
    """The view that `batch` leads to when it is one valid config update (checked as every
    peer will check it at commit), else None. Shared by every orderer that cuts blocks."""
    if len(batch) != 1 or not is_config_update(batch[0]):
        return None
    checked = check_transaction(batch[0], view)
    if checked.code != transaction_pb2.TX_VALIDATION_CODE_VALID or checked.config is None:
        return None
    return checked.config
