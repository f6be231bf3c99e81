"""Comparing the audit views of a channel's nodes (the decisions behind `dltmw audit`).

Inputs are AdminService.Audit replies (`AuditResponse`), one per node; outputs are `Finding`s,
each naming a node, a channel, a height and what diverged. Three kinds of check:

* self-consistency, per node: the state hash recomputed from its state table must equal the one
  stored with its last block (an edited row); the same for its private state;
* agreement at a height, across nodes: block hashes across every node (peers and orderers), the
  stored state hashes across peers. Within one height the majority value is taken as the
  reference and the others are named; with no strict majority every node is named;
* private transactions: every recipient that executed one (EXECUTED or CONTRACT_FAILED) must have
  recorded the same status and private-state hash.

Finding the FIRST diverging height without shipping every hash: block hashes chain, and each
node also reports a running hash over its stored state hashes (`state_chain`), so a difference at
height h shows at every height >= h. `sample` picks up to `SAMPLE_MAX` heights in (lo, hi] and
`first_disagreement` returns the lowest sampled height where views differ; the caller narrows
(lo, hi] to the gap before it and asks again: log_64(height) rounds.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from dltmw.v1 import admin_service_pb2, privacy_manager_service_pb2

A = admin_service_pb2
SAMPLE_MAX = 64
EXECUTED_STATUSES = frozenset(
    {
        privacy_manager_service_pb2.PRIVATE_TX_STATUS_EXECUTED,
        privacy_manager_service_pb2.PRIVATE_TX_STATUS_CONTRACT_FAILED,
    }
)

RECOMPUTED_DIFFERS = "recomputed state hash differs from stored"
PRIVATE_RECOMPUTED_DIFFERS = "recomputed private state hash differs from stored"
BLOCK_HASH_DIFFERS = "block hash differs"
STATE_HASH_DIFFERS = "stored state hash differs"
PRIVATE_HASH_DIFFERS = "private state hash differs"


@dataclass(frozen=True, order=True)
class Finding:
    """One divergence: ordered by height, so the first one sorts first."""

    height: int  # the block number where it shows
    node_id: str
    channel_id: str
    what: str
    detail: str = ""


def self_checks(views: Sequence[A.AuditResponse]) -> list[Finding]:
    """Each node's recomputed hashes against its stored ones."""
    out: list[Finding] = []
    for v in views:
        if v.has_state and v.recomputed_state_hash != v.stored_state_hash:
            out.append(
                Finding(
                    v.height - 1,
                    v.node_id,
                    v.channel_id,
                    RECOMPUTED_DIFFERS,
                    f"stored {v.stored_state_hash.hex()[:16]}, "
                    f"recomputed {v.recomputed_state_hash.hex()[:16]}",
                )
            )
        if v.has_private and v.private_recomputed_state_hash != v.private_stored_state_hash:
            out.append(
                Finding(
                    v.private_height - 1,
                    v.node_id,
                    v.channel_id,
                    PRIVATE_RECOMPUTED_DIFFERS,
                    f"stored {v.private_stored_state_hash.hex()[:16]}, "
                    f"recomputed {v.private_recomputed_state_hash.hex()[:16]}",
                )
            )
    return out


def odd_ones(values: Mapping[str, bytes]) -> tuple[list[str], str]:
    """Nodes whose value differs from the strict majority's (all of them when there is none),
    and a description; ([], "") when all agree."""
    groups: dict[bytes, list[str]] = defaultdict(list)
    for node, value in sorted(values.items()):
        groups[value].append(node)
    if len(groups) <= 1:
        return [], ""
    ranked = sorted(groups.values(), key=len, reverse=True)
    if len(ranked[0]) > len(ranked[1]):
        others = sorted(n for g in ranked[1:] for n in g)
        return others, f"differs from {', '.join(ranked[0])}"
    return sorted(values), "no majority: " + " vs ".join(",".join(g) for g in ranked)


def sample(lo: int, hi: int, count: int = SAMPLE_MAX) -> list[int]:
    """Up to `count` heights evenly spread over (lo, hi], always including hi."""
    span = hi - lo
    if span <= 0:
        return []
    if span <= count:
        return list(range(lo + 1, hi + 1))
    return sorted({lo + (span * i) // count for i in range(1, count + 1)})


def _points(views: Sequence[A.AuditResponse]) -> dict[str, dict[int, A.AuditPoint]]:
    return {v.node_id: {p.block_number: p for p in v.points} for v in views}


def point_findings(number: int, views: Sequence[A.AuditResponse]) -> list[Finding]:
    """Disagreements at one height: block hashes (all nodes), else state chains (peers)."""
    points = _points(views)
    cid = views[0].channel_id if views else ""
    blocks = {n: ps[number].block_hash for n, ps in points.items() if number in ps}
    nodes, why = odd_ones(blocks)
    if nodes:
        return [Finding(number, n, cid, BLOCK_HASH_DIFFERS, why) for n in nodes]
    chains = {
        v.node_id: points[v.node_id][number].state_chain
        for v in views
        if v.has_state and number in points[v.node_id] and points[v.node_id][number].state_chain
    }
    nodes, why = odd_ones(chains)
    return [Finding(number, n, cid, STATE_HASH_DIFFERS, why) for n in nodes]


def first_disagreement(numbers: Sequence[int], views: Sequence[A.AuditResponse]) -> int | None:
    """The lowest of `numbers` where the views disagree (block hash or state chain), or None."""
    for number in sorted(numbers):
        if point_findings(number, views):
            return number
    return None


def private_findings(
    channel_id: str, records: Mapping[str, Sequence[A.PrivateTxAudit]]
) -> list[Finding]:
    """Recipients that executed the same private transaction with different outcomes."""
    outcomes: dict[bytes, dict[str, bytes]] = defaultdict(dict)
    where: dict[bytes, int] = {}
    for node, txs in records.items():
        for tx in txs:
            if tx.status in EXECUTED_STATUSES:
                outcomes[tx.payload_hash][node] = bytes([tx.status]) + tx.state_hash
                where[tx.payload_hash] = tx.block_number
    out: list[Finding] = []
    for digest, by_node in outcomes.items():
        nodes, why = odd_ones(by_node)
        out.extend(
            Finding(
                where[digest], n, channel_id, PRIVATE_HASH_DIFFERS, f"tx {digest.hex()[:16]}: {why}"
            )
            for n in nodes
        )
    return out
