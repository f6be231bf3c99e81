"""The inputs, effects and schedule state of the PBFT orderer's core (`pbft_orderer.py`): what
crosses between the core and its executor (`runtime/roles/orderer/pbft.py`) and the simulator,
kept apart so the core's module holds the protocol alone.

Effects, in order: persist = the replica's records; decided = blocks to commit, in chain order
(`CommittedBlock`); send = replica messages, block signatures, `SignatureOf` (our stored
signature of a committed block, which the executor reads from the ledger), `BatchFromStore` (a
batch in the chain that a peer fetches, which the executor reads from the record store) and
`FetchBlocks` (start the fetch from that peer); replies = per request id, None once its block
is committed here, or `Rejected`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from dltmw.core.channel import ChannelView
from dltmw.core.effects import Effects, Token
from dltmw.core.handlers.pbft_blocks import BlockAssembler
from dltmw.core.pbft import ClientRequest, Envelope, Rejected, Replica
from dltmw.core.pbft.dissemination import BatchFromStore
from dltmw.core.pbft.surface import DisseminatedRecord, OrderingReplica
from dltmw.core.pbft.types import Outgoing
from dltmw.v1 import block_pb2, replica_pb2


@dataclass(frozen=True)
class FetchedBlocks:
    """Input: blocks fetched from peer replica `source`, verified against our head at fetch
    time (possibly none: the fetch failed or the peer had nothing newer)."""

    source: str
    blocks: tuple[block_pb2.Block, ...]
    # The fetch stopped at its byte bound (`pbft_catchup.FETCH_BYTES_MAX`): the peer may hold
    # more, and the core asks it again at once instead of at its next check.
    more: bool = False


@dataclass(frozen=True)
class LaterEpoch:
    """Input: a replica message of epoch `epoch` reached our boundary (`rpc/replica.py`), which
    refused it (its signer is checked against our replica list, not the later one); or, with
    `epoch` None, a peer refused our messages for their signer (`replica_link`: it checks them
    against a list other than ours — it may be past a boundary we missed, as a removed replica
    that never got its own removal block is: nobody of the new group sends to it). A hint,
    not a proof, that the group moved past a boundary block we have not committed: the core
    fetches blocks at its next tick instead of waiting out its backoff
    (`PbftOrdererCore._maybe_fetch`); a forged or mistaken one costs one fetch."""

    epoch: int | None


@dataclass(frozen=True)
class SignatureOf:
    """Message: our signature of committed block `number` (the executor reads it)."""

    number: int


@dataclass(frozen=True)
class FetchBlocks:
    """Message: fetch committed blocks beyond our ledger head from this peer."""


@dataclass(frozen=True)
class CommittedBlock:
    """Decided: commit `block` (2f+1 signatures); `config`: the view a valid config update alone
    in it leads to (written with the block; the channel follows it from the next block on)."""

    block: block_pb2.Block
    config: ChannelView | None = None
    epoch: int | None = None
    """Set (= the block's number) when `config` changes the replica set: a new epoch starts."""


Input = ClientRequest | Envelope | replica_pb2.BlockSignature | FetchedBlocks | LaterEpoch
Outbound = (
    Outgoing | replica_pb2.BlockSignature | SignatureOf | FetchBlocks | BatchFromStore
)  # `DecidedFromStore` (in `Outgoing`) never: orderers keep retained batches in memory
OrdererEffects = Effects[DisseminatedRecord, CommittedBlock, Outbound, Rejected | None]
Learn = Callable[[ChannelView], None]


@dataclass(frozen=True)
class EpochStart:
    """The next replica group as this node joins it: its replica and block assembler."""

    replica: OrderingReplica
    assembler: BlockAssembler


NewEpoch = Callable[[ChannelView, int], EpochStart | None]
"""(the config that changed the replica set, its block number) -> our part of the new group, or
None when that config does not name this node (retired)."""


class Misbehaviour(Protocol):
    """TEST-ONLY faults injected into one replica (`runtime/roles/orderer/byzantine.py`)."""

    def act(self, replica: Replica) -> Sequence[Envelope]:
        """One tick of misbehaviour; returns messages to send to every other replica."""

    def observe(self, requests: Sequence[bytes]) -> None:
        """See the requests of a decided batch."""


@dataclass
class CatchUp:
    """The fetch schedule: the ledger height at the last check, backoff factor, peer cursor,
    the peer of the fetch in flight (or the last one), and `hurry`: fetch at the next tick
    (a `LaterEpoch` hint arrived)."""

    last: int = 0
    backoff: int = 1
    cursor: int = 0
    fetching: bool = False
    peer: int = 0
    hurry: bool = False


@dataclass
class _Out:
    decided: list[CommittedBlock] = field(default_factory=list)
    send: list[tuple[int, Outbound]] = field(default_factory=list)
    replies: list[tuple[Token, Rejected | None]] = field(default_factory=list)
