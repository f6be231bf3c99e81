"""The simulated world: n real PBFT-lite cores, their clients and a seeded network in one process.

One `random.Random` drives everything (delays, drops, client choices, byzantine choices), so a
seed replays a run exactly. Each replica's effects are executed right after every input, through
the core contract's executor (`dltmw.core.effects.execute`, in order): its persist records are
appended to its durable `storage`, its decided batches to its `decided` log, its messages handed
(through its behaviour, for byzantine replicas) to the network. A crash discards the core; a
restart rebuilds it from `storage` alone — so a crash loses exactly what was not yet persisted.
Twins are two nodes with the same replica index and key: both receive what is sent to that
index, both send as it.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

from dltmw.core.effects import Token, execute
from dltmw.core.pbft import (
    ClientRequest,
    Decided,
    Envelope,
    PbftConfig,
    Record,
    Rejected,
    Replica,
    ViewRecord,
)
from dltmw.core.pbft.recovery import compact, compaction_floor
from dltmw.core.pbft.types import (
    DecidedFromStore,
    DecidedRecord,
    Outgoing,
    StableRecord,
    StoredDecided,
)
from dltmw.sim.block_catchup import catch_up
from dltmw.sim.keys import Keys, request_name
from dltmw.sim.network import InFlight, Network
from dltmw.sim.node import Node


class NodeExecutor:
    """A node's side of the core contract: durable storage, decided log, the network."""

    def __init__(self, world: World, node: Node) -> None:
        self.world = world
        self.node = node

    def persist(self, records: Sequence[Record]) -> None:
        """Append to the node's storage (compacted as the orderer's record store does)."""
        node, config = self.node, self.world.config
        node.storage.extend(records)
        stable = [r.sequence for r in records if isinstance(r, StableRecord)]
        if stable:
            last = node.decided[-1].sequence if node.decided else 0
            horizon = compaction_floor(stable[-1], last, config.decided_retain)
            node.storage = self.world.compact(node.storage, stable[-1], horizon)
        if self.world.trace is not None:
            self.world.trace_records(node, records)

    def apply(self, decided: Sequence[Decided]) -> None:
        """Deliver decided batches to the node's log, in order."""
        for batch in decided:
            self.node.decided.append(batch)
            self.world.note_decided(self.node, batch)

    def send(self, messages: Sequence[tuple[int, Outgoing]]) -> None:
        """Hand messages to the network (unless the node dies right now: sends lost); a read
        of our own records for a peer's catch-up is answered at the next tick."""
        if self.node.dying:
            self.world.die(self.node)
            return
        for destination, message in messages:
            if isinstance(message, DecidedFromStore):
                self.world.read_decided(self.node, destination, message)
            else:
                self.world.behaviour.outgoing(self.world, self.node, destination, message)

    def reply(self, replies: Sequence[tuple[Token, Rejected]]) -> None:
        """Simulated clients learn of refusals by not seeing their request decided."""


class Behaviour:
    """Honest behaviour; byzantine behaviours override the hooks (see byzantine.py)."""

    faulty: frozenset[int] = frozenset()
    twins: frozenset[int] = frozenset()

    def outgoing(self, world: World, node: Node, destination: int, envelope: Envelope) -> None:
        """Send one message of `node` (byzantine nodes may alter, drop or multiply it)."""
        world.net.send(node.index, destination, envelope)

    def incoming(self, world: World, node: Node, envelope: Envelope) -> None:
        """Observe a message delivered to `node` (byzantine nodes may record it)."""

    def tick(self, world: World) -> None:
        """Act once per tick (byzantine nodes may inject messages)."""


class World:
    """Replicas, clients, network, trace."""

    def __init__(
        self,
        seed: int,
        config: PbftConfig,
        behaviour: Behaviour | None = None,
        clients: int = 2,
        trace: bool = False,
    ) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        self.config = config
        self.keys = Keys(config.n, clients)
        self.net = Network(self.rng)
        self.behaviour = behaviour or Behaviour()
        self.now = 0
        self.trace: list[str] | None = [] if trace else None
        self.nodes: list[Node] = []
        for index in range(config.n):
            copies = 2 if index in self.behaviour.twins else 1
            for copy in range(copies):
                name = f"r{index}" + ("'" * copy)
                self.nodes.append(Node(name, index, self.new_replica(index)))
        self.clients = clients
        self.submitted: dict[bytes, int] = {}
        self.done: set[bytes] = set()
        self._deciders: dict[bytes, set[int]] = {}
        self._scheduled: dict[int, list[Callable[[], None]]] = {}
        self._last_retry: dict[bytes, int] = {}
        self.retry_ticks = 3 * config.request_timeout_ticks // 2
        self.store_reads = 0  # `DecidedFromStore` answered from a node's records
        self.store_reads_off = False  # TEST-ONLY: ignore them (the durable path disabled)

    # -- construction and tracing ------------------------------------------------------------

    def new_replica(self, index: int, records: list[Record] | None = None) -> Replica:
        """A fresh (or restored) core for replica `index` with simulation keys."""
        sign = self.keys.signer(index)
        ok, lone = self.keys.request_ok, self.keys.lone
        if records is None:
            return Replica(self.config, index, sign, self.keys.verify, request_ok=ok, alone=lone)
        return Replica.restore(
            self.config, index, sign, self.keys.verify, records, request_ok=ok, alone=lone
        )

    def compact(self, storage: list[Record], stable_seq: int, decided_from: int) -> list[Record]:
        """A node's storage once `stable_seq` is stable, as its record store compacts it."""
        return compact(storage, stable_seq, decided_from)

    def servable(self, node: Node, peers: Sequence[Node]) -> bool:
        """Can the protocol still bring `node` its next block from `peers`? Some peer retains
        the decided batch state transfer would send (`block_catchup`)."""
        if node.replica is None:
            return False
        wanted = node.replica.next_exec
        return any(
            p.replica is not None and (wanted in p.replica.decided or p.replica.in_store(wanted))
            for p in peers
        )

    def read_decided(self, node: Node, peer: int, wanted: DecidedFromStore) -> None:
        """Read `node`'s stored decided batches for `peer` (as the runtime's record store) and
        step them into the same incarnation of its core at the next tick."""
        if self.store_reads_off:
            return
        last = wanted.from_sequence + wanted.count
        stored = {
            r.batch.sequence: r.batch
            for r in node.storage
            if isinstance(r, DecidedRecord) and wanted.from_sequence <= r.batch.sequence < last
        }
        batches = tuple(stored[s] for s in sorted(stored))
        replica = node.replica

        def answer() -> None:
            if replica is not None and node.replica is replica:
                self.store_reads += 1
                replica.step(StoredDecided(peer, batches))
                self.flush(node)

        self.at(self.now + 1, answer)

    def log(self, line: str) -> None:
        """Append a trace line (only when tracing)."""
        if self.trace is not None:
            self.trace.append(f"{self.now:4d} {line}")

    def honest(self) -> list[Node]:
        """Nodes whose replica index is not faulty."""
        return [n for n in self.nodes if n.index not in self.behaviour.faulty]

    def at(self, tick: int, action: Callable[[], None]) -> None:
        """Schedule `action` at `tick`."""
        self._scheduled.setdefault(tick, []).append(action)

    # -- driving -----------------------------------------------------------------------------

    def flush(self, node: Node) -> None:
        """Execute a node's effects in order: persist, decided, send (a dying node stops after
        decided: its sends are lost)."""
        if node.replica is None:
            return
        execute(node.replica.ready(), NodeExecutor(self, node))
        if node.dying:
            self.die(node)

    def die(self, node: Node) -> None:
        """The crash of a node marked dying, after it persisted its last outputs."""
        node.replica, node.dying = None, False
        self.log(f"{node.name} crashed after persisting (sends lost)")

    def trace_records(self, node: Node, records: Sequence[Record]) -> None:
        """Trace the records a node persisted (views, checkpoints, decided batches)."""
        for record in records:
            if isinstance(record, ViewRecord):
                state = "changing" if record.changing else "installed"
                self.log(f"{node.name} view {record.view} {state}")
            elif isinstance(record, StableRecord):
                self.log(f"{node.name} stable checkpoint {record.sequence}")
            elif isinstance(record, DecidedRecord):
                batch = record.batch
                names = ",".join(request_name(r) for r in batch.requests)
                self.log(f"{node.name} decided seq={batch.sequence} view={batch.view} [{names}]")

    def note_decided(self, node: Node, decided: Decided) -> None:
        """Count honest deciders of each request (f+1 of them: done)."""
        if node.index in self.behaviour.faulty:
            return
        for request in decided.fresh:
            deciders = self._deciders.setdefault(request, set())
            deciders.add(node.index)
            if len(deciders) >= self.config.f + 1:
                self.done.add(request)

    def deliver(self, message: InFlight) -> None:
        """Hand one network message to the live node(s) at its destination.

        Twins are reached independently: each message goes to one of them or to both, so
        their states diverge and they propose and vote differently under one key.
        """
        targets = [
            n for n in self.nodes if n.index == message.destination and n.replica is not None
        ]
        if len(targets) > 1:
            pick = self.rng.randrange(3)
            targets = targets if pick == 2 else [targets[pick]]
        for node in targets:
            if node.replica is None:
                continue
            if isinstance(message.payload, Envelope):
                self.behaviour.incoming(self, node, message.payload)
            node.replica.step(message.payload)
            self.flush(node)

    def submit(
        self, client: int, counter: int, replica: int | None = None, lone: bool = False
    ) -> bytes:
        """A client creates a request (`lone`: one to be ordered alone) and sends it to one
        replica (random if None)."""
        request = self.keys.make_request(client, counter, lone)
        target = self.rng.randrange(self.config.n) if replica is None else replica
        self.submitted[request] = self.now
        self._last_retry[request] = self.now
        self.log(f"client{client} submits {request_name(request)} to r{target}")
        self.net.send(self.config.n + client, target, ClientRequest(request))
        return request

    def _retry_clients(self) -> None:
        """Clients resend undecided requests to every replica (PBFT clients broadcast)."""
        for request, last in self._last_retry.items():
            if request not in self.done and self.now - last >= self.retry_ticks:
                self._last_retry[request] = self.now
                client = int(request[1:].split(b".")[0])
                for replica in range(self.config.n):
                    self.net.send(self.config.n + client, replica, ClientRequest(request))

    def tick(self) -> None:
        """One virtual tick: scheduled actions, deliveries, core ticks, block catch-up of a
        stranded replica (`block_catchup`), client retries."""
        self.now += 1
        self.net.now = self.now
        for action in self._scheduled.pop(self.now, []):
            action()
        for message in self.net.due():
            self.deliver(message)
        self.behaviour.tick(self)
        for node in self.nodes:
            if node.replica is not None:
                node.ticks += 1
                node.replica.tick(node.ticks)
                self.flush(node)
        catch_up(self)
        self._retry_clients()

    def crash(self, node: Node, lose_sends: bool = False) -> None:
        """Crash: drop the core (everything not persisted is gone)."""
        if node.replica is None:
            return
        if lose_sends:
            node.dying = True
            self.log(f"{node.name} crashing at its next output")
            return
        node.replica = None
        self.log(f"{node.name} crashed")

    def restart(self, node: Node) -> None:
        """Restart from exactly the persisted records."""
        if node.replica is not None:
            return
        node.dying, node.ticks = False, 0
        node.replica = self.new_replica(node.index, list(node.storage))
        self.log(f"{node.name} restarted from {len(node.storage)} records")
        self.flush(node)

    def all_done(self) -> bool:
        """Every submitted request decided (fresh) by every honest node."""
        for node in self.honest():
            if node.replica is None:
                return False
        need = set(self.submitted)
        for node in self.honest():
            got = {r for d in node.decided for r in d.fresh}
            if not need <= got:
                return False
        return True
