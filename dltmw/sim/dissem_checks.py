"""Checkers of dissemination runs, on top of `checkers.check_safety` (agreement, validity, no
duplicates — over the assembled envelopes):

- available: every slot an honest replica decided was assembled by it (no decided certificate
  names a batch no honest replica can serve) — read from the cores still waiting;
- one batch per key: no (origin, batch_sequence) is in the chain twice, whatever digests an
  equivocating origin got certified — read from the persisted `AssembledRecord`s.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import cast

from dltmw.core.pbft.assembly import AssembledRecord
from dltmw.core.pbft.disseminating import DisseminatingReplica
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
