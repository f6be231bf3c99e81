"""Crash points between an orderer's two record writes: its record file, then its block's.

A PBFT-lite orderer keeps its executed records (decided, assembled, jump) in its ledger's file
and writes them in the transaction of the block they make; its other records stay in the record
file, written first (`core.pbft.executed`, docs/ordering.md "Where a replica's records live").
`LedgerRecordsWorld` splits each node's records the same way — `Node.storage` is the record
file, `Node.executed` the ledger's table — and writes each step's records in the runtime's order
(`write_phases`; the executed records last, with the step's slots, when `moves_to_block`). Its
crash points: an honest replica whose step moves executed records to its block crashes right
after the record-file write, so that step's executed records, the slots it delivered (the
block) and its sends are lost; one whose step writes them in phases crashes after the executed
records, losing the rest of the step and its sends (its slots count as delivered: a restart
builds their blocks from those records, as after any crash between records and block). One replica down at a time, up to
`CRASHES` crashes, each restarted
`RESTART_AFTER` ticks later from `restore_order(storage, executed)` — or, with
`forget_executed` (the negative control: a recovery that forgets the moved records), from the
record file alone.
"""

from __future__ import annotations

from collections.abc import Sequence

from dltmw.core.effects import execute
from dltmw.core.pbft import Record, StableRecord
from dltmw.core.pbft.dissemination import BatchRecord
from dltmw.core.pbft.executed import executed, moves_to_block, restore_order, write_phases
from dltmw.core.pbft.recovery import compaction_floor
from dltmw.sim.dissem_world import DissemWorld
from dltmw.sim.node import Node
from dltmw.sim.world import NodeExecutor


class SplitExecutor(NodeExecutor):
    """`NodeExecutor` with a node's records in two places, written in the runtime's order."""

    def persist(self, records: Sequence[Record]) -> None:
        node, world = self.node, self.world
        for in_ledger, some in write_phases(records):
            (node.executed if in_ledger else node.storage).extend(some)
        stable = [r.sequence for r in records if isinstance(r, StableRecord)]
        if stable:  # compacted as the record store compacts both places
            last = node.decided[-1].sequence if node.decided else 0
            horizon = compaction_floor(stable[-1], last, world.config.decided_retain)
            kept = world.compact(restore_order(node.storage, node.executed), stable[-1], horizon)
            node.storage = [r for r in kept if not executed(r)]
            node.executed = [r for r in kept if executed(r)]
        if world.trace is not None:
            world.trace_records(node, records)


class LedgerRecordsWorld(DissemWorld):
    """A `DissemWorld` with the crash points of the module docstring."""

    CRASHES = 8
    RESTART_AFTER = 9

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.crashes = {"moved": 0, "phased": 0}
        self.forget_executed = False  # TEST-ONLY: the negative control

    def flush(self, node: Node) -> None:
        """As `World.flush`, through `SplitExecutor`, with the crash points."""
        if node.replica is None:
            return
        effects = node.replica.ready()
        records = effects.persist
        moved = bool(effects.decided) and moves_to_block(records)
        phased = not moved and any(executed(r) for r in records)
        crash = (
            (moved or phased)
            and node.index not in self.behaviour.faulty
            and sum(self.crashes.values()) < self.CRASHES
            and not node.dying
            and all(n.replica is not None for n in self.nodes if n is not node)
        )
        if crash and moved:
            self.crashes["moved"] += 1
            node.storage.extend(r for r in records if not executed(r))
            self._crashed(node, "after its record file, before its block")
            return
        if crash:
            self.crashes["phased"] += 1
            first = [r for r in records if executed(r) or isinstance(r, BatchRecord)]
            executor = SplitExecutor(self, node)
            executor.persist(first)
            # The block is not committed, but a restart builds it from these records (the
            # orderer core builds the blocks its ledger lacks): delivered, as `World` models it.
            executor.apply(effects.decided)
            self._crashed(node, "after its executed records, before the rest of its step")
            return
        execute(effects, SplitExecutor(self, node))
        if node.dying:
            self.die(node)

    def _crashed(self, node: Node, where: str) -> None:
        node.replica, node.dying = None, False
        self.log(f"{node.name} crashed {where} (sends lost)")
        self.at(self.now + self.RESTART_AFTER, lambda: self.restart(node))

    def restart(self, node: Node) -> None:
        """From the record file, then the ledger's table (`restore_order`); with
        `forget_executed`, from the record file alone."""
        if node.replica is not None:
            return
        node.dying, node.ticks = False, 0
        executed_records = [] if self.forget_executed else node.executed
        records = restore_order(node.storage, executed_records)
        node.replica = self.new_replica(node.index, records)
        self.log(f"{node.name} restarted from {len(records)} records")
        self.flush(node)
