"""Block-level catch-up in the simulator: what the orderer runtime does for a replica that state
transfer can no longer help.

The runtime (`core/handlers/pbft_orderer.py`, `_maybe_fetch` / `_on_fetched`): a replica whose
ledger stops growing fetches committed blocks from another replica's ledger, checks the hash
chain and 2f+1 distinct orderer signatures over each block, commits them, and jumps over them
(`core/pbft/jump.py`; with dissemination, assembly alone where execution is past them).
Without it, a replica that fell further behind than its peers retain decided batches
(`decided_retain`) would wait forever: nobody holds the commit certificates a state reply needs.

The model, checked every `CHECK_TICKS` ticks for every live node:
- a node is *stranded* when an honest live peer has output its next block (`next_block`)
  and no honest live peer can still serve what the protocol needs to bring it (`World.servable`:
  the decided batch for state transfer; with dissemination, also the batch its assembly waits
  for);
- a stranded node takes the blocks from its next block on from the honest live peer that got
  furthest, appends those it lacks to its decided log (its ledger), and hands them to its
  core's `jump`.

Taking the blocks from an honest node stands for the signature check: 2f+1 valid signatures
include f+1 correct replicas, so such a block is what the honest replicas decided (PBFT safety),
and the safety checkers still compare every honest log. Only a stranded node fetches, where the
runtime fetches whenever its blocks stall: state transfer and batch fetches stay the catch-up
that every other run exercises, and no randomness is drawn, so the schedules (and the seeds
chosen on them) of runs that never strand a node are unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from dltmw.core.pbft import Decided
from dltmw.sim.node import Node


class CatchUpWorld(Protocol):
    """What the model needs of `world.World` (a protocol: the world calls the model)."""

    now: int

    @property
    def nodes(self) -> Sequence[Node]: ...

    def honest(self) -> list[Node]: ...

    def servable(self, node: Node, peers: Sequence[Node]) -> bool: ...

    def log(self, line: str) -> None: ...

    def flush(self, node: Node) -> None: ...

    def note_decided(self, node: Node, decided: Decided) -> None: ...


CHECK_TICKS = 20


def stranded(world: CatchUpWorld, node: Node) -> Node | None:
    """The honest live peer to fetch blocks from if `node` is stranded, else None."""
    if node.replica is None:
        return None
    wanted = node.replica.next_block
    peers = [p for p in world.honest() if p.replica is not None and p.index != node.index]
    ahead = [p for p in peers if p.replica is not None and p.replica.next_block > wanted]
    if not ahead or world.servable(node, peers):
        return None
    return max(ahead, key=lambda p: (p.replica.next_block if p.replica else 0, p.name))


def catch_up(world: CatchUpWorld) -> None:
    """Every `CHECK_TICKS` ticks: each stranded live node jumps over its source's blocks."""
    if world.now % CHECK_TICKS:
        return
    for node in world.nodes:
        source = stranded(world, node)
        if source is None or node.replica is None:
            continue
        wanted = node.replica.next_block
        blocks = [d for d in source.decided if d.sequence >= wanted]
        logged = node.decided[-1].sequence if node.decided else 0
        batches = [(d.sequence, tuple(d.requests)) for d in blocks]
        if not node.replica.jump(batches):
            world.log(f"{node.name} refused blocks {wanted}.. from {source.name}")
            continue
        for block in blocks:
            if block.sequence > logged:
                commit(world, node, block)
        world.log(
            f"{node.name} jumped over blocks {wanted}..{blocks[-1].sequence} of {source.name}"
        )
        world.flush(node)


def commit(world: CatchUpWorld, node: Node, block: Decided) -> None:
    """A fetched block committed to the node's ledger (its decided log), as the runtime's
    `_on_fetched` commits it before the jump."""
    node.decided.append(block)
    world.note_decided(node, block)
