"""Value types of the ordering handlers that the orderer's ledger stores as they are."""

from __future__ import annotations

from dataclasses import dataclass

from dltmw.core.channel import ChannelView
from dltmw.v1 import block_pb2


@dataclass(frozen=True)
class PendingEnvelope:
    """An admitted envelope with its position in the orderer's FIFO queue."""

    seq: int
    envelope: bytes


@dataclass(frozen=True)
class DecidedBlock:
    """A block the handler decided; it consumed the queue up to `consumed_seq` (inclusive).
    `config`: the view a valid config update in it leads to (the orderer applies it after the
    block is durable)."""

    block: block_pb2.Block
    consumed_seq: int
    config: ChannelView | None = None
