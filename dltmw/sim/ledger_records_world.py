"""Crash points at an orderer's one write per slot: the step's records with its block.

A PBFT-lite orderer keeps its records in its ledger's file and writes those of a step that
commits a block in that block's transaction (`ledger/pbft_store.py`, `PbftOrdererCore(
records_with_blocks=True)`, docs/ordering.md "One transaction per block"): the records, the
block and (after both) the step's sends are all or nothing. `LedgerRecordsWorld` models it at
the replica level — a step that delivers slots stands for a step that commits blocks — and
crashes an honest replica right before such a step's write: its records, its slots and its sends
are lost together. One replica down at a time, up to `CRASHES` crashes, each restarted
`RESTART_AFTER` ticks later from its records. `forget_with_block` is the negative control: a
restart that forgets the records written with a block (as a recovery reading only the record
file would), which the checkers must catch.
"""

from __future__ import annotations

from collections.abc import Sequence

from dltmw.core.effects import execute
from dltmw.core.pbft import Record
from dltmw.sim.dissem_world import DissemWorld
from dltmw.sim.node import Node
from dltmw.sim.world import NodeExecutor


class LedgerRecordsWorld(DissemWorld):
    """A `DissemWorld` with the crash points of the module docstring."""

    CRASHES = 8
    RESTART_AFTER = 9

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.crashes = 0
        self.forget_with_block = False  # TEST-ONLY: the negative control
        self._with_block: set[int] = set()  # ids of the records written with a block

    def flush(self, node: Node) -> None:
        """As `World.flush`, with the crash point and the records written with a block noted."""
        if node.replica is None:
            return
        effects = node.replica.ready()
        with_block = bool(effects.decided) and bool(effects.persist)
        if (
            with_block
            and node.index not in self.behaviour.faulty
            and self.crashes < self.CRASHES
            and not node.dying
            and all(n.replica is not None for n in self.nodes if n is not node)
        ):
            self.crashes += 1
            node.replica = None
            self.log(f"{node.name} crashed before writing its records with its block")
            self.at(self.now + self.RESTART_AFTER, lambda: self.restart(node))
            return
        if with_block:
            self._with_block.update(id(r) for r in effects.persist)
        execute(effects, NodeExecutor(self, node))
        if node.dying:
            self.die(node)

    def restart(self, node: Node) -> None:
        """From the node's records; with `forget_with_block`, without those written with a
        block."""
        if node.replica is not None:
            return
        node.dying, node.ticks = False, 0
        records: Sequence[Record] = node.storage
        if self.forget_with_block:
            records = [r for r in records if id(r) not in self._with_block]
        node.replica = self.new_replica(node.index, list(records))
        self.log(f"{node.name} restarted from {len(records)} records")
        self.flush(node)
