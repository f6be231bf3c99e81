"""The peer's commit decision: is a delivered block the next one, and what does it commit?

A core like every other (`core/effects.py`). The peer's deliver loop queues each block the
orderer delivers; the driver's load does the work that needs the world — it checks the orderer
signatures (membership, clock), the transactions (signatures, policy: `txcheck`, on the verify
pool) and reads the committed versions, ranges and tx_ids that MVCC needs, after the previous
block committed — and hands it all in as one `Delivered`. The decision:

1. the block must continue our chain (`chain_error`) and carry enough valid signatures of
   distinct configured orderers (the load's verdict); else it is refused with a `PeerError`
   (another node's fault: the deliver loop tries another orderer) and nothing changes;
2. otherwise MVCC gives every transaction its validation code (invalid ones stay in the block,
   flagged) and the writes of the valid ones — `txgraph.validate_in_waves`: the block's conflict
   graph in waves of independent transactions, identical to block-order `validate_block`: the
   block with its codes, its tx_ids and its writes is decided (`Commit`, committed in one
   sqlite transaction), and the deliverer is answered (`Committed`: what commit-status
   watchers wait for) only after that.

Nothing inside a block can stop a peer: the per-envelope checks are total, so a block that
passes (1) is always committed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence, Set
from dataclasses import dataclass, field, replace

from dltmw.core.block import block_hash, chain_error
from dltmw.core.channel import ChannelView
from dltmw.core.config_update import config_write
from dltmw.core.effects import Effects, Token
from dltmw.core.errors import PeerError
from dltmw.core.rwset import StateWrite, Version
from dltmw.core.txcheck import CheckedTx
from dltmw.core.txgraph import validate_in_waves
from dltmw.core.validation import KeyRef, RangeRef, TxForMvcc
from dltmw.v1 import block_pb2, errors_pb2, transaction_pb2


@dataclass(frozen=True)
class CommittedReads:
    """What MVCC reads of the committed state: key versions, range contents, known tx_ids,
    and the values of the keys the block's deltas change (`validation.delta_keys_of`)."""

    versions: Mapping[KeyRef, Version] = field(default_factory=dict)
    ranges: Mapping[RangeRef, Sequence[tuple[str, Version]]] = field(default_factory=dict)
    tx_ids: Set[str] = frozenset()
    values: Mapping[KeyRef, bytes] = field(default_factory=dict)


@dataclass(frozen=True)
class Delivered:
    """Input: a delivered block, its deliverer's token, and what the load found out about it
    (`signature_error`: why its orderer signatures do not suffice, "" when they do)."""

    block: block_pb2.Block
    token: Token
    signature_error: str = ""
    checked: tuple[CheckedTx, ...] = ()
    reads: CommittedReads = CommittedReads()


@dataclass(frozen=True)
class Commit:
    """Decided: commit `block` with this peer's validation codes (the executor records them in
    the block's metadata: the delivered copy is the peer's own), its tx_ids and its writes;
    `config`: the channel's next view when the block is a valid config update (its writes
    record it, `config_update.config_write`; the executor applies it once the block is durable).
    """

    block: block_pb2.Block
    codes: tuple[int, ...]
    tx_ids: tuple[str, ...]
    writes: tuple[StateWrite, ...]
    config: ChannelView | None = None


@dataclass(frozen=True)
class Committed:
    """Reply: block `number` committed; per transaction its tx_id and validation code.
    `block`: the committed block itself (with this peer's codes, once the executor wrote them
    in), so that the peer's followers of committed blocks take it from memory instead of
    reading it back from the ledger and parsing it (`blockfeed.follow`'s `recent`); it is
    read only from then on. Not part of equality or repr: it is the delivered block."""

    number: int
    tx_ids: tuple[str, ...]
    codes: tuple[int, ...]
    block: block_pb2.Block | None = field(default=None, compare=False, repr=False)


CommitEffects = Effects[None, Commit, None, Committed | PeerError]


class CommitCore:
    """The commit decision of one channel (a `Core[Delivered, CommitEffects]`)."""

    def __init__(self, channel_id: str, height: int, last_hash: bytes) -> None:
        self.channel_id = channel_id
        self.height = height
        self.last_hash = last_hash
        self._decided: list[Commit] = []
        self._replies: list[tuple[Token, Committed | PeerError]] = []

    def step(self, message: Delivered) -> None:
        """Decide one delivered block (see the module docstring)."""
        block = message.block
        error = chain_error(block, self.channel_id, self.height, self.last_hash)
        if error is not None:
            refusal = f"refusing delivered block: {error}"
            self._replies.append((message.token, PeerError(R.ERROR_REASON_INVALID_FIELD, refusal)))
            return
        if message.signature_error:
            refusal = message.signature_error
            self._replies.append((message.token, PeerError(R.ERROR_REASON_BAD_SIGNATURE, refusal)))
            return
        checked = alone_in_block(message.checked)
        txs = [TxForMvcc(c.tx_id, c.code, c.rwset) for c in checked]
        reads = message.reads
        number = block.header.number
        codes, writes = validate_in_waves(
            number, txs, reads.versions, reads.ranges, reads.tx_ids, reads.values
        )
        tx_ids = tuple(c.tx_id for c in checked)
        config = applied_config(checked, codes)
        if config is not None:
            writes = [*writes, config_write(config, number)]
        self._decided.append(Commit(block, tuple(codes), tx_ids, tuple(writes), config))
        self._replies.append((message.token, Committed(number, tx_ids, tuple(codes), block)))
        self.height, self.last_hash = number + 1, block_hash(block)

    def tick(self, now: int) -> None:
        """Nothing is time-driven here."""

    def ready(self) -> CommitEffects:
        """Drain: blocks to commit, then the answers to their deliverers."""
        out: CommitEffects = Effects(decided=tuple(self._decided), replies=tuple(self._replies))
        self._decided, self._replies = [], []
        return out


def alone_in_block(checked: Sequence[CheckedTx]) -> Sequence[CheckedTx]:
    """A config update must be a block by itself (every node applies it between two blocks):
    in a block with other transactions it is CONFIG_UPDATE_INVALID and applies nothing."""
    if len(checked) < 2 or all(c.config is None for c in checked):
        return checked
    invalid = transaction_pb2.TX_VALIDATION_CODE_CONFIG_UPDATE_INVALID
    return [replace(c, code=invalid, config=None) if c.config is not None else c for c in checked]


def applied_config(checked: Sequence[CheckedTx], codes: Sequence[int]) -> ChannelView | None:
    """The view a block applies: that of a config update still VALID after MVCC (a duplicate
    tx_id is not), alone in its block (the load already invalidated any other)."""
    for c, code in zip(checked, codes, strict=True):
        if c.config is not None and code == transaction_pb2.TX_VALIDATION_CODE_VALID:
            return c.config
    return None


R = errors_pb2
