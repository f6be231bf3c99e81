"""The handler interface and the Ready record every handler returns."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from dltmw.v1 import block_pb2


@dataclass(frozen=True)
class PendingEnvelope:
    """An admitted envelope with its position in the orderer's FIFO queue."""

    seq: int
    envelope: bytes


@dataclass(frozen=True)
class DecidedBlock:
    """A block the handler decided; it consumed the queue up to `consumed_seq` (inclusive)."""

    block: block_pb2.Block
    consumed_seq: int


@dataclass(frozen=True)
class Ready:
    """Outputs of a handler, in execution order: persist, then send, then reply."""

    persist: tuple[PendingEnvelope, ...] = ()
    blocks: tuple[DecidedBlock, ...] = ()
    send: tuple[tuple[str, object], ...] = ()
    replies: tuple[object, ...] = ()

    def is_empty(self) -> bool:
        """True when there is nothing to do."""
        return not (self.persist or self.blocks or self.send or self.replies)


class ConsensusHandler(Protocol):
    """What the runtime driver and the simulator call."""

    def step(self, message: object) -> None:
        """Feed one input message."""

    def tick(self) -> None:
        """Advance logical time by one tick."""

    def ready(self) -> Ready:
        """Take the outputs accumulated since the last call."""
