"""The replica-level simulator with dissemination on: `DisseminatingReplica` cores in a `World`.

Everything of `world.World` holds (one seeded rng, effects executed in order after every input,
crash = the core is dropped, restart = rebuilt from its persisted records alone); only the core
differs: clients' requests are envelopes batched by the replica they reach, PBFT-lite orders
availability certificates, and each node's `decided` log holds the assembled envelopes.
`enforce=False` builds every core with the certificate check disabled: the negative control,
under which a faulty primary gets an unavailable batch decided and the checkers must go red.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

from dltmw.core.effects import execute
from dltmw.core.pbft import PbftConfig, Record, Replica
from dltmw.core.pbft.assembly import compact_assembled
from dltmw.core.pbft.availability import expiry_slots
from dltmw.core.pbft.disseminating import DisseminatingReplica
from dltmw.core.pbft.dissemination import BatchRecord, DisseminationConfig
from dltmw.sim.dissem_checks import check_prepared_holds
from dltmw.sim.node import Node
from dltmw.sim.world import Behaviour, NodeExecutor, World

SIM_DISSEMINATION = DisseminationConfig(batch_count_max=3, batch_wait_ticks=2, retransmit_ticks=12)


class DissemWorld(World):
    """A `World` whose replicas disseminate batches and order their certificates."""

    def __init__(
        self,
        seed: int,
        config: PbftConfig,
        behaviour: Behaviour | None = None,
        clients: int = 2,
        trace: bool = False,
        enforce: bool = True,
        dissemination: DisseminationConfig = SIM_DISSEMINATION,
        drained: bool = False,
    ) -> None:
        """`drained`: after each tick's deliveries, every live replica is told its intake is
        empty, as the runtime's driver tells the orderer core when its inbox drains (Nagle's
        rule for batches, `Disseminator.drained`). Off by default: the seeds of the other
        tests were chosen on schedules without it."""
        self.enforce = enforce
        self.dissemination = dissemination
        self.drained_events = drained
        super().__init__(seed, config, behaviour, clients, trace)

    def tick(self) -> None:
        """One virtual tick, then (with `drained`) the drained event at every live replica."""
        super().tick()
        if not self.drained_events:
            return
        for node in self.nodes:
            if node.replica is not None:
                cast(DisseminatingReplica, node.replica).drained()
                self.flush(node)

    def new_replica(self, index: int, records: list[Record] | None = None) -> Replica:
        """A fresh (or restored) disseminating core. It has the `Replica` surface the world
        drives (step, tick, ready, view, counters), so it is returned as one."""
        sign, ok, lone = self.keys.signer(index), self.keys.request_ok, self.keys.lone
        cfg, dis = self.config, self.dissemination
        if records is None:
            core = DisseminatingReplica(
                cfg, index, sign, self.keys.verify, dis, ok, self.enforce, lone
            )
        else:
            core = DisseminatingReplica.restore(
                cfg, index, sign, self.keys.verify, dis, records, ok, self.enforce, lone
            )
        return cast(Replica, core)

    def compact(self, storage: list[Record], stable_seq: int, decided_from: int) -> list[Record]:
        """Also the assembled slots below the horizon and the batches they took, as the
        orderer's record store does (`core.pbft.assembly.compact_assembled`)."""
        expiry = expiry_slots(self.config.decided_retain)
        compacted = super().compact(storage, stable_seq, decided_from)
        return compact_assembled(compacted, decided_from, expiry)

    def servable(self, node: Node, peers: Sequence[Node]) -> bool:
        """With dissemination the next block needs its certificate (state transfer from a
        peer's agreeing replica) and then its batches: when execution is past the slot, the
        batch assembly waits for must still be stored by a peer (`block_catchup`)."""
        core = cast(DisseminatingReplica, node.replica)
        if core is None:
            return False
        if core.next_exec <= core.next_block:
            wanted = core.next_exec
            return any(
                wanted in cast(DisseminatingReplica, p.replica).replica.decided
                for p in peers
                if p.replica is not None
            )
        if core.resolver.uncertain is not None:
            return False  # after a jump, only the others' block settles this slot
        batch = core.resolver.wanted
        if batch is None:
            return True  # assembling: nothing asked of the peers yet
        key = (batch.key, batch.digest)
        return any(
            key in cast(DisseminatingReplica, p.replica).disseminator.stored
            for p in peers
            if p.replica is not None
        )

    def core(self, index: int) -> DisseminatingReplica | None:
        """The live core of the first node with replica `index` (None when down)."""
        for node in self.nodes:
            if node.index == index and node.replica is not None:
                return cast(DisseminatingReplica, node.replica)
        return None


class CarriedCrashWorld(DissemWorld):
    """Crash points at the write a carried batch needs (docs/ordering.md, "The primary's own
    batch"): a backup whose step stores the primary's batch crashes right after persisting it,
    its sends (the prepare among them) lost, up to `CRASHES` times, each restarted
    `RESTART_AFTER` ticks later. Every step's prepares are checked against the durable records
    (`check_prepared_holds`): `stored_violations`."""

    CRASHES = 6
    RESTART_AFTER = 9

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.crashes = 0
        self.stored_violations: list[str] = []

    def flush(self, node: Node) -> None:
        """As `World.flush`, with the crash point and the check."""
        if node.replica is None:
            return
        core = cast(DisseminatingReplica, node.replica)
        effects = node.replica.ready()
        primary = core.replica.primary()
        carried = any(
            isinstance(r, BatchRecord) and r.key.origin == primary != node.index
            for r in effects.persist
        )
        honest = node.index not in self.behaviour.faulty
        if carried and honest and self.crashes < self.CRASHES and not node.dying:
            self.crashes += 1
            node.dying = True
            self.log(f"{node.name} crashing after storing the primary's batch")
            self.at(self.now + self.RESTART_AFTER, lambda: self.restart(node))
        execute(effects, NodeExecutor(self, node))
        if honest:
            self.stored_violations += check_prepared_holds(node, core, effects.send)
        if node.dying:
            self.die(node)
