"""A seeded model of a JetStream-ordered channel: the real cutter core, a modelled stream.

The `jetstream` scenario (`python -m dltmw.sim --seed N --scenario jetstream`). What is
modelled: one replicated stream (an append-only list; a message published twice is stored
once, as JetStream's duplicate window does for the same `Nats-Msg-Id`; a message is one
envelope or a Broadcast batch of several, and a block may end inside a batch), publishes that arrive
after seeded delays and so interleave freely, acknowledgements and markers that are lost,
orderers that consume at their own pace, tick and drain at their own times, and crash (losing
everything but their committed blocks and stored positions) and restart. What is real: every
orderer runs `core/handlers/jetstream.JetStreamCutter`, restored as
`runtime/roles/orderer/jetstream.py` restores it (height, last hash, position, envelopes of the
next entry taken).

Checkers: at every step, any two orderers' chains agree on their common prefix (byte for byte),
each chain links, and no envelope is in a chain twice; after the faults stop and every orderer
caught up, all chains are equal and hold every envelope whose publish was acknowledged.
Negative control: `local_clock=True` gives every orderer a cutter that cuts on its own timer
(the mistake the markers exist to avoid); the agreement checker must notice.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from dltmw.core.block import block_hash, verify_chain
from dltmw.core.cutter import BlockCutter
from dltmw.core.errors import InvariantViolation
from dltmw.core.handlers.jetstream import (
    CutBlock,
    Entry,
    JetStreamCutter,
    StreamBatch,
    StreamEnvelope,
    TimeToCut,
)
from dltmw.core.hashing import ZERO_HASH
from dltmw.sim.scenarios.result import ScenarioResult

CHANNEL = "sim"
ORDERERS = 3
ENVELOPES = 60
FAULT_STEPS = 400
HEAL_STEPS_MAX = 2000


Message = bytes | tuple[bytes, ...]  # one envelope, or a Broadcast batch as one message


class LocalClockCutter(JetStreamCutter):
    """Negative control: cuts the pending batch on its own timer instead of asking for a
    marker, so orderers whose clocks differ cut different blocks."""

    def tick(self, now: int) -> None:
        if self._cutter.pending:
            self._age_ticks += 1
            if self._age_ticks >= self._cutter.timeout_ticks:
                batch = self._cutter.flush()
                if batch:
                    self._cut(batch, self._seen)


@dataclass
class Orderer:
    """One orderer: its committed chain (what survives a crash) and its running core."""

    name: str
    chain: list[CutBlock] = field(default_factory=list)
    core: JetStreamCutter | None = None
    ticks: int = 0


@dataclass
class World:
    """The stream, the publishes in flight, the orderers, and what was acknowledged."""

    rng: random.Random
    local_clock: bool
    stream: list[Entry] = field(default_factory=list)
    stored: set[Message] = field(default_factory=set)  # messages in the stream (dedup)
    in_flight: list[tuple[int, str, Message | int]] = field(default_factory=list)
    orderers: list[Orderer] = field(default_factory=list)
    acked: set[bytes] = field(default_factory=set)
    unacked: list[Message] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    now: int = 0

    def count(self, what: str) -> None:
        self.counts[what] = self.counts.get(what, 0) + 1

    def restore(self, orderer: Orderer) -> None:
        """A (re)started orderer: from its committed chain and the position stored with it."""
        last = orderer.chain[-1] if orderer.chain else None
        make = LocalClockCutter if self.local_clock else JetStreamCutter
        orderer.core = make(
            CHANNEL,
            len(orderer.chain),
            block_hash(last.block) if last is not None else ZERO_HASH,
            last.position if last is not None else 0,
            BlockCutter(5, 400, 3),
            taken=last.taken if last is not None else 0,
        )
        orderer.ticks = 0

    def publish(self, kind: str, payload: Message | int, faults: bool) -> None:
        delay = self.rng.randint(0, 6) if faults else 0
        self.in_flight.append((self.now + delay, kind, payload))
        if faults and self.rng.random() < 0.1:  # the client's retry, or a duplicated packet
            self.in_flight.append((self.now + self.rng.randint(0, 6), kind, payload))
            self.count("duplicate_publishes")

    def deliver(self, faults: bool) -> None:
        due = [p for p in self.in_flight if p[0] <= self.now]
        self.in_flight = [p for p in self.in_flight if p[0] > self.now]
        self.rng.shuffle(due)  # publishes due at the same time arrive in any order
        for _, kind, payload in due:
            seq = len(self.stream) + 1
            if kind == "marker":
                assert isinstance(payload, int)
                self.stream.append(TimeToCut(seq, payload))
                continue
            assert not isinstance(payload, int)
            if payload in self.stored:
                self.count("duplicates_dropped")
            else:
                self.stored.add(payload)
                if isinstance(payload, tuple):
                    self.stream.append(StreamBatch(seq, payload))
                else:
                    self.stream.append(StreamEnvelope(seq, payload))
            if faults and self.rng.random() < 0.1:
                self.count("acks_lost")  # stored, but the submitter never heard
                self.unacked.append(payload)
            else:
                self.acked.update(payload if isinstance(payload, tuple) else (payload,))

    def run_orderer(self, orderer: Orderer, faults: bool) -> None:
        core = orderer.core
        if core is None:
            return
        for entry in self.stream[core.position : core.position + self.rng.randint(0, 4)]:
            core.step(entry)
        if self.rng.random() < 0.5:
            orderer.ticks += 1
            core.tick(orderer.ticks)
        if self.rng.random() < 0.3:
            core.drained()
        effects = core.ready()
        orderer.chain.extend(effects.decided)  # committed with its position, atomically
        for _, number in effects.send:
            if faults and self.rng.random() < 0.15:
                self.count("markers_lost")
            else:
                self.count("markers_published")
                self.publish("marker", number, faults)


def violations_of(world: World, final: bool) -> list[str]:
    """The checkers (see the module docstring)."""
    found: list[str] = []
    chains = {o.name: [c.block.SerializeToString() for c in o.chain] for o in world.orderers}
    names = sorted(chains)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            common = min(len(chains[a]), len(chains[b]))
            if chains[a][:common] != chains[b][:common]:
                found.append(f"agreement: {a} and {b} differ within their first {common} blocks")
    for orderer in world.orderers:
        try:
            verify_chain([c.block for c in orderer.chain], CHANNEL)
        except InvariantViolation as exc:
            found.append(f"chain of {orderer.name}: {exc}")
        cut = [bytes(e) for c in orderer.chain for e in c.block.data.envelopes]
        if len(cut) != len(set(cut)):
            found.append(f"duplicate: {orderer.name} holds an envelope twice")
        if final and not world.acked <= set(cut):
            found.append(f"lost: {orderer.name} lacks {len(world.acked - set(cut))} acked")
    if final and len({tuple(c) for c in chains.values()}) != 1:
        found.append("agreement: the chains differ after the heal")
    return found


def simulate(seed: int, local_clock: bool = False) -> ScenarioResult:
    """One seeded run: faults for FAULT_STEPS steps, then heal until everything is cut."""
    world = World(random.Random(seed), local_clock)
    world.orderers = [Orderer(f"orderer{i}") for i in range(ORDERERS)]
    for orderer in world.orderers:
        world.restore(orderer)
    envelopes = [f"tx-{seed}-{i}".encode() for i in range(ENVELOPES)]
    violations: list[str] = []
    for world.now in range(FAULT_STEPS):
        if envelopes and world.rng.random() < 0.3:
            size = world.rng.choice((1, 1, 2, 4, 7))  # a lone envelope or a Broadcast batch
            batch, envelopes = tuple(envelopes[:size]), envelopes[size:]
            world.publish("envelope", batch if len(batch) > 1 else batch[0], faults=True)
            world.count("batches_published" if len(batch) > 1 else "envelopes_published")
        world.deliver(faults=True)
        for orderer in world.orderers:
            if orderer.core is None and world.rng.random() < 0.1:
                world.restore(orderer)
                world.count("restarts")
            elif orderer.core is not None and world.rng.random() < 0.01:
                orderer.core = None  # crash: only the committed chain survives
                world.count("crashes")
            world.run_orderer(orderer, faults=True)
        violations += violations_of(world, final=False)
    for payload in [*envelopes, *world.unacked]:  # submitters resubmit what was not acked
        world.publish("envelope", payload, faults=False)  # (the same message: same Msg-Id)
    for orderer in world.orderers:
        if orderer.core is None:
            world.restore(orderer)
    for world.now in range(FAULT_STEPS, FAULT_STEPS + HEAL_STEPS_MAX):
        world.deliver(faults=False)
        for orderer in world.orderers:
            world.run_orderer(orderer, faults=False)
        if _settled(world):
            break
    violations += violations_of(world, final=True)
    summary = {
        "stream": len(world.stream),
        "blocks": min(len(o.chain) for o in world.orderers),
        "acked": len(world.acked),
    }
    scenario = "jetstream-local-clock" if local_clock else "jetstream"
    return ScenarioResult(scenario, seed, tuple(dict.fromkeys(violations)), world.counts, summary)


def _settled(world: World) -> bool:
    """Nothing in flight, every orderer consumed the stream and has nothing pending."""
    if world.in_flight:
        return False
    for orderer in world.orderers:
        core = orderer.core
        if core is None or core.position < len(world.stream) or core.pending:
            return False
    return True


async def run(seed: int, trace: bool = False) -> ScenarioResult:
    """The scenario entry point (`scenarios/__init__.py`); no virtual time is needed."""
    return simulate(seed)
