"""Surplus messages: votes and acks that arrive once their quorum is complete are not verified.

Why: every arriving replica message costs a P-256 check (~120 µs on the bench host). At n = 13
the view's primary (the collector, and the origin of the batches) receives per slot 12
prepares, 12 commits and ~13 batch acks, of which 8 prepares (2f, with its pre-prepare) and
f+1 = 5 acks (its own the first) are all it uses: the rest arrive after the prepared
certificate or the availability certificate was formed, are verified, and are then ignored
(benchmarks/RESULTS.md, 2026-12-03 14:20, lane pbft7: 38.8 checks per slot, ~22 needed).

Rule: a message that cannot change anything whatever its content is dropped before its
signature is checked — a Prepare of the current view (and epoch) for a slot we are prepared in
already (or executed), or a BatchAck of one of our batches that is certified already (or in the
chain, forgotten). Dropping it unverified is safe because nothing is recorded from it: a forged
one is ignored exactly as a genuine one is, and a replica's genuine vote adds nothing to a
certificate that is already formed. Everything else is verified as before, and every message
whose content is used (pre-prepares, certificates, checkpoints, commits: a late Commit still
carries a block signature and asks for the commit certificate) is verified before it is used.

Both predicates read a parsed, NOT verified message and this replica's state only. The state
they test only moves one way for a given (epoch, view, slot) or batch — prepared stays
prepared, certified stays certified until the batch is in the chain — so the runtime's request
boundary may ask first (and skip its own check, `PbftOrdererChannel.verify`) and the core asks
again when it steps the message: if the answer changed (a view change, a new epoch) the
message is verified for real there.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from dltmw.core.pbft.state import Slot
from dltmw.v1 import replica_pb2


class VoteState(Protocol):
    """What `surplus_prepare` reads of a replica."""

    me: int
    view: int
    changing: bool
    next_exec: int
    slots: dict[int, Slot]


def surplus_prepare(state: VoteState, epoch: int, message: replica_pb2.ReplicaMessage) -> bool:
    """Is `message` a Prepare that cannot change anything here (see the module docstring)?"""
    if message.WhichOneof("body") != "prepare" or message.epoch != epoch:
        return False
    vote = message.prepare
    if vote.view != state.view or state.changing:
        return False
    if vote.sequence < state.next_exec:
        return True  # executed: dropped as a late vote anyway
    slot = state.slots.get(vote.sequence)
    return slot is not None and slot.commit_sent


class HasCertificate(Protocol):
    """What `surplus_ack` reads of one of our batches in flight."""

    @property
    def certificate(self) -> object | None: ...


def surplus_ack(
    me: int, epoch: int, own: Mapping[int, HasCertificate], message: replica_pb2.ReplicaMessage
) -> bool:
    """Is `message` a BatchAck of one of our batches that is certified already, or no longer
    in flight (in the chain: a late ack, dropped as of an unknown batch anyway)?"""
    if message.WhichOneof("body") != "batch_ack" or message.epoch != epoch:
        return False
    ack = message.batch_ack
    if ack.origin != me:
        return False  # not ours: dropped after the check, as before (a junk sender is counted)
    batch = own.get(ack.batch_sequence)
    return batch is None or batch.certificate is not None
