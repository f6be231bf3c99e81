"""Crash points right before a step that delivers slots: its records, slots and sends lost.

A PBFT-lite orderer's step that decides a slot writes the step's records and then commits the
block (two sqlite transactions, two files: `ledger/pbft_store.py`, `ledger/sqlite.py`; branch
pbft15 measured writing them in one, benchmarks/RESULTS.md). `SlotCrashWorld` crashes an honest
replica right before such a step's writes — a step that delivers slots stands for a step that
commits blocks — so that its records, its slots and its sends are lost together, as kill -9
before the first of those transactions leaves it. One replica down at a time, up to `CRASHES`
crashes, each restarted `RESTART_AFTER` ticks later from its records. `forget_slot_steps` is the
negative control: a restart that forgets the records such steps wrote, which the checkers must
catch (a slot delivered twice).
"""

from __future__ import annotations

from collections.abc import Sequence

from dltmw.core.effects import execute
from dltmw.core.pbft import Record
from dltmw.sim.dissem_world import DissemWorld
from dltmw.sim.node import Node
from dltmw.sim.world import NodeExecutor


class SlotCrashWorld(DissemWorld):
    """A `DissemWorld` with the crash points of the module docstring."""

    CRASHES = 8
    RESTART_AFTER = 9

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.crashes = 0
        self.forget_slot_steps = False  # TEST-ONLY: the negative control
        self._slot_steps: set[int] = set()  # ids of the records of steps that delivered slots

    def flush(self, node: Node) -> None:
        """As `World.flush`, with the crash point; the records of a step that delivers slots
        are noted (for the negative control)."""
        if node.replica is None:
            return
        effects = node.replica.ready()
        slot_step = bool(effects.decided) and bool(effects.persist)
        if (
            slot_step
            and node.index not in self.behaviour.faulty
            and self.crashes < self.CRASHES
            and not node.dying
            and all(n.replica is not None for n in self.nodes if n is not node)
        ):
            self.crashes += 1
            node.replica = None
            self.log(f"{node.name} crashed before writing a step that delivers slots")
            self.at(self.now + self.RESTART_AFTER, lambda: self.restart(node))
            return
        if slot_step:
            self._slot_steps.update(id(r) for r in effects.persist)
        execute(effects, NodeExecutor(self, node))
        if node.dying:
            self.die(node)

    def restart(self, node: Node) -> None:
        """From the node's records; with `forget_slot_steps`, without those of the steps that
        delivered slots."""
        if node.replica is not None:
            return
        node.dying, node.ticks = False, 0
        records: Sequence[Record] = node.storage
        if self.forget_slot_steps:
            records = [r for r in records if id(r) not in self._slot_steps]
        node.replica = self.new_replica(node.index, list(records))
        self.log(f"{node.name} restarted from {len(records)} records")
        self.flush(node)
