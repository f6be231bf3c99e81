"""The `xfer` scenario: cross-channel DvPs under coordinator crashes, lossy links, a stalled
orderer and a byzantine relayer (issue 19 item 4; `python -m dltmw.sim --seed N --scenario xfer`).

Two channels (`sim/xfer_world.py`: `trading` PBFT-lite, `cash` solo) run the real `xfer`
contract with real MVCC and real commit proofs. TRANSFERS DvPs start at staggered steps; each
is driven by a coordinator that holds nothing but the terms and what it submitted: every turn it
reads both records from the ledger and does what `client/transfer.run_transfer` does (lock
before the deadline; claim with the other lock's proof; after the deadline abort the side that
did not lock and refund the other with the abort's proof). Faults, for FAULT_STEPS steps:
- scripted coordinator crashes: transfer i's first coordinator dies right after its
  (i mod 7)-th submission (0: never), so across the transfers every step is a crash point; and
  random crashes; a new coordinator, with an empty memory, resumes later from the ledger alone;
- submissions lost on the way to ordering, or delivered twice (a replayed envelope), record
  reads and proof fetches lost;
- one channel's ordering stalled for STALL_STEPS steps, longer than a deadline, so locks wait
  in its queue while the coordinator, past the deadline, aborts (the first ordered wins: MVCC);
- a byzantine relayer presenting forged and mismatched proofs (`sim/xfer_relayer.py`) and
  replaying genuine ones to any transfer; some DvPs lack the cash (their lock is refused).
Then the heal: no faults, every transfer gets a coordinator, run until everything settles.

Checkers: at every step, atomicity (a claim on X only while Y is locked or claimed, a refund on X
only once Y aborted) and conservation per channel (accounts + escrow of locked records = the
opening total); every forged proof refused with the reason of what was forged; after the heal,
every transfer ended claimed on both channels, or aborted on one and refunded or aborted on the
other. Negative control: `unchecked=True` runs `xfer` believing any proof; the atomicity checker
must catch the relayer's fabricated proofs.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass, field

from dltmw.core.contract import TxInfo
from dltmw.sim import xfer_relayer as relayer
from dltmw.sim.scenarios.result import ScenarioResult
from dltmw.sim.xfer_world import T0, VALID, Pending, SimChannel, envelope
from dltmw.v1 import crosschain_pb2

TRANSFERS = 14
START_EVERY_STEPS = 4
DEADLINE_STEPS = 30
STALL_STEPS = 45
FAULT_STEPS = 150
HEAL_STEPS_MAX = 400
RESUBMIT_STEPS = 8
CRASH_POINTS = 7  # transfer i's first coordinator dies after submission i % 7 (0: never)
SIDES = ("trading", "cash")
OPENING = {"trading": {"seller": 1000, "buyer": 0}, "cash": {"seller": 0, "buyer": 10_000}}
FINAL = {("claimed", "claimed"), ("aborted", "aborted"), ("aborted", "refunded")}
FINAL |= {(b, a) for a, b in FINAL}


@dataclass(frozen=True)
class Transfer:
    """One DvP: its canonical terms, id, legs' amounts, start step and deadline."""

    index: int
    terms: bytes
    transfer_id: str
    amounts: dict[str, int]
    start: int
    deadline_s: int


def make_transfer(index: int, seed: int) -> Transfer:
    """Every 4th DvP asks for more cash than the buyer has: its cash lock is refused."""
    start = index * START_EVERY_STEPS
    amounts = {"trading": 10, "cash": 500 if index % 4 != 3 else 1_000_000}
    legs = {
        "trading": {"from": "seller", "to": "buyer", "amount": amounts["trading"]},
        "cash": {"from": "buyer", "to": "seller", "amount": amounts["cash"]},
    }
    deadline = T0 + start + DEADLINE_STEPS
    body = {"deadline_s": deadline, "legs": legs, "nonce": f"sim-{seed}-{index}"}
    terms = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    return Transfer(index, terms, hashlib.sha256(terms).hexdigest(), amounts, start, deadline)


@dataclass
class Coordinator:
    """What a coordinator process holds: the terms and its own recent submissions."""

    transfer: Transfer
    crash_after: int  # submissions; 0: no scripted crash
    submitted: int = 0
    recent: dict[tuple[str, str], int] = field(default_factory=dict)  # (channel, fn) -> step


@dataclass
class World:
    """Both channels, the links to their orderers, the coordinators and the relayer's pool."""

    rng: random.Random
    seed: int
    channels: dict[str, SimChannel]
    transfers: list[Transfer] = field(default_factory=list)
    coordinators: dict[int, Coordinator | None] = field(default_factory=dict)
    restart_at: dict[int, int] = field(default_factory=dict)
    in_flight: list[tuple[int, str, Pending]] = field(default_factory=list)
    pool: list[tuple[str, str, str]] = field(default_factory=list)  # (channel, tx_id, transfer)
    counts: dict[str, int] = field(default_factory=dict)
    violations: list[str] = field(default_factory=list)
    faults: bool = True
    now: int = 0
    serial: int = 0

    def count(self, what: str) -> None:
        self.counts[what] = self.counts.get(what, 0) + 1

    def chance(self, p: float) -> bool:
        """A fault with probability p, only while faults are on."""
        return self.faults and self.rng.random() < p

    def submit(
        self, channel: str, function: str, args: tuple[bytes, ...], admin: bool = False
    ) -> tuple[int, str]:
        """Endorse on `channel`; if accepted, send the envelope to its orderer. (status, message)"""
        self.serial += 1
        tx_id = hashlib.sha256(f"xfer-sim|{self.seed}|{self.serial}".encode()).hexdigest()
        roles = frozenset({"admin"}) if admin else frozenset()
        tx = TxInfo(tx_id, "Org1", b"", "sim", T0 + self.now, creator_roles=roles)
        result = self.channels[channel].endorse(function, args, tx)
        if result.response.status == 200:
            self.send(channel, Pending(tx_id, envelope(channel, tx_id, result), result.rwset))
        return result.response.status, result.response.message

    def send(self, channel: str, pending: Pending) -> None:
        if self.chance(0.1):
            self.count("submissions_lost")
            return
        copies = 2 if self.chance(0.1) else 1
        if copies == 2:
            self.count("submissions_replayed")
        for _ in range(copies):
            due = self.now + (self.rng.randint(0, 3) if self.faults else 0)
            self.in_flight.append((due, channel, pending))

    def deliver(self) -> None:
        due = [f for f in self.in_flight if f[0] <= self.now]
        self.in_flight = [f for f in self.in_flight if f[0] > self.now]
        for _, channel, pending in due:
            self.channels[channel].queue.append(pending)

    def order(self) -> None:
        for name, ch in self.channels.items():
            if ch.stalled:
                self.count("stalled_steps")
            if self.faults and self.rng.random() < 0.4:
                continue
            for tx_id, code in ch.cut(5):
                self.count("committed_valid" if code == VALID else "committed_invalid")
                if code == VALID:
                    self.pool.append((name, tx_id, self._transfer_of(name, tx_id)))

    def _transfer_of(self, channel: str, tx_id: str) -> str:
        for t in self.transfers:
            r = self.channels[channel].record(t.transfer_id)
            if tx_id in r.values():
                return t.transfer_id
        return ""


def plan(
    ra: dict[str, str], rb: dict[str, str], now_s: int, deadline_s: int
) -> list[tuple[str, str, str]]:
    """The steps `run_transfer` takes from these records: (channel, function, proven tx_id)."""
    records = dict(zip(SIDES, (ra, rb), strict=True))
    other = {SIDES[0]: SIDES[1], SIDES[1]: SIDES[0]}
    if all("locked_tx" in r for r in records.values()):
        return [
            (c, "claim", records[other[c]]["locked_tx"])
            for c, r in records.items()
            if r["state"] == "locked"
        ]
    if now_s <= deadline_s:
        return [(c, "lock", "") for c, r in records.items() if r["state"] == "absent"]
    steps = [(c, "abort", "") for c, r in records.items() if r["state"] == "absent"]
    steps += [
        (c, "refund", records[other[c]]["aborted_tx"])
        for c, r in records.items()
        if r["state"] == "locked" and "aborted_tx" in records[other[c]]
    ]
    return steps


def states(world: World, t: Transfer) -> tuple[str, str]:
    a, b = (world.channels[c].record(t.transfer_id)["state"] for c in SIDES)
    return a, b


def coordinator_turn(world: World, c: Coordinator) -> None:
    """Read both records, take the next steps; die after the scripted submission."""
    t = c.transfer
    if world.chance(0.05):
        world.count("reads_lost")
        return
    ra, rb = (world.channels[s].record(t.transfer_id) for s in SIDES)
    if (ra["state"], rb["state"]) in FINAL:
        world.coordinators[t.index] = None
        return
    for channel, function, proven in plan(ra, rb, T0 + world.now, t.deadline_s):
        last = c.recent.get((channel, function))
        if last is not None and world.now - last < RESUBMIT_STEPS:
            continue
        args: tuple[bytes, ...] = (t.terms,)
        if proven:
            there = SIDES[1] if channel == SIDES[0] else SIDES[0]
            proof = world.channels[there].proof(proven)
            if proof is None or world.chance(0.05):
                world.count("proof_fetches_lost")
                continue
            args = (t.terms, proof.SerializeToString())
        world.submit(channel, function, args)
        c.recent[(channel, function)] = world.now
        c.submitted += 1
        if c.submitted == c.crash_after or world.chance(0.02):
            world.count(f"crash_after_{function}")
            world.coordinators[t.index] = None
            world.restart_at[t.index] = world.now + world.rng.randint(1, 10)
            return


def relayer_turn(world: World) -> None:
    """Present one forged, mismatched or replayed proof for a transfer: mostly one locked on
    that channel (so the proof is what decides), sometimes one already settled there (a replay
    must not pay twice)."""
    kind = world.rng.choice(sorted(relayer.KINDS))
    here = world.rng.choice(SIDES)
    there = SIDES[1] if here == SIDES[0] else SIDES[0]
    wanted = ("locked",) if world.rng.random() < 0.7 else ("claimed", "refunded")
    targets = [
        t for t in world.transfers if world.channels[here].record(t.transfer_id)["state"] in wanted
    ]
    theirs = [p for p in world.pool if p[0] == there]
    if not targets or not theirs:
        return
    t = world.rng.choice(targets)
    function = world.rng.choice(("claim", "refund"))
    _, tx_id, _ = world.rng.choice(theirs)
    proof = world.channels[there].proof(tx_id)
    assert proof is not None
    forged = _forge(world, kind, t, here, there, function, proof)
    if forged is None:
        return
    status, message = world.submit(here, function, (t.terms, forged))
    expected = relayer.KINDS[kind]
    world.count(f"relayed_{kind}" if wanted == ("locked",) else "relayed_to_settled")
    if expected is None or wanted != ("locked",):
        return
    if status == 200:
        world.violations.append(f"forged proof accepted: {kind} for {function} on {here}")
    elif message.split(":")[0] != expected:
        world.violations.append(f"forged proof ({kind}) refused as {message!r}, not {expected}")


def _forge(
    world: World,
    kind: str,
    t: Transfer,
    here: str,
    there: str,
    function: str,
    proof: crosschain_pb2.CommitProof,
) -> bytes | None:
    """The proof bytes the relayer presents (None: nothing of that kind to forge from yet)."""
    rng = world.rng
    if kind == "replay":
        return proof.SerializeToString()
    if kind == "wrong_signer":
        return relayer.wrong_signer(proof, rng).SerializeToString()
    if kind == "too_few_signatures":
        return relayer.too_few_signatures(proof).SerializeToString()
    if kind == "wrong_path":
        return relayer.wrong_path(proof, rng).SerializeToString()
    if kind == "too_few_attestations":
        return relayer.too_few_attestations(proof).SerializeToString()
    if kind == "other_channel":
        own = [p for p in world.pool if p[0] == here]
        if not own:
            return None
        mine = world.channels[here].proof(rng.choice(own)[1])
        return mine.SerializeToString() if mine is not None else None
    if kind == "other_transfer":
        others = [p for p in world.pool if p[0] == there and p[2] != t.transfer_id]
        if not others:
            return None
        mismatched = world.channels[there].proof(rng.choice(others)[1])
        return mismatched.SerializeToString() if mismatched is not None else None
    state = "locked" if function == "claim" else "aborted"
    return relayer.fabricated(there, len(world.channels[there].blocks), t.transfer_id, state)


def violations_of(world: World, final: bool) -> list[str]:
    """Atomicity and conservation now; every transfer settled, if `final`."""
    found: list[str] = []
    escrow = {c: 0 for c in SIDES}
    for t in world.transfers:
        sa, sb = states(world, t)
        for mine, theirs in ((sa, sb), (sb, sa)):
            if mine == "claimed" and theirs not in ("locked", "claimed"):
                found.append(
                    f"split: transfer {t.index} claimed on one side, {theirs} on the other"
                )
            if mine == "refunded" and theirs != "aborted":
                found.append(
                    f"split: transfer {t.index} refunded on one side, {theirs} on the other"
                )
        for c, s in zip(SIDES, (sa, sb), strict=True):
            escrow[c] += t.amounts[c] if s == "locked" else 0
        if final and (sa, sb) not in FINAL:
            found.append(f"no outcome after the heal: transfer {t.index} is {sa}/{sb}")
    for c in SIDES:
        held = sum(world.channels[c].balances().values()) + escrow[c]
        if held != sum(OPENING[c].values()):
            found.append(f"conservation: {c} holds {held}, opened with {sum(OPENING[c].values())}")
    return found


def _set_up(world: World) -> None:
    """Each channel trusts the other's block 0 (an admin) and opens the accounts."""
    for here, there in (SIDES, SIDES[::-1]):
        genesis = world.channels[there].genesis
        world.submit(here, "trust", (genesis,), admin=True)
        for account, amount in OPENING[here].items():
            world.submit(here, "open", (account.encode(), str(amount).encode()))
    for ch in world.channels.values():
        while ch.queue or world.in_flight:
            world.deliver()
            ch.cut(10)


def simulate(seed: int, unchecked: bool = False) -> ScenarioResult:
    """One seeded run: faults for FAULT_STEPS steps, then heal until every transfer settled."""
    contract = relayer.AnyProofTransfer if unchecked else None
    channels = {
        "trading": SimChannel("trading", 4)
        if contract is None
        else SimChannel("trading", 4, contract()),
        "cash": SimChannel("cash", 1) if contract is None else SimChannel("cash", 1, contract()),
    }
    world = World(random.Random(seed), seed, channels)
    world.faults = False
    _set_up(world)
    world.faults = True
    world.transfers = [make_transfer(i, seed) for i in range(TRANSFERS)]
    stalled = world.rng.choice(SIDES)
    stall_from = world.rng.randint(5, 40)
    for world.now in range(FAULT_STEPS + HEAL_STEPS_MAX):
        if world.now == FAULT_STEPS:
            world.faults = False
            for t in world.transfers:  # the heal: every unsettled transfer gets a coordinator
                if world.coordinators.get(t.index) is None and states(world, t) not in FINAL:
                    world.coordinators[t.index] = Coordinator(t, 0)
        world.channels[stalled].stalled = (
            world.faults and stall_from <= world.now < stall_from + STALL_STEPS
        )
        _step(world)
        world.violations += violations_of(world, final=False)
        if not world.faults and _settled(world):
            break
    world.violations += violations_of(world, final=True)
    outcomes = [states(world, t) for t in world.transfers]
    summary = {
        "claimed": sum(o == ("claimed", "claimed") for o in outcomes),
        "refunded": sum("refunded" in o for o in outcomes),
        "blocks": sum(len(c.blocks) for c in world.channels.values()),
        "steps": world.now,
    }
    name = "xfer-unchecked" if unchecked else "xfer"
    return ScenarioResult(name, seed, tuple(dict.fromkeys(world.violations)), world.counts, summary)


def _step(world: World) -> None:
    for t in world.transfers:
        if t.start == world.now:
            crash_after = t.index % CRASH_POINTS
            world.coordinators[t.index] = Coordinator(t, crash_after)
        elif world.restart_at.get(t.index) == world.now:
            world.restart_at.pop(t.index, None)
            world.coordinators[t.index] = Coordinator(t, 0)
            world.count("coordinator_restarts")
    world.deliver()
    world.order()
    for c in list(world.coordinators.values()):
        if c is not None and (not world.faults or world.rng.random() < 0.5):
            coordinator_turn(world, c)
    if world.chance(0.4):
        relayer_turn(world)


def _settled(world: World) -> bool:
    if world.in_flight or any(c.queue for c in world.channels.values()):
        return False
    return all(states(world, t) in FINAL for t in world.transfers)


async def run(seed: int, trace: bool = False) -> ScenarioResult:
    """The scenario entry point (`scenarios/__init__.py`); no virtual time is needed."""
    return simulate(seed)
