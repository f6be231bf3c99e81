"""The "jetstream" handler: every orderer cuts identical blocks from one replicated log.

Fabric's Kafka-based orderer, on a NATS JetStream stream. Orderers publish admitted envelopes
to the channel's stream (replicated over 3 nats-servers; the publish is acknowledged only once
a majority stored it), and every orderer consumes the whole stream, in stream order, through
this core. The chain is a pure function of the stream: the same entries give the same blocks
on every orderer, whatever each orderer's clock, load or restarts.

Entries are envelopes and time-to-cut markers. Cutting rules, all decided from the stream:
* count and bytes limits: the channel's `BatchConfig`, through the shared `BlockCutter`;
* a config update is cut alone (the pending batch first), as the solo orderer does, and a valid
  one switches the limits for later blocks (`solo.config_after`, the check every peer makes);
* `TimeToCut(n)` cuts block n if and only if block n is the one pending (not yet cut) and it
  has envelopes; markers for another number (stale, duplicated, or from a slower orderer) are
  ignored. So markers published by any number of orderers, in any interleaving, cut nothing
  twice and never make two orderers disagree.

Timeouts do not depend on clocks agreeing: when an orderer's own ticks say the pending batch is
`timeout_ticks` old, or (adaptive cutting) when its intake drained, the core asks its adapter to
publish `TimeToCut(next_number)` (a `send` effect, index 0: the stream). Only what comes back
through the stream cuts anything. A marker that never arrives (publish failed) is asked again
after another timeout.

An entry may carry a batch of envelopes (`StreamBatch`: one stream message per Broadcast
batch, so the stream, its acknowledgements and every consumer pay per batch, not per envelope);
its envelopes are added one by one, exactly as if each were an entry of its own, so a block may
end inside a batch.

Restart: each block records where it ends in the stream: the sequence of the last entry it
consumed whole (`position`) and how many envelopes of the next entry it took (`taken`, 0 unless
the block ended inside a batch). The adapter stores both with the block in one transaction, and
a restarted core resumes from entry `position + 1`, skipping its first `taken` envelopes, with
nothing pending. The entries after that point are replayed and give the same blocks again: a
block's end splits the stream exactly (every envelope before it is in this block or an earlier
one, every envelope after it in a later one). Any entry at or below the last one stepped is a
redelivery and is ignored; an entry further on than the next one is a broken invariant (the
adapter must feed the stream without gaps: a skipped entry would make this orderer's chain
diverge, which is worse than stopping).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from dltmw.core.block import block_hash, make_block
from dltmw.core.channel import ChannelView
from dltmw.core.config_update import is_config_update
from dltmw.core.cutter import BlockCutter
from dltmw.core.effects import Effects
from dltmw.core.errors import InvariantViolation
from dltmw.core.handlers.solo import config_after
from dltmw.v1 import block_pb2, config_pb2

CutterFor = Callable[[config_pb2.BatchConfig], BlockCutter]


@dataclass(frozen=True)
class StreamEnvelope:
    """An envelope at stream sequence `seq`."""

    seq: int
    envelope: bytes


@dataclass(frozen=True)
class StreamBatch:
    """A batch of envelopes published as one stream message at sequence `seq`."""

    seq: int
    envelopes: tuple[bytes, ...]


@dataclass(frozen=True)
class TimeToCut:
    """A marker at stream sequence `seq`: "cut block `block_number` now"."""

    seq: int
    block_number: int


Entry = StreamEnvelope | StreamBatch | TimeToCut


@dataclass(frozen=True)
class CutBlock:
    """A block cut from the stream; `position` is the sequence of the last entry it consumed
    whole and `taken` the number of envelopes of the next entry it (or an earlier block) took
    (both stored with it: a restart resumes there). `config`: the view a valid config update in
    it leads to."""

    block: block_pb2.Block
    position: int
    config: ChannelView | None = None
    taken: int = 0


# persist: nothing (the stream is the log); decided: blocks; send: (0, block number to mark)
JetStreamEffects = Effects[None, CutBlock, int, None]


class JetStreamCutter:
    """A `Core[Entry, JetStreamEffects]` (see the module docstring)."""

    def __init__(
        self,
        channel_id: str,
        next_number: int,
        last_hash: bytes,
        position: int,
        cutter: BlockCutter,
        view: ChannelView | None = None,
        cutter_for: CutterFor | None = None,
        taken: int = 0,
    ) -> None:
        self._channel_id = channel_id
        self._next_number = next_number
        self._last_hash = last_hash
        self._seen = position  # the last stream sequence stepped
        self._skip = taken  # envelopes of entry `position + 1` already in blocks
        self._cutter = cutter
        self._view = view
        self._cutter_for = cutter_for
        self._age_ticks = 0
        self._marked = -1  # the block number a marker was last asked for
        self._blocks: list[CutBlock] = []
        self._marks: list[tuple[int, int]] = []

    @property
    def next_number(self) -> int:
        """The number of the block pending (the next one to cut)."""
        return self._next_number

    @property
    def pending(self) -> bool:
        """Envelopes wait for the next cut."""
        return bool(self._cutter.pending)

    @property
    def position(self) -> int:
        """The last stream sequence stepped (a consumer resumes after it)."""
        return self._seen

    def step(self, message: Entry) -> None:
        """Consume one stream entry (in stream order; redeliveries are ignored)."""
        if not isinstance(message, StreamEnvelope | StreamBatch | TimeToCut):
            raise TypeError(f"jetstream cutter cannot step {type(message).__name__}")
        if message.seq <= self._seen:
            return
        if message.seq != self._seen + 1:  # a skipped entry would make this chain diverge
            raise InvariantViolation(
                f"stream entry {message.seq} after {self._seen}: the feeder skipped entries"
            )
        before, self._seen = self._seen, message.seq
        skip, self._skip = self._skip, 0
        if isinstance(message, TimeToCut):
            if message.block_number == self._next_number:
                batch = self._cutter.flush()
                if batch:
                    self._cut(batch, message.seq)
            return
        if isinstance(message, StreamEnvelope):
            envelopes: Sequence[bytes] = (message.envelope,)
        else:
            envelopes = message.envelopes
        for index in range(skip, len(envelopes)):
            self._add(envelopes[index], before, index, len(envelopes))

    def _add(self, envelope: bytes, before: int, index: int, count: int) -> None:
        """Add envelope `index` of the `count` of entry `before + 1`; a block that ends with
        it ends at (entry, index + 1) — the whole entry when it is the last — and any block
        cut before it ends at (previous entry, index)."""
        alone = is_config_update(envelope)
        batches = self._cutter.add_alone(envelope) if alone else self._cutter.add(envelope)
        left_pending = bool(self._cutter.pending)
        for i, batch in enumerate(batches):
            if i == len(batches) - 1 and not left_pending:  # ends with this envelope
                if index + 1 == count:
                    self._cut(batch, before + 1)
                else:
                    self._cut(batch, before, index + 1)
            else:
                self._cut(batch, before, index)

    def tick(self, now: int) -> None:
        """One more tick: ask for a marker when the pending batch is `timeout_ticks` old (again
        after each further timeout, in case a marker's publish was lost)."""
        if not self._cutter.pending:
            return
        self._age_ticks += 1
        if self._age_ticks >= self._cutter.timeout_ticks:
            self._age_ticks = 0
            self._mark()

    def drained(self) -> None:
        """Nothing more is queued here: ask for a marker at once (adaptive cutting), once per
        block, unless the channel cuts by its limits only."""
        if self._cutter.by_limits_only or not self._cutter.pending:
            return
        if self._marked != self._next_number:
            self._mark()

    def ready(self) -> JetStreamEffects:
        """Drain outputs: the blocks cut, the markers to publish."""
        out: JetStreamEffects = Effects(decided=tuple(self._blocks), send=tuple(self._marks))
        self._blocks, self._marks = [], []
        return out

    def _mark(self) -> None:
        self._marked = self._next_number
        self._marks.append((0, self._next_number))

    def _cut(self, batch: list[bytes], position: int, taken: int = 0) -> None:
        block = make_block(self._channel_id, self._next_number, self._last_hash, batch)
        self._blocks.append(CutBlock(block, position, self._config_of(batch), taken))
        self._next_number += 1
        self._last_hash = block_hash(block)
        self._age_ticks = 0

    def _config_of(self, batch: list[bytes]) -> ChannelView | None:
        if self._view is None or self._cutter_for is None:
            return None
        config = config_after(self._view, batch)
        if config is not None:
            self._view = config
            self._cutter = self._cutter_for(config.config.batch)  # its pending was cut
        return config
