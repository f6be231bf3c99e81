"""Restart: rebuild a replica from exactly the records its earlier incarnation made durable.

What survives a crash is what a correct replica must never contradict: its view (so it never
votes in a view it left), its own pre-prepares/prepares/commits (so it never votes twice
differently at one slot), its prepared certificates (so a later view change carries them), its
decided batches and its stable checkpoint. Everything else — other replicas' votes, pending
requests, timers — is re-learnt from peers (retransmission, catch-up probes).
"""

from __future__ import annotations

from collections.abc import Sequence

from dltmw.core.pbft.checkpoints import Checkpoints
from dltmw.core.pbft.jump import restore_jump
from dltmw.core.pbft.state import Slot
from dltmw.core.pbft.types import (
    DecidedRecord,
    Envelope,
    JumpRecord,
    PreparedRecord,
    Record,
    StableRecord,
    ViewRecord,
    VoteRecord,
)
from dltmw.v1 import replica_pb2


def _parse(envelope: Envelope) -> replica_pb2.ReplicaMessage:
    message = replica_pb2.ReplicaMessage()
    message.ParseFromString(envelope.payload)
    return message


NEVER = 1 << 62  # sequence of records compaction keeps (e.g. our NewView)


def record_sequence(record: Record) -> int:
    """The sequence a record belongs to, as compaction sees it."""
    if isinstance(record, VoteRecord | PreparedRecord):
        envelope = (
            record.envelope if isinstance(record, VoteRecord) else record.certificate.pre_prepare
        )
        message = _parse(envelope)
        kind = message.WhichOneof("body")
        if kind in ("pre_prepare", "prepare", "commit"):
            return int(getattr(message, kind).sequence)
        return NEVER
    if isinstance(record, DecidedRecord):
        return int(record.batch.sequence)
    if isinstance(record, StableRecord | JumpRecord):
        return record.sequence
    return 0


def compaction_floor(stable_seq: int, delivered: int, retain: int) -> int:
    """The lowest sequence whose decided (and assembled) records a compaction keeps, once
    `stable_seq` is stable and sequences up to `delivered` are in the node's chain: the last
    `retain` sequences below both. State transfer serves those, and a restart rebuilds from
    them the de-duplication window of the next sequence to deliver (`recent.Recent`: with
    dissemination that window decides block content, so it must be whole)."""
    return min(stable_seq, delivered) - retain + 1


def compact(records: Sequence[Record], stable_seq: int, decided_from: int) -> list[Record]:
    """The records a restart still needs once `stable_seq` is stable (storage must match).

    Drops our votes and prepared certificates at or below the checkpoint, decided batches below
    `decided_from` and every view and checkpoint record but the latest of each.
    """
    last_view = max((i for i, r in enumerate(records) if isinstance(r, ViewRecord)), default=-1)
    last_stable = max((i for i, r in enumerate(records) if isinstance(r, StableRecord)), default=-1)
    out: list[Record] = []
    for i, record in enumerate(records):
        if isinstance(record, ViewRecord) and i != last_view:
            continue
        if isinstance(record, StableRecord) and i != last_stable:
            continue
        if (
            isinstance(record, VoteRecord | PreparedRecord)
            and record_sequence(record) <= stable_seq
        ):
            continue
        if isinstance(record, DecidedRecord) and record.batch.sequence < decided_from:
            continue
        out.append(record)
    return out


def replay(replica: Checkpoints, records: Sequence[Record]) -> None:
    """Apply `records` in order to a freshly constructed replica, then resume.

    Execution restarts from the latest stable checkpoint (its state digest is proven), so a log
    compacted below it restores the same state; older decided batches only refill the served
    history (the last `kept` of them; the rest stay in the records) and the executed ids.
    """
    stables = [r for r in records if isinstance(r, StableRecord)]
    if stables:
        _restore_stable(replica, stables[-1])
    votes: list[Envelope] = []
    for record in records:
        if isinstance(record, ViewRecord):
            replica.view, replica.changing = record.view, record.changing
        elif isinstance(record, VoteRecord):
            votes.append(record.envelope)
        elif isinstance(record, PreparedRecord):
            seq = _parse(record.certificate.pre_prepare).pre_prepare.sequence
            replica.prepared[seq] = record.certificate
        elif isinstance(record, DecidedRecord):
            batch = record.batch
            if batch.sequence < replica.next_exec:
                replica.decided[batch.sequence] = batch
                replica.executed_ids.add(batch.sequence, replica.ids_of(tuple(batch.requests)))
            elif batch.sequence == replica.next_exec:
                replica.apply(batch, restoring=True)
        elif isinstance(record, JumpRecord):
            restore_jump(replica, record)
    low, horizon = replica.low, replica.low - replica.config.kept
    replica.prepared = {s: c for s, c in replica.prepared.items() if s > low}
    replica.decided = {s: b for s, b in replica.decided.items() if s > horizon}
    if replica.changing:
        replica.vc_attempts = 1
        replica.vc_deadline = None  # armed again once 2f+1 ask for this view (they retransmit)
        replica.send_view_change()
    else:
        _restore_slots(replica, votes)
    replica.next_seq = max(replica.next_seq, replica.next_exec, replica.low + 1)
    replica.probe()


def _restore_stable(replica: Checkpoints, record: StableRecord) -> None:
    replica.low = replica.stable_seq = record.sequence
    replica.low_digest, replica.low_proof = record.state_digest, record.proof
    replica.next_exec = record.sequence + 1
    replica.state_digest = record.state_digest
    replica.state_at[record.sequence] = record.state_digest


def _restore_slots(replica: Checkpoints, votes: list[Envelope]) -> None:
    """Rebuild the current view's slots from our prepared certificates and our own votes."""
    for cert in replica.prepared.values():
        pp = _parse(cert.pre_prepare).pre_prepare
        if pp.view == replica.view and replica.in_window(pp.sequence):
            slot = replica.slots.setdefault(pp.sequence, Slot())
            slot.pre_prepare, slot.digest = cert.pre_prepare, pp.digest
            slot.requests = tuple(pp.requests)
    for envelope in votes:
        message = _parse(envelope)
        kind = message.WhichOneof("body")
        if kind == "new_view" and message.new_view.view == replica.view:
            replica.my_new_view = envelope
            continue
        if kind not in ("pre_prepare", "prepare", "commit"):
            continue
        body = getattr(message, kind)
        if body.view != replica.view or not replica.in_window(body.sequence):
            continue
        slot = replica.slots.setdefault(body.sequence, Slot())
        slot.mine.append(envelope)
        slot.mine_seen = len(slot.mine)  # restored: resent at the first pass, as ever
        if kind == "pre_prepare":
            slot.pre_prepare, slot.digest = envelope, body.digest
            slot.requests = tuple(body.requests)
            replica.proposed_ids.update(replica.ids_of(slot.requests))
            replica.next_seq = max(replica.next_seq, body.sequence + 1)
        elif kind == "prepare":
            slot.my_digest = body.digest
            slot.prepares[replica.me] = (body.digest, envelope)
        else:
            slot.commit_sent = True
            slot.commits[replica.me] = (body.digest, envelope)
