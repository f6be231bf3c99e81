"""What the PBFT orderer core reads and drives of its replica: `OrderingReplica`.

`handlers/pbft_orderer.PbftOrdererCore` runs one of two replicas: the plain `Replica` (batches
of envelopes are agreed) or, with `batch.pbft_dissemination` on, a `DisseminatingReplica`
(certificates of batches spread beforehand are agreed, `disseminating.py`). Both offer this
surface, in envelope terms, so the orderer core is written once against the protocol rather than
against one class — mypy checks each replica against it where the orderer role builds it.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Any, Protocol

from dltmw.core.effects import Effects
from dltmw.core.pbft.assembly import AssembledRecord
from dltmw.core.pbft.dissemination import BatchRecord
from dltmw.core.pbft.state import Pending
from dltmw.core.pbft.types import Decided, Outgoing, PbftConfig, Record, Rejected

DisseminatedRecord = Record | BatchRecord | AssembledRecord
"""Every record either replica persists (the plain one only `Record`s)."""

ReplicaEffects = Effects[Any, Decided, Outgoing, Rejected]
"""What `ready` returns: `persist` holds `DisseminatedRecord`s (`Effects` is invariant in its
record type, so the plain replica's `PbftEffects` is accepted through `Any` here)."""


class HasRequests(Protocol):
    """A decided slot as the orderer core rebuilds blocks from it."""

    @property
    def requests(self) -> Sequence[bytes]:
        """The slot's requests (envelopes), in agreed order."""


class OrderingReplica(Protocol):
    """The replica surface `PbftOrdererCore` uses (see the module docstring)."""

    now: int  # the replica's tick count; set when a new epoch's replica takes over
    end: int | None  # the last sequence of this epoch (None: open)
    cut_max: int  # most requests (or certificates) per proposed slot
    reorder: bool  # what it proposes (or, with dissemination, batches) in Fabric++ order

    @property
    def me(self) -> int:
        """This replica's index in the group."""

    @property
    def config(self) -> PbftConfig:
        """The group's protocol parameters."""

    @property
    def view(self) -> int:
        """The current view (the primary is `view mod n`)."""

    @property
    def stable_seq(self) -> int:
        """The last stable checkpoint's sequence (metrics: executed past it)."""

    @property
    def next_exec(self) -> int:
        """The next sequence to execute."""

    @property
    def next_block(self) -> int:
        """The next sequence whose requests (a block's envelopes) this replica has not output.
        `next_exec` for the plain replica; with dissemination the next slot to assemble, which
        the execution of certificates may run ahead of (a batch compacted everywhere before
        this replica fetched it: only fetched blocks bring that slot)."""

    @property
    def next_seq(self) -> int:
        """As primary, the next sequence to propose."""

    @property
    def behind_at(self) -> int:
        """Tick at which the replica last proved itself behind (0: never)."""

    @property
    def counters(self) -> Mapping[str, int]:
        """Inputs dropped or refused since the replica was made, by reason (metrics)."""
        ...

    @property
    def executed_ids(self) -> Collection[bytes]:
        """Ids of the requests (envelopes) executed in the chain's last `decided_retain`
        sequences (`recent.Recent`), and those `carry` handed over."""

    def carry(self, ids: Collection[bytes]) -> None:
        """A new group's replica takes what the previous group's replica here knew to be in
        the chain (`executed_ids`): known executed, so not ordered again by this replica;
        with dissemination never a reason for assembly to skip an envelope (`disseminating.
        DisseminatingReplica.carry`: block content must not depend on it)."""

    @property
    def pending(self) -> dict[bytes, Pending]:
        """Requests known here and not executed yet, by id."""

    @property
    def decided(self) -> Mapping[int, HasRequests]:
        """Decided slots still retained, by sequence (a restart rebuilds unfinished blocks)."""

    def step(self, message: object) -> None:
        """One input: a client request or a signed replica message."""

    def tick(self, now: int) -> None:
        """Timers: request and view-change timeouts, retransmissions."""

    def ready(self) -> ReplicaEffects:
        """Take the outputs accumulated since the last call."""

    def on_request(self, request: bytes, forward: bool) -> None:
        """Take a client request (handed over from the previous epoch's replica)."""

    def propose(self, full_only: bool) -> None:
        """As primary, propose what is pending (only full slots when `full_only`)."""

    def jump(self, batches: Sequence[tuple[int, tuple[bytes, ...]]]) -> bool:
        """Skip ahead over batches executed elsewhere (catch-up); True when it moved."""

    def block_contents(
        self, sequence: int, requests: tuple[bytes, ...]
    ) -> tuple[tuple[bytes, ...], tuple[bytes, ...]] | None:
        """(envelopes, their ids or ()) of the block slot `sequence` makes if it is decided
        with `requests`, changing nothing; None when that cannot be known yet."""
