"""Checkers of dissemination runs, on top of `checkers.check_safety` (agreement, validity, no
duplicates — over the assembled envelopes):

- available: every slot an honest replica decided was assembled by it (no decided certificate
  names a batch no honest replica can serve) — read from the cores still waiting;
- one batch per key: no (origin, batch_sequence) is in the chain twice, whatever digests an
  equivocating origin got certified — read from the persisted `AssembledRecord`s;
- stored before prepared (`check_prepared_holds`): a prepare an honest replica sends for a slot
  whose pre-prepare its origin sent naming a carried certificate leaves only once that batch
  is in the replica's durable records
  (docs/ordering.md, "The primary's own batch") — read at each step's sends
  (`CarriedCrashWorld` in `dissem_world.py`).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import cast

from dltmw.core.pbft import Envelope
from dltmw.core.pbft.assembly import AssembledRecord
from dltmw.core.pbft.availability import BatchKey, parse_certificate
from dltmw.core.pbft.disseminating import DisseminatingReplica
from dltmw.core.pbft.dissemination import BatchRecord
from dltmw.core.pbft.types import Outgoing
from dltmw.sim.byzantine import parse
from dltmw.sim.node import Node


def check_available(nodes: Iterable[Node]) -> list[str]:
    """Honest nodes holding a decided slot they could not assemble."""
    out = []
    for node in nodes:
        if node.replica is None:
            continue
        core = cast(DisseminatingReplica, node.replica)
        if core.resolver.queue:
            head = core.resolver.queue[0]
            wanted = core.resolver.wanted
            what = "?" if wanted is None else f"{wanted.key.origin}/{wanted.key.batch_sequence}"
            out.append(f"unavailable: {node.name} cannot assemble seq {head.sequence} ({what})")
    return out


def check_batches_once(nodes: Iterable[Node]) -> list[str]:
    """A batch key in the chain twice (in a node's persisted assemblies)."""
    out = []
    for node in nodes:
        seen: dict[tuple[int, int], int] = {}
        for record in node.storage:
            if not isinstance(record, AssembledRecord):
                continue
            for origin, batch_sequence, _digest in record.batches:
                first = seen.setdefault((origin, batch_sequence), record.sequence)
                if first != record.sequence:
                    out.append(f"batch {origin}/{batch_sequence} twice on {node.name}")
    return out


def check_one_batch_per_slot(nodes: Iterable[Node]) -> list[str]:
    """A slot that assembled several batches, where the group orders one certificate per slot
    (`PbftConfig.slot_requests_max` = 1: a slot is one block, at most `max_tx_count`)."""
    return [
        f"slot {record.sequence} took {len(record.batches)} batches on {node.name}"
        for node in nodes
        for record in node.storage
        if isinstance(record, AssembledRecord) and len(record.batches) > 1
    ]


def check_prepared_holds(
    node: Node, core: DisseminatingReplica, sends: Iterable[tuple[int, Outgoing]]
) -> list[str]:
    """Prepares among `sends` for a slot naming a carried batch `node` has not persisted
    (none where the group does not carry: a carried certificate then needs f+1 acks)."""
    out: list[str] = []
    if not core.replica.config.carried:
        return out
    held: set[tuple[BatchKey, bytes]] | None = None
    for _destination, envelope in sends:
        if not isinstance(envelope, Envelope) or envelope.replica != node.index:
            continue
        message = parse(envelope)
        if message.WhichOneof("body") != "prepare":
            continue
        slot = core.replica.slots.get(message.prepare.sequence)
        if slot is None or slot.pre_prepare is None:
            continue
        # The gate's case: the pre-prepare came from the batch's origin. A new view's
        # re-proposal (signed by the new primary) names a certificate prepared already, by
        # 2f+1 replicas of which f+1 correct hold the batch: preparing it again needs no batch.
        named = [parse_certificate(r) for r in slot.requests]
        sender = slot.pre_prepare.replica
        carried = [
            (c, BatchKey(c.origin, c.batch_sequence))
            for c in named
            if c and c.carried and c.origin == sender
        ]
        if not carried:
            continue
        if held is None:
            held = {(r.key, _digest(r)) for r in node.storage if isinstance(r, BatchRecord)}
        for cert, key in carried:
            if (key, bytes(cert.digest)) not in held:
                what = f"seq {message.prepare.sequence} ({key.origin}/{key.batch_sequence})"
                out.append(f"prepared unheld: {node.name} {what}")
    return out


def _digest(record: BatchRecord) -> bytes:
    return bytes(parse(record.envelope).batch.digest)
